"""Checkpoint files written atomically: a killed run never leaves a half-written checkpoint.

Lightning's default writer goes through an fsspec transaction whose temporary file lives in the
system temp folder; when that is another filesystem the final move is a copy, and a kill during
the copy truncates ``best.ckpt``. Here the temporary file sits next to the target and is renamed
over it (``os.replace``), which POSIX makes atomic.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from src.utils.io import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose saves are temp-file + fsync + rename in the same folder."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(
                f"{type(self).__name__} does not take storage_options, got {storage_options!r}"
            )
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)
