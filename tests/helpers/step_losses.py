"""A test-only callback that records every training step's loss on every rank to a JSON file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback


class StepLosses(Callback):
    """Write ``<default_root_dir>/step_losses_rank<r>.json``: this rank's loss at each step.

    Under DDP each rank's loss is the mean over its own shard of the streams; with equal shards
    their mean is the loss of the whole batch (what a single process computes).
    """

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(float(loss))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        path = Path(trainer.default_root_dir) / f"step_losses_rank{trainer.global_rank}.json"
        path.write_text(json.dumps(self.losses))
