"""The value rules of :mod:`src.checks`: what each key accepts, by full key.

A rule is the phrase shown after "expected" and a predicate on the resolved value; ``*`` in a
key matches any part (``callbacks.*.mode``). The schemas' own checks (``AWDLSTMConfig``,
``MLSTMOptions``, ``QuantConfig``, ``LMDataModule``) are not repeated here: they are run by
building those objects from the config.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Rule:
    accepted: str
    ok: Callable[[Any], bool]
    nullable: bool = False


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def integer(lo: int | None = None, hi: int | None = None) -> Callable[[Any], bool]:
    return lambda v: _is_int(v) and (lo is None or v >= lo) and (hi is None or v <= hi)


def number(lo: float | None = None, hi: float | None = None, hi_open: bool = False) -> Callable:
    def ok(v: Any) -> bool:
        if not _is_num(v) or (lo is not None and v < lo):
            return False
        return hi is None or (v < hi if hi_open else v <= hi)

    return ok


def one_of(*choices: Any) -> Callable[[Any], bool]:
    return lambda v: v in choices


def _nonempty_str(v: Any) -> bool:
    return isinstance(v, str) and bool(v.strip())


def _betas(v: Any) -> bool:
    return isinstance(v, list) and len(v) == 2 and all(number(0, 1, hi_open=True)(b) for b in v)


def _int_list(v: Any) -> bool:
    return isinstance(v, list) and all(integer(0)(e) for e in v)


def _batches(v: Any) -> bool:  # Lightning's limit_*_batches: a count or a fraction
    return integer(0)(v) or (isinstance(v, float) and 0.0 <= v <= 1.0)


def _interval(v: Any) -> bool:  # val_check_interval: a count of batches or a fraction of an epoch
    return integer(1)(v) or (isinstance(v, float) and 0.0 < v <= 1.0)


def _devices(v: Any) -> bool:
    if v == "auto" or v == -1 or integer(1)(v):
        return True
    if isinstance(v, list):
        return bool(v) and all(integer(0)(d) for d in v)
    return (
        isinstance(v, str) and re.fullmatch(r"-1|\d+|(\d+\s*,\s*)*\d+\s*,?", v.strip()) is not None
    )


#: Lightning's ``ckpt_path`` shortcuts for ``fit`` (not files)
CKPT_SHORTCUTS = ("last", "hpc", "registry")


def _checkpoint(v: Any) -> bool:
    if not _nonempty_str(v):
        return False
    if v in CKPT_SHORTCUTS or v.startswith("registry:") or "://" in v:
        return True
    return Path(v).expanduser().exists()  # a folder: named by src.checks.machine


def _checkpoints(v: Any) -> bool:
    """One checkpoint file, or a non-empty list of them (an ensemble of classifiers)."""
    if isinstance(v, (list, tuple)):
        return bool(v) and all(_checkpoint(p) and Path(p).expanduser().is_file() for p in v)
    return _checkpoint(v)


def lightning_choices() -> tuple[list[str], list[Any], list[str]]:
    """Lightning's accelerator names, precision values and registered strategies."""
    import typing

    from lightning.fabric.connector import _PRECISION_INPUT
    from lightning.pytorch.accelerators import AcceleratorRegistry
    from lightning.pytorch.strategies import StrategyRegistry

    accelerators = sorted({*AcceleratorRegistry.available_accelerators(), "gpu", "auto"})
    precisions = [p for lit in typing.get_args(_PRECISION_INPUT) for p in typing.get_args(lit)]
    strategies = ["auto", *StrategyRegistry.available_strategies()]
    return accelerators, precisions, strategies


FRACTION_OR_COUNT = "an integer >= 0 (batches) or a fraction in [0.0, 1.0]"
NONNEG = "a finite number >= 0"

OPTIM_RULES = {
    "optim.lr": Rule(NONNEG, number(0)),
    "optim.weight_decay": Rule(NONNEG, number(0)),
    "optim.betas": Rule("two numbers in [0, 1), e.g. [0.9,0.999]", _betas),
    # should_switch_to_asgd compares with min(history[:-nonmono]): 0 would be an empty window
    "optim.nonmono": Rule("an integer >= 1 (epochs the NT-ASGD trigger looks back)", integer(1)),
    "optim.when": Rule("a list of epoch numbers (integers >= 0), e.g. [100,150]", _int_list),
    "optim.clip": Rule(f"{NONNEG} (0 disables clipping)", number(0)),
    "optim.lr_decay_per_group": Rule(
        "a number > 0 (group k of n trains at lr / F^(n-1-k); ULMFiT: 2.6)", number(1e-12)
    ),
    "scheduler.total_steps": Rule("null or an integer >= 1", integer(1), True),
    "scheduler.cut_frac": Rule("a number in (0, 1)", lambda v: _is_num(v) and 0 < v < 1),
    "scheduler.ratio": Rule("a number >= 1", number(1)),
    "scheduler.pct_start": Rule("a number in (0, 1)", lambda v: _is_num(v) and 0 < v < 1),
    "scheduler.div_factor": Rule("a number > 0", number(1e-12)),
    "scheduler.final_div_factor": Rule("a number > 0", number(1e-12)),
    "scheduler.anneal_strategy": Rule("cos or linear", one_of("cos", "linear")),
    "transfer.gradual_unfreeze": Rule("true or false", one_of(True, False)),
    "transfer.ckpt_path": Rule(
        "null or the path of a language-model checkpoint (.ckpt) that exists",
        lambda v: isinstance(v, str) and Path(v).is_file(),
        True,
    ),
}


def _splits(v: Any) -> bool:  # frequency ranks where the split softmax's tails start
    return _int_list(v) and all(a < b for a, b in zip([0, *v], v, strict=False))


LOSS_RULES = {
    "loss.alpha": Rule(f"{NONNEG} (AR weight)", number(0)),
    "loss.beta": Rule(f"{NONNEG} (TAR weight)", number(0)),
    "loss.chunk_size": Rule("an integer >= 1 (tokens per chunk, loss.softmax=chunked)", integer(1)),
    "loss.splits": Rule(
        "null or strictly increasing integers >= 1 (frequency ranks where the split softmax's "
        "tails start), e.g. [2800,20000,76000]",
        _splits,
        True,
    ),
}


def loss_cross_rules(data: dict[str, Any]) -> list[tuple[str, Any, str]]:
    """(key, value, accepted): ``loss.softmax`` against the model transforms that support it."""
    softmax = (data.get("loss") or {}).get("softmax", "full")
    if softmax != "full" and (data.get("quant") or {}).get("enabled"):
        accepted = (
            "full with quant=qat (its fake-quantized decoder and the int8 engine compute the "
            "full softmax; chunked and split train float models)"
        )
        return [("loss.softmax", softmax, accepted)]
    return []


def trainer_rules() -> dict[str, Rule]:
    accelerators, precisions, strategies = lightning_choices()
    return {
        "trainer.max_epochs": Rule("an integer >= -1 (-1: no limit)", integer(-1), True),
        "trainer.min_epochs": Rule("an integer >= 0", integer(0), True),
        "trainer.max_steps": Rule("an integer >= -1 (-1: no limit)", integer(-1)),
        "trainer.min_steps": Rule("an integer >= 0", integer(0), True),
        "trainer.limit_*_batches": Rule(FRACTION_OR_COUNT, _batches, True),
        "trainer.val_check_interval": Rule(
            "an integer >= 1 (batches) or a fraction in (0.0, 1.0]", _interval, True
        ),
        "trainer.check_val_every_n_epoch": Rule("an integer >= 1", integer(1), True),
        "trainer.log_every_n_steps": Rule("an integer >= 1", integer(1), True),
        "trainer.num_sanity_val_steps": Rule("an integer >= -1 (-1: all)", integer(-1), True),
        "trainer.accumulate_grad_batches": Rule(
            "1: training steps once per batch by hand (variable BPTT scales each step's rate, "
            "NT-ASGD swaps optimizers), which Lightning cannot accumulate",
            one_of(1),
        ),
        "trainer.gradient_clip_val": Rule(NONNEG, number(0), True),
        "trainer.num_nodes": Rule("an integer >= 1", integer(1)),
        "trainer.devices": Rule(
            "an integer >= 1, -1 (all), auto, a list of device indices or a string like '0,1'",
            _devices,
        ),
        "trainer.accelerator": Rule(f"one of {', '.join(accelerators)}", one_of(*accelerators)),
        "trainer.precision": Rule(
            f"one of {', '.join(dict.fromkeys(map(str, precisions)))}", one_of(*precisions), True
        ),
        "trainer.strategy": Rule(
            "auto, a registered strategy (ddp, ddp_spawn, fsdp, ...) or a _target_ node",
            lambda v: isinstance(v, dict) or v in strategies,
        ),
        "trainer.deterministic": Rule("true, false or warn", one_of(True, False, "warn"), True),
        "trainer.enable_*": Rule("true or false", one_of(True, False)),
        "trainer.benchmark": Rule("true or false", one_of(True, False), True),
        "trainer.default_root_dir": Rule("a folder path", _nonempty_str, True),
    }


GROUP_RULES = {
    # callbacks and loggers, by argument name (instantiated with these keyword arguments)
    "callbacks.*.every_n_train_steps": Rule("an integer >= 0 (0 disables)", integer(0), True),
    "callbacks.*.every_n_epochs": Rule("an integer >= 0 (0 disables)", integer(0), True),
    "callbacks.*.save_top_k": Rule("an integer >= -1 (-1: keep all)", integer(-1)),
    "callbacks.*.mode": Rule("min or max", one_of("min", "max")),
    "callbacks.*.monitor": Rule("a metric name such as val/loss", _nonempty_str, True),
    "callbacks.*.nonmono": Rule("an integer >= 1", integer(1)),
    "callbacks.*.ckpt_path": Rule("an existing checkpoint file", _checkpoint),
    "callbacks.*.dirpath": Rule("a folder path", _nonempty_str, True),
    "callbacks.*.filename": Rule("a file name", _nonempty_str, True),
    "logger.*.offline": Rule("true or false", one_of(True, False)),
    "logger.*.save_dir": Rule("a folder path", _nonempty_str),
    "logger.*.log_model": Rule("true, false or all", one_of(True, False, "all")),
    "paths.*": Rule("a non-empty path", _nonempty_str),
}

TRAIN_TOP_RULES = {
    "seed": Rule("an integer in [0, 4294967295]", integer(0, 2**32 - 1)),
    "task_name": Rule("a non-empty name", _nonempty_str),
    "ckpt_path": Rule(
        "null, an existing checkpoint file, or one of " + ", ".join(CKPT_SHORTCUTS),
        _checkpoint,
        True,
    ),
}

EVAL_RULES = {
    "ckpt_path": Rule(
        "an existing checkpoint file (ckpt_path=PATH), or a list of classifier checkpoints "
        "(ckpt_path=[fwd.ckpt,bwd.ckpt])",
        _checkpoints,
    ),
    "batch_size": Rule("null or an integer >= 1", integer(1), True),
    "out": Rule("null or a file path", _nonempty_str, True),
    "pointer.window": Rule("an integer >= 1", integer(1)),
    "pointer.theta": Rule("a finite number", number()),
    "pointer.lam": Rule("a number in [0, 1]", number(0, 1)),
    "dynamic.lr": Rule(NONNEG, number(0)),
    "dynamic.bptt": Rule("null or an integer >= 1", integer(1), True),
    "dynamic.decay": Rule(NONNEG, number(0)),
    "dynamic.clip": Rule(f"{NONNEG} (0: off)", number(0)),
}
EXPORT_RULES = {
    "ckpt_path": Rule("an existing QAT checkpoint file (ckpt_path=PATH)", _checkpoint),
    "format": Rule("one of int8, c, onnx", one_of("int8", "c", "onnx")),
    "out": Rule("null or a file path (a folder for format=c)", _nonempty_str, True),
}
GENERATE_RULES = {
    "ckpt_path": Rule("an existing checkpoint file (ckpt_path=PATH)", _checkpoint),
    "tokens": Rule("an integer >= 0", integer(0)),
    "temperature": Rule(f"{NONNEG} (0: most likely token)", number(0)),
}


def eval_rules() -> dict[str, Rule]:
    accelerators, _, _ = lightning_choices()
    return {
        **EVAL_RULES,
        "engine": Rule("one of float, int8, onnxruntime", one_of("float", "int8", "onnxruntime")),
        "accelerator": Rule(f"one of {', '.join(accelerators)}", one_of(*accelerators)),
    }


def eval_cross_rules(data: dict[str, Any]) -> list[tuple[str, Any, str]]:
    """(key, value, accepted) for the eval keys that depend on each other (engine, file)."""
    engine, ckpt = data.get("engine"), str(data.get("ckpt_path") or "")
    if engine == "onnxruntime" and not ckpt.endswith(".onnx"):
        accepted = "an .onnx file written by python -m src.export format=onnx (engine=onnxruntime)"
        return [("ckpt_path", data.get("ckpt_path"), accepted)]
    if engine != "onnxruntime" and ckpt.endswith(".onnx"):
        return [("engine", engine, "onnxruntime for an .onnx file")]
    extras = [k for k in ("pointer", "dynamic") if (data.get(k) or {}).get("enabled")]
    if engine == "onnxruntime" and extras:
        return [("engine", engine, f"float with {extras[0]}.enabled=true")]
    return []


def export_cross_rules(data: dict[str, Any]) -> list[tuple[str, Any, str]]:
    """(key, value, accepted) for ``out`` against ``format``."""
    fmt, out = data.get("format"), data.get("out")
    if not isinstance(out, str) or not out.strip():
        return []
    if fmt == "c" and Path(out).expanduser().is_file():
        return [("out", out, "a folder for format=c (model.bin and the runtime's sources)")]
    if fmt == "onnx" and not out.endswith(".onnx"):
        return [("out", out, "a file name ending in .onnx for format=onnx")]
    if fmt == "int8" and Path(out).expanduser().is_dir():
        return [("out", out, "a file path for format=int8 (a folder is for format=c)")]
    return []


def task_cross_rules(data: dict[str, Any]) -> list[tuple[str, Any, str]]:
    """(key, value, message) for what each ``task`` refuses: a bidirectional language model,
    labelled sections for a language model (``data=csv`` is its target text; not with ``char``)
    and a corpus for a classifier, the other task's parameter groups, and QAT or NT-ASGD for a
    classifier (the first that applies)."""
    task = (data.get("task") or {}).get("name", "lm")
    values = data.get("data") if isinstance(data.get("data"), dict) else {}
    model, optim = data.get("model") or {}, data.get("optim") or {}
    labelled = "format" in values
    groups = optim.get("groups", "single")
    if task == "lm" and model.get("bidirectional", False):
        msg = (
            "the language-model objective (task=lm) cannot train a bidirectional encoder: its "
            "backward direction would see the targets; use task=classify"
        )
        return [("model.bidirectional", True, msg)]
    if task == "lm" and labelled and values["format"] != "csv":
        msg = "labelled documents: train a classifier on them with task=classify"
        return [("data.format", values["format"], msg)]
    if task == "lm" and labelled and values.get("tokenizer") == "char":
        msg = "expected word, wikitext or fastai for task=lm data=csv"
        return [("data.tokenizer", "char", msg)]
    if task == "lm" and groups == "clas_split":
        return [("optim.groups", groups, "expected single or lm_split with task=lm")]
    if task != "classify":
        return []
    if not labelled:
        msg = "task=classify reads labelled documents: data=wt2_sections or data=csv"
        return [("data.corpus", values.get("corpus"), msg)]
    if groups == "lm_split":
        return [("optim.groups", groups, "expected single or clas_split with task=classify")]
    if (data.get("quant") or {}).get("enabled", False):
        msg = "quantization-aware training is for task=lm only, not task=classify"
        return [("quant.enabled", True, msg)]
    if optim.get("name", "sgd") == "sgd" and optim.get("nt_asgd", False):
        msg = "task=classify trains without NT-ASGD: set optim.nt_asgd=false or use optim=adam"
        return [("optim.nt_asgd", True, msg)]
    return []
