"""Small Lightning callbacks of this project, one job each."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback


class RNGState(Callback):
    """Save every random generator (torch, CUDA, numpy, python) in checkpoints and restore it.

    Dropout masks come from torch's global generator, so a resumed run draws the same masks as
    the uninterrupted one only if the generator state travels with the weights. (The BPTT length
    sampler needs nothing: it is re-seeded from (seed, epoch) and replayed.) States are stored as
    tensors and plain Python values so checkpoints load with ``torch.load(weights_only=True)``.
    """

    def state_dict(self) -> dict[str, Any]:
        name, keys, pos, has_gauss, cached = np.random.get_state()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
            "python": random.getstate(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.set_rng_state(state_dict["torch"])
        if state_dict["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
        name, keys, pos, has_gauss, cached = state_dict["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        random.setstate(state_dict["python"])


class StepCheckpoint(Callback):
    """Write ``<dirpath>/<filename>`` every ``every_n_train_steps`` optimizer steps.

    Lightning's ``ModelCheckpoint(every_n_train_steps=...)`` warns on every save under manual
    optimization; this one just calls ``trainer.save_checkpoint`` after the step (the checkpoint
    IO plugin makes the write atomic). Rank 0 writes; all ranks call, as Lightning requires.
    """

    def __init__(self, dirpath: str, every_n_train_steps: int, filename: str = "last.ckpt") -> None:
        if every_n_train_steps < 0:
            raise ValueError(
                f"every_n_train_steps must be >= 0 (0 disables), got {every_n_train_steps}"
            )
        self.path = Path(dirpath) / filename
        self.every = every_n_train_steps

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        step = trainer.global_step
        if self.every and step > 0 and step % self.every == 0:
            trainer.save_checkpoint(self.path)


class ValidateAtMaxSteps(Callback):
    """A run stopped by ``trainer.max_steps`` in the middle of an epoch validates (and so writes
    ``best.ckpt`` / ``last.ckpt`` and ``val/*`` in ``results.json``) at its last step.

    Lightning ends such a run without validating; marking it ``should_stop`` at the last step
    makes the epoch loop run validation after that batch, as it does for an early stop.
    """

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if 0 < trainer.max_steps <= trainer.global_step:
            trainer.should_stop = True
