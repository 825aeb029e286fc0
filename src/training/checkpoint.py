"""Load a training checkpoint back into its module (:class:`LMModule` or, for ``task=classify``,
:class:`ClassifierModule`), with errors a person can act on."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from src.training.classify_module import ClassifierModule
from src.training.module import LMModule


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Read a Lightning checkpoint file; name the problem and the fix when it is unusable."""
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} does not exist; pass ckpt_path=<run dir>/checkpoints/best.ckpt"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError) as exc:
        raise ValueError(
            f"checkpoint {path} is corrupt or truncated ({type(exc).__name__}: {exc}); "
            "use another checkpoint of the run (last.ckpt / best.ckpt) or retrain"
        ) from exc
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise ValueError(f"{path} is not a checkpoint written by src.train (no hyper_parameters)")
    return ckpt


def is_classifier(ckpt: dict[str, Any]) -> bool:
    """A ``task=classify`` checkpoint (its hyperparameters have ``num_classes``)."""
    return "num_classes" in ckpt.get("hyper_parameters", {})


def load_classifier(path: Path) -> tuple[ClassifierModule, dict[str, Any]]:
    """A classifier checkpoint's module in eval mode, with its ``vocab`` and ``classes``."""
    ckpt = read_checkpoint(path)
    if not is_classifier(ckpt):
        raise ValueError(f"{path} is a language model (task=lm), not a classifier")
    return _restore(ClassifierModule(**ckpt["hyper_parameters"]), ckpt, path), ckpt


def _restore(module: Any, ckpt: dict[str, Any], path: Path) -> Any:
    """``module`` with the checkpoint's weights and extras (vocabulary, ...), in eval mode."""
    try:
        module.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise ValueError(
            f"checkpoint {path} does not match the model its hyperparameters describe: {exc}"
        ) from exc
    module.on_load_checkpoint(ckpt)
    module.eval()
    return module


def load_module(path: Path) -> tuple[LMModule, dict[str, Any]]:
    """Rebuild the module from the checkpoint's hyperparameters and load its weights."""
    ckpt = read_checkpoint(path)
    if is_classifier(ckpt):
        raise ValueError(
            f"{path} is a classifier (task=classify); this entry point reads language models. "
            "A classifier's test metrics are in its run's results.json"
        )
    return _restore(LMModule(**ckpt["hyper_parameters"]), ckpt, path), ckpt
