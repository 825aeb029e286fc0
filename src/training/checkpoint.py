"""Load a training checkpoint back into an :class:`LMModule`, with errors a person can act on."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

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


def load_module(path: Path) -> tuple[LMModule, dict[str, Any]]:
    """Rebuild the module from the checkpoint's hyperparameters and load its weights."""
    ckpt = read_checkpoint(path)
    if "num_classes" in ckpt["hyper_parameters"]:
        raise ValueError(
            f"{path} is a classifier (task=classify); this entry point reads language models. "
            "A classifier's test metrics are in its run's results.json"
        )
    module = LMModule(**ckpt["hyper_parameters"])
    try:
        module.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise ValueError(
            f"checkpoint {path} does not match the model its hyperparameters describe: {exc}"
        ) from exc
    module.on_load_checkpoint(ckpt)
    module.eval()
    return module, ckpt
