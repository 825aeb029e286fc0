"""`ElapsedTime`: log wall-clock time since training started, so curves can be drawn against time.

The value goes into every logged training row and every validation row (``time/elapsed_s``),
validation time included. The count survives a resume: it is kept in the checkpoint.
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

METRIC = "time/elapsed_s"


class ElapsedTime(Callback):
    """Log ``time/elapsed_s`` (seconds of training wall time, resumed runs continue the count)."""

    def __init__(self) -> None:
        self._offset = 0.0  # seconds spent before this process started training (resume)
        self._start: float | None = None

    def elapsed(self) -> float:
        now = time.perf_counter()
        return self._offset + (now - self._start if self._start is not None else 0.0)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        pl_module.log(METRIC, self.elapsed(), on_step=True, on_epoch=False, batch_size=1)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        pl_module.log(METRIC, self.elapsed(), on_step=False, on_epoch=True, batch_size=1)

    def state_dict(self) -> dict[str, float]:
        return {"elapsed_s": self.elapsed()}

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        self._offset = float(state_dict.get("elapsed_s", 0.0))
