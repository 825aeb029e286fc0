"""The softmax bench of ``python -m src.bench softmax_bench=true``: one training step of the loss
alone (forward and backward, nothing else) for each ``loss.softmax`` kind at a large vocabulary.

The inputs are the same for every kind (``softmax.*`` in ``conf/bench.yaml``; default WikiText-103's
V = 267,735, E = 400, 1,400 tokens): a decoder W [V, E] with bias, h [N, E] requiring grad, and
targets drawn from a Zipf law over frequency ranks (p(r) ~ 1 / (r + 1)) whose ranks are scattered
over the word ids by a random permutation (ids in order of first appearance, not frequency); the
split head is ranked by those frequencies. Beside the ``loss.softmax`` kinds, the reference row
``adaptive_torch``: torch's ``nn.AdaptiveLogSoftmaxWithLoss`` with the split head's cutoffs and
``div_value=1`` (the same structure, untied: its own weights, the targets given as ranks), and
the split head's speed and peak as ratios to it (``softmax/split/vs_adaptive_torch``,
``softmax/split/peak_vs_adaptive_torch``). The figures per kind: the loss (``full`` and
``chunked`` agree), the peak memory of one step above what the inputs already hold, and tokens
per second:

* Speed: every kind in this process on the same inputs, one warm-up step each, then ``steps``
  rounds of one step per kind in turn (these machines are noisy: a ratio is only trusted between
  runs interleaved in one process). Tokens/s from each kind's median step; ``vs_adaptive_torch``
  is the median over rounds of the paired ratio t(adaptive_torch) / t(split).
* Peak memory, CPU: each kind in a fresh child process (``python -m src.benchmarks.softmax
  SPEC``). The peak resident memory is reset just before the step (``/proc/self/clear_refs``,
  then ``VmHWM``); where that is not allowed, ``ru_maxrss`` is used (its setup allocates no
  temporaries, so the peak before the step is the baseline). Large tensors are mmapped by glibc
  and returned on free, so resident memory follows the live tensors.
* Peak memory, CUDA: in-process, ``torch.cuda.max_memory_allocated`` above ``memory_allocated``
  before.
"""

from __future__ import annotations

import gc
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from src.models.softmax import SoftmaxHead, build_softmax, check_splits, default_splits

REPO = Path(__file__).resolve().parents[2]
MIB = 2.0**20
#: the reference row: torch's own adaptive softmax (not a ``loss.softmax`` kind)
ADAPTIVE = "adaptive_torch"


class AdaptiveTorch(nn.Module):
    """``nn.AdaptiveLogSoftmaxWithLoss`` (cutoffs = the split head's, ``div_value=1``, head bias)
    behind the heads' ``nll``: the decoder is not read, the targets are mapped to their ranks."""

    def __init__(self, vocab: int, emb: int, splits: list[int] | None) -> None:
        super().__init__()
        self.splits = check_splits(default_splits(vocab) if splits is None else splits, vocab)
        self.adaptive = nn.AdaptiveLogSoftmaxWithLoss(
            emb, vocab, self.splits, div_value=1.0, head_bias=True
        )
        self.register_buffer("rank", torch.arange(vocab))  # id -> rank

    def order_by_frequency(self, counts: Tensor) -> None:
        """Rank the ids by count, most frequent first (as the split head does)."""
        order = torch.sort(counts.reshape(-1), descending=True, stable=True).indices
        self.rank[order] = torch.arange(order.numel(), device=self.rank.device)

    def nll(self, decoder: nn.Module, output: Tensor, targets: Tensor) -> Tensor:
        """The mean NLL of the targets (their ranks are torch's class indices)."""
        h = output.reshape(-1, output.size(-1))
        return self.adaptive(h, self.rank[targets.reshape(-1)]).loss


def build_head(
    kind: str, vocab: int, emb: int, chunk_size: int, splits: list[int] | None
) -> SoftmaxHead | AdaptiveTorch:
    """The head of one bench row: a ``loss.softmax`` kind or :data:`ADAPTIVE`."""
    if kind == ADAPTIVE:
        return AdaptiveTorch(vocab, emb, splits)
    return build_softmax(kind, vocab, emb, chunk_size=chunk_size, splits=splits)


def build_inputs(
    vocab: int, emb: int, tokens: int, seed: int, device: torch.device
) -> tuple[nn.Linear, Tensor, Tensor, Tensor]:
    """(decoder, h, targets, counts): Zipf-distributed targets over randomly permuted ids, and
    the expected count of every id; every tensor is filled in place (no temporaries)."""
    g = torch.Generator().manual_seed(seed)
    decoder = nn.Linear(emb, vocab, device=device)
    with torch.no_grad():
        decoder.weight.uniform_(-0.1, 0.1, generator=g)
        decoder.bias.zero_()
    zipf = 1.0 / torch.arange(1, vocab + 1, dtype=torch.float64)
    ids = torch.randperm(vocab, generator=g)  # rank -> word id
    targets = ids[torch.multinomial(zipf, tokens, replacement=True, generator=g)]
    counts = torch.empty(vocab, dtype=torch.float64)
    counts[ids] = zipf
    h = torch.randn(tokens, emb, generator=g).to(device).requires_grad_(True)
    return decoder, h, targets.to(device), counts


def train_step(
    head: SoftmaxHead | AdaptiveTorch, decoder: nn.Linear, h: Tensor, targets: Tensor
) -> float:
    """Forward and backward of the mean NLL (gradients of h, W, b and the head's parameters)."""
    for p in (h, *decoder.parameters(), *head.parameters()):
        p.grad = None
    loss = head.nll(decoder, h, targets)
    loss.backward()
    return float(loss.detach())


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset this process's peak resident memory (VmHWM) to the current one (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _status_kb("VmHWM") is not None


def measure_peak(
    kind: str,
    vocab: int,
    emb: int,
    tokens: int,
    chunk_size: int,
    splits: list[int] | None,
    seed: int,
    device: str = "cpu",
) -> dict[str, Any]:
    """One kind's loss and the peak MiB of one step above the inputs (module docstring)."""
    dev = torch.device(device)
    decoder, h, targets, counts = build_inputs(vocab, emb, tokens, seed, dev)
    head = build_head(kind, vocab, emb, chunk_size, splits).to(dev)
    head.order_by_frequency(counts)
    del counts
    torch.ones(64, 64) @ torch.ones(64, 64)  # thread pool and BLAS start-up, not the step's
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        before = torch.cuda.memory_allocated(dev)
        loss = train_step(head, decoder, h, targets)
        peak = torch.cuda.max_memory_allocated(dev) - before
        how = "torch.cuda.max_memory_allocated above memory_allocated before the step"
    elif _reset_peak_rss():
        before = _status_kb("VmRSS") or 0
        loss = train_step(head, decoder, h, targets)
        peak = ((_status_kb("VmHWM") or 0) - before) * 1024
        how = "fresh process per kind: peak RSS (VmHWM, reset before the step) above VmRSS"
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        loss = train_step(head, decoder, h, targets)
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
        how = "fresh process per kind: ru_maxrss after the step above ru_maxrss before"
    return {
        "loss": loss,
        "peak_mb": peak / MIB,
        "memory": how,
        "splits": getattr(head, "splits", None),
    }


def time_rounds(
    kinds: list[str],
    vocab: int,
    emb: int,
    tokens: int,
    chunk_size: int,
    splits: list[int] | None,
    steps: int,
    seed: int,
    device: str = "cpu",
) -> dict[str, list[float]]:
    """Seconds of each kind's step over ``steps`` rounds, the kinds interleaved in this process
    on the same inputs (one untimed warm-up step each first)."""
    dev = torch.device(device)
    decoder, h, targets, counts = build_inputs(vocab, emb, tokens, seed, dev)
    heads = {}
    for kind in kinds:
        heads[kind] = build_head(kind, vocab, emb, chunk_size, splits).to(dev)
        heads[kind].order_by_frequency(counts)
        train_step(heads[kind], decoder, h, targets)
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    for _ in range(steps):
        for kind, head in heads.items():
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            start = time.perf_counter()
            train_step(head, decoder, h, targets)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            times[kind].append(time.perf_counter() - start)
    return times


def _child(spec: dict[str, Any], threads: int) -> dict[str, Any]:
    """:func:`measure_peak` in a fresh Python process (its own peak memory)."""
    cmd = [sys.executable, "-m", "src.benchmarks.softmax", json.dumps(spec), str(threads)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"softmax bench ({spec['kind']}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def softmax_bench(cfg: Any) -> dict[str, Any]:
    """Every kind of ``cfg.softmax.kinds``; figures keyed ``softmax/<kind>/<figure>``."""
    s = cfg.softmax
    splits = None if s.splits is None else [int(x) for x in s.splits]
    base = {
        "vocab": int(s.vocab),
        "emb": int(s.emb),
        "tokens": int(s.tokens),
        "chunk_size": int(s.chunk_size),
        "splits": splits,
        "seed": int(cfg.seed),
        "device": str(cfg.device),
    }
    steps = max(int(s.steps), 1)
    kinds = [str(kind) for kind in s.kinds]
    results = {}
    for kind in kinds:
        spec = {**base, "kind": kind}
        if torch.device(cfg.device).type == "cuda":
            results[kind] = measure_peak(**spec)
        else:
            results[kind] = _child(spec, torch.get_num_threads())
    times = time_rounds(kinds, steps=steps, **base)
    for kind, r in results.items():
        r["seconds"] = statistics.median(times[kind])
        r["tokens_per_s"] = base["tokens"] / r["seconds"]
    figures: dict[str, Any] = {f"softmax/{k}": v for k, v in base.items() if k != "device"}
    figures["softmax/steps"] = steps
    for kind, r in results.items():
        figures["softmax/memory"] = r["memory"]
        if r["splits"] is not None:
            figures["softmax/splits"] = r["splits"]
        for key in ("loss", "peak_mb", "tokens_per_s", "seconds"):
            figures[f"softmax/{kind}/{key}"] = round(r[key], {"loss": 6, "seconds": 4}.get(key, 1))
    if "full" in results and "chunked" in results:
        ratio = results["chunked"]["peak_mb"] / max(results["full"]["peak_mb"], 1e-9)
        figures["softmax/chunked/peak_vs_full"] = round(ratio, 3)
    if "split" in results and ADAPTIVE in results:
        paired = [r / t for r, t in zip(times[ADAPTIVE], times["split"], strict=True)]
        figures[f"softmax/split/vs_{ADAPTIVE}"] = round(statistics.median(paired), 3)
        figures[f"softmax/split/vs_{ADAPTIVE}_rounds"] = [round(x, 3) for x in paired]
        peak = results["split"]["peak_mb"] / max(results[ADAPTIVE]["peak_mb"], 1e-9)
        figures[f"softmax/split/peak_vs_{ADAPTIVE}"] = round(peak, 3)
    print_table(results, base, figures.get("softmax/memory", ""))
    return figures


def print_table(results: dict[str, dict[str, Any]], base: dict[str, Any], how: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"one training step of the loss alone: V={base['vocab']:,}, E={base['emb']}, "
        f"{base['tokens']:,} tokens ({base['device']})"
    )
    for col in ("softmax", "loss", "tokens/s", "peak MiB", "vs full", f"tokens/s vs {ADAPTIVE}"):
        table.add_column(col, justify="right" if col != "softmax" else "left")
    full = results.get("full", {}).get("peak_mb")
    ref = results.get(ADAPTIVE, {}).get("tokens_per_s")
    for kind, r in results.items():
        ratio = f"{r['peak_mb'] / full:.2f}x" if full else "-"
        speed = f"{r['tokens_per_s'] / ref:.2f}x" if ref else "-"
        table.add_row(
            kind,
            f"{r['loss']:.5f}",
            f"{r['tokens_per_s']:,.0f}",
            f"{r['peak_mb']:,.0f}",
            ratio,
            speed,
        )
    Console().print(table)
    print(f"peak memory: {how}")


if __name__ == "__main__":
    torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else torch.get_num_threads())
    print(json.dumps(measure_peak(**json.loads(sys.argv[1]))), flush=True)
