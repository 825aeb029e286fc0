"""The fake-quantized LSTM layer and model: float parity with quantization off, every tensor on
its grid, weights quantized once per call, observers once per call, straight-through
gradients, dropouts, float checkpoints, calibration and the config's checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from src.models.awd import AWDLSTM, AWDLSTMConfig
from src.models.dropout import WeightDrop
from src.models.recurrent import LAYERS, LoopLSTMLayer
from src.quant.config import QUANTIZABLE_TENSORS, QuantConfig
from src.quant.qat import prepare
from src.quant.qat.calibration import (
    align_quantizer_state,
    calibrate,
    load_observer_state,
    observer_state,
)
from src.quant.qat.fake_quant import FakeQuantize, WeightFakeQuantize, enable_fake_quant, quantizers
from src.quant.qat.lstm import QATLSTMLayer
from src.quant.qat.observers import EMAMinMaxObserver
from tests.quant.qat_helpers import V, toy_tokens, trained_qat_model

T, B, I, H = 7, 3, 5, 6
QAT = QuantConfig(enabled=True)


def qat_layer(recurrent_dropout: float = 0.0, **quant: object) -> QATLSTMLayer:
    torch.manual_seed(0)
    return QATLSTMLayer(I, H, recurrent_dropout, quant=QuantConfig(enabled=True, **quant))


def test_prepare_swaps_in_the_registered_qat_layer() -> None:
    """`prepare` replaces each float layer (the fused runner under `auto`) by the registered
    ("lstm", "qat") layer, inside the same weight drop, with the same weights; float stays."""
    assert LAYERS[("lstm", "qat")] is QATLSTMLayer
    cfg = AWDLSTMConfig(vocab_size=V, emb_size=8, hidden_size=H, num_layers=2, weight_drop=0.5)
    torch.manual_seed(0)
    float_model = AWDLSTM(cfg)
    weights = {k: v.clone() for k, v in float_model.state_dict().items()}
    assert not isinstance(float_model.layers[0].module, QATLSTMLayer)  # the fused runner
    model = prepare(float_model, QAT)
    for layer in model.layers:
        assert isinstance(layer, WeightDrop) and isinstance(layer.module, QATLSTMLayer)
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in weights.items())
    assert model.decoder.weight is model.embedding.weight  # still tied
    assert prepare(AWDLSTM(cfg), QuantConfig()).layers[0].module.__class__ is not QATLSTMLayer
    with pytest.raises(ValueError, match="runner"):
        prepare(AWDLSTM(AWDLSTMConfig(runner="cudnn")), QAT)
    with pytest.raises(ValueError, match="already"):
        prepare(model, QAT)


def test_float_parameters_load_and_quantization_off_is_the_float_layer() -> None:
    """Same parameter names as the loop runner; with every quantizer off it computes the float
    LSTM (float64, the only difference being where b_hh is added)."""
    loop = LoopLSTMLayer(I, H).double()
    layer = qat_layer().double()
    assert {n for n, _ in layer.named_parameters()} == {n for n, _ in loop.named_parameters()}
    missing, unexpected = layer.load_state_dict(loop.state_dict(), strict=False)
    assert unexpected == [] and all("_quant." in k for k in missing)
    enable_fake_quant(layer, False)
    x = torch.randn(T, B, I, dtype=torch.float64)
    state = (torch.randn(1, B, H, dtype=torch.float64), torch.randn(1, B, H, dtype=torch.float64))
    y1, (h1, c1) = loop(x, state)
    y2, (h2, c2) = layer(x, state)
    torch.testing.assert_close(y2, y1, rtol=0, atol=1e-12)
    torch.testing.assert_close(c2, c1, rtol=0, atol=1e-12)


def on_grid(x: torch.Tensor, scale: float, zero_point: float = 0.0) -> bool:
    codes = x / scale + zero_point
    return bool(torch.allclose(codes, codes.round(), atol=1e-3))


def test_every_state_tensor_is_on_its_grid_in_eval() -> None:
    model = trained_qat_model(seed=0, steps=5)
    layer = model.layers[0].module
    s_h, z_h = (float(v) for v in layer.hidden_quant.calculate_qparams())
    s_c = float(layer.cell_quant.calculate_qparams()[0])
    x = model.input_quant(model.embedding_quant(model.embedding.weight)[toy_tokens(T, B, 1)])
    s_x, z_x = (float(v) for v in model.input_quant.calculate_qparams())
    assert on_grid(x, s_x, z_x)
    with torch.no_grad():
        y, (h, c) = model.layers[0](x)
        a_x = layer.project_inputs(x)
    assert on_grid(y, s_h, z_h) and on_grid(h, s_h, z_h)
    assert on_grid(c, s_c) and s_c == 2.0 ** round(torch.log2(torch.tensor(s_c)).item())
    assert on_grid(a_x, 2.0**-12) and a_x.abs().max() <= 8


def test_weights_are_fake_quantized_once_per_call() -> None:
    layer = WeightDrop(qat_layer(), ["weight_hh_l0"], 0.5)
    calls: list[tuple[int, ...]] = []
    for q in quantizers(layer):
        if isinstance(q, WeightFakeQuantize):
            q.register_forward_hook(lambda m, args, out: calls.append(tuple(args[0].shape)))
    layer(torch.randn(T, B, I))
    assert sorted(calls) == sorted([(4 * H, H), (4 * H, I)])


def test_weight_drop_is_applied_before_fake_quantization() -> None:
    """The dropped float weight is what gets quantized: dropped entries are exact zeros and the
    per-row scale follows the dropped (1 / (1 - p) scaled) row."""
    layer = WeightDrop(qat_layer(), ["weight_hh_l0"], 0.5)
    seen: list[torch.Tensor] = []
    layer.module.weight_hh_quant.register_forward_hook(lambda m, a, out: seen.append(out))
    torch.manual_seed(3)
    layer.train()(torch.randn(T, B, I))
    w_hat = seen[0]
    assert (w_hat == 0).float().mean() > 0.3
    dropped = (w_hat != 0) * 2 * layer.module.weight_hh_l0_raw.detach()  # kept: raw / (1 - p)
    step = dropped.abs().amax(dim=1, keepdim=True) / 127  # per-row scale of the dropped weight
    assert ((w_hat - dropped).abs() <= step / 2 + 1e-7).all()


def test_observers_update_once_per_call_with_the_call_range() -> None:
    layer = qat_layer()
    counts = {"hidden": 0, "cell": 0}
    layer.hidden_quant.observer.register_forward_hook(
        lambda *a: counts.__setitem__("hidden", counts["hidden"] + 1)
    )
    layer.cell_quant.observer.register_forward_hook(
        lambda *a: counts.__setitem__("cell", counts["cell"] + 1)
    )
    x = torch.randn(T, B, I)
    y, _ = layer(x)  # first call: h and c run in float, their range initializes the observers
    assert counts == {"hidden": 1, "cell": 1}
    obs = layer.hidden_quant.observer
    assert obs.min_val == y.min() and obs.max_val == y.max()
    layer(x, (y[-1:], y[-1:]))
    assert counts == {"hidden": 2, "cell": 2}
    layer.eval()(x)
    assert counts == {"hidden": 2, "cell": 2}  # no observation in eval


def test_eval_before_observing_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="before observing"):
        qat_layer().eval()(torch.randn(T, B, I))


def test_straight_through_gradients_reach_every_parameter() -> None:
    model = trained_qat_model(seed=1, steps=2).train()
    tokens = toy_tokens(9, 4, seed=2)
    out = model(tokens[:-1])
    loss = F.cross_entropy(model.decoder(out.output).reshape(-1, V), tokens[1:].reshape(-1))
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("mode", ["elementwise", "row", "column"])
def test_dropouts_and_regularizer_outputs_work(mode: str) -> None:
    model = trained_qat_model(
        seed=2, steps=2, weight_drop_mode=mode, recurrent_dropout=0.3, dropout_emb=0.2
    ).train()
    out = model(toy_tokens(6, 3, seed=4))
    assert len(out.raw_outputs) == len(out.dropped_outputs) == 2
    assert not torch.equal(out.raw_outputs[-1], out.dropped_outputs[-1])  # output dropout
    torch.manual_seed(0)
    a = model(toy_tokens(6, 3, seed=4)).output
    torch.manual_seed(1)
    b = model(toy_tokens(6, 3, seed=4)).output
    assert not torch.equal(a, b)
    model.eval()
    assert torch.equal(
        model(toy_tokens(6, 3, seed=4)).output, model(toy_tokens(6, 3, seed=4)).output
    )


def test_four_bit_weights() -> None:
    model = trained_qat_model(seed=3, steps=3, weight_bits=4)
    layer = model.layers[0].module
    w = layer.weight_ih_quant(layer.weight_ih_l0)
    scale = layer.weight_ih_quant.calculate_scale(layer.weight_ih_l0)
    codes = w / scale[:, None]
    assert torch.allclose(codes, codes.round(), atol=1e-4) and codes.abs().max().round() == 7


def test_tensor_subset_leaves_the_rest_float() -> None:
    model = prepare(
        AWDLSTM(AWDLSTMConfig(vocab_size=V, emb_size=8, hidden_size=8, num_layers=1)),
        QuantConfig(enabled=True, tensors=["weights"]),
    )
    layer = model.layers[0].module
    assert isinstance(layer.weight_ih_quant, WeightFakeQuantize)
    for name in ("hidden_quant", "cell_quant", "gate_quant", "preactivation_quant"):
        assert isinstance(getattr(layer, name), nn.Identity)
    assert isinstance(model.input_quant, nn.Identity)
    assert isinstance(model.decoder.weight_quant, nn.Identity)
    model(toy_tokens(4, 2, seed=0))


def test_float_model_is_unchanged() -> None:
    """quant=none: identity quantizers, no extra state, the fused runner."""
    torch.manual_seed(0)
    model = prepare(
        AWDLSTM(AWDLSTMConfig(vocab_size=V, emb_size=8, hidden_size=8, num_layers=2)),
        QuantConfig(),
    )
    assert list(quantizers(model)) == []
    assert not any(isinstance(m, LoopLSTMLayer) for m in model.modules())
    assert not any("_quant" in k for k in model.state_dict())


def test_float_checkpoint_fine_tunes_with_qat() -> None:
    """A float model's state dict loads into the QAT model (quantizers added fresh); the QAT
    model's loads into the float one (quantizers dropped)."""
    cfg = AWDLSTMConfig(vocab_size=V, emb_size=8, hidden_size=10, num_layers=2)
    torch.manual_seed(0)
    float_model = prepare(AWDLSTM(cfg), QuantConfig())
    torch.manual_seed(1)
    qat_model = prepare(AWDLSTM(cfg), QAT)
    state = dict(float_model.state_dict())
    added, dropped = align_quantizer_state(state, qat_model.state_dict())
    assert added and not dropped
    qat_model.load_state_dict(state)  # strict
    enable_fake_quant(qat_model, False)
    tokens = toy_tokens(5, 2, seed=0)
    float_model.eval(), qat_model.eval()
    torch.testing.assert_close(
        qat_model(tokens).output, float_model(tokens).output, rtol=1e-5, atol=1e-6
    )
    back = dict(qat_model.state_dict())
    added, dropped = align_quantizer_state(back, float_model.state_dict())
    assert dropped and not added
    float_model.load_state_dict(back)


def test_calibrate_averages_window_ranges_and_restores_switches() -> None:
    model = trained_qat_model(seed=4, steps=3)
    for q in quantizers(model):
        q.enable_observer(False)
    before = observer_state(model)
    windows = [toy_tokens(8, 4, seed=s) for s in range(5)]
    assert calibrate(model, iter(windows), num_batches=3) == 3
    assert not model.training and all(not q.training for q in quantizers(model))
    assert all(not q.observer_enabled for q in quantizers(model))
    after = observer_state(model)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    momenta = {m.momentum for m in model.modules() if isinstance(m, EMAMinMaxObserver)}
    assert momenta == {0.1}
    # the input range is the mean of the three windows' min and max
    with torch.no_grad():
        table = model.embedding_quant(model.embedding.weight)
    obs = model.input_quant.observer
    expected_max = torch.stack([table[w].max() for w in windows[:3]]).mean()
    assert torch.isclose(obs.max_val, expected_max, rtol=1e-5)
    load_observer_state(model, before)
    assert all(torch.equal(v, observer_state(model)[k]) for k, v in before.items())


def test_quant_config_checks() -> None:
    assert QuantConfig().quantizes("weights") is False
    assert QuantConfig(enabled=True).integer_ready
    assert set(QuantConfig().tensors) == set(QUANTIZABLE_TENSORS)
    assert not QuantConfig(enabled=True, tensors=["weights"]).integer_ready
    for kwargs, key in [
        ({"weight_bits": 9}, "weight_bits"),
        ({"weight_bits": 1}, "weight_bits"),
        ({"activation_bits": 16}, "activation_bits"),
        ({"delay_steps": -1}, "delay_steps"),
        ({"freeze_observers_step": -3}, "freeze_observers_step"),
        ({"ema_momentum": 0.0}, "ema_momentum"),
        ({"calibration_batches": -1}, "calibration_batches"),
        ({"tensors": ["weights", "softmax"]}, "softmax"),
    ]:
        with pytest.raises(ValueError, match=key):
            QuantConfig(enabled=True, **kwargs)


def test_activation_quantizer_is_int8_affine() -> None:
    model = trained_qat_model(seed=0, steps=1)
    q = model.layers[0].module.hidden_quant
    assert isinstance(q, FakeQuantize) and (q.qmin, q.qmax) == (-128, 127) and not q.symmetric
