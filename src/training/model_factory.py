"""Config -> model: the float AWD-LSTM, then the model transforms its config asks for.

The softmax head (``loss.softmax``: :mod:`src.models.softmax`) is built here too and set as
``model.softmax``, so its parameters (split: the cluster vectors) are the model's: in the
checkpoint, the optimizer's groups, gradient clipping and NT-ASGD's averages.

A transform takes a built model and returns the transformed one, and may bring the callbacks
that train it (``quant``: :func:`src.quant.qat.prepare` and the ``QATSchedule`` callback). The
LightningModule calls these two functions and knows nothing of what a transform does.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import Callback

from src.models.awd import AWDLSTM, AWDLSTMConfig
from src.models.softmax import SoftmaxHead, build_softmax
from src.quant.config import QuantConfig
from src.quant.qat import prepare
from src.quant.qat.calibration import align_quantizer_state
from src.quant.qat.schedule import QATSchedule


def build_model(
    model: dict[str, Any], quant: dict[str, Any] | None = None, loss: dict[str, Any] | None = None
) -> AWDLSTM:
    """The float model of ``model`` (an ``AWDLSTMConfig`` dict) with the softmax head of
    ``loss`` (``softmax``, ``chunk_size``, ``splits``), transformed by ``quant``."""
    net = AWDLSTM(AWDLSTMConfig(**model))
    net.softmax = build_head(net, loss or {})
    config = QuantConfig(**(quant or {}))
    if config.enabled and net.softmax.kind != "full":
        raise ValueError(
            f"loss.softmax={net.softmax.kind} with quant=qat: the fake-quantized decoder "
            "trains the full softmax only; use loss.softmax=full"
        )
    return prepare(net, config)


def build_head(net: AWDLSTM, loss: dict[str, Any]) -> SoftmaxHead:
    """``loss.softmax`` (full | chunked | split) over ``net``'s decoder rows."""
    return build_softmax(
        str(loss.get("softmax", "full")),
        net.config.vocab_size,
        net.decoder.in_features,
        chunk_size=int(loss.get("chunk_size", 128)),
        splits=loss.get("splits"),
    )


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
