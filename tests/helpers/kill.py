"""A test-only callback that kills its own process with SIGKILL after a given optimizer step."""

from __future__ import annotations

import os
import signal
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback


class KillAtStep(Callback):
    """SIGKILL (no cleanup, no exception handlers) once ``trainer.global_step == step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class ForceASGD(Callback):
    """Switch to averaged SGD after the first validation (as if the NT trigger fired)."""

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not pl_module.asgd_active and trainer.current_epoch == 0:
            pl_module._switch_to_asgd()
