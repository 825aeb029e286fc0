"""The fused C kernel of the integer LSTM (integer/runtime/int_lstm.c via kernel_lstm.py): bit
for bit the torch step loop of IntegerLSTMLayer, on random codes and constants that reach every
corner (left shifts, int32 wrap of the bias add, saturation, padding, 4-bit h), in both the
AVX-512 VNNI build and the portable C build; and the fallbacks."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch

from src.quant.integer import convert as qconvert
from src.quant.integer import export as qexport
from src.quant.integer import kernel
from src.quant.integer.engine import IntegerLSTMLayer, IntegerRecurrentLayer
from src.quant.integer.fixed_point import quantize_multiplier, quantize_multipliers
from src.quant.integer.lut import sigmoid_lut, tanh_lut
from tests.quant.qat_helpers import toy_tokens, trained_qat_model

NATIVE = kernel.load()
GENERIC = kernel.load(("-DAWD_GENERIC",))
needs_kernel = pytest.mark.skipif(
    NATIVE is None or GENERIC is None, reason="no C compiler: the engine uses the torch path"
)


def randint(low: int, high: int, shape: tuple[int, ...], g: torch.Generator, dtype=torch.int32):
    return torch.randint(low, high, shape, generator=g, dtype=torch.int64).to(dtype)


def random_layer(
    n_in: int,
    hidden: int,
    k: int,
    seed: int,
    bits: int = 8,
    interpolated: bool = False,
    wild: bool = False,
) -> IntegerLSTMLayer:
    """A layer with random int8 weights and random multipliers. ``wild``: multipliers above 1
    (left shifts, odd seeds), int32 biases at the extremes (the bias add wraps) and
    multipliers that saturate the gates."""
    g = torch.Generator().manual_seed(seed)
    G = 4 * hidden
    # wild: multipliers up to 30 (left shifts) for odd seeds, below 1 for even ones
    lo_exp, hi_exp = ((-3.0, 1.5) if seed % 2 else (-3.0, -0.1)) if wild else (-2.5, -0.5)
    reals = 10 ** (torch.rand(2, G, generator=g, dtype=torch.float64) * (hi_exp - lo_exp) + lo_exp)
    m_x, s_x = quantize_multipliers(reals[0])
    m_h, s_h = quantize_multipliers(reals[1])
    bias_bound = 2**31 if wild else 2**16
    bias_x = randint(-bias_bound, bias_bound, (G,), g)
    bias_h = randint(-bias_bound, bias_bound, (G,), g)
    if wild:  # the int32 accumulator + bias add wraps around, as torch's int32 add does
        extremes = torch.tensor([2**31 - 1, -(2**31), 2**31 - 9, -(2**31) + 9], dtype=torch.int32)
        bias_x[: len(extremes)] = extremes
        bias_h[-len(extremes) :] = extremes
    out_m, out_s = quantize_multiplier(2.0**-30 / (0.02 + 0.05 * torch.rand(1, generator=g).item()))
    zero_point = int(randint(-20, 20, (1,), g)) if bits == 8 else 0
    return IntegerLSTMLayer(
        weight_ih=randint(-128, 128, (G, n_in), g, torch.int8),
        bias_x=bias_x,
        multiplier_x=m_x,
        shift_x=s_x,
        weight_hh=randint(-128, 128, (G, hidden), g, torch.int8),
        bias_h=bias_h,
        multiplier_h=m_h,
        shift_h=s_h,
        cell_exponent=k,
        output_multiplier=out_m,
        output_shift=out_s,
        hidden_zero_point=zero_point,
        bits=bits,
        sigmoid=sigmoid_lut(-12, interpolated),
        tanh=tanh_lut(-12, interpolated),
        tanh_cell=tanh_lut(-k, interpolated),
    )


def random_inputs(layer: IntegerRecurrentLayer, steps: int, batch: int, seed: int):
    """Random int8 x [T, B, I], h [B, out] on the layer's activation range, int16 c [B, H]
    (with the extreme codes in the first row)."""
    g = torch.Generator().manual_seed(seed)
    lim = 1 << (layer.bits - 1)
    out = getattr(layer, "output_size", layer.hidden_size)  # the mLSTM's projection width
    x = randint(-128, 128, (steps, batch, layer.input_size), g, torch.int8)
    h = randint(-lim, lim, (batch, out), g, torch.int8)
    c = randint(-32768, 32768, (batch, layer.hidden_size), g, torch.int16)
    c[0, :3] = torch.tensor([-32768, 32767, 0], dtype=torch.int16)[: min(3, c.size(1))]
    return x, h, c


def assert_same(a, b) -> None:
    (ha, (hTa, cTa)), (hb, (hTb, cTb)) = a, b
    assert ha.dtype == hb.dtype == hTa.dtype == torch.int8 and cTa.dtype == torch.int16
    assert torch.equal(ha, hb) and torch.equal(hTa, hTb) and torch.equal(cTa, cTb)


@needs_kernel
@pytest.mark.parametrize("build", ["native", "generic"])
@pytest.mark.parametrize(
    ("n_in", "hidden", "k", "steps", "batch", "bits", "interpolated", "wild"),
    [
        (7, 5, 12, 6, 1, 8, False, False),  # H not a multiple of 4, gates padded to 64
        (16, 16, 15, 5, 3, 8, True, False),  # interpolated tables (expanded by the kernel)
        (24, 20, 9, 4, 5, 8, False, True),  # left shifts, wrapping biases, saturation
        (33, 32, 16, 3, 9, 8, False, True),  # k > 15: f c is the rounded product; 3 row tiles
        (9, 12, 20, 5, 2, 4, False, False),  # 4-bit h
        (10, 17, 13, 7, 4, 8, True, True),
    ],
)
def test_kernel_is_bit_identical_to_the_step_loop(
    build: str,
    n_in: int,
    hidden: int,
    k: int,
    steps: int,
    batch: int,
    bits: int,
    interpolated: bool,
    wild: bool,
) -> None:
    kern = NATIVE if build == "native" else GENERIC
    assert build == "native" or not kern.packed
    threads = torch.get_num_threads()
    for seed in range(3):
        layer = random_layer(n_in, hidden, k, seed, bits, interpolated, wild)
        x, h, c = random_inputs(layer, steps, batch, seed + 100)
        ref = layer.forward_steps(x, (h, c))
        torch.set_num_threads(1 + seed)  # the batch rows split over 1, 2 and 3 threads
        try:
            got = layer.kernel_forward(x, h, c, kernel=kern)
        finally:
            torch.set_num_threads(threads)
        assert_same(got, ref)
        assert torch.equal(
            c, random_inputs(layer, steps, batch, seed + 100)[2]
        )  # state not mutated
        # the state carried into a second window
        x2, _, _ = random_inputs(layer, steps, batch, seed + 200)
        assert_same(
            layer.kernel_forward(x2, *got[1], kernel=kern),
            layer.forward_steps(x2, ref[1]),
        )


def assert_kernel_leaves_the_model_unchanged(lm: object, on_kernel_call=None) -> None:
    """Whole model, two windows with the state carried, the kernel off then on: int32 logits,
    states and scores equal. ``on_kernel_call(on)`` runs after each pass (call counting)."""
    tokens = toy_tokens(12, 4, seed=3)
    results = {}
    for on in (False, True):
        kernel.set_enabled(on)
        try:
            state, outs = None, []
            for _ in range(2):
                logits, state = lm.logits_int32(tokens, state)
                outs.append(logits)
            nll, _ = lm.score(tokens[:-1], tokens[1:], state)
            results[on] = (outs, state, nll)
        finally:
            kernel.set_enabled(None)
        if on_kernel_call is not None:
            on_kernel_call(on)
    (a, sa, na), (b, sb, nb) = results[False], results[True]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert all(
        torch.equal(x, y) for s, t in zip(sa, sb, strict=True) for x, y in zip(s, t, strict=True)
    )
    assert torch.equal(na, nb)


@needs_kernel
def test_the_integer_model_is_unchanged_by_the_kernel() -> None:
    """Whole model, two windows with the state carried: int32 logits, states and scores equal."""
    lm, _ = qconvert.convert(trained_qat_model(seed=0))
    assert_kernel_leaves_the_model_unchanged(qexport.expand_tables(lm))


@needs_kernel
def test_when_the_kernel_runs() -> None:
    layer = random_layer(6, 8, 12, seed=0)
    x, h, c = random_inputs(layer, 3, 2, seed=1)
    assert layer.kernel_usable(x, h, c)
    kernel.set_enabled(False)
    try:
        assert not layer.kernel_usable(x, h, c)
    finally:
        kernel.set_enabled(None)

    class OtherStep(IntegerLSTMLayer):  # e.g. a cell with other step math: keep its own step
        def step(self, a_x, h, c):  # noqa: ANN001, ANN202
            return super().step(a_x, h, c)

    other = OtherStep.__new__(OtherStep)
    other.__dict__.update(layer.__dict__)
    assert not other.kernel_usable(x, h, c)
    from torch.utils._python_dispatch import TorchDispatchMode

    class Seen(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            return func(*args, **(kwargs or {}))

    with Seen():
        assert not layer.kernel_usable(x, h, c)


def test_the_kernel_source_is_integer_only() -> None:
    source = kernel.SOURCE.read_text()
    code = re.sub(r"/\*.*?\*/", "", source, flags=re.S)  # comments may say "floating point"
    assert not re.search(r"\b(float|double|_Float\d*|__m512[dh]?\b|_ps\b|_pd\b)", code)


def test_a_missing_compiler_falls_back_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWD_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "/bin/false")
    monkeypatch.setattr(kernel, "_compiler", lambda: "/bin/false")
    defines = ("-DAWD_TEST_NO_COMPILER",)
    with pytest.warns(RuntimeWarning, match="pure-torch"):
        assert kernel.load(defines) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert kernel.load(defines) is None  # warned once per process
    assert not list(tmp_path.iterdir())  # no half-written library left behind
    kernel._loaded.pop(defines)


@needs_kernel
def test_the_build_is_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWD_KERNEL_CACHE", str(tmp_path))
    defines = ("-DAWD_TEST_CACHE",)
    try:
        first = kernel._build_and_load(defines)
        built = sorted(tmp_path.glob("int_lstm-*.so"))
        assert [first.path] == built
        mtime = first.path.stat().st_mtime_ns
        second = kernel._build_and_load(defines)
        assert second.path == first.path and first.path.stat().st_mtime_ns == mtime
    finally:
        kernel._loaded.pop(defines, None)


@needs_kernel
@pytest.mark.parametrize("build", ["native", "generic"])
def test_fused_dequantization_is_torchs_add_conversion_and_product(build: str) -> None:
    """``scoring.dequantize``: float32(acc + bias) * scale in one C pass, bit for bit torch's
    three ops, also where the int32 add wraps and in row-strided views."""
    from src.quant.integer import scoring

    kern = NATIVE if build == "native" else GENERIC
    g = torch.Generator().manual_seed(7)
    full = randint(-(2**31), 2**31 - 1, (13, 40), g)
    acc = full[:, :37]  # a row stride other than the width
    bias = randint(-(2**31), 2**31 - 1, (37,), g)
    bias[:3] = 2**31 - 1  # wraps with any positive acc
    acc[:, :3] = 2**30
    scale = torch.rand(37, generator=g) * 1e-3
    want = torch.mul(acc.clone().add_(bias), scale)
    out = torch.empty(13, 50)[:, :37]
    got = scoring.dequantize(kern, acc, bias, scale, out)  # acc itself: row stride 40
    assert got.data_ptr() == out.data_ptr()
    assert torch.equal(got, want)
