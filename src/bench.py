"""Speed benchmark: ``python -m src.bench [shape=tiny|ptb|wt2] [device=cpu|cuda] [variants=[...]]``.

Times one full training step (forward, AR/TAR, backward, clip, optimizer step) and one evaluation
step of each model variant beside a raw ``torch.nn.LSTM`` stack of the same shapes without dropout
(the reference), in the same process, after warm-up. Rounds interleave the variants and the median
is reported, because shared machines are noisy. Prints a table, then one JSON object of every
figure as the last line. The ``gru`` variant's ratio is against a raw ``nn.GRU`` stack of the same
shapes (row ``raw_gru``); ``qrnn``'s against the raw ``nn.LSTM`` stack like the others (torch has
no QRNN layer).

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
* ``softmax_bench=true``: one training step of the loss alone (forward and backward) for each
  ``loss.softmax`` kind at V = 267,735, E = 400, 1,400 tokens (``softmax.*``): loss, tokens/s
  and peak memory of the step beside torch's adaptive softmax (``src.benchmarks.softmax``; speed
  interleaved in one process, peak memory in a fresh process per kind on CPU).
"""

from __future__ import annotations

import json
import statistics
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from src.benchmarks.cache import cache_bench
from src.benchmarks.engine import engine_bench
from src.benchmarks.softmax import softmax_bench
from src.benchmarks.steps import (
    AMP_DTYPES,
    AMP_TARGETS,
    FP32_TWIN,
    REFERENCES,
    SHAPES,
    VARIANTS,
    Timed,
    model_steps,
    raw_steps,
    reference_of,
    tokens_per_second,
)
from src.utils.cpu import numerics


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
    if amp is not None and cfg.get("amp_twins", True):  # each variant in float32: its speed-up
        for name in [n for n in cfg.variants if n in builders]:
            builders[name + FP32_TWIN] = model_steps(
                shape, VARIANTS[name], device, dtype, None, bool(cfg.compile_cell)
            )
    for name in list(builders):  # the other raw stacks the variants are measured against
        if reference_of(name) not in builders:
            builders[reference_of(name)] = raw_steps(
                shape, device, dtype, rnn=REFERENCES[reference_of(name)]
            )
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
    figures: dict[str, Any] = {
        "device": describe(device),
        "shape": cfg.shape,
        **{"shape_" + k: v for k, v in shape.items()},
        "dtype": cfg.dtype,
        "amp": cfg.amp,
        "tf32": bool(cfg.tf32),
        "compile_cell": bool(cfg.compile_cell),
        "threads": torch.get_num_threads(),
        **numerics(),  # cpu_capability, amx, mkl_code_path: which kernels made these figures
        "skipped": skipped,
    }
    for name, t in timed.items():
        ref = timed[reference_of(name)]
        figures[f"{name}/train_tokens_per_s"] = round(t.train_tps, 1)
        figures[f"{name}/eval_tokens_per_s"] = round(t.eval_tps, 1)
        figures[f"{name}/train_ratio"] = round(t.train_tps / ref.train_tps, 3)
        figures[f"{name}/eval_ratio"] = round(t.eval_tps / ref.eval_tps, 3)
    if amp is not None:
        figures.update(amp_speedups(timed, list(cfg.variants)))
    print_table(timed, figures)
    if cfg.engine:
        figures.update(engine_bench(cfg, shape))
    if cfg.cache_bench:
        figures.update(cache_bench(cfg))
    if cfg.get("softmax_bench"):
        figures.update(softmax_bench(cfg))
    return figures


def amp_speedups(timed: dict[str, Timed], variants: list[str]) -> dict[str, Any]:
    """``<variant>/amp_{train,eval}_speedup``: tokens/s under autocast over its float32 twin's
    (same process, same rounds), with :data:`AMP_TARGETS` beside where the issue set one."""
    figures: dict[str, Any] = {}
    for name in variants:
        twin = timed.get(name + FP32_TWIN)
        if name not in timed or twin is None:
            continue
        figures[f"{name}/amp_train_speedup"] = round(timed[name].train_tps / twin.train_tps, 3)
        figures[f"{name}/amp_eval_speedup"] = round(timed[name].eval_tps / twin.eval_tps, 3)
        if name in AMP_TARGETS:
            figures[f"{name}/amp_train_speedup_target"] = AMP_TARGETS[name]
    return figures


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def print_table(timed: dict[str, Timed], figures: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"tokens/s on {figures['device']}, shape {figures['shape']} "
        f"({figures['dtype']}, amp {figures['amp']}); ratio = variant / its raw stack (column "
        f"vs: raw nn.LSTM or nn.GRU layers, {figures['dtype']})"
    )
    for col in ("variant", "vs", "train tok/s", "train ratio", "eval tok/s", "eval ratio"):
        table.add_column(col, justify="right" if col not in ("variant", "vs") else "left")
    for name, t in timed.items():
        ref = timed[reference_of(name)]
        table.add_row(
            name,
            reference_of(name),
            f"{t.train_tps:,.0f}",
            f"{t.train_tps / ref.train_tps:.2f}x",
            f"{t.eval_tps:,.0f}",
            f"{t.eval_tps / ref.eval_tps:.2f}x",
        )
    Console().print(table)
    for name, why in figures["skipped"].items():
        print(f"skipped {name}: {why}")
    for key, value in figures.items():
        if key.endswith("/amp_train_speedup"):
            name = key.split("/")[0]
            target = figures.get(f"{key}_target")
            goal = f" (target >= {target} on AMX CPUs)" if target else ""
            print(f"{name}: training under amp at {value:.2f}x its float32 twin{goal}")


@hydra.main(version_base="1.3", config_path="../conf", config_name="bench")
def main(cfg: DictConfig) -> None:
    figures = run(cfg)
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
