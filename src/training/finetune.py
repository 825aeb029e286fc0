"""Fine-tuning as the AWD-LSTM paper did it (salesforce ``finetune.py``; REFERENCE §2).

Restart from a trained checkpoint's weights directly in averaged SGD (no SGD phase, a fresh
validation history) and stop when the non-monotone trigger fires again: after an epoch whose
validation loss is worse than the best of all but the last ``nonmono`` epochs. Only the weights
come from the checkpoint; the optimizer, step counters and history start anew.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback

from src.training import nt_asgd
from src.training.checkpoint import read_checkpoint
from src.training.model_factory import adapt_checkpoint_state

log = logging.getLogger(__name__)


class Finetune(Callback):
    """Load ``ckpt_path``'s weights, train with ASGD from the first step, stop on the NT trigger."""

    def __init__(self, ckpt_path: str, nonmono: int = 5) -> None:
        if nonmono < 0:
            raise ValueError(f"nonmono must be >= 0, got {nonmono}")
        self.ckpt_path = Path(ckpt_path)
        self.nonmono = nonmono

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        optim = pl_module.hparams.get("optim", {})
        if optim.get("name") != "sgd":
            raise ValueError(
                f"fine-tuning averages SGD iterates; optim.name={optim.get('name')!r} "
                "(use optim=nt_asgd)"
            )
        ckpt = read_checkpoint(self.ckpt_path)
        vocab = getattr(pl_module, "vocab", None)
        if vocab is not None and ckpt.get("vocab") is not None and list(vocab) != ckpt["vocab"]:
            raise ValueError(f"{self.ckpt_path} was trained on another vocabulary than this run's")
        # a float checkpoint fine-tuned with quant=qat (or the reverse): fresh / dropped observers
        adapt_checkpoint_state(ckpt["state_dict"], pl_module.state_dict())
        try:
            pl_module.load_state_dict(ckpt["state_dict"])
        except RuntimeError as exc:
            raise ValueError(
                f"{self.ckpt_path} does not fit this run's model (use the same model config): {exc}"
            ) from exc
        # Read by configure_optimizers, which Lightning calls after the setup hooks.
        pl_module.asgd_active = True
        pl_module.val_history = []
        log.info("fine-tuning from %s with averaged SGD", self.ckpt_path)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        history = list(pl_module.val_history)  # this epoch's loss is the last entry
        if history and nt_asgd.should_switch_to_asgd(history[:-1], history[-1], self.nonmono):
            log.info("fine-tuning: validation stopped improving; stopping (NT condition)")
            trainer.should_stop = True
