"""The fake quantizers a quantization-aware model places, built from a :class:`QuantConfig`.

Each factory returns the quantizer of one tensor kind, or ``nn.Identity()`` when QAT is off or
the tensor is left out of ``quant.tensors``, so a model calls them unconditionally and its float
forward (and state dict) is unchanged. Scheme (docs/quantization.md; TFLite's integer LSTM):

    weights, embedding, decoder   int8 symmetric per output row, [-(2^(b-1)-1), 2^(b-1)-1]
    input x, hidden h             int8 affine, range from an EMA min/max observer
    gate pre-activations          int16 at 2^-12 (covers [-8, 8))
    sigmoid / tanh outputs        int16 at 2^-15
    cell state                    int16 at 2^-k, 2^(15-k) the EMA max |c| rounded up to 2^n
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from src.quant.config import QuantConfig
from src.quant.scheme import GATE_EXPONENT, OUTPUT_EXPONENT

from .fake_quant import (
    FakeQuantize,
    FixedScaleFakeQuantize,
    PowerOfTwoFakeQuantize,
    WeightFakeQuantize,
)

__all__ = [
    "QuantLinear",
    "RowFakeQuantize",
    "activation_quantizer",
    "cell_quantizer",
    "embedding_quantizer",
    "gate_output_quantizer",
    "preactivation_quantizer",
    "weight_quantizer",
]


def _on(quant: QuantConfig | None, tensor: str) -> bool:
    return quant is not None and quant.quantizes(tensor)


def weight_quantizer(quant: QuantConfig | None, tensor: str = "weights") -> nn.Module:
    """Per-row symmetric weight quantizer (``decoder`` or LSTM ``weights``)."""
    if not _on(quant, tensor):
        return nn.Identity()
    return WeightFakeQuantize(bits=quant.weight_bits, axis=0)


class RowFakeQuantize(WeightFakeQuantize):
    """Per-row symmetric quantizer for embedding rows ``[..., E]`` after the lookup.

    Each row of an embedding matrix has its own scale ``max |row| / qmax``, so quantizing the
    looked-up rows equals looking up rows of the quantized matrix (bit for bit), at the cost of
    ``T * B`` rows instead of ``V``. ``quantize(W)`` (export) quantizes the whole matrix.
    """

    def __init__(self, bits: int = 8, fake_quant_enabled: bool = True) -> None:
        super().__init__(bits=bits, axis=0, fake_quant_enabled=fake_quant_enabled)

    def forward(self, rows: Tensor) -> Tensor:
        if not self.fake_quant_enabled:
            return rows
        return super().forward(rows.reshape(-1, rows.size(-1))).view_as(rows)


def embedding_quantizer(quant: QuantConfig | None) -> nn.Module:
    """Looked-up embedding rows: int8 symmetric per word (:class:`RowFakeQuantize`)."""
    if not _on(quant, "embedding"):
        return nn.Identity()
    return RowFakeQuantize(bits=quant.weight_bits)


def activation_quantizer(quant: QuantConfig | None, tensor: str) -> nn.Module:
    """Affine int8 activation quantizer with an EMA range (``input`` or ``hidden``)."""
    if not _on(quant, tensor):
        return nn.Identity()
    return FakeQuantize(bits=quant.activation_bits, momentum=quant.ema_momentum)


def preactivation_quantizer(quant: QuantConfig | None) -> nn.Module:
    """Gate pre-activations: int16 at 2^-12, i.e. ``[-8, 8 - 2^-12]`` (TFLite)."""
    if not _on(quant, "gates"):
        return nn.Identity()
    return FixedScaleFakeQuantize(bits=16, scale=2.0**GATE_EXPONENT)


def gate_output_quantizer(quant: QuantConfig | None) -> nn.Module:
    """Sigmoid and tanh outputs: int16 at 2^-15 (what the integer lookup tables return)."""
    if not _on(quant, "gates"):
        return nn.Identity()
    return FixedScaleFakeQuantize(bits=16, scale=2.0**OUTPUT_EXPONENT)


def cell_quantizer(quant: QuantConfig | None) -> nn.Module:
    """Cell state: int16 at a power-of-two scale from an EMA range (shift-only rescaling)."""
    if not _on(quant, "cell"):
        return nn.Identity()
    return PowerOfTwoFakeQuantize(bits=16, momentum=quant.ema_momentum)


class QuantLinear(nn.Linear):
    """``nn.Linear`` whose weight goes through ``weight_quant`` (identity in float) every call.

    ``y = x W_hat^T + b`` with ``W_hat = weight_quant(W)``; the state dict is ``nn.Linear``'s
    (plus the quantizer's flags), so float checkpoints load into it.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        weight_quant: nn.Module | None = None,
    ) -> None:
        super().__init__(in_features, out_features, bias)
        self.weight_quant = weight_quant if weight_quant is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight_quant(self.weight), self.bias)
