"""Integer sigmoid / tanh tables: error bounds over every int16 input, integer-only lookup."""

from __future__ import annotations

import pytest
import torch

from src.quant.integer.lut import (
    Int16LUT,
    build_full_table,
    build_interpolated_table,
    lut_lookup,
    sigmoid_lut,
    tanh_lut,
)
from src.quant.scheme import GATE_EXPONENT

ALL = torch.arange(-32768, 32768).to(torch.int16)
STEP = 2.0**-15  # one output step
CELL_EXPONENTS = [-8, -9, -10, -11, -12, -13, -14, -15]


def max_error(lut: Int16LUT, fn, exponent: int) -> float:
    y = lut(ALL)
    assert y.dtype == torch.int16
    ref = fn(ALL.to(torch.float64) * 2.0**exponent)
    return (y.to(torch.float64) * STEP - ref).abs().max().item()


# ---------------------------------------------------------------- error bounds


def test_sigmoid_error():
    assert max_error(sigmoid_lut(), torch.sigmoid, GATE_EXPONENT) <= STEP / 2 + 1e-12  # 1.53e-5
    assert max_error(sigmoid_lut(interpolated=True), torch.sigmoid, GATE_EXPONENT) <= 3.4e-5


def test_tanh_gate_error():
    # full: correctly rounded, but +1 is not representable: 1 step where tanh saturates
    assert max_error(tanh_lut(), torch.tanh, GATE_EXPONENT) <= STEP  # 3.03e-5
    assert max_error(tanh_lut(interpolated=True), torch.tanh, GATE_EXPONENT) <= 6.9e-5


@pytest.mark.parametrize("exponent", CELL_EXPONENTS)
def test_tanh_cell_state_error(exponent):
    full = max_error(tanh_lut(exponent), torch.tanh, exponent)
    interp = max_error(tanh_lut(exponent, interpolated=True), torch.tanh, exponent)
    assert full <= STEP
    assert interp <= 6.9e-5 < 2.0**-12


def test_full_table_is_correctly_rounded_below_saturation():
    y = sigmoid_lut()(ALL).to(torch.int64)
    ref = torch.sigmoid(ALL.to(torch.float64) * 2.0**GATE_EXPONENT) * 2**15
    assert ((y.to(torch.float64) - ref).abs() <= 0.5).all()


# ---------------------------------------------------------------- exact values and shape


@pytest.mark.parametrize("interpolated", [False, True])
def test_exact_points_range_and_monotonicity(interpolated):
    sig, tanh = sigmoid_lut(interpolated=interpolated), tanh_lut(interpolated=interpolated)
    zero = torch.zeros(1, dtype=torch.int16)
    assert sig(zero).item() == 16384  # sigmoid(0) = 0.5
    assert tanh(zero).item() == 0
    s, t = sig(ALL).to(torch.int64), tanh(ALL).to(torch.int64)
    assert int(s.min()) >= 0 and int(s.max()) <= 32767
    assert int(t.min()) >= -32768 and int(t.max()) <= 32767
    assert (s[1:] >= s[:-1]).all() and (t[1:] >= t[:-1]).all()
    # odd / complementary symmetry within one output step
    pos = torch.arange(1, 32768)
    assert (t[32768 + pos] + t[32768 - pos]).abs().max().item() <= 1
    assert (s[32768 + pos] + s[32768 - pos] - 32768).abs().max().item() <= 1


def test_interpolated_coarse_scale_is_shift_then_gate_table():
    gate = tanh_lut(GATE_EXPONENT, interpolated=True)
    for exponent in (-8, -10, -11):
        lut = tanh_lut(exponent, interpolated=True)
        assert lut.input_left_shift == GATE_EXPONENT * -1 + exponent
        shifted = (ALL.to(torch.int64) << lut.input_left_shift).clamp(-32768, 32767)
        assert torch.equal(lut(ALL), gate(shifted.to(torch.int16)))
    fine = tanh_lut(-14, interpolated=True)
    assert fine.input_left_shift == 0 and fine.interpolated


def test_interpolation_integer_formula():
    table = build_interpolated_table(torch.tanh, GATE_EXPONENT)
    assert table.dtype == torch.int16 and table.numel() == 513
    t = table.tolist()
    codes = [-32768, -32700, -129, -1, 0, 1, 64, 127, 128, 1000, 32767]
    got = lut_lookup(torch.tensor(codes, dtype=torch.int16), table).tolist()
    for code, g in zip(codes, got, strict=True):
        u = code + 32768
        i, f = u >> 7, u & 127
        assert g == t[i] + (((t[i + 1] - t[i]) * f + 64) >> 7)
    # knots are hit exactly
    knots = torch.arange(0, 512) * 128 - 32768
    assert lut_lookup(knots.to(torch.int16), table).tolist() == t[:512]


def test_full_table_layout():
    table = build_full_table(torch.sigmoid, GATE_EXPONENT)
    assert table.dtype == torch.int16 and table.numel() == 65536
    assert torch.equal(lut_lookup(ALL, table), table)


# ---------------------------------------------------------------- integer-only interface


def test_lookup_refuses_non_int16_and_bad_tables():
    lut = sigmoid_lut()
    with pytest.raises(TypeError):
        lut(torch.zeros(3))
    with pytest.raises(TypeError):
        lut(torch.zeros(3, dtype=torch.int32))
    with pytest.raises(ValueError):
        Int16LUT(torch.zeros(100, dtype=torch.int16), GATE_EXPONENT)
    with pytest.raises(ValueError):
        Int16LUT(torch.zeros(513, dtype=torch.int32), GATE_EXPONENT)


def test_lut_keeps_shape_and_saves_table():
    lut = tanh_lut(-11, interpolated=True)
    x = torch.randint(-32768, 32768, (7, 3, 5), dtype=torch.int16)
    assert lut(x).shape == (7, 3, 5)
    other = tanh_lut(-11, interpolated=True)
    other.table.zero_()
    other.load_state_dict(lut.state_dict())
    assert torch.equal(other(x), lut(x))
