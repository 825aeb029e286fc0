"""Observers, fake quantizers and the quantize/dequantize pair (exact expectations)."""

from __future__ import annotations

import pytest
import torch

from src.quant.qat.fake_quant import (
    FakeQuantize,
    FixedScaleFakeQuantize,
    PowerOfTwoFakeQuantize,
    WeightFakeQuantize,
    enable_fake_quant,
    enable_observer,
    quantizers,
    reset_observers,
)
from src.quant.qat.observers import EMAMinMaxObserver
from src.quant.scheme import dequantize, qrange, quantize, quantize_bias


def randn(*shape: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


# ---------------------------------------------------------------- quantize / dequantize


def test_qrange():
    assert qrange(8) == (-128, 127)
    assert qrange(8, narrow=True) == (-127, 127)
    assert qrange(4, narrow=True) == (-7, 7)
    assert qrange(8, signed=False) == (0, 255)
    assert qrange(16) == (-32768, 32767)


@pytest.mark.parametrize(
    "qmin,qmax,scale,zp",
    [
        (-128, 127, 0.0123, 0),
        (-128, 127, 0.0371, -17),
        (-128, 127, 3e-5, 100),
        (-127, 127, 0.7, 0),
        (-7, 7, 0.25, 0),
        (-8, 7, 0.1, 3),
        (0, 255, 0.02, 128),
        (-32768, 32767, 2.0**-12, 0),
        (-32768, 32767, 3e-5, 0),
    ],
)
def test_dequantize_quantize_equals_torch_fake_quant(qmin, qmax, scale, zp):
    x = randn(200_000, seed=1, scale=3.0)
    x = torch.cat([x, torch.tensor([0.0, scale * 0.5, -scale * 1.5, scale * 2.5, 1e6, -1e6])])
    fq = torch.fake_quantize_per_tensor_affine(x, scale, zp, qmin, qmax)
    q = quantize(x, scale, zp, qmin, qmax)
    assert q.dtype == (torch.int8 if qmin >= -128 and qmax <= 127 else torch.int16)
    assert int(q.min()) >= qmin and int(q.max()) <= qmax
    assert torch.equal(dequantize(q, scale, zp), fq)
    # tensor qparams (the observers' form) give the same
    s, z = torch.tensor(scale), torch.tensor(zp, dtype=torch.int32)
    assert torch.equal(dequantize(quantize(x, s, z, qmin, qmax), s, z), fq)


def test_quantize_rounds_half_to_even():
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, -2.5])
    assert quantize(x, 1.0, 0, -128, 127).tolist() == [0, 2, 2, 0, -2, -2]


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("qmin,qmax", [(-127, 127), (-7, 7), (-32768, 32767)])
def test_per_channel_quantize_equals_torch(axis, qmin, qmax):
    w = randn(64, 300, seed=2)
    C = w.shape[axis]
    scale = torch.rand(C, generator=torch.Generator().manual_seed(3)) * 0.05 + 1e-4
    zp = torch.randint(-3, 4, (C,), dtype=torch.int32, generator=torch.Generator().manual_seed(4))
    fq = torch.fake_quantize_per_channel_affine(w, scale, zp, axis, qmin, qmax)
    q = quantize(w, scale, zp, qmin, qmax, axis=axis)
    assert torch.equal(dequantize(q, scale, zp, axis=axis), fq)


@pytest.mark.parametrize(
    "qmin,qmax,scale,zp",
    [
        (-128, 127, 0.0123, 0),
        (-128, 127, 0.0371, -17),
        (-128, 127, 7.3e-6, 127),
        (0, 255, 0.02, 128),
        (-7, 7, 0.25, 0),
        (-32768, 32767, 2.0**-12, 0),
        (-32768, 32767, 1.234e-3, 0),
        (-32768, 32767, 2.0**-20, 5),
    ],
)
def test_quantize_dequantize_is_identity_on_codes(qmin, qmax, scale, zp):
    q = torch.arange(qmin, qmax + 1)
    back = quantize(dequantize(q, scale, zp), scale, zp, qmin, qmax)
    assert torch.equal(back.to(torch.int64), q)


def test_quantize_bias():
    b = torch.tensor([0.1, -0.25, 3.0, 0.0])
    s = torch.tensor([0.001, 0.001, 0.5, 1.0])
    assert quantize_bias(b, s).tolist() == [100, -250, 6, 0]
    assert quantize_bias(torch.tensor([1e9]), 1e-3).item() == 2**31 - 1
    assert quantize_bias(b, s).dtype == torch.int32


# ---------------------------------------------------------------- observer


def test_ema_observer_update_math():
    obs = EMAMinMaxObserver(momentum=0.1)
    assert not bool(obs.initialized)
    x1 = torch.tensor([-1.0, 0.5, 2.0])
    assert obs(x1) is x1
    assert bool(obs.initialized)
    assert obs.min_val.item() == -1.0 and obs.max_val.item() == 2.0
    obs(torch.tensor([-3.0, 4.0]))
    # min <- min + m * (batch_min - min), same for max (float32 arithmetic)
    exp_min = torch.tensor(-1.0) + 0.1 * (torch.tensor(-3.0) - torch.tensor(-1.0))
    exp_max = torch.tensor(2.0) + 0.1 * (torch.tensor(4.0) - torch.tensor(2.0))
    assert obs.min_val.item() == exp_min.item()
    assert obs.max_val.item() == exp_max.item()
    assert obs.min_val.item() == pytest.approx(-1.2) and obs.max_val.item() == pytest.approx(2.2)
    obs(torch.empty(0))  # nothing to observe
    assert obs.max_val.item() == exp_max.item()
    obs.reset()
    assert not bool(obs.initialized)
    obs(torch.tensor([5.0, 6.0]))
    assert (obs.min_val.item(), obs.max_val.item()) == (5.0, 6.0)


def test_ema_observer_converges_to_steady_range():
    obs = EMAMinMaxObserver(momentum=0.01)
    for i in range(3000):
        obs(randn(256, seed=i))
    # the EMA of per-batch extremes of N(0, 1) batches of 256 is about +-2.8
    assert -3.3 < obs.min_val.item() < -2.3 and 2.3 < obs.max_val.item() < 3.3


def test_calculate_qparams_affine_contains_zero():
    obs = EMAMinMaxObserver()
    obs(torch.tensor([0.5, 2.0]))  # all positive: range widened to [0, 2]
    scale, zp = obs.calculate_qparams(-128, 127)
    assert scale.dtype == torch.float32 and zp.dtype == torch.int32
    assert scale.item() == pytest.approx(2.0 / 255)
    assert zp.item() == -128
    obs.reset()
    obs(torch.tensor([-1.0, 3.0]))
    scale, zp = obs.calculate_qparams(-128, 127)
    assert scale.item() == pytest.approx(4.0 / 255)
    assert zp.item() == -128 - round(-1.0 / scale.item())
    # zero is exactly representable: 0 -> zero_point -> 0
    q0 = quantize(torch.zeros(1), scale, zp, -128, 127)
    assert q0.item() == zp.item() and dequantize(q0, scale, zp).item() == 0.0
    # symmetric: zero point 0, max |x| maps to qmax
    scale, zp = obs.calculate_qparams(-128, 127, symmetric=True)
    assert zp.item() == 0 and scale.item() == pytest.approx(3.0 / 127)
    assert quantize(torch.tensor([3.0, -3.0]), scale, zp, -128, 127).tolist() == [127, -127]


def test_calculate_qparams_scale_guard():
    obs = EMAMinMaxObserver()
    obs(torch.zeros(10))
    scale, zp = obs.calculate_qparams(-128, 127)
    assert scale.item() == torch.finfo(torch.float32).eps and zp.item() == -128
    scale_s, _ = obs.calculate_qparams(-128, 127, symmetric=True)
    assert scale_s.item() > 0


# ---------------------------------------------------------------- activation fake quant


def test_fake_quantize_observes_in_training_only():
    fq = FakeQuantize()
    fq.train()
    x = randn(1000, seed=5)
    y = fq(x)
    assert fq.observer.min_val.item() == x.min().item()
    scale, zp = fq.calculate_qparams()
    assert torch.equal(y, torch.fake_quantize_per_tensor_affine(x, scale, zp, -128, 127))
    assert torch.equal(y, dequantize(quantize(x, scale, zp, -128, 127), scale, zp))
    before = fq.observer.max_val.clone()
    fq.eval()
    fq(randn(1000, seed=6, scale=10.0))
    assert torch.equal(fq.observer.max_val, before)


def test_fake_quantize_delay_and_freeze():
    fq = FakeQuantize(fake_quant_enabled=False)
    x = randn(100, seed=7)
    assert fq(x) is x  # identity during the delay ...
    assert bool(fq.observer.initialized)  # ... but the range is tracked
    fq.enable_fake_quant()
    y = fq(x)
    assert not torch.equal(y, x)
    assert len(torch.unique(y)) <= 256
    fq.freeze_observer()
    before = (fq.observer.min_val.clone(), fq.observer.max_val.clone())
    fq(randn(100, seed=8, scale=5.0))
    assert torch.equal(fq.observer.min_val, before[0])
    assert torch.equal(fq.observer.max_val, before[1])


def test_fake_quantize_before_observing_is_an_error():
    fq = FakeQuantize().eval()
    with pytest.raises(RuntimeError):
        fq(torch.ones(3))


def test_activation_ste_gradient():
    fq = FakeQuantize()
    fq(torch.tensor([-1.28, 1.27]))  # scale 0.01, zero point 0 after the first batch
    fq.freeze_observer()
    scale, zp = fq.calculate_qparams()
    assert scale.item() == pytest.approx(0.01) and zp.item() == 0
    x = torch.linspace(-3.0, 3.0, 601, requires_grad=True)
    fq(x).sum().backward()
    inside = (x.detach() > -1.275) & (x.detach() < 1.265)
    outside = (x.detach() < -1.29) | (x.detach() > 1.28)
    assert (x.grad[inside] == 1).all()
    assert (x.grad[outside] == 0).all()


def test_quantizer_flags_in_state_dict():
    src = FakeQuantize()
    src(randn(50, seed=9))
    src.enable_fake_quant(False).freeze_observer()
    dst = FakeQuantize()
    dst.load_state_dict(src.state_dict())
    assert not dst.fake_quant_enabled and not dst.observer_enabled
    assert torch.equal(dst.observer.min_val, src.observer.min_val)
    assert bool(dst.observer.initialized)


def test_model_wide_switches():
    model = torch.nn.Sequential(FakeQuantize(), torch.nn.Linear(3, 3), PowerOfTwoFakeQuantize())
    model.append(WeightFakeQuantize())
    assert len(list(quantizers(model))) == 3
    enable_fake_quant(model, False)
    assert not any(q.fake_quant_enabled for q in quantizers(model))
    enable_observer(model, False)
    assert not model[0].observer_enabled and not model[2].observer_enabled
    model[0].observer(torch.ones(2))
    reset_observers(model)
    assert not bool(model[0].observer.initialized)


# ---------------------------------------------------------------- fixed and power-of-two scales


def test_fixed_scale_int16_gate_preactivation():
    fq = FixedScaleFakeQuantize(bits=16, scale=2.0**-12)
    # 7.9998 -> code 32767.2 (in range); 7.9999 -> 32767.6 rounds to 32768: clamped, zero grad
    x = torch.tensor([-9.0, -8.0, -1e-4, 0.3, 7.9998, 7.9999, 8.0, 100.0], requires_grad=True)
    y = fq(x)
    codes = y.detach() * 4096
    assert torch.equal(codes, torch.round(codes))
    assert y[0].item() == -8.0 and y[-1].item() == 8.0 - 2.0**-12 and y[-2].item() == 8 - 2**-12
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    assert torch.equal(y.detach(), dequantize(quantize(x, 2.0**-12, 0, -32768, 32767), 2.0**-12, 0))


@pytest.mark.parametrize(
    "amax,exponent", [(5.3, -12), (8.0, -12), (8.01, -11), (0.9, -15), (1.0, -15), (40.0, -9)]
)
def test_power_of_two_scale(amax, exponent):
    fq = PowerOfTwoFakeQuantize(bits=16)
    fq(torch.tensor([-amax / 2, amax]))
    assert fq.exponent() == exponent
    scale, zp = fq.calculate_qparams()
    assert scale.item() == 2.0**exponent and zp.item() == 0
    y = fq(torch.tensor([amax, -amax]))
    assert y.tolist()[1] == pytest.approx(-amax, abs=2.0**exponent)


def test_power_of_two_int8():
    fq = PowerOfTwoFakeQuantize(bits=8)
    fq(torch.tensor([3.0]))
    assert fq.exponent() == 2 - 7


# ---------------------------------------------------------------- weights


@pytest.mark.parametrize("bits,qmax", [(8, 127), (4, 7)])
def test_weight_fake_quant_per_channel(bits, qmax):
    w = randn(48, 200, seed=10) * torch.linspace(0.01, 2.0, 48)[:, None]
    w[5] = 0.0  # an all-zero row keeps a positive scale
    wfq = WeightFakeQuantize(bits=bits)
    y = wfq(w)
    scale = wfq.calculate_scale(w)
    amax = w.abs().amax(dim=1)
    assert torch.equal(scale[amax > 0], (amax / qmax)[amax > 0])
    assert scale[5].item() > 0
    codes = y / scale[:, None]
    assert torch.allclose(codes, torch.round(codes), atol=1e-3)
    assert codes.abs().max().item() == pytest.approx(qmax, abs=1e-3)
    # every row's extreme weight maps to +-qmax
    q, s = wfq.quantize(w)
    assert q.dtype == torch.int8 and torch.equal(s, scale)
    assert int(q.min()) >= -qmax and int(q.max()) <= qmax
    rows = [r for r in range(48) if r != 5]
    assert (q[rows].abs().amax(dim=1) == qmax).all()
    assert torch.equal(dequantize(q, s, 0, axis=0), y)
    assert torch.equal(
        y,
        torch.fake_quantize_per_channel_affine(
            w, scale, torch.zeros(48, dtype=torch.int32), 0, -qmax, qmax
        ),
    )
    assert len(torch.unique(q)) <= 2 * qmax + 1


@pytest.mark.parametrize("bits", [4, 8])
def test_weight_ste_gradient_and_no_grad_to_scale(bits):
    w = randn(16, 40, seed=11).requires_grad_(True)
    wfq = WeightFakeQuantize(bits=bits)
    out = wfq(w)
    (out * torch.arange(40.0)).sum().backward()
    assert torch.equal(w.grad, torch.arange(40.0).expand(16, 40))


def test_weight_fake_quant_disabled_is_identity():
    w = randn(4, 4, seed=12)
    assert WeightFakeQuantize(fake_quant_enabled=False)(w) is w
