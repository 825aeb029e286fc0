"""Exact mid-epoch resume for a datamodule whose training loader can skip its first batches.

Lightning 2 checkpoints a datamodule's ``state_dict``; the language-model and the labelled
datamodules both record there which epoch the training pass is in and how many of its batches
the model was handed, and skip that many when the same epoch restarts after a resume.
"""

from __future__ import annotations

from typing import Any


class TrainPosition:
    """Mixin for a ``LightningDataModule``: the training position, saved and restored.

    The training loader calls :meth:`_start_train_pass` when a pass begins (the batches to
    skip) and :meth:`_trainer_epoch` for the epoch. ``position_key`` names the count in the
    checkpoint (``windows_done`` for BPTT windows, ``batches_done`` for documents).
    """

    position_key = "batches_done"
    trainer: Any

    def _init_position(self) -> None:
        self._train_epoch = -1
        self._train_done = 0
        self._resume_position: tuple[int, int] | None = None  # (epoch, batches done)

    def _start_train_pass(self) -> int:
        """Called when a training pass starts: batches to skip (a restored mid-epoch position)."""
        epoch = self._trainer_epoch() or 0
        skip = 0
        if self._resume_position is not None and self._resume_position[0] == epoch:
            skip = self._resume_position[1]
        self._resume_position = None
        self._train_epoch, self._train_done = epoch, skip
        return skip

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Count the training batches handed to the model (the position a checkpoint records)."""
        if self.trainer is not None and self.trainer.training:
            self._train_done += 1
        return batch

    def state_dict(self) -> dict[str, int]:
        """Saved in every checkpoint: the epoch and how many of its batches were trained on."""
        return {"epoch": self._train_epoch, self.position_key: self._train_done}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self._resume_position = (int(state_dict["epoch"]), int(state_dict[self.position_key]))

    def _trainer_epoch(self) -> int | None:
        """The trainer's epoch, read when a training pass starts (None without a trainer)."""
        return None if self.trainer is None else self.trainer.current_epoch
