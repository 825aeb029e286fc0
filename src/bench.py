"""Speed benchmark: ``python -m src.bench [shape=tiny|ptb|wt2] [device=cpu|cuda] [variants=[...]]``.

Times one full training step (forward, AR/TAR, backward, clip, optimizer step) and one evaluation
step of each model variant beside a raw ``torch.nn.LSTM`` stack of the same shapes without dropout
(the reference), in the same process, after warm-up. Rounds interleave the variants and the median
is reported, because shared machines are noisy. Prints a table, then one JSON object of every
figure as the last line.

Two more measurements (``conf/bench.yaml``):

* ``engine=true`` (default): the int8 integer engine's evaluation (``IntegerLM.score``, converted
  from a QAT model of the shape after ``engine_train_steps`` training steps) against the float
  model's evaluation (eval mode, the fused ATen/cuDNN runner, tied decoder and log-softmax as in
  ``src.eval``), on the CPU, at each of ``engine_batches`` with the hidden state carried.
* ``cache_bench=true``: the token cache build (``src.data.cache.load_corpus``, the training
  path) of WikiText-2's train file concatenated ``cache_repeats`` times (48: about 100M tokens,
  518 MB), written to a temp folder that is deleted afterwards. The build runs in a child process
  that imports ``src.data.cache`` only, so its peak resident memory (``VmHWM``, the peak since
  its exec) is the build's alone, not the benchmark's; it is printed beside the authors' loader
  (salesforce ``data.Corpus``: 262 s and 1.02 GB for that corpus on the project's 2-core
  machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from src.evaluation.scoring import target_log_probs
from src.models.awd import AWDLSTM, AWDLSTMConfig
from src.quant import export as qexport
from src.quant import kernel as int_kernel
from src.quant.config import QuantConfig
from src.training.loss import lm_loss

SHAPES: dict[str, dict[str, int]] = {
    # the CPU shape and the AWD-LSTM's PTB / WikiText-2 shapes (REFERENCE §1, §2)
    "tiny": {"vocab": 10000, "emb": 200, "hidden": 256, "layers": 2, "batch": 20, "bptt": 35},
    "ptb": {"vocab": 10000, "emb": 400, "hidden": 1150, "layers": 3, "batch": 20, "bptt": 70},
    "wt2": {"vocab": 33278, "emb": 400, "hidden": 1150, "layers": 3, "batch": 80, "bptt": 70},
}

# Variants: model options on top of the salesforce PTB dropouts (all on).
VARIANTS: dict[str, dict[str, Any]] = {
    "awd_lstm": {"model": {}, "quant": {}},
    "awd_lstm_qat": {"model": {}, "quant": {"enabled": True}},
    "mlstm": {"model": {"cell": "mlstm"}, "quant": {}},
    "mlstm_qat": {"model": {"cell": "mlstm"}, "quant": {"enabled": True}},
}


#: ``amp`` option -> autocast dtype (variants and a second raw row run in it; the reference
#: raw row stays in ``dtype``).
AMP_DTYPES: dict[str | None, torch.dtype | None] = {
    None: None,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def shape_config(shape: dict[str, int], **model: Any) -> AWDLSTMConfig:
    """The AWD-LSTM config of a bench shape (salesforce dropouts), with ``model`` options."""
    return AWDLSTMConfig(
        vocab_size=shape["vocab"],
        emb_size=shape["emb"],
        hidden_size=shape["hidden"],
        num_layers=shape["layers"],
        **model,
    )


class RawLSTMStack(nn.Module):
    """The reference: embedding -> nn.LSTM layers (AWD sizes) -> tied decoder; no dropout."""

    def __init__(self, vocab: int, emb: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, emb)
        sizes = [
            (emb if i == 0 else hidden, emb if i == layers - 1 else hidden) for i in range(layers)
        ]
        self.rnns = nn.ModuleList(nn.LSTM(i, o) for i, o in sizes)
        self.decoder = nn.Linear(emb, vocab)
        self.decoder.weight = self.embedding.weight

    def forward(self, tokens: Tensor) -> Tensor:
        x = self.embedding(tokens)
        for rnn in self.rnns:
            x, _ = rnn(x)
        return self.decoder(x)


@dataclass
class Timed:
    train_tps: float
    eval_tps: float


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def tokens_per_second(
    step: Callable[[], None], tokens: int, steps: int, device: torch.device
) -> float:
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return tokens * steps / (time.perf_counter() - start)


def autocast(device: torch.device, amp: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Mixed precision for a step (``amp`` = bfloat16 / float16), or nothing."""
    if amp is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=amp)


def raw_steps(
    shape: dict[str, int],
    device: torch.device,
    dtype: torch.dtype,
    amp: torch.dtype | None = None,
):
    model = RawLSTMStack(shape["vocab"], shape["emb"], shape["hidden"], shape["layers"])
    model = model.to(device=device, dtype=dtype)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    x, y = random_batch(shape, shape["batch"], device)
    xe, ye = random_batch(shape, 10, device)

    def train() -> None:
        model.train()
        with autocast(device, amp):
            logits = model(x)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), y.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        opt.step()

    @torch.no_grad()
    def evaluate() -> None:
        model.eval()
        with autocast(device, amp):
            model(xe)

    return train, evaluate


def model_steps(
    shape: dict[str, int],
    variant: dict[str, Any],
    device: torch.device,
    dtype: torch.dtype,
    amp: torch.dtype | None = None,
    compile_cell: bool = False,
):
    cfg = shape_config(shape, compile_cell=compile_cell, **variant["model"])
    model = AWDLSTM(cfg, quant=QuantConfig(**variant["quant"])).to(device=device, dtype=dtype)
    opt = torch.optim.SGD(model.parameters(), lr=1.0, weight_decay=1.2e-6)
    x, y = random_batch(shape, shape["batch"], device)
    xe, _ = random_batch(shape, 10, device)
    hidden = [None]

    def train() -> None:
        model.train()
        with autocast(device, amp):
            terms = lm_loss(model, x, y, hidden[0], alpha=2.0, beta=1.0)
        hidden[0] = [(h.detach(), c.detach()) for h, c in terms.out.hidden]
        opt.zero_grad(set_to_none=True)
        terms.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        opt.step()

    @torch.no_grad()
    def evaluate() -> None:
        model.eval()
        with autocast(device, amp):
            out = model(xe)
            model.decoder(out.output)

    return train, evaluate


def random_batch(shape: dict[str, int], batch: int, device: torch.device) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(shape["vocab"], (shape["bptt"], batch), generator=g)
    y = torch.randint(shape["vocab"], (shape["bptt"], batch), generator=g)
    return x.to(device), y.to(device)


def run(cfg: DictConfig) -> dict[str, Any]:
    torch.manual_seed(cfg.seed)
    device = torch.device(cfg.device)
    dtype = {"float32": torch.float32, "float64": torch.float64}[cfg.dtype]
    amp = AMP_DTYPES[cfg.amp]
    if device.type == "cuda":  # TF32 tensor cores for fp32 matmuls (the reference's too)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = bool(cfg.tf32)
    shape = {**SHAPES[cfg.shape], **OmegaConf.to_container(cfg.shape_overrides)}
    builders: dict[str, Any] = {"raw_lstm": raw_steps(shape, device, dtype)}
    if amp is not None:  # the raw stack in the same mixed precision, for comparison
        builders[f"raw_lstm_{cfg.amp}"] = raw_steps(shape, device, dtype, amp)
    skipped: dict[str, str] = {}
    for name in cfg.variants:
        if name not in VARIANTS:
            raise ValueError(f"unknown variant {name!r}; choose from {sorted(VARIANTS)}")
        try:
            builders[name] = model_steps(
                shape, VARIANTS[name], device, dtype, amp, bool(cfg.compile_cell)
            )
        except (ValueError, NotImplementedError) as exc:  # a variant not available in this build
            skipped[name] = str(exc)
    train_tokens = shape["batch"] * shape["bptt"]
    eval_tokens = 10 * shape["bptt"]
    samples: dict[str, dict[str, list[float]]] = {n: {"train": [], "eval": []} for n in builders}
    for train, evaluate in builders.values():  # warm-up (allocator, lazy init, observers)
        for _ in range(cfg.warmup):
            train()
            evaluate()
    for _ in range(cfg.rounds):
        for name, (train, evaluate) in builders.items():
            samples[name]["train"].append(tokens_per_second(train, train_tokens, cfg.steps, device))
            samples[name]["eval"].append(
                tokens_per_second(evaluate, eval_tokens, cfg.steps, device)
            )
    timed = {
        n: Timed(statistics.median(s["train"]), statistics.median(s["eval"]))
        for n, s in samples.items()
    }
    ref = timed["raw_lstm"]
    figures: dict[str, Any] = {
        "device": describe(device),
        "shape": cfg.shape,
        **{"shape_" + k: v for k, v in shape.items()},
        "dtype": cfg.dtype,
        "amp": cfg.amp,
        "tf32": bool(cfg.tf32),
        "compile_cell": bool(cfg.compile_cell),
        "threads": torch.get_num_threads(),
        "skipped": skipped,
    }
    for name, t in timed.items():
        figures[f"{name}/train_tokens_per_s"] = round(t.train_tps, 1)
        figures[f"{name}/eval_tokens_per_s"] = round(t.eval_tps, 1)
        figures[f"{name}/train_ratio"] = round(t.train_tps / ref.train_tps, 3)
        figures[f"{name}/eval_ratio"] = round(t.eval_tps / ref.eval_tps, 3)
    print_table(timed, ref, figures)
    if cfg.engine:
        figures.update(engine_bench(cfg, shape))
    if cfg.cache_bench:
        figures.update(cache_bench(cfg))
    return figures


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def print_table(timed: dict[str, Timed], ref: Timed, figures: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"tokens/s on {figures['device']}, shape {figures['shape']} "
        f"({figures['dtype']}, amp {figures['amp']}); ratio = variant / raw nn.LSTM stack "
        f"({figures['dtype']})"
    )
    for col in ("variant", "train tok/s", "train ratio", "eval tok/s", "eval ratio"):
        table.add_column(col, justify="right" if col != "variant" else "left")
    for name, t in timed.items():
        table.add_row(
            name,
            f"{t.train_tps:,.0f}",
            f"{t.train_tps / ref.train_tps:.2f}x",
            f"{t.eval_tps:,.0f}",
            f"{t.eval_tps / ref.eval_tps:.2f}x",
        )
    Console().print(table)
    for name, why in figures["skipped"].items():
        print(f"skipped {name}: {why}")


# ------------------------------------------------------------------------------------------
# int8 engine vs float model, evaluation on the CPU
# ------------------------------------------------------------------------------------------


def trained_qat_model(shape: dict[str, int], steps: int, cell: str = "lstm") -> AWDLSTM:
    """A QAT AWD-LSTM (or mLSTM) of ``shape`` after ``steps`` SGD steps (the observers need
    data to export), in eval mode on the CPU. Its accuracy is irrelevant: speed is
    data-independent."""
    model = AWDLSTM(shape_config(shape, cell=cell), quant=QuantConfig(enabled=True))
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    x, y = random_batch(shape, shape["batch"], torch.device("cpu"))
    hidden = None
    for _ in range(max(steps, 1)):
        model.train()
        terms = lm_loss(model, x, y, hidden, alpha=2.0, beta=1.0)
        hidden = [(h.detach(), c.detach()) for h, c in terms.out.hidden]
        opt.zero_grad(set_to_none=True)
        terms.loss.backward()
        opt.step()
    return model.eval()


def engine_steps(
    shape: dict[str, int], batch: int, bptt: int, float_model: AWDLSTM, int_model: Any
) -> tuple[Callable[[], None], Callable[[], None]]:
    """Scoring one window [bptt, batch] with the state carried, as ``src.eval`` does: the float
    model (forward, tied decoder, log-softmax of the targets) and ``IntegerLM.score``."""
    g = torch.Generator().manual_seed(batch)
    x = torch.randint(shape["vocab"], (bptt, batch), generator=g)
    y = torch.randint(shape["vocab"], (bptt, batch), generator=g)
    state: dict[str, Any] = {"float": None, "int8": None}

    @torch.no_grad()
    def float_eval() -> None:
        out = float_model(x, state["float"])
        state["float"] = out.hidden
        target_log_probs(float_model, out.output, y).sum()

    def int8_eval() -> None:
        _, state["int8"] = int_model.score(x, y, state["int8"])

    return float_eval, int8_eval


def engine_bench(cfg: DictConfig, shape: dict[str, int]) -> dict[str, Any]:
    """int8 engine vs float model evaluation tokens/s on the CPU, for each of ``engine_cells``
    (figures ``engine/...`` for the LSTM, ``engine/mlstm/...`` for the mLSTM)."""
    figures: dict[str, Any] = {}
    for cell in cfg.get("engine_cells", ["lstm"]):
        figures.update(engine_bench_cell(cfg, shape, str(cell)))
    return figures


def engine_bench_cell(cfg: DictConfig, shape: dict[str, int], cell: str) -> dict[str, Any]:
    """int8 engine vs float model evaluation tokens/s on the CPU at each of ``engine_batches``."""
    cpu = torch.device("cpu")
    bptt = int(cfg.engine_bptt or shape["bptt"])
    batches = [int(b) for b in cfg.engine_batches]
    float_model = AWDLSTM(shape_config(shape, cell=cell)).eval()
    int_model, _ = qexport.convert(trained_qat_model(shape, cfg.engine_train_steps, cell))
    qexport.expand_tables(int_model)
    kern = int_kernel.load() if int_kernel.enabled() else None
    probe = [(torch.zeros(1, 1, lay.input_size, dtype=torch.int8), lay) for lay in int_model.layers]
    if kern is not None and all(int_kernel.usable(lay, x, *lay.init_state(1)) for x, lay in probe):
        path = "c-vnni" if kern.packed else "c"  # every layer runs its window in the C kernel
    else:
        path = "torch"
    steps = {b: engine_steps(shape, b, bptt, float_model, int_model) for b in batches}
    samples = {b: {"float": [], "int8": []} for b in batches}
    for float_eval, int8_eval in steps.values():
        for _ in range(cfg.warmup):
            float_eval()
            int8_eval()
    for _ in range(cfg.rounds):
        for b, (float_eval, int8_eval) in steps.items():
            samples[b]["float"].append(tokens_per_second(float_eval, b * bptt, cfg.steps, cpu))
            samples[b]["int8"].append(tokens_per_second(int8_eval, b * bptt, cfg.steps, cpu))
    prefix = "engine" if cell == "lstm" else f"engine/{cell}"
    figures: dict[str, Any] = {f"{prefix}/bptt": bptt, f"{prefix}/path": path}
    rows = []
    for b in batches:
        f_tps = statistics.median(samples[b]["float"])
        i_tps = statistics.median(samples[b]["int8"])
        figures[f"{prefix}/b{b}/float_eval_tokens_per_s"] = round(f_tps, 1)
        figures[f"{prefix}/b{b}/int8_eval_tokens_per_s"] = round(i_tps, 1)
        figures[f"{prefix}/b{b}/int8_ratio"] = round(i_tps / f_tps, 3)
        rows.append((b, f_tps, i_tps))
    print_engine_table(rows, bptt, path, cell)
    return figures


def print_engine_table(
    rows: list[tuple[int, float, float]], bptt: int, path: str, cell: str = "lstm"
) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"{cell}: evaluation tokens/s on cpu ({torch.get_num_threads()} threads), bptt "
        f"{bptt}: int8 engine ({path} recurrence) vs float model; target ratio >= 1.5"
    )
    for col in ("batch", "float tok/s", "int8 tok/s", "int8 / float"):
        table.add_column(col, justify="right")
    for b, f_tps, i_tps in rows:
        table.add_row(str(b), f"{f_tps:,.0f}", f"{i_tps:,.0f}", f"{i_tps / f_tps:.2f}x")
    Console().print(table)


# ------------------------------------------------------------------------------------------
# Token cache build of a ~100M-token corpus
# ------------------------------------------------------------------------------------------

#: The authors' loader (salesforce awd-lstm-lm ``data.Corpus``, one process) on the WikiText-2
#: train file concatenated 48 times, measured on the project's 2-core machine (issue 7).
CACHE_REFERENCE = {"seconds": 262.0, "peak_rss_mb": 1020.0, "repeats": 48}

_CACHE_CHILD = """
import json, resource, sys, time
from pathlib import Path
from src.data.cache import load_corpus

def peak_kb():
    # VmHWM: this process's peak RSS since its exec (ru_maxrss would also count the pre-exec
    # copy of the parent, torch and all, that started it)
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

before = peak_kb()
start = time.perf_counter()
arrays = load_corpus(Path(sys.argv[1]), "word", Path(sys.argv[2]))
seconds = time.perf_counter() - start
tokens = sum(len(arrays.split(s)) for s in ("train", "valid", "test"))
print(json.dumps({"seconds": seconds, "tokens": tokens, "train_tokens": len(arrays.train),
                  "vocab": len(arrays.vocab), "rss_before_kb": before, "peak_kb": peak_kb()}))
"""


def find_wikitext2(source: str | None) -> Path:
    """The WikiText-2 folder: ``cache_source``, else $AWD_DATA_DIR, ./data, ../shared/corpora."""
    if source:
        candidates = [Path(source)]
    else:
        repo = Path(__file__).resolve().parents[1]
        roots = [
            os.environ.get("AWD_DATA_DIR"),
            "data",
            repo / "data",
            repo.parent / "shared/corpora",
        ]
        candidates = [Path(r) / "wikitext-2" for r in roots if r]
    for folder in candidates:
        if all((folder / f"{s}.txt").is_file() for s in ("train", "valid", "test")):
            return folder
    raise FileNotFoundError(
        "cache_bench needs WikiText-2 ({train,valid,test}.txt); looked in "
        + ", ".join(str(c) for c in candidates)
        + " (set cache_source=<folder> or AWD_DATA_DIR)"
    )


def write_repeated_corpus(source: Path, dest: Path, repeats: int) -> int:
    """``dest/{train,valid,test}.txt``: train = ``repeats`` copies of the source's train file."""
    dest.mkdir(parents=True)
    with open(dest / "train.txt", "wb") as out:
        for _ in range(repeats):
            with open(source / "train.txt", "rb") as f:
                shutil.copyfileobj(f, out, 1 << 22)
    for split in ("valid", "test"):
        shutil.copyfile(source / f"{split}.txt", dest / f"{split}.txt")
    return (dest / "train.txt").stat().st_size


def run_cache_child(corpus_dir: Path, cache_dir: Path) -> dict[str, Any]:
    """Build the cache in a child process that imports only ``src.data.cache``; its report
    holds the seconds, the token counts and its peak RSS (``peak_kb``)."""
    repo = Path(__file__).resolve().parents[1]
    path = os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-c", _CACHE_CHILD, str(corpus_dir), str(cache_dir)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": path},
        cwd=repo,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"cache build failed ({proc.returncode}):\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cache_bench(cfg: DictConfig) -> dict[str, Any]:
    """Time the cache build of WikiText-2 train x ``cache_repeats`` (see the module docstring)."""
    source = find_wikitext2(cfg.cache_source)
    repeats = int(cfg.cache_repeats)
    tmp = Path(tempfile.mkdtemp(prefix="awd-cache-bench-", dir=cfg.cache_tmp_dir))
    try:
        corpus_dir = tmp / f"wikitext-2x{repeats}"
        train_bytes = write_repeated_corpus(source, corpus_dir, repeats)
        report = run_cache_child(corpus_dir, tmp / "cache")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    seconds = report["seconds"]
    figures = {
        "cache/source": str(source),
        "cache/repeats": repeats,
        "cache/train_bytes": train_bytes,
        "cache/tokens": report["tokens"],
        "cache/train_tokens": report["train_tokens"],
        "cache/vocab": report["vocab"],
        "cache/seconds": round(seconds, 2),
        "cache/tokens_per_s": round(report["tokens"] / seconds, 1),
        "cache/peak_rss_mb": round(report["peak_kb"] * 1024 / 1e6, 1),
        "cache/rss_before_build_mb": round(report["rss_before_kb"] * 1024 / 1e6, 1),
        "cache/reference_seconds": CACHE_REFERENCE["seconds"],
        "cache/reference_peak_rss_mb": CACHE_REFERENCE["peak_rss_mb"],
    }
    if repeats == CACHE_REFERENCE["repeats"]:  # the reference was measured at 48 copies
        figures["cache/speedup_vs_reference"] = round(CACHE_REFERENCE["seconds"] / seconds, 2)
    print_cache_table(figures)
    return figures


def print_cache_table(f: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"token cache build: wikitext-2 train x {f['cache/repeats']} "
        f"({f['cache/train_bytes'] / 1e6:,.0f} MB, {f['cache/tokens']:,} tokens); "
        "target: peak RSS < 400 MB, >= 3x the reference"
    )
    for col in ("loader", "seconds", "tokens/s", "peak RSS (MB)", "speed-up"):
        table.add_column(col, justify="right" if col != "loader" else "left")
    table.add_row(
        "src.data.cache (child process)",
        f"{f['cache/seconds']:.1f}",
        f"{f['cache/tokens_per_s']:,.0f}",
        f"{f['cache/peak_rss_mb']:,.0f} ({f['cache/rss_before_build_mb']:,.0f} before the build)",
        f"{f['cache/speedup_vs_reference']:.2f}x" if "cache/speedup_vs_reference" in f else "n/a",
    )
    reference = "cache/speedup_vs_reference" in f
    table.add_row(
        "salesforce data.Corpus (reference, x48)",
        f"{CACHE_REFERENCE['seconds']:.0f}",
        f"{f['cache/tokens'] / CACHE_REFERENCE['seconds']:,.0f}" if reference else "n/a",
        f"{CACHE_REFERENCE['peak_rss_mb']:,.0f}",
        "1.00x",
    )
    Console().print(table)


@hydra.main(version_base="1.3", config_path="../conf", config_name="bench")
def main(cfg: DictConfig) -> None:
    figures = run(cfg)
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
