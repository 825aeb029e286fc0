"""The quantization scheme's arithmetic, shared by fake quantization and the integer engine.

Affine scheme: ``real = scale * (q - zero_point)``, ``q`` an integer in ``[qmin, qmax]``.
Rounding matches torch's fake-quant kernels exactly: in float32,
``q = clamp(nearbyint(x * (1 / scale)) + zero_point, qmin, qmax)`` (round half to even, and a
multiply by the float32 reciprocal, not a divide), ``x_hat = (q - zero_point) * scale``. So
``dequantize(quantize(x))`` is bit-identical to ``torch.fake_quantize_per_*_affine(x)``, and the
integer engine sees exactly the values training saw.

The fixed scales of the LSTM's gates (TFLite's integer LSTM) live here too: both the fake
quantizers (``src.quant.qat``) and the lookup tables (``src.quant.integer.lut``) use them.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "GATE_EXPONENT",
    "OUTPUT_EXPONENT",
    "SCALE_EPS",
    "dequantize",
    "int_dtype_for_range",
    "per_channel_view",
    "qrange",
    "quantize",
    "quantize_bias",
]

#: Gate pre-activations are int16 at 2^GATE_EXPONENT.
GATE_EXPONENT = -12
#: Sigmoid and tanh outputs are int16 at 2^OUTPUT_EXPONENT.
OUTPUT_EXPONENT = -15

#: Smallest scale an observer may return (torch's observers use the same guard).
SCALE_EPS = float(torch.finfo(torch.float32).eps)


# --------------------------------------------------------------------------------------------
# Integer ranges and the quantize / dequantize pair
# --------------------------------------------------------------------------------------------


def qrange(bits: int, signed: bool = True, narrow: bool = False) -> tuple[int, int]:
    """Integer range of a ``bits``-bit code.

    signed: ``[-2^(b-1), 2^(b-1) - 1]``; narrow (symmetric weights): ``[-(2^(b-1) - 1),
    2^(b-1) - 1]``, e.g. ``[-127, 127]``, ``[-7, 7]``; unsigned: ``[0, 2^b - 1]``.
    """
    if not 2 <= bits <= 16:
        raise ValueError(f"bits must be in [2, 16], got {bits}")
    if not signed:
        if narrow:
            raise ValueError("narrow range is for signed codes")
        return 0, (1 << bits) - 1
    hi = (1 << (bits - 1)) - 1
    return (-hi if narrow else -hi - 1), hi


def int_dtype_for_range(qmin: int, qmax: int) -> torch.dtype:
    """Smallest signed torch integer dtype holding ``[qmin, qmax]``."""
    for dtype in (torch.int8, torch.int16, torch.int32):
        info = torch.iinfo(dtype)
        if info.min <= qmin and qmax <= info.max:
            return dtype
    raise ValueError(f"range [{qmin}, {qmax}] does not fit int32")


def per_channel_view(t: Tensor, x: Tensor, axis: int | None) -> Tensor:
    """Reshape a per-tensor (0-d) or per-channel (``[C]``) parameter to broadcast over ``x``."""
    if axis is None or t.dim() == 0:
        return t
    shape = [1] * x.dim()
    shape[axis] = -1
    return t.reshape(shape)


def quantize(
    x: Tensor,
    scale: float | Tensor,
    zero_point: int | Tensor,
    qmin: int,
    qmax: int,
    axis: int | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """``q = clamp(round(x / scale) + zero_point, qmin, qmax)`` as an integer tensor.

    Float32 arithmetic as torch's kernels: ``x * (1 / scale)`` with the reciprocal rounded to
    float32, round half to even. ``axis`` names the channel dim of per-channel ``scale`` and
    ``zero_point`` (shape ``[C]``). Output dtype: ``dtype`` or the smallest signed type holding
    ``[qmin, qmax]``.
    """
    s = torch.as_tensor(scale, dtype=torch.float32, device=x.device)
    z = torch.as_tensor(zero_point, device=x.device).to(torch.float32)
    inv = per_channel_view(1.0 / s, x, axis)
    z = per_channel_view(z, x, axis)
    q = torch.round(x.detach().to(torch.float32) * inv) + z
    q = q.clamp(qmin, qmax)
    return q.to(dtype or int_dtype_for_range(qmin, qmax))


def dequantize(
    q: Tensor, scale: float | Tensor, zero_point: int | Tensor, axis: int | None = None
) -> Tensor:
    """``x_hat = scale * (q - zero_point)`` in float32 (``q - zero_point`` is exact)."""
    s = torch.as_tensor(scale, dtype=torch.float32, device=q.device)
    z = torch.as_tensor(zero_point, device=q.device).to(torch.int32)
    diff = q.to(torch.int32) - per_channel_view(z, q, axis)
    return diff.to(torch.float32) * per_channel_view(s, q, axis)


def quantize_bias(bias: Tensor, scale: float | Tensor) -> Tensor:
    """int32 bias ``round(b / scale)`` (half to even), ``scale = s_x * s_w`` (``[C]`` or scalar).

    Computed in float64 (biases can exceed float32's 2^24 exact-integer range), saturated to
    int32. The bias then adds directly to the int32 ``x_q @ w_q`` accumulator.
    """
    s = torch.as_tensor(scale, dtype=torch.float64, device=bias.device)
    q = torch.round(bias.detach().to(torch.float64) / s)
    return q.clamp(-(2**31), 2**31 - 1).to(torch.int32)
