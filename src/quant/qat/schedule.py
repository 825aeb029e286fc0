"""The QAT schedule as a Lightning callback (as Lightning 1.x's ``QuantizationAwareTraining``).

* **Delay and freezing** (Jacob et al. 2018), by optimizer step: the model trains in float until
  ``quant.delay_steps`` (observers already tracking ranges), fake-quantized from then on; the
  observers freeze from ``quant.freeze_observers_step``. Switches change only when they must.
* **Re-calibration around NT-ASGD's averaged weights**: when the LightningModule evaluates the
  averaged weights (``pl_module.evaluating_averages``), their activation ranges are re-estimated
  on ``quant.calibration_batches`` training windows (:func:`~.calibration.calibrate`). The
  checkpoints written at that validation hold the averaged weights with these ranges; the live
  ranges go back before the next training step, and a checkpoint keeps them under
  ``checkpoint["nt_asgd"]["live_observers"]`` (beside the module's live weights) so a resumed
  run continues exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from src.quant.config import QuantConfig

from .calibration import calibrate, load_observer_state, observer_state
from .fake_quant import enable_fake_quant, enable_observer

__all__ = ["QATSchedule"]


class QATSchedule(Callback):
    """Quantization delay, observer freezing and averaged-weight re-calibration (module doc)."""

    def __init__(self, quant: QuantConfig | dict[str, Any]) -> None:
        self.quant = quant if isinstance(quant, QuantConfig) else QuantConfig(**quant)
        self._switches: tuple[bool, bool] | None = None  # (fake quant, observers) last applied
        self._live_observers: dict[str, Tensor] | None = None  # while averages are evaluated

    # ---------------------------------------------------------------- delay and freezing
    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._restore_live_ranges(pl_module)
        step = trainer.global_step
        fake_quant = step >= self.quant.delay_steps
        freeze = self.quant.freeze_observers_step
        observe = freeze is None or step < freeze
        if self._switches != (fake_quant, observe):
            enable_fake_quant(pl_module.model, fake_quant)
            enable_observer(pl_module.model, observe)
            self._switches = (fake_quant, observe)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_live_ranges(pl_module)

    # ---------------------------------------------------------------- averaged weights
    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Runs after the module's ``on_validation_start`` swapped the averages in."""
        if not getattr(pl_module, "evaluating_averages", False) or trainer.state.fn != "fit":
            return
        datamodule = getattr(trainer, "datamodule", None)
        if self.quant.calibration_batches == 0 or datamodule is None:
            return
        if self._live_observers is None:  # not yet put back after the last calibration
            self._live_observers = observer_state(pl_module.model)
        windows = _training_windows(datamodule, pl_module.device)
        calibrate(pl_module.model, windows, self.quant.calibration_batches)

    def _restore_live_ranges(self, pl_module: L.LightningModule) -> None:
        if self._live_observers is not None:
            load_observer_state(pl_module.model, self._live_observers)
            self._live_observers = None

    # ---------------------------------------------------------------- checkpoints
    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self._live_observers is not None:
            checkpoint.setdefault("nt_asgd", {})["live_observers"] = {
                f"model.{k}": v.cpu() for k, v in self._live_observers.items()
            }

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Resuming: the model's weights are loaded (the module put the live ones back); put
        the live ranges back too."""
        live = checkpoint.get("nt_asgd", {}).get("live_observers")
        if live and trainer.state.fn == "fit":
            prefix = "model."
            state = {k[len(prefix) :]: v for k, v in live.items() if k.startswith(prefix)}
            load_observer_state(pl_module.model, state)


def _training_windows(datamodule: L.LightningDataModule, device: Any) -> Iterator[Tensor]:
    """The first windows of this epoch's training pass, read straight from a fresh
    ``WindowIterable`` without its resume hook, so the run's data position is untouched."""
    train_windows = datamodule.train_dataloader().dataset
    train_windows.skip_fn = None
    return (window[0].to(device) for window in train_windows)
