"""Shared steps of turning a fake-quantized layer into an integer one (:mod:`.convert`,
:mod:`.convert_mlstm`): checking the quantizers, reading activation qparams, folding zero points
into int32 biases, building the gate tables."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from src.quant.qat.fake_quant import FakeQuantize, PowerOfTwoFakeQuantize
from src.quant.scheme import GATE_EXPONENT, quantize_bias

from .fixed_point import INT32_MAX, INT32_MIN
from .lut import Int16LUT, sigmoid_lut, tanh_lut

__all__ = [
    "TABLE_KINDS",
    "activation_qparams",
    "folded_bias",
    "gate_tables",
    "power_of_two_exponent",
    "require_quantizer",
    "to_int32",
]

TABLE_KINDS = ("interpolated", "full")


def require_quantizer(module: nn.Module, kind: type | tuple[type, ...], what: str) -> Any:
    """``module`` if it is a quantizer of ``kind``; else a ValueError naming ``what``."""
    if not isinstance(module, kind):
        raise ValueError(
            f"cannot build the integer model: {what} is not fake-quantized "
            f"({type(module).__name__}); train with quant=qat and every entry of quant.tensors"
        )
    return module


def activation_qparams(quantizer: nn.Module, what: str) -> tuple[float, int]:
    """``(s, z)`` of an int8 affine activation quantizer whose range has been observed."""
    q = require_quantizer(quantizer, FakeQuantize, what)
    if not bool(q.observer.initialized):
        raise ValueError(f"cannot build the integer model: the {what} range was never observed")
    scale, zero_point = q.calculate_qparams()
    return float(scale), int(zero_point)


def power_of_two_exponent(quantizer: nn.Module, what: str) -> int:
    """``k`` with scale ``2^-k`` of an observed power-of-two quantizer (cell state, factors)."""
    q = require_quantizer(quantizer, PowerOfTwoFakeQuantize, what)
    if not bool(q.observer.initialized):
        raise ValueError(f"cannot build the integer model: the {what} range was never observed")
    return -q.exponent()


def to_int32(x: Tensor, what: str) -> Tensor:
    """``x`` as int32, or a ValueError if a value leaves the int32 range."""
    if bool(((x < INT32_MIN) | (x > INT32_MAX)).any()):
        raise ValueError(f"{what} overflows int32")
    return x.to(torch.int32)


def folded_bias(
    bias: Tensor | None, weight_q: Tensor, accumulator_scale: Tensor, input_zero_point: int
) -> Tensor:
    """int32 ``round(b / (s_x s_w[j])) - z_x sum_k W_q[j, k]`` (the zero point folded in)."""
    b = torch.zeros(weight_q.shape[0], dtype=torch.int64)
    if bias is not None:
        b = quantize_bias(bias, accumulator_scale).to(torch.int64)
    folded = b - input_zero_point * weight_q.to(torch.int64).sum(dim=1)
    return to_int32(folded, "a bias")


def gate_tables(kind: str, cell_exponent: int) -> tuple[Int16LUT, Int16LUT, Int16LUT]:
    """(sigmoid at 2^-12, tanh at 2^-12, tanh of the cell state at 2^-k), ``kind`` tables."""
    if kind not in TABLE_KINDS:
        raise ValueError(f"tables must be one of {TABLE_KINDS}, got {kind!r}")
    interpolated = kind == "interpolated"
    return (
        sigmoid_lut(GATE_EXPONENT, interpolated),
        tanh_lut(GATE_EXPONENT, interpolated),
        tanh_lut(-cell_exponent, interpolated),
    )
