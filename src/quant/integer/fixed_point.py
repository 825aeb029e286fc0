"""Integer fixed-point primitives for integer-only inference (gemmlowp / TFLite semantics).

Every function here works on torch integer tensors with **int32 semantics**: inputs are int8,
int16 or int32 tensors, outputs are int32 (or the narrow type a helper names), and any
intermediate that can leave the int32 range is computed in int64. Each docstring gives the
real-number equation the integer steps implement and names the rounding.

Notation: an int32 ``q`` that holds a real ``r`` in Q0.31 means ``r = q / 2^31``.

Multiplier convention (the one TFLite's ``QuantizeMultiplier`` uses)::

    M  ~=  M0 * 2^-31 * 2^shift,   M0 in [2^30, 2^31) (int32, i.e. Q0.31 in [0.5, 1)),
    shift > 0: left shift (M >= 1),  shift <= 0: right shift by -shift (M < 1).

``multiply_by_quantized_multiplier(x, M0, shift)`` then computes ``round(x * M)``.
"""

from __future__ import annotations

import math
from functools import cache

import torch
from torch import Tensor

__all__ = [
    "cpu_int_mm_is_exact",
    "INT32_MAX",
    "INT32_MIN",
    "INT_MM_MAX_K",
    "clamp_to_int8",
    "clamp_to_int16",
    "int_matmul",
    "multiply_by_quantized_multiplier",
    "quantize_multiplier",
    "quantize_multipliers",
    "rounding_divide_by_pot",
    "saturate",
    "saturating_left_shift",
    "saturating_rounding_doubling_high_mul",
    "saturating_rounding_multiply_by_pot",
]

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1

#: Largest reduction length for which an int8 x int8 dot product cannot overflow int32:
#: ``K * 128 * 128 <= 2^31 - 1``.
INT_MM_MAX_K = (2**31 - 1) // (128 * 128)

_NARROW_INT = (torch.int8, torch.int16, torch.int32)


def _as_int64(x: Tensor | int, name: str = "x") -> Tensor:
    """Widen an int8/int16/int32 tensor (or a Python int inside int32) to int64."""
    if isinstance(x, Tensor):
        if x.dtype not in _NARROW_INT:
            raise TypeError(f"{name} must be an int8/int16/int32 tensor, got {x.dtype}")
        return x.to(torch.int64)
    if isinstance(x, bool) or not isinstance(x, int):
        raise TypeError(f"{name} must be an int or an integer tensor, got {type(x).__name__}")
    if not INT32_MIN <= x <= INT32_MAX:
        raise ValueError(f"{name}={x} is outside int32")
    return torch.tensor(x, dtype=torch.int64)


def _container(bits: int) -> torch.dtype:
    """Smallest signed torch dtype holding a ``bits``-bit two's-complement integer."""
    if not 2 <= bits <= 32:
        raise ValueError(f"bits must be in [2, 32], got {bits}")
    return torch.int8 if bits <= 8 else torch.int16 if bits <= 16 else torch.int32


# --------------------------------------------------------------------------------------------
# Multipliers
# --------------------------------------------------------------------------------------------


def quantize_multiplier(real_multiplier: float) -> tuple[int, int]:
    """Real multiplier ``M >= 0`` -> ``(M0, shift)`` with ``M ~= M0 * 2^(shift - 31)``.

    ``M = q * 2^shift`` with ``q in [0.5, 1)`` (``frexp``); ``M0 = round(q * 2^31)``, rounding
    half away from zero (``q * 2^31`` is exact in float64, so the only error is this rounding:
    relative error <= 2^-31). If the rounding reaches ``2^31`` (q within 2^-32 of 1), use
    ``M0 = 2^30`` and ``shift + 1`` instead, which is the same value. ``M = 0`` and ``M`` below
    ``2^-32`` (right shift past 31) give ``(0, 0)``: the product rounds to 0 anyway. ``M >= 2^30``
    (left shift over 30) is refused.
    """
    M = float(real_multiplier)
    if not math.isfinite(M) or M < 0.0:
        raise ValueError(f"multiplier must be finite and >= 0, got {M}")
    if M == 0.0:
        return 0, 0
    q, shift = math.frexp(M)  # M = q * 2^shift, q in [0.5, 1)
    M0 = math.floor(q * 2**31 + 0.5)  # round half away from zero (q > 0)
    if M0 == 2**31:
        M0, shift = 2**30, shift + 1
    if shift < -31:
        return 0, 0
    if shift > 30:
        raise ValueError(f"multiplier {M} >= 2^30 needs a left shift over 30")
    return int(M0), int(shift)


def quantize_multipliers(real_multipliers: Tensor) -> tuple[Tensor, Tensor]:
    """Vectorized :func:`quantize_multiplier` (e.g. per output channel): int32 ``(M0, shift)``.

    Same equation, rounding and corners, computed in float64 (exact: ``q * 2^31`` is a power-of-two
    rescaling of a float64).
    """
    M = real_multipliers.detach().to(torch.float64)
    if not bool(torch.isfinite(M).all()) or bool((M < 0).any()):
        raise ValueError("multipliers must be finite and >= 0")
    q, shift = torch.frexp(M)  # q in [0.5, 1) (0 for M == 0)
    M0 = torch.floor(q * 2.0**31 + 0.5).to(torch.int64)
    shift = shift.to(torch.int64)
    corner = M0 == 2**31
    M0 = torch.where(corner, torch.full_like(M0, 2**30), M0)
    shift = shift + corner.to(torch.int64)
    tiny = (shift < -31) | (M0 == 0)
    M0 = torch.where(tiny, torch.zeros_like(M0), M0)
    shift = torch.where(tiny, torch.zeros_like(shift), shift)
    if bool((shift > 30).any()):
        raise ValueError("a multiplier >= 2^30 needs a left shift over 30")
    return M0.to(torch.int32), shift.to(torch.int32)


# --------------------------------------------------------------------------------------------
# gemmlowp primitives
# --------------------------------------------------------------------------------------------


def saturating_rounding_doubling_high_mul(a: Tensor, b: int | Tensor) -> Tensor:
    """gemmlowp ``SaturatingRoundingDoublingHighMul``: ``round(a * b / 2^31)`` as int32.

    With ``a``, ``b`` in Q0.31 this is the Q0.31 product. In int64: ``ab = a * b`` (exact,
    |ab| <= 2^62); ``nudge = 2^30`` if ``ab >= 0`` else ``1 - 2^30``; result
    ``(ab + nudge) / 2^31`` truncated toward zero (C division). Net rounding: to nearest, ties
    toward +infinity. The one overflow, ``a == b == INT32_MIN`` (real 1.0), saturates to INT32_MAX.
    """
    a64 = _as_int64(a, "a")
    b64 = _as_int64(b, "b").to(a64.device)
    ab = a64 * b64
    nudge = torch.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    out = torch.div(ab + nudge, 1 << 31, rounding_mode="trunc")
    corner = (a64 == INT32_MIN) & (b64 == INT32_MIN)
    out = torch.where(corner, INT32_MAX, out)
    return out.to(torch.int32)


def rounding_divide_by_pot(x: Tensor, exponent: int | Tensor) -> Tensor:
    """gemmlowp ``RoundingDivideByPOT``: ``round(x / 2^exponent)``, ties away from zero, int32.

    ``exponent`` in [0, 31] (an int or a tensor broadcast against ``x``, e.g. per channel).
    ``mask = 2^e - 1``; ``remainder = x & mask``; ``threshold = (mask >> 1) + (x < 0)``;
    result ``(x >> e) + (remainder > threshold)`` with ``>>`` the arithmetic (flooring) shift.
    """
    x64 = _as_int64(x, "x")
    e = _as_int64(exponent, "exponent").to(x64.device)
    if bool(((e < 0) | (e > 31)).any()):
        raise ValueError("exponent must be in [0, 31]")
    mask = torch.bitwise_left_shift(torch.ones_like(e), e) - 1
    remainder = torch.bitwise_and(x64, mask)
    threshold = torch.bitwise_right_shift(mask, 1) + (x64 < 0).to(torch.int64)
    out = torch.bitwise_right_shift(x64, e) + (remainder > threshold).to(torch.int64)
    return out.to(torch.int32)


def saturating_left_shift(x: Tensor, exponent: int | Tensor) -> Tensor:
    """``x * 2^exponent`` saturated to int32 (exact when it fits); ``exponent`` in [0, 31]."""
    x64 = _as_int64(x, "x")
    e = _as_int64(exponent, "exponent").to(x64.device)
    if bool(((e < 0) | (e > 31)).any()):
        raise ValueError("exponent must be in [0, 31]")
    # |x| < 2^31 and e <= 31: |x << e| < 2^62, no int64 overflow.
    return torch.bitwise_left_shift(x64, e).clamp(INT32_MIN, INT32_MAX).to(torch.int32)


def saturating_rounding_multiply_by_pot(x: Tensor, exponent: int) -> Tensor:
    """gemmlowp ``SaturatingRoundingMultiplyByPOT``: ``x * 2^exponent`` as int32.

    ``exponent >= 0``: saturating left shift (exact unless it saturates); ``exponent < 0``:
    :func:`rounding_divide_by_pot` by ``-exponent`` (round to nearest, ties away from zero).
    Used to move a value between power-of-two scales (e.g. cell state 2^-k -> 2^-12).
    """
    if exponent >= 0:
        return saturating_left_shift(x, exponent)
    return rounding_divide_by_pot(x, -exponent)


def multiply_by_quantized_multiplier(
    x: Tensor, quantized_multiplier: int | Tensor, shift: int | Tensor
) -> Tensor:
    """TFLite ``MultiplyByQuantizedMultiplier``: ``round(x * M)``, ``M = M0 * 2^(shift - 31)``.

    Steps (int32 semantics): ``x' = x * 2^max(shift, 0)`` saturated to int32;
    ``y = SRDHM(x', M0)`` = round(x' * M0 / 2^31) (ties toward +inf);
    ``RoundingDivideByPOT(y, max(-shift, 0))`` (ties away from zero). Two roundings and M0's
    2^-31 relative error: ``|result - x * M| < 1`` when ``|x * 2^max(shift,0)| < 2^31``; beyond that
    the left shift saturates (as the NEON ``vqshl`` path does) and the result is only a
    large-magnitude value of the right sign, for the caller's final clamp.

    ``quantized_multiplier`` (``M0``) and ``shift`` are ints (per tensor) or int32 tensors
    broadcast against ``x`` (per channel: shape ``[C]`` matches the last dim of ``x``).
    """
    if isinstance(shift, Tensor):
        s64 = _as_int64(shift, "shift")
        left = s64.clamp(min=0).to(torch.int32)
        right = (-s64).clamp(min=0).to(torch.int32)
    else:
        left, right = max(shift, 0), max(-shift, 0)
    y = saturating_left_shift(x, left)
    y = saturating_rounding_doubling_high_mul(y, quantized_multiplier)
    return rounding_divide_by_pot(y, right)


# --------------------------------------------------------------------------------------------
# Saturation
# --------------------------------------------------------------------------------------------


def saturate(x: Tensor, bits: int) -> Tensor:
    """Clamp an integer tensor to signed ``bits``-bit range ``[-2^(b-1), 2^(b-1) - 1]``.

    Returned in the smallest signed container (int8 for bits <= 8, int16 for <= 16, else int32).
    """
    if x.is_floating_point():
        raise TypeError("saturate takes an integer tensor; round explicitly first")
    dtype = _container(bits)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return x.to(torch.int64).clamp(lo, hi).to(dtype)


def clamp_to_int8(x: Tensor) -> Tensor:
    """:func:`saturate` to int8 ``[-128, 127]``."""
    return saturate(x, 8)


def clamp_to_int16(x: Tensor) -> Tensor:
    """:func:`saturate` to int16 ``[-32768, 32767]``."""
    return saturate(x, 16)


# --------------------------------------------------------------------------------------------
# int8 x int8 -> int32 matmul
# --------------------------------------------------------------------------------------------


def _pad_to(x: Tensor, rows: int, cols: int) -> Tensor:
    if x.shape == (rows, cols):
        return x.contiguous()
    out = x.new_zeros((rows, cols))
    out[: x.shape[0], : x.shape[1]] = x
    return out


def _matmul_exact_float64(a: Tensor, b: Tensor) -> Tensor:
    """Exact int8 x int8 -> int32 matmul through float64.

    Every product is an integer with |p| <= 2^14 and every partial sum stays below 2^31 < 2^53
    (K <= INT_MM_MAX_K), so float64 represents every intermediate exactly whatever the summation
    order: the result is bit-exact.
    """
    return (a.to(torch.float64) @ b.to(torch.float64)).to(torch.int32)


@cache
def cpu_int_mm_is_exact() -> bool:
    """Whether ``torch._int_mm`` on this CPU gives the exact int32 sums (probed once).

    On CPU it runs oneDNN's s8 x s8 GEMM. With VNNI (``vpdpbusd``) that sums exactly; on CPUs
    without it (AVX2-only, AVX-512 without VNNI, or oneDNN capped below VNNI with
    ``ONEDNN_MAX_CPU_ISA``) pairs of products meet in saturating int16 (``vpmaddubsw``), so
    full-range operands come back wrong (measured: every entry of a random 64x512 @ 512x256
    product). The probe multiplies full-range random operands both ways.
    """
    int_mm = getattr(torch, "_int_mm", None)
    if int_mm is None:
        return False
    g = torch.Generator().manual_seed(0)
    a = torch.randint(-128, 128, (24, 256), dtype=torch.int8, generator=g)
    b = torch.randint(-128, 128, (256, 40), dtype=torch.int8, generator=g)
    return bool(torch.equal(int_mm(a, b), _matmul_exact_float64(a, b)))


def int_matmul(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` for int8 ``a[M, K]``, ``b[K, N]`` -> int32 ``[M, N]``, bit-exact.

    ``sum_k a[m, k] * b[k, n]`` accumulated in int32 (no rounding); ``K <= INT_MM_MAX_K``
    guarantees no overflow. Paths: CPU -> ``torch._int_mm`` (any shape works there, measured on
    torch 2.13) where :func:`cpu_int_mm_is_exact`, else exact float64; CUDA -> ``torch._int_mm``
    after zero-padding to its constraints (M > 16, K and N
    multiples of 8; zero rows/cols add nothing to the sums, the pad is sliced away); otherwise
    (no ``_int_mm``, other devices) -> exact float64 matmul.
    """
    if a.dtype != torch.int8 or b.dtype != torch.int8:
        raise TypeError(f"int_matmul takes int8 x int8, got {a.dtype} x {b.dtype}")
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(
            f"int_matmul needs [M, K] @ [K, N], got {tuple(a.shape)}, {tuple(b.shape)}"
        )
    M, K = a.shape
    N = b.shape[1]
    if K > INT_MM_MAX_K:
        raise ValueError(f"K={K} > {INT_MM_MAX_K} may overflow the int32 accumulator")
    if M == 0 or N == 0 or K == 0:
        return torch.zeros((M, N), dtype=torch.int32, device=a.device)
    int_mm = getattr(torch, "_int_mm", None)
    if int_mm is None:
        return _matmul_exact_float64(a, b)
    if a.device.type == "cpu":
        return int_mm(a, b) if cpu_int_mm_is_exact() else _matmul_exact_float64(a, b)
    if a.device.type == "cuda":
        Mp, Kp, Np = max(M, 17), -(-K // 8) * 8, -(-N // 8) * 8
        out = int_mm(_pad_to(a, Mp, Kp), _pad_to(b, Kp, Np))
        return out[:M, :N]
    return _matmul_exact_float64(a, b)
