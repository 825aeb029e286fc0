"""Quantization-aware training as a transform of a built float model (``prepare``).

In the spirit of ``torch.ao.quantization.prepare_qat`` and torchao's ``quantize_``: the model
package builds float layers only, and :func:`prepare` turns an :class:`~src.models.awd.AWDLSTM`
into its fake-quantized twin, in place:

* every recurrent layer is swapped for its registered ``(cell, "qat")`` counterpart
  (``LAYERS[("lstm", "qat")]`` is :class:`~.lstm.QATLSTMLayer`), built with the same sizes and
  options, re-wrapped in the same weight drop, and loaded with the float layer's weights;
* the embedding output gets the int8 per-row quantizer of the embedding matrix and the int8
  affine quantizer of layer 1's input, applied where layer 1's input enters the input dropout;
* the tied decoder becomes a :class:`~.quantizers.QuantLinear` on the same parameters.

Parameter names do not change, and the quantizers sit under the same state-dict keys as before
this transform existed (``embedding_quant``, ``input_quant``, ``decoder.weight_quant``, the
layers' ``*_quant``), so checkpoints move between float and QAT models; a float checkpoint
loaded into a prepared model gets fresh quantizers (a ``load_state_dict`` pre-hook).
Building the new modules draws no random numbers: a prepared model, and the run that trains
it, are bit-identical to a model built quantization-aware from the start.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor, nn

from src.models.awd import AWDLSTM
from src.models.dropout import WeightDrop
from src.models.recurrent import LAYERS, compiled_cell
from src.quant.config import QuantConfig

from . import lstm as _lstm  # noqa: F401  (registers ("lstm", "qat"))
from . import mlstm as _mlstm  # noqa: F401  (registers ("mlstm", "qat"))
from .calibration import align_quantizer_state
from .quantizers import QuantLinear, activation_quantizer, embedding_quantizer, weight_quantizer

__all__ = ["QuantizeInput", "is_prepared", "prepare"]

log = logging.getLogger(__name__)

#: Runners a quantization-aware model accepts: the QAT layer replaces whatever ``auto`` built
#: (``qat`` is what checkpoints of older code name it).
QAT_RUNNERS = ("auto", "qat")


class QuantizeInput:
    """Forward pre-hook of the input dropout: ``x -> input_quant(embedding_quant(x))``.

    Layer 1's input is the looked-up (dropped) embedding rows, quantized per word like the
    embedding matrix, then to the int8 affine grid the integer engine feeds layer 1; the input
    dropout comes after, as in training before this transform existed. The quantizers are the
    model's own children (their state-dict keys stay ``embedding_quant.*``, ``input_quant.*``);
    the hook only holds references, which ``copy.deepcopy`` of the model maps to the copies.
    """

    def __init__(self, embedding_quant: nn.Module, input_quant: nn.Module) -> None:
        self.embedding_quant, self.input_quant = embedding_quant, input_quant

    def __call__(self, module: nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        (x, *rest) = args
        return (self.input_quant(self.embedding_quant(x)), *rest)


def is_prepared(model: nn.Module) -> bool:
    """Whether :func:`prepare` has transformed ``model`` (with ``quant.enabled``)."""
    quant = getattr(model, "quant", None)
    return isinstance(quant, QuantConfig) and quant.enabled


def prepare(model: AWDLSTM, quant: QuantConfig | dict[str, Any] | None) -> AWDLSTM:
    """Fake-quantize ``model`` in place for ``quant`` and return it; ``enabled: false`` (or
    ``None``) returns the float model unchanged."""
    quant = quant if isinstance(quant, QuantConfig) else QuantConfig(**(quant or {}))
    if not quant.enabled:
        return model
    if is_prepared(model):
        raise ValueError("the model is already quantization-aware (prepare was applied)")
    c = model.config
    if c.runner not in QAT_RUNNERS:
        raise ValueError(
            f"model.runner={c.runner!r} cannot fake-quantize: quantization-aware training "
            "swaps in its own layers; set model.runner=auto"
        )
    if (c.cell, "qat") not in LAYERS:
        known = sorted(cell for cell, runner in LAYERS if runner == "qat")
        raise ValueError(f"cell {c.cell!r} has no quantization-aware layer; known: {known}")
    swapped: list[str] = []
    with torch.random.fork_rng(devices=[]):  # new modules' inits must not move the run's RNG
        for index, spec in enumerate(model.layer_specs()):
            old = model.layers[index]
            model.layers[index] = _qat_layer(model, old, spec, quant)
            swapped.append(f"layers.{index}: {_describe(old)} -> {_describe(model.layers[index])}")
        model.embedding_quant = embedding_quantizer(quant)
        model.input_quant = activation_quantizer(quant, "input")
        model.input_dropout.register_forward_pre_hook(
            QuantizeInput(model.embedding_quant, model.input_quant)
        )
        swapped.append(
            f"embedding rows -> {_describe(model.embedding_quant)}, layer-1 input -> "
            f"{_describe(model.input_quant)} (before input dropout)"
        )
        old_decoder = model.decoder
        model.decoder = _qat_decoder(old_decoder, weight_quantizer(quant, "decoder"))
        swapped.append(f"decoder: Linear -> QuantLinear({_describe(model.decoder.weight_quant)})")
    model.quant = quant
    model.register_load_state_dict_pre_hook(_fill_missing_quantizers)
    log.info("quant=qat: prepare swapped %d modules:\n  %s", len(swapped), "\n  ".join(swapped))
    return model


def _qat_layer(
    model: AWDLSTM, old: nn.Module, spec: tuple[int, int, int], quant: QuantConfig
) -> nn.Module:
    """The ``(cell, "qat")`` layer of ``spec`` with ``old``'s weights and weight drop."""
    c = model.config
    input_size, cell_size, output_size = spec
    cls = LAYERS[(c.cell, "qat")]
    options = model.cell_options(cell_size, output_size)
    layer: nn.Module = cls(
        input_size, cell_size, recurrent_dropout=c.recurrent_dropout, quant=quant, **options
    )
    if c.compile_cell:
        layer.cell_fn = compiled_cell(layer.cell_fn)
    if isinstance(old, WeightDrop):
        layer = WeightDrop(layer, old.weight_names, old.p, old.mode)
    reference = next(old.parameters())
    layer = layer.to(device=reference.device)
    result = layer.load_state_dict(old.state_dict(), strict=False)
    if result.unexpected_keys or any("_quant" not in k for k in result.missing_keys):
        raise RuntimeError(
            f"{cls.__name__} does not hold the float layer's weights: missing "
            f"{result.missing_keys}, unexpected {result.unexpected_keys}"
        )
    layer.train(old.training)
    return layer


def _qat_decoder(old: nn.Linear, weight_quant: nn.Module) -> QuantLinear:
    """A :class:`QuantLinear` on ``old``'s own parameters (the tie to the embedding is kept)."""
    new = QuantLinear(old.in_features, old.out_features, old.bias is not None, weight_quant)
    new.weight = old.weight
    new.bias = old.bias
    return new.to(device=old.weight.device)


def _fill_missing_quantizers(
    module: nn.Module,
    state_dict: dict[str, Tensor],
    prefix: str,
    local_metadata: dict[str, Any],
    strict: bool,
    missing_keys: list[str],
    unexpected_keys: list[str],
    error_msgs: list[str],
) -> None:
    """A float checkpoint loaded into a prepared model: its quantizers start fresh (observers
    calibrate on the first batches), everything else loads strictly."""
    own = {prefix + k: v for k, v in module.state_dict().items()}
    ours = {k: v for k, v in state_dict.items() if k.startswith(prefix)}
    added, _ = align_quantizer_state(ours, own)
    for key in added:
        state_dict[key] = ours[key]
    if added:
        log.info("checkpoint has no quantizer state: %d fresh quantizers", len(added))


def _describe(module: nn.Module) -> str:
    inner = module.module if isinstance(module, WeightDrop) else module
    name = type(inner).__name__
    bits = getattr(inner, "bits", None)
    return f"{name}(int{bits})" if bits is not None else name
