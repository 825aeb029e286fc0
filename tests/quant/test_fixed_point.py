"""gemmlowp / TFLite integer primitives against pure-Python references (exact)."""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys

import pytest
import torch

from src.quant.integer.fixed_point import (
    INT32_MAX,
    INT32_MIN,
    INT_MM_MAX_K,
    _matmul_exact_float64,
    clamp_to_int8,
    clamp_to_int16,
    int_matmul,
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    quantize_multipliers,
    rounding_divide_by_pot,
    saturate,
    saturating_left_shift,
    saturating_rounding_doubling_high_mul,
    saturating_rounding_multiply_by_pot,
)
from tests.conftest import REPO

SPECIAL = [
    INT32_MIN,
    INT32_MIN + 1,
    -(2**30),
    -3,
    -2,
    -1,
    0,
    1,
    2,
    3,
    2**30,
    INT32_MAX - 1,
    INT32_MAX,
]


# ---------------------------------------------------------------- pure-Python references


def c_div(n: int, d: int) -> int:
    """C integer division: truncate toward zero."""
    q = abs(n) // abs(d)
    return q if (n >= 0) == (d > 0) else -q


def ref_srdhm(a: int, b: int) -> int:
    if a == b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    return c_div(ab + nudge, 1 << 31)


def ref_rdbpot(x: int, e: int) -> int:
    mask = (1 << e) - 1
    remainder = x & mask  # Python ints: infinite two's complement, same low bits as int32
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> e) + (1 if remainder > threshold else 0)


def ref_mbqm(x: int, m0: int, shift: int) -> int:
    left, right = max(shift, 0), max(-shift, 0)
    y = min(max(x * (1 << left), INT32_MIN), INT32_MAX)
    return ref_rdbpot(ref_srdhm(y, m0), right)


def i32(values: list[int]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int32)


def random_int32(rng: random.Random, n: int) -> list[int]:
    return [rng.randint(INT32_MIN, INT32_MAX) for _ in range(n)]


# ---------------------------------------------------------------- quantize_multiplier


def test_quantize_multiplier_random_in_unit_interval():
    rng = random.Random(0)
    Ms = [rng.uniform(0.0, 1.0) for _ in range(10_000)]
    Ms = [m for m in Ms if m > 0.0]
    for M in Ms:
        m0, shift = quantize_multiplier(M)
        assert 2**30 <= m0 < 2**31
        assert shift <= 0
        approx = m0 * 2.0 ** (shift - 31)  # exact in float64
        assert abs(approx - M) <= 2.0**-30 * M, M
    m0s, shifts = quantize_multipliers(torch.tensor(Ms, dtype=torch.float64))
    assert m0s.dtype == shifts.dtype == torch.int32
    assert m0s.tolist() == [quantize_multiplier(M)[0] for M in Ms]
    assert shifts.tolist() == [quantize_multiplier(M)[1] for M in Ms]


@pytest.mark.parametrize("m", [1.0, 1.5, 2.0, 3.7, 100.25, 12345.678, 2.0**29])
def test_quantize_multiplier_at_least_one_left_shifts(m):
    M = m
    m0, shift = quantize_multiplier(M)
    assert 2**30 <= m0 < 2**31 and shift >= 1
    assert abs(m0 * 2.0 ** (shift - 31) - M) <= 2.0**-30 * M


def test_quantize_multiplier_corners():
    assert quantize_multiplier(0.0) == (0, 0)
    assert quantize_multiplier(0.5) == (2**30, 0)
    assert quantize_multiplier(0.25) == (2**30, -1)
    assert quantize_multiplier(1.0) == (2**30, 1)
    # q * 2^31 = 2^31 - 1/4 rounds up to 2^31: folded back to (2^30, shift + 1).
    M = 1.0 - 2.0**-33
    assert quantize_multiplier(M) == (2**30, 1)
    assert quantize_multiplier(M / 8) == (2**30, -2)
    # 2^-40 needs a right shift past 31: the product is 0 for every int32 anyway.
    assert quantize_multiplier(2.0**-40) == (0, 0)
    m0s, shifts = quantize_multipliers(torch.tensor([0.0, M, 2.0**-40, 3.0]))
    assert m0s.tolist() == [0, 2**30, 0, quantize_multiplier(3.0)[0]]
    assert shifts.tolist() == [0, 1, 0, 2]
    for bad in (-0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            quantize_multiplier(bad)
    with pytest.raises(ValueError):
        quantize_multiplier(2.0**31)


# ---------------------------------------------------------------- SRDHM


def test_srdhm_matches_reference_random_and_special():
    rng = random.Random(1)
    a = random_int32(rng, 10_000) + [x for x in SPECIAL for _ in SPECIAL]
    b = random_int32(rng, 10_000) + [y for _ in SPECIAL for y in SPECIAL]
    got = saturating_rounding_doubling_high_mul(i32(a), i32(b))
    assert got.dtype == torch.int32
    assert got.tolist() == [ref_srdhm(x, y) for x, y in zip(a, b, strict=True)]


def test_srdhm_corner_scalar_operand_and_ties():
    assert saturating_rounding_doubling_high_mul(i32([INT32_MIN]), INT32_MIN).item() == INT32_MAX
    assert saturating_rounding_doubling_high_mul(i32([INT32_MIN]), INT32_MAX).item() == -INT32_MAX
    # exact ties a * b / 2^31 = +-0.5, +-1.5: rounded toward +infinity
    assert saturating_rounding_doubling_high_mul(i32([1, -1, 3, -3]), 2**30).tolist() == [
        1,
        0,
        2,
        -1,
    ]
    rng = random.Random(2)
    a = random_int32(rng, 2000)
    m0 = 1_518_500_250
    got = saturating_rounding_doubling_high_mul(i32(a), m0)
    assert got.tolist() == [ref_srdhm(x, m0) for x in a]
    with pytest.raises(TypeError):
        saturating_rounding_doubling_high_mul(torch.tensor([1], dtype=torch.int64), 1)


# ---------------------------------------------------------------- RoundingDivideByPOT


def test_rounding_divide_by_pot_matches_reference():
    rng = random.Random(3)
    xs = random_int32(rng, 10_000) + SPECIAL * 32
    es = [rng.randint(0, 31) for _ in range(10_000)] + [e for e in range(32) for _ in SPECIAL]
    got = rounding_divide_by_pot(i32(xs), i32(es))
    assert got.dtype == torch.int32
    assert got.tolist() == [ref_rdbpot(x, e) for x, e in zip(xs, es, strict=True)]
    for e in (0, 1, 5, 12, 31):
        assert rounding_divide_by_pot(i32(xs), e).tolist() == [ref_rdbpot(x, e) for x in xs]


def test_rounding_divide_by_pot_ties_away_from_zero():
    x = i32([-5, -3, -1, 1, 3, 5, -6, 6, -7, 7])
    assert rounding_divide_by_pot(x, 1).tolist() == [-3, -2, -1, 1, 2, 3, -3, 3, -4, 4]
    assert rounding_divide_by_pot(i32([-6, -2, 2, 6, -5, 5]), 2).tolist() == [-2, -1, 1, 2, -1, 1]
    assert rounding_divide_by_pot(i32([INT32_MIN, INT32_MAX]), 31).tolist() == [-1, 1]
    with pytest.raises(ValueError):
        rounding_divide_by_pot(x, 32)
    with pytest.raises(ValueError):
        rounding_divide_by_pot(x, -1)


def test_shifts_by_power_of_two():
    x = i32([-(2**20), -3, 0, 3, 2**20])
    assert saturating_left_shift(x, 4).tolist() == [-(2**24), -48, 0, 48, 2**24]
    assert saturating_left_shift(x, 12).tolist() == [INT32_MIN, -3 * 4096, 0, 3 * 4096, INT32_MAX]
    assert saturating_rounding_multiply_by_pot(x, 3).tolist() == [-(2**23), -24, 0, 24, 2**23]
    assert saturating_rounding_multiply_by_pot(x, -1).tolist() == [-(2**19), -2, 0, 2, 2**19]


# ---------------------------------------------------------------- MultiplyByQuantizedMultiplier


def test_multiply_by_quantized_multiplier_matches_reference_and_float():
    rng = random.Random(4)
    for _ in range(200):
        M = rng.uniform(1e-6, 1.0)
        m0, shift = quantize_multiplier(M)
        xs = [rng.randint(INT32_MIN, INT32_MAX) for _ in range(50)] + SPECIAL
        got = multiply_by_quantized_multiplier(i32(xs), m0, shift).tolist()
        assert got == [ref_mbqm(x, m0, shift) for x in xs]
        for g, x in zip(got, xs, strict=True):
            assert abs(g - x * M) < 1.0
            assert abs(g - round(x * M)) <= 1


@pytest.mark.parametrize("m", [1.0, 1.75, 3.3, 64.5, 1000.1])
def test_multiply_by_quantized_multiplier_left_shift(m):
    M = m
    m0, shift = quantize_multiplier(M)
    rng = random.Random(5)
    bound = int(2**31 / 2**shift) - 1
    xs = [rng.randint(-bound, bound) for _ in range(2000)]
    got = multiply_by_quantized_multiplier(i32(xs), m0, shift).tolist()
    assert got == [ref_mbqm(x, m0, shift) for x in xs]
    assert all(abs(g - x * M) < 1.0 for g, x in zip(got, xs, strict=True))
    # past the int32 range the left shift saturates (sign kept)
    big = multiply_by_quantized_multiplier(i32([INT32_MAX, INT32_MIN]), m0, shift).tolist()
    assert big == [ref_mbqm(INT32_MAX, m0, shift), ref_mbqm(INT32_MIN, m0, shift)]
    assert big[0] > 2**29 and big[1] < -(2**29)


def test_multiply_by_quantized_multiplier_per_channel():
    rng = random.Random(6)
    C = 37
    Ms = [rng.uniform(1e-5, 1.0) for _ in range(C - 2)] + [1.5, 2.0**-20]
    m0s, shifts = quantize_multipliers(torch.tensor(Ms, dtype=torch.float64))
    x = torch.randint(
        -(2**28), 2**28, (64, C), dtype=torch.int32, generator=torch.Generator().manual_seed(0)
    )
    got = multiply_by_quantized_multiplier(x, m0s, shifts)
    assert got.shape == (64, C) and got.dtype == torch.int32
    for c in range(C):
        col = multiply_by_quantized_multiplier(x[:, c], int(m0s[c]), int(shifts[c]))
        assert torch.equal(got[:, c], col)
    err = (got.double() - x.double() * torch.tensor(Ms, dtype=torch.float64)).abs()
    assert err.max().item() < 1.0


# ---------------------------------------------------------------- saturation helpers


def test_saturate_helpers():
    x = torch.tensor([-(2**40), -40000, -129, -128, 0, 127, 128, 40000, 2**40])
    a = clamp_to_int8(x)
    assert a.dtype == torch.int8
    assert a.tolist() == [-128, -128, -128, -128, 0, 127, 127, 127, 127]
    b = clamp_to_int16(x)
    assert b.dtype == torch.int16
    assert b.tolist() == [-32768, -32768, -129, -128, 0, 127, 128, 32767, 32767]
    c = saturate(x, 4)
    assert c.dtype == torch.int8 and c.tolist() == [-8, -8, -8, -8, 0, 7, 7, 7, 7]
    d = saturate(x, 32)
    assert d.dtype == torch.int32 and d.tolist()[0] == INT32_MIN and d.tolist()[-1] == INT32_MAX
    with pytest.raises(TypeError):
        saturate(torch.tensor([0.5]), 8)


# ---------------------------------------------------------------- int8 matmul


def _rand_int8(*shape: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-128, 128, shape, dtype=torch.int8, generator=g)


@pytest.mark.parametrize(
    "shape",
    [(20, 400, 4600), (1, 200, 1024), (80, 1150, 1600), (1, 1, 1), (3, 5, 7), (17, 33, 9)],
)
def test_int_matmul_bit_exact(shape):
    M, K, N = shape
    a, b = _rand_int8(M, K, seed=M), _rand_int8(K, N, seed=N)
    ref = a.to(torch.int64) @ b.to(torch.int64)
    got = int_matmul(a, b)
    assert got.dtype == torch.int32 and got.shape == (M, N)
    assert torch.equal(got.to(torch.int64), ref)
    assert torch.equal(_matmul_exact_float64(a, b), got)


def test_int_matmul_extremes_layouts_and_errors():
    K = 1150
    a = torch.full((4, K), -128, dtype=torch.int8)
    b = torch.full((K, 8), -128, dtype=torch.int8)
    assert (int_matmul(a, b) == K * 128 * 128).all()
    w = _rand_int8(24, K, seed=9)  # [out, in] weight, used transposed (non-contiguous)
    x = _rand_int8(5, K, seed=10)
    assert torch.equal(int_matmul(x, w.t()).long(), x.long() @ w.long().t())
    assert int_matmul(x[:, :0], w.t()[:0]).tolist() == [[0] * 24] * 5
    with pytest.raises(TypeError):
        int_matmul(x.to(torch.int16), w.t())
    with pytest.raises(ValueError):
        int_matmul(x, w)
    assert math.isclose(INT_MM_MAX_K * 128 * 128, 2**31, rel_tol=1e-4)
    with pytest.raises(ValueError):
        int_matmul(
            torch.zeros(1, INT_MM_MAX_K + 1, dtype=torch.int8),
            torch.zeros(INT_MM_MAX_K + 1, 1, dtype=torch.int8),
        )


def test_int_matmul_exact_where_onednn_lacks_vnni() -> None:
    """On a CPU without VNNI, ``torch._int_mm`` sums pairs of products in saturating int16; the
    probe sends such machines to the exact float64 path (oneDNN capped at AVX2 emulates one)."""
    code = (
        "import torch\n"
        "from src.quant.integer.fixed_point import cpu_int_mm_is_exact, int_matmul\n"
        "g = torch.Generator().manual_seed(1)\n"
        "a = torch.randint(-128, 128, (64, 512), dtype=torch.int8, generator=g)\n"
        "b = torch.randint(-128, 128, (512, 96), dtype=torch.int8, generator=g)\n"
        "want = a.long() @ b.long()\n"
        "assert not cpu_int_mm_is_exact()\n"
        "assert torch.equal(int_matmul(a, b).long(), want)\n"
    )
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, check=True, timeout=120)
