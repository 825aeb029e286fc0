"""The fused C kernel of the integer mLSTM (``awd_int_mlstm_layer`` in integer/runtime/int_lstm.c
via kernel_mlstm.py): bit for bit the torch step loop of IntegerMLSTMLayer, on layers converted
from trained QAT models (the plain cell and every option: peepholes, cell clip, projection with
a clip), on "wild" copies of them whose constants reach the corners (left shifts, int32 wrap of
the bias adds, saturation), in both the AVX-512 VNNI build and the portable C build, over 1 to 3
threads and with the state carried into a second window; the whole model's logits with the
kernel on and off; and when the kernel runs."""

from __future__ import annotations

import copy

import pytest
import torch

from src.quant.integer import convert as qconvert
from src.quant.integer import export as qexport
from src.quant.integer import kernel, kernel_mlstm
from src.quant.integer.engine_mlstm import IntegerMLSTMLayer
from src.quant.integer.fixed_point import int_matmul, quantize_multiplier, quantize_multipliers
from tests.quant.qat_helpers import trained_qat_model
from tests.quant.test_kernel import (
    assert_kernel_leaves_the_model_unchanged,
    assert_same,
    randint,
    random_inputs,
)

NATIVE = kernel.load()
GENERIC = kernel.load(("-DAWD_GENERIC",))
needs_kernel = pytest.mark.skipif(
    NATIVE is None or GENERIC is None, reason="no C compiler: the engine uses the torch path"
)

OPTIONS = {
    "plain": {},
    "options": {"peephole": True, "cell_clip": 0.05, "proj_size": 16, "proj_clip": 0.02},
}


@pytest.fixture(scope="module", params=list(OPTIONS))
def int_model(request: pytest.FixtureRequest):  # noqa: ANN201
    """The converted integer model (interpolated tables, as exported)."""
    lm, _ = qconvert.convert(trained_qat_model(seed=0, cell="mlstm", mlstm=OPTIONS[request.param]))
    return lm


def wild_copy(layer: IntegerMLSTMLayer, seed: int) -> IntegerMLSTMLayer:
    """``layer`` with random multipliers up to 30 (left shifts) and down to 1e-3, biases at the
    int32 extremes (the accumulator + bias adds wrap) and a random hidden zero point: every
    saturation of the step is reached."""
    g = torch.Generator().manual_seed(seed)
    args = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in layer.entry().items()}

    def multipliers(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        exponents = torch.rand(n, generator=g, dtype=torch.float64) * 4.5 - 3
        return quantize_multipliers(10**exponents)

    extremes = torch.tensor([2**31 - 1, -(2**31), 2**31 - 9, -(2**31) + 9], dtype=torch.int32)
    for name in ("x", "u", "v", "m", "r"):
        bias = args[f"bias_{name}"]
        if bias is None:
            continue
        args[f"multiplier_{name}"], args[f"shift_{name}"] = multipliers(bias.numel())
        bias = randint(-(2**31), 2**31, tuple(bias.shape), g)
        bias[: len(extremes)] = extremes
        args[f"bias_{name}"] = bias
    if args["peephole"] is not None:
        args["peephole_multiplier"], args["peephole_shift"] = multipliers(3)
    args["product_multiplier"], args["product_shift"] = quantize_multiplier(
        float(10 ** (torch.rand(1, generator=g).item() * 4.5 - 3))
    )
    args["hidden_zero_point"] = int(randint(-20, 20, (1,), g))
    return IntegerMLSTMLayer(
        sigmoid=layer.sigmoid, tanh=layer.tanh, tanh_cell=layer.tanh_cell, **args
    )


@needs_kernel
@pytest.mark.parametrize("build", ["native", "generic"])
@pytest.mark.parametrize("batch", [1, 3, 5])
@pytest.mark.parametrize("wild", [False, True])
def test_kernel_is_bit_identical_to_the_step_loop(
    int_model, build: str, batch: int, wild: bool
) -> None:
    kern = NATIVE if build == "native" else GENERIC
    assert build == "native" or not kern.packed
    threads = torch.get_num_threads()
    for index, converted in enumerate(int_model.layers):
        for seed in range(3):
            layer = wild_copy(converted, seed) if wild else converted
            x, h, c = random_inputs(layer, 6, batch, 100 * index + seed)
            ref = layer.forward_steps(x, (h, c))
            torch.set_num_threads(1 + seed)  # the batch rows split over 1, 2 and 3 threads
            try:
                got = layer.kernel_forward(x, h, c, kernel=kern)
                assert_same(got, ref)
                assert torch.equal(c, random_inputs(layer, 6, batch, 100 * index + seed)[2])
                # the state carried into a second window
                x2, _, _ = random_inputs(layer, 5, batch, 100 * index + seed + 50)
                assert_same(
                    layer.kernel_forward(x2, *got[1], kernel=kern),
                    layer.forward_steps(x2, ref[1]),
                )
            finally:
                torch.set_num_threads(threads)


@needs_kernel
def test_the_wild_copies_reach_the_corners(int_model) -> None:
    """The wild constants do what they are for: left shifts, int16 and int8 saturation of the
    inputs' projections, of m_t and of h."""
    layer = wild_copy(int_model.layers[0], seed=1)
    assert all(bool((rq.left > 0).any()) for rq in (layer.requantize_x, layer.requantize_m))
    x, h, c = random_inputs(layer, 6, 5, seed=3)
    a_x, u = layer.project_inputs(x)
    v = layer.requantize_v(int_matmul(h, layer.weight_mh.t()) + layer.bias_v).clamp(-32768, 32767)
    m = layer.requantize_product(u[0].long() * v) + layer.product_zero_point
    assert bool((m < -128).any()) and bool((m > 127).any())
    for t in (a_x, u, v):
        assert bool((t == -32768).any()) and bool((t == 32767).any())
    out, _ = layer.forward_steps(x, (h, c))
    lo, hi = layer.proj_bounds or (-128, 127)
    assert bool((out == lo).any()) and bool((out == hi).any())


@needs_kernel
def test_the_integer_model_is_unchanged_by_the_kernel(
    int_model, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whole model, two windows with the state carried: int32 logits, states and scores equal;
    with the kernel on, every layer ran in it."""
    lm = qexport.expand_tables(copy.deepcopy(int_model))
    calls = []
    run = kernel_mlstm.layer_forward
    monkeypatch.setattr(
        kernel_mlstm, "layer_forward", lambda *a, **k: calls.append(1) or run(*a, **k)
    )

    def count(on: bool) -> None:
        assert len(calls) == (3 * len(lm.layers) if on else 0)

    assert_kernel_leaves_the_model_unchanged(lm, count)


@needs_kernel
def test_the_pack_is_cached_and_rebuilt_when_a_buffer_changes(int_model) -> None:
    layer = wild_copy(int_model.layers[0], seed=0)
    x, h, c = random_inputs(layer, 3, 2, seed=1)
    layer.kernel_forward(x, h, c, kernel=NATIVE)
    pack = layer._kernel_packs[NATIVE.packed]
    layer.kernel_forward(x, h, c, kernel=NATIVE)
    assert layer._kernel_packs[NATIVE.packed] is pack
    layer.weight_hm.neg_()  # in place: the version counter moves
    assert_same(layer.kernel_forward(x, h, c, kernel=NATIVE), layer.forward_steps(x, (h, c)))
    assert layer._kernel_packs[NATIVE.packed] is not pack


@needs_kernel
def test_when_the_kernel_runs(int_model) -> None:
    layer = int_model.layers[0]
    x, h, c = random_inputs(layer, 3, 2, seed=1)
    assert layer.kernel_usable(x, h, c)
    assert not layer.kernel_usable(x, h[:, :-1], c)  # wrong shapes: the torch path raises
    assert not layer.kernel_usable(x.to(torch.int16), h, c)
    kernel.set_enabled(False)
    try:
        assert not layer.kernel_usable(x, h, c)
    finally:
        kernel.set_enabled(None)

    class OtherStep(IntegerMLSTMLayer):  # other step math: keep its own step
        def step(self, a_x, u, h, c):  # noqa: ANN001, ANN202
            return super().step(a_x, u, h, c)

    other = OtherStep.__new__(OtherStep)
    other.__dict__.update(layer.__dict__)
    assert not other.kernel_usable(x, h, c)
    from torch.utils._python_dispatch import TorchDispatchMode

    class Seen(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            return func(*args, **(kwargs or {}))

    with Seen():
        assert not layer.kernel_usable(x, h, c)
