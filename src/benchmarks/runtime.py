"""The standalone C runtime (``awd_int8 model.bin score``) beside ``engine=int8`` at batch 1.

The bench's integer model is written as ``model.bin`` with a made-up vocabulary, the runtime
is built from the package's sources (the build ``AWD_INT8_ISA`` names: native, or ``avx2``),
and it scores a text of random words at batch 1 carrying the state, timing itself (the
README's deployment comparison, at the bench's shape).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import torch

from src.quant.integer import kernel as int_kernel
from src.quant.integer import runtime_export
from src.quant.integer.lm import IntegerLM

__all__ = ["RuntimeScorer"]

WORDS_PER_LINE = 20


class RuntimeScorer:
    """A built runtime and its text in a temp folder (removed by :meth:`close`)."""

    def __init__(self, lm: IntegerLM, tokens: int, seed: int = 0) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="awd_runtime_bench.")
        folder = Path(self._tmp.name)
        V = lm.embedding.weight.shape[0]
        vocab = ["<eos>", "<unk>", *(f"w{i}" for i in range(2, V))]
        meta = {"vocab": vocab, "data": {"tokenizer": "word"}}
        runtime_export.write_runtime(folder, lm, meta, "interpolated")
        generic = int_kernel.isa() == "generic"
        self.binary = runtime_export.build(folder, generic=generic, isa=int_kernel.isa())
        ids = torch.randint(2, V, (tokens,), generator=torch.Generator().manual_seed(seed))
        words = [vocab[i] for i in ids.tolist()]
        lines = [" ".join(words[i : i + WORDS_PER_LINE]) for i in range(0, tokens, WORDS_PER_LINE)]
        self.text = folder / "text.txt"
        self.text.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.model = folder / "model.bin"

    def tokens_per_second(self) -> float:
        """One ``score`` run: the runtime's own tokens/s (network and log-softmax)."""
        proc = subprocess.run(
            [str(self.binary), str(self.model), "score", str(self.text)],
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        )
        return float(json.loads(proc.stdout.strip().splitlines()[-1])["tokens_per_s"])

    def close(self) -> None:
        self._tmp.cleanup()
