"""Integer sigmoid and tanh by lookup table (int16 in, int16 out at 2^-15).

Inputs are int16 at a power-of-two scale ``2^e`` (gate pre-activations: ``e = -12``, range
``[-8, 8)``; cell state: ``e = -k``). Outputs are int16 at ``2^-15``: sigmoid in ``[0, 1)``,
tanh in ``[-1, 1)`` (real 1.0 saturates to ``32767 = 1 - 2^-15``).

Tables are built once, in float64, at export time; the lookup is integer only. Two kinds:

* **full** (default): 65,536 int16 entries, one per input code,
  ``T[x + 32768] = clamp(round(f(x * 2^e) * 2^15))`` (round half to even). The lookup is one
  gather and the result is correctly rounded: max error 2^-16 (half an output step), 2^-15 only
  where f reaches +-1 and saturates. It equals fake-quantizing the float activation at 2^-15.
* **interpolated**: 513 int16 entries (TFLite's int16 LUT layout): knot ``i`` at input code
  ``128 i - 32768``; with ``u = x + 32768``, ``i = u >> 7``, ``t = u & 127``,
  ``y = T[i] + ((T[i+1] - T[i]) * t + 64) >> 7`` (linear interpolation, rounding half up). Knot
  values are lowered by half the midpoint error of the segment to their right (balances the
  chord's one-sided curvature error). 1 KiB per table; about 1 to 2.3 output steps of error.
  For tanh on a coarse scale (``e > -12``) the input is first moved exactly to 2^-12 by a
  saturating left shift (tanh(8) already rounds to the top output code), keeping the 2^-5 knot
  step.

Measured max |error| over all 65,536 inputs (float64 reference), in units of 1 (real):
sigmoid 2^-12: full 1.53e-5, interpolated 3.36e-5; tanh 2^-12: full 3.03e-5, interpolated
6.81e-5; tanh 2^-15: full 1.53e-5, interpolated 3.02e-5. All below the 2^-12 = 2.44e-4 budget.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from src.quant.scheme import GATE_EXPONENT, OUTPUT_EXPONENT

from .fixed_point import saturating_left_shift

__all__ = [
    "GATE_EXPONENT",
    "OUTPUT_EXPONENT",
    "Int16LUT",
    "build_full_table",
    "build_interpolated_table",
    "lut_lookup",
    "sigmoid_lut",
    "tanh_lut",
]

_FULL = 1 << 16
_KNOTS = 513
_SEG_BITS = 7  # 65536 input codes / 512 segments = 2^7 codes per segment

RealFn = Callable[[Tensor], Tensor]


def _to_int16_codes(y: Tensor, output_exponent: int) -> Tensor:
    """``clamp(round(y / 2^output_exponent), -32768, 32767)``, round half to even, float64."""
    return torch.round(y * 2.0 ** (-output_exponent)).clamp(-32768, 32767).to(torch.int16)


def build_full_table(
    fn: RealFn, input_exponent: int, output_exponent: int = OUTPUT_EXPONENT
) -> Tensor:
    """65,536-entry int16 table: ``T[x + 32768] = round(fn(x * 2^input_exponent) / 2^out)``."""
    x = torch.arange(-32768, 32768, dtype=torch.float64) * 2.0**input_exponent
    return _to_int16_codes(fn(x), output_exponent)


def build_interpolated_table(
    fn: RealFn, input_exponent: int, output_exponent: int = OUTPUT_EXPONENT
) -> Tensor:
    """513-entry int16 knot table over the int16 input range (see the module docstring).

    Knot ``i`` holds ``fn(x_i) - err_i / 2`` in output steps, ``x_i = (128 i - 32768) 2^e``,
    ``err_i`` = chord midpoint minus ``fn`` at the midpoint of segment ``i`` (the last knot reuses
    segment 511's), rounded half to even and saturated to int16.
    """
    step = 2.0**input_exponent
    i = torch.arange(_KNOTS, dtype=torch.float64)
    out_scale = 2.0 ** (-output_exponent)
    f = fn((i * 128 - 32768) * step) * out_scale
    mid = fn((i[:-1] * 128 + 64 - 32768) * step) * out_scale
    err = (f[:-1] + f[1:]) / 2 - mid
    err = torch.cat([err, err[-1:]])
    return torch.round(f - err / 2).clamp(-32768, 32767).to(torch.int16)


def lut_lookup(x: Tensor, table: Tensor) -> Tensor:
    """Integer lookup of an int16 input code ``x`` in a full or interpolated table -> int16.

    Full: ``T[x + 32768]``. Interpolated: ``u = x + 32768``, ``T[u >> 7]`` plus
    ``((T[(u >> 7) + 1] - T[u >> 7]) * (u & 127) + 64) >> 7`` (floor shift: rounds half up).
    The interpolant lies between two int16 knots, so it needs no saturation.
    """
    if x.dtype != torch.int16:
        raise TypeError(f"lut_lookup takes int16 codes, got {x.dtype}")
    u = x.to(torch.int64) + 32768
    if table.numel() == _FULL:
        return table[u]
    if table.numel() != _KNOTS:
        raise ValueError(f"table must have {_FULL} or {_KNOTS} entries, got {table.numel()}")
    t = table.to(torch.int32)
    idx = torch.bitwise_right_shift(u, _SEG_BITS)
    frac = torch.bitwise_and(u, (1 << _SEG_BITS) - 1).to(torch.int32)
    base = t[idx]
    slope = t[idx + 1] - base  # |slope| < 2^16, |slope * frac| < 2^23: int32 is enough
    delta = torch.bitwise_right_shift(slope * frac + (1 << (_SEG_BITS - 1)), _SEG_BITS)
    return (base + delta).to(torch.int16)


class Int16LUT(nn.Module):
    """An int16 -> int16 activation table; ``forward(x_int16) -> y_int16`` at 2^-15.

    ``table`` is a buffer (moves with ``.to``, saved in the state dict). ``input_left_shift``
    (>= 0) first maps the input code exactly onto the table's finer scale,
    ``x' = saturate_int16(x * 2^input_left_shift)``: only valid for functions flat, to within half
    an output step, beyond the table's range (tanh beyond +-8).
    """

    table: Tensor

    def __init__(self, table: Tensor, input_exponent: int, input_left_shift: int = 0) -> None:
        super().__init__()
        if table.dtype != torch.int16 or table.numel() not in (_FULL, _KNOTS):
            raise ValueError("table must be int16 with 65536 or 513 entries")
        if input_left_shift < 0:
            raise ValueError("input_left_shift must be >= 0")
        self.register_buffer("table", table.contiguous())
        self.input_exponent = input_exponent
        self.input_left_shift = input_left_shift

    @property
    def interpolated(self) -> bool:
        return self.table.numel() == _KNOTS

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype != torch.int16:
            raise TypeError(f"Int16LUT takes int16 codes, got {x.dtype}")
        if self.input_left_shift:
            x = saturating_left_shift(x, self.input_left_shift).clamp(-32768, 32767)
            x = x.to(torch.int16)
        return lut_lookup(x, self.table)

    def extra_repr(self) -> str:
        kind = "interpolated 513" if self.interpolated else "full 65536"
        return f"{kind}, input 2^{self.input_exponent}, left_shift={self.input_left_shift}"


def sigmoid_lut(input_exponent: int = GATE_EXPONENT, interpolated: bool = False) -> Int16LUT:
    """Integer sigmoid: int16 at ``2^input_exponent`` -> int16 at 2^-15 (``[0, 32767]``)."""
    build = build_interpolated_table if interpolated else build_full_table
    return Int16LUT(build(torch.sigmoid, input_exponent), input_exponent)


def tanh_lut(input_exponent: int = GATE_EXPONENT, interpolated: bool = False) -> Int16LUT:
    """Integer tanh: int16 at ``2^input_exponent`` (gates: -12; cell state: -k) -> int16 2^-15.

    Full tables are built at the input scale itself. Interpolated tables on a coarser scale than
    2^-12 are built at 2^-12 and reached by an exact saturating left shift of the input.
    """
    if not interpolated:
        return Int16LUT(build_full_table(torch.tanh, input_exponent), input_exponent)
    table_exponent = min(input_exponent, GATE_EXPONENT)
    table = build_interpolated_table(torch.tanh, table_exponent)
    return Int16LUT(table, input_exponent, input_left_shift=input_exponent - table_exponent)
