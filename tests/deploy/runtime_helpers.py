"""Shared pieces of the deploy tests: exporting and building the C runtime, and Python
references for what the runtime prints (the h and c codes of every step, generated text)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir

from src.generate import detokenize, prompt_ids
from src.quant.integer import runtime_export
from src.quant.integer.kernel import compiler
from src.quant.integer.lm import IntegerLM
from tests.conftest import CONF_DIR

needs_cc = pytest.mark.skipif(compiler() is None, reason="no C compiler")


def export_cli(*overrides: str) -> dict[str, Any]:
    """``python -m src.export ...`` in this process; its JSON report."""
    from src.export import export

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("export", overrides=list(overrides))
    return export(cfg)


def build(folder: Path, generic: bool = False) -> Path:
    """The runtime of an export folder: ``make`` (native) when there is make, else the build
    helper; ``generic``: the plain C loops (``make portable``)."""
    if shutil.which("make") and not generic:
        subprocess.run(["make", "-s", "-C", str(folder)], check=True, capture_output=True)
        return folder / runtime_export.BINARY
    return runtime_export.build(folder, folder / f"awd_int8_{int(generic)}", generic=generic)


def run(binary: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def last_json(stdout: str) -> dict[str, Any]:
    return json.loads(stdout.strip().splitlines()[-1])


def trace_codes(stdout: str) -> dict[tuple[str, int, int], list[int]]:
    """``trace`` output -> {(h|c, step, layer): codes}."""
    codes = {}
    for line in stdout.splitlines():
        kind, step, layer, *values = line.split()
        codes[(kind, int(step), int(layer))] = [int(v) for v in values]
    return codes


def python_trace(lm: IntegerLM, ids: list[int]) -> dict[tuple[str, int, int], list[int]]:
    """The engine one token at a time: every layer's h and c after every step."""
    codes, state = {}, [None] * len(lm.layers)
    with torch.no_grad():
        for t, token in enumerate(ids):
            x = lm.embedding(torch.tensor([[token]]))
            for i, layer in enumerate(lm.layers):
                x, state[i] = layer(x, state[i])
                codes[("h", t, i)] = state[i][0][0].tolist()
                codes[("c", t, i)] = state[i][1][0].tolist()
    return codes


class SplitMix64:
    """The runtime's random draws (splitmix64; uniform = top 53 bits / 2^53)."""

    def __init__(self, seed: int) -> None:
        self.state = seed % 2**64

    def uniform(self) -> float:
        self.state = (self.state + 0x9E3779B97F4A7C15) % 2**64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % 2**64
        z ^= z >> 31
        return (z >> 11) * (1.0 / 9007199254740992.0)


def _choose(acc: torch.Tensor, scale: torch.Tensor, temperature: float, rng: SplitMix64) -> int:
    if temperature == 0:  # the exact argmax of acc * scale, the first of equal ones
        values = [Fraction(int(a)) * Fraction(float(s)) for a, s in zip(acc, scale, strict=True)]
        return max(range(len(values)), key=lambda v: (values[v], -v))
    logits = (acc.to(torch.float32) * scale).tolist()  # float32 products, as the runtime
    top = max(logits)
    weights = [math.exp((x - top) / temperature) for x in logits]  # libm's exp, as the runtime
    total = 0.0
    for w in weights:
        total += w
    u, cum, last = rng.uniform() * total, 0.0, 0
    for v, w in enumerate(weights):
        cum += w
        last = v if w > 0 else last
        if cum > u:
            return v
    return last


def python_generate(
    lm: IntegerLM, meta: dict[str, Any], n: int, temperature: float, seed: int, prompt: str = ""
) -> str:
    """What ``awd_int8 generate`` prints, from the Python engine (and src.generate's text)."""
    itos, data = meta["vocab"], meta["data"]
    char_level, spaced = bool(data.get("char_level")), data.get("tokenizer", "word") == "word"
    start = torch.tensor(prompt_ids(prompt, itos, char_level, spaced)).unsqueeze(1)
    rng, ids = SplitMix64(seed), []
    with torch.no_grad():
        logits, state = lm.logits_int32(start)
        for _ in range(n):
            ids.append(_choose(logits[-1, 0], lm.decoder.scale, temperature, rng))
            logits, state = lm.logits_int32(torch.tensor([[ids[-1]]]), state)
    text = detokenize([itos[i] for i in ids], char_level, spaced)
    if prompt:
        text = f"{prompt}{'' if char_level or text.startswith(chr(10)) else ' '}{text}"
    return text + "\n"
