"""Config -> model: the float AWD-LSTM, then the model transforms its config asks for.

A transform takes a built model and returns the transformed one, and may bring the callbacks
that train it (``quant``: :func:`src.quant.qat.prepare` and the ``QATSchedule`` callback). The
LightningModule calls these two functions and knows nothing of what a transform does.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import Callback

from src.models.awd import AWDLSTM, AWDLSTMConfig
from src.quant.config import QuantConfig
from src.quant.qat import prepare
from src.quant.qat.calibration import align_quantizer_state
from src.quant.qat.schedule import QATSchedule


def build_model(model: dict[str, Any], quant: dict[str, Any] | None = None) -> AWDLSTM:
    """The float model of ``model`` (an ``AWDLSTMConfig`` dict), transformed by ``quant``."""
    return prepare(AWDLSTM(AWDLSTMConfig(**model)), QuantConfig(**(quant or {})))


def transform_callbacks(quant: dict[str, Any] | None = None) -> list[Callback]:
    """The callbacks the configured transforms train with (QAT: its schedule)."""
    config = QuantConfig(**(quant or {}))
    return [QATSchedule(config)] if config.enabled else []


def adapt_checkpoint_state(
    state_dict: dict[str, Any], expected: dict[str, Any]
) -> tuple[list[str], list[str]]:
    """Fit a checkpoint written with other transforms to this model, in place: quantizer
    entries it lacks (a float checkpoint trained on with ``quant=qat``) are taken fresh from
    ``expected`` (the model's own state dict), entries of quantizers this model lacks (a QAT
    checkpoint loaded as float) are dropped. Returns (added, dropped) keys."""
    return align_quantizer_state(state_dict, expected)
