"""The int8 integer engine's evaluation against the float model's, on the CPU."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import torch
from omegaconf import DictConfig

from src.evaluation.scoring import target_log_probs
from src.models.awd import AWDLSTM
from src.quant.config import QuantConfig
from src.quant.integer import convert as qconvert
from src.quant.integer import export as qexport
from src.quant.integer import kernel as int_kernel
from src.quant.qat import prepare
from src.training.loss import lm_loss

from .runtime import RuntimeScorer
from .steps import random_batch, shape_config, tokens_per_second

#: the C kernel's build (``Kernel.isa``, ``AWD_INT8_ISA``) -> the bench's path name
_PATHS = {"avx512-vnni": "c-vnni", "avx2": "c-avx2", "generic": "c"}
#: issue 23's targets, printed beside each measured ratio: int8 / float evaluation at batch 1
#: and 10, and the C runtime / ``engine=int8`` at batch 1
TARGETS = {"b1/int8_ratio": 2.0, "b10/int8_ratio": 1.5, "b1/runtime_ratio": 1.5}


def trained_qat_model(shape: dict[str, int], steps: int, cell: str = "lstm") -> AWDLSTM:
    """A QAT AWD-LSTM (or mLSTM) of ``shape`` after ``steps`` SGD steps (the observers need
    data to export), in eval mode on the CPU. Its accuracy is irrelevant: speed is
    data-independent."""
    model = prepare(AWDLSTM(shape_config(shape, cell=cell)), QuantConfig(enabled=True))
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
    int_model, _ = qconvert.convert(trained_qat_model(shape, cfg.engine_train_steps, cell))
    qexport.expand_tables(int_model)
    kern = int_kernel.load() if int_kernel.enabled() else None
    probe = [(torch.zeros(1, 1, lay.input_size, dtype=torch.int8), lay) for lay in int_model.layers]
    if kern is not None and all(lay.kernel_usable(x, *lay.init_state(1)) for x, lay in probe):
        path = _PATHS.get(kern.isa, "c")  # every layer runs its window in the C kernel
    else:
        path = "torch"
    steps = {b: engine_steps(shape, b, bptt, float_model, int_model) for b in batches}
    samples = {b: {"float": [], "int8": []} for b in batches}
    runtime = _runtime(cfg, cell, batches, int_model, bptt)
    runtime_tps: list[float] = []
    for float_eval, int8_eval in steps.values():
        for _ in range(cfg.warmup):
            float_eval()
            int8_eval()
    for _ in range(cfg.rounds):
        for b, (float_eval, int8_eval) in steps.items():
            samples[b]["float"].append(tokens_per_second(float_eval, b * bptt, cfg.steps, cpu))
            samples[b]["int8"].append(tokens_per_second(int8_eval, b * bptt, cfg.steps, cpu))
        if runtime is not None:  # interleaved with the rounds: the same load on the machine
            runtime_tps.append(runtime.tokens_per_second())
    if runtime is not None:
        runtime.close()
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
    if runtime_tps:
        r_tps, i_tps = statistics.median(runtime_tps), rows[batches.index(1)][2]
        figures[f"{prefix}/b1/runtime_tokens_per_s"] = round(r_tps, 1)
        figures[f"{prefix}/b1/runtime_ratio"] = round(r_tps / i_tps, 3)
    for key, target in TARGETS.items():
        if f"{prefix}/{key}" in figures:
            figures[f"{prefix}/{key}_target"] = target
    print_engine_table(rows, bptt, path, cell)
    if runtime_tps:
        r_tps, ratio = (figures[f"{prefix}/b1/runtime_{k}"] for k in ("tokens_per_s", "ratio"))
        print(
            f"C runtime (awd_int8 score, batch 1): {r_tps:,.0f} tokens/s, {ratio:.2f}x "
            f"engine=int8 (target >= {TARGETS['b1/runtime_ratio']})"
        )
    return figures


def _runtime(
    cfg: DictConfig, cell: str, batches: list[int], int_model: Any, bptt: int
) -> RuntimeScorer | None:
    """The C runtime beside the LSTM engine at batch 1 (``engine_runtime``; needs a compiler)."""
    if cell != "lstm" or 1 not in batches or not cfg.get("engine_runtime", True):
        return None
    if int_kernel.compiler() is None:
        return None
    return RuntimeScorer(int_model, tokens=max(64, bptt * cfg.steps * 4), seed=int(cfg.seed))


def print_engine_table(
    rows: list[tuple[int, float, float]], bptt: int, path: str, cell: str = "lstm"
) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"{cell}: evaluation tokens/s on cpu ({torch.get_num_threads()} threads), bptt "
        f"{bptt}: int8 engine ({path} recurrence) vs float model; target ratio >= "
        f"{TARGETS['b1/int8_ratio']} at batch 1, {TARGETS['b10/int8_ratio']} at 10"
    )
    for col in ("batch", "float tok/s", "int8 tok/s", "int8 / float"):
        table.add_column(col, justify="right")
    for b, f_tps, i_tps in rows:
        table.add_row(str(b), f"{f_tps:,.0f}", f"{i_tps:,.0f}", f"{i_tps / f_tps:.2f}x")
    Console().print(table)
