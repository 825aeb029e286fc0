"""The ``pointer`` and ``dynamic`` options of ``python -m src.eval`` and the code that runs them.

    python -m src.eval ckpt_path=PATH pointer.enabled=true pointer.window=500 pointer.theta=1.0
        pointer.lam=0.1
    python -m src.eval ckpt_path=PATH dynamic.enabled=true dynamic.lr=1.0 dynamic.bptt=5

Each extra reports its perplexity beside the plain model's (``pointer_ppl``, ``dynamic_ppl``,
and ``*_bpc`` on character-level corpora), scored on the same split and streams.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch

from src.data.bptt import WindowIterable
from src.data.datamodule import LMDataModule
from src.evaluation.dynamic import dynamic_evaluate
from src.evaluation.pointer import evaluate_pointer
from src.evaluation.scoring import Score
from src.models.awd import AWDLSTM


@dataclass
class PointerOptions:
    """Continuous cache pointer (Grave et al. 2016); salesforce's PTB values as defaults
    (WikiText-2: window 3785, theta 0.6625, lam 0.1279)."""

    enabled: bool = False
    window: int = 500  # positions remembered per stream
    theta: float = 1.0  # inverse temperature of the attention over the cache
    lam: float = 0.1  # lambda, the cache's weight in the mixture


@dataclass
class DynamicOptions:
    """Dynamic evaluation by SGD (Krause et al. 2018): score a segment, then adapt on it."""

    enabled: bool = False
    lr: float = 1.0  # SGD step on each segment's mean loss
    bptt: int | None = None  # segment length (default: the checkpoint's data.bptt)
    decay: float = 0.0  # pull toward the trained weights after each step (0: off)
    clip: float = 0.0  # gradient norm clip per step (0: off)


def split_streams(datamodule: LMDataModule, split: str) -> Any:
    """The (B, N) token streams of ``split`` (valid | test) as the datamodule cut them."""
    loader = datamodule.val_dataloader() if split == "valid" else datamodule.test_dataloader()
    return loader.dataset.streams


def pick_device(accelerator: str) -> torch.device:
    if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def _metrics(prefix: str, score: Score, char_level: bool) -> dict[str, float]:
    out = {f"{prefix}_loss": score.loss, f"{prefix}_ppl": score.ppl}
    if char_level:
        out[f"{prefix}_bpc"] = score.loss / math.log(2)
    return out


def run_extras(
    model: AWDLSTM,
    datamodule: LMDataModule,
    split: str,
    pointer: Any,
    dynamic: Any,
    *,
    device: torch.device | None = None,
) -> dict[str, Any]:
    """Run the enabled extras on ``split``; return their metrics (empty when none is enabled).

    ``pointer`` / ``dynamic``: :class:`PointerOptions` / :class:`DynamicOptions` or the same
    keys in a DictConfig. The model itself is left as it was (dynamic evaluation adapts a copy).
    """
    results: dict[str, Any] = {}
    if not (pointer.enabled or dynamic.enabled):
        return results
    device = device or torch.device("cpu")
    streams = split_streams(datamodule, split)
    bptt = int(datamodule.bptt)
    char = bool(datamodule.char_level)
    if pointer.enabled:
        model = model.to(device)
        scored = evaluate_pointer(
            model,
            WindowIterable(streams, bptt),
            window=int(pointer.window),
            theta=float(pointer.theta),
            lam=float(pointer.lam),
        )
        results.update(_metrics("pointer", scored.pointer, char))
        results["pointer_options"] = {
            "window": int(pointer.window),
            "theta": float(pointer.theta),
            "lambda": float(pointer.lam),
        }
    if dynamic.enabled:
        adapted = copy.deepcopy(model).to(device)
        segment = int(dynamic.bptt or bptt)
        scored = dynamic_evaluate(
            adapted,
            WindowIterable(streams, segment),
            lr=float(dynamic.lr),
            decay=float(dynamic.decay),
            clip=float(dynamic.clip),
        )
        results.update(_metrics("dynamic", scored, char))
        results["dynamic_options"] = {
            "lr": float(dynamic.lr),
            "bptt": segment,
            "decay": float(dynamic.decay),
            "clip": float(dynamic.clip),
        }
    return results


def describe(results: dict[str, Any]) -> str:
    """One line per extra, e.g. ``pointer (window 500, theta 1, lambda 0.1): perplexity 95.1``."""
    lines = []
    for name in ("pointer", "dynamic"):
        if f"{name}_ppl" not in results:
            continue
        opts = ", ".join(f"{k} {v:g}" for k, v in results[f"{name}_options"].items())
        line = f"{name} ({opts}): loss {results[f'{name}_loss']:.4f}  "
        line += f"perplexity {results[f'{name}_ppl']:.2f}"
        if f"{name}_bpc" in results:
            line += f"  bpc {results[f'{name}_bpc']:.4f}"
        lines.append(line)
    return "\n".join(lines)
