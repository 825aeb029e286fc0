"""The QRNN layer: a hand-computed step (window 2, carried x, output gate), the fo-pooling scan
against the step loop (values and gradients), the carried x and its reset, zoneout, weight drop,
the options and the model around it."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

import src.models.qrnn as qrnn
from src.models.awd import AWDLSTM, AWDLSTMConfig
from src.models.dropout import WeightDrop
from src.models.qrnn import QRNNLayer, QRNNOptions, forget_mult, forget_mult_loop, linear_scan
from src.models.recurrent import LAYERS, build_recurrent_layer, state_sizes

T, B, I, H = 7, 3, 5, 6


def sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def test_hand_computed_steps_window_two_with_carried_x_and_output_gate() -> None:
    """I = H = 1, window 2: s_t = [x_t, x_{t-1}], x_{-1} = the carried 0.5, c_{-1} = 0.3."""
    layer = QRNNLayer(1, 1, window=2).double()
    with torch.no_grad():
        layer.weight_ih_l0.copy_(torch.tensor([[0.2, -0.1], [0.4, 0.3], [-0.5, 0.6]]))  # Z, F, O
        layer.bias_ih_l0.copy_(torch.tensor([0.1, -0.2, 0.05]))
    x = torch.tensor([1.0, 2.0], dtype=torch.float64).view(2, 1, 1)
    state = (torch.full((1, 1, 1), 0.3).double(), torch.full((1, 1, 1), 0.5).double())
    y, (c_last, prev_x) = layer(x, state)
    # t = 0: s = [1.0, 0.5]; Z = 0.2 - 0.05 + 0.1, F = 0.4 + 0.15 - 0.2, O = -0.5 + 0.3 + 0.05
    z0, f0, o0 = math.tanh(0.25), sigmoid(0.35), sigmoid(-0.15)
    c0 = f0 * z0 + (1 - f0) * 0.3
    # t = 1: s = [2.0, 1.0]; Z = 0.4 - 0.1 + 0.1, F = 0.8 + 0.3 - 0.2, O = -1.0 + 0.6 + 0.05
    z1, f1, o1 = math.tanh(0.4), sigmoid(0.9), sigmoid(-0.35)
    c1 = f1 * z1 + (1 - f1) * c0
    torch.testing.assert_close(y.flatten(), torch.tensor([o0 * c0, o1 * c1], dtype=torch.float64))
    assert c_last.item() == pytest.approx(c1) and prev_x.item() == 2.0  # x_T carried on


@pytest.mark.parametrize("steps", [1, 2, 3, 5, 8, 9, 70])
def test_scan_equals_the_step_loop_in_values_and_gradients(steps: int) -> None:
    torch.manual_seed(steps)
    f = torch.rand(steps, B, H, dtype=torch.float64, requires_grad=True)
    z = torch.randn(steps, B, H, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(B, H, dtype=torch.float64, requires_grad=True)
    got, want = forget_mult(f, z, c0), forget_mult_loop(f, z, c0)
    torch.testing.assert_close(got, want)
    weights = torch.randn_like(want)
    grads = torch.autograd.grad((got * weights).sum(), (f, z, c0))
    expected = torch.autograd.grad((want * weights).sum(), (f, z, c0))
    for g, e in zip(grads, expected, strict=True):
        torch.testing.assert_close(g, e)
    torch.testing.assert_close(forget_mult(f, z), forget_mult_loop(f, z))  # c0 None: zeros


def test_scan_gradcheck() -> None:
    torch.manual_seed(0)
    args = (
        torch.rand(6, 2, 3, dtype=torch.float64, requires_grad=True),
        torch.randn(6, 2, 3, dtype=torch.float64, requires_grad=True),
        torch.randn(2, 3, dtype=torch.float64, requires_grad=True),
    )
    assert torch.autograd.gradcheck(forget_mult, args)


def test_reverse_scan_and_inputs_left_alone() -> None:
    torch.manual_seed(1)
    a, b = torch.rand(11, 4), torch.randn(11, 4)
    a0, b0 = a.clone(), b.clone()
    x, expected = torch.zeros(4), []
    for t in reversed(range(11)):
        x = a[t] * x + b[t]
        expected.append(x)
    torch.testing.assert_close(linear_scan(a, b, reverse=True), torch.stack(expected[::-1]))
    assert torch.equal(a, a0) and torch.equal(b, b0)


def test_scan_is_finite_where_the_products_underflow() -> None:
    f = torch.full((70, 1, 4), 1e-30)  # a = 1 - f rounds to 1; then tiny a's: products -> 0
    f[35:] = 1 - 1e-7
    z = torch.ones(70, 1, 4)
    out = forget_mult(f, z, torch.ones(1, 4))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, forget_mult_loop(f, z, torch.ones(1, 4)))


def test_layer_registered_with_state_sizes() -> None:
    assert LAYERS[("qrnn", "scan")] is QRNNLayer
    assert state_sizes("qrnn", I, H, window=2) == (H, I)
    assert state_sizes("qrnn", I, H, window=1) == (H, 0)
    names = {n: p.shape for n, p in QRNNLayer(I, H, window=2).named_parameters()}
    assert names == {"weight_ih_l0": (3 * H, 2 * I), "bias_ih_l0": (3 * H,)}


def test_carried_x_joins_windows_and_zeros_reset_it() -> None:
    """Two windows with the state carried == one window; a reset (None or zeros) starts from
    x_{-1} = 0, c = 0; dropping only the carried x changes the next window's first step."""
    torch.manual_seed(0)
    layer = QRNNLayer(I, H, window=2).double()
    x = torch.randn(T, B, I, dtype=torch.float64)
    whole, _ = layer(x)
    y1, state = layer(x[:3])
    y2, _ = layer(x[3:], state)
    torch.testing.assert_close(torch.cat([y1, y2]), whole)
    assert torch.equal(state[1], x[2:3])
    zeros = (torch.zeros(1, B, H).double(), torch.zeros(1, B, I).double())
    torch.testing.assert_close(layer(x, zeros)[0], layer(x, None)[0])
    no_x = (state[0], torch.zeros_like(state[1]))
    y2_reset, _ = layer(x[3:], no_x)
    assert not torch.allclose(y2_reset[0], y2[0])


def test_state_of_the_wrong_width_is_refused() -> None:
    layer = QRNNLayer(I, H, window=2)
    with pytest.raises(ValueError, match="QRNN state"):
        layer(torch.randn(T, B, I), (torch.zeros(1, B, H), torch.zeros(1, B, 0)))


def capture_forget_gates(monkeypatch: pytest.MonkeyPatch) -> list[Tensor]:
    seen: list[Tensor] = []

    def spy(f: Tensor, z: Tensor, c0: Tensor | None = None) -> Tensor:
        seen.append(f.detach())
        return forget_mult(f, z, c0)

    monkeypatch.setattr(qrnn, "forget_mult", spy)
    return seen


def test_zoneout_masks_f_in_training_and_scales_it_in_eval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Training: f * Bernoulli(1 - p), not rescaled (REFERENCE §9); eval: f * (1 - p)."""
    torch.manual_seed(0)
    p = 0.3
    plain = QRNNLayer(I, 64)
    zoned = QRNNLayer(I, 64, zoneout=p)
    zoned.load_state_dict(plain.state_dict())
    seen = capture_forget_gates(monkeypatch)
    x = torch.randn(50, 8, I)
    plain(x)
    zoned(x)
    f, dropped = seen
    kept = dropped != 0
    torch.testing.assert_close(dropped[kept], f[kept])  # kept gates untouched: no rescaling
    n = f.numel()
    assert abs((1 - kept.float().mean().item()) - p) < 6 * math.sqrt(p * (1 - p) / n)
    assert not torch.equal(kept[0], kept[1]), "a new mask per step"
    seen.clear()
    zoned.eval()
    plain.eval()
    plain(x)
    zoned(x)
    torch.testing.assert_close(seen[1], seen[0] * (1 - p))


def test_weight_drop_covers_the_whole_gate_projection_once() -> None:
    for targets in (["hidden"], ["input", "hidden"], ["input"]):
        layer = build_recurrent_layer(
            I,
            H,
            weight_drop=0.1,
            weight_drop_mode="elementwise",
            recurrent_dropout=0.0,
            cell="qrnn",
            weight_drop_targets=targets,
            window=2,
        )
        assert isinstance(layer, WeightDrop) and layer.weight_names == ["weight_ih_l0"]
        assert layer.module.weight_ih_l0_raw.shape == (3 * H, 2 * I)


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="qrnn.window"):
        QRNNOptions(window=3)
    with pytest.raises(ValueError, match="qrnn.zoneout"):
        QRNNOptions(zoneout=1.0)
    with pytest.raises(ValueError, match="recurrent dropout"):
        QRNNLayer(I, H, recurrent_dropout=0.1)
    with pytest.raises(ValueError, match="need cell=qrnn"):
        AWDLSTMConfig(qrnn={"zoneout": 0.1})
    assert QRNNOptions().layer_options(0) == {"window": 2, "zoneout": 0.0}
    assert QRNNOptions().layer_options(3) == {"window": 1, "zoneout": 0.0}


def qrnn_model(**options: object) -> AWDLSTM:
    config = AWDLSTMConfig(
        vocab_size=20, emb_size=6, hidden_size=8, num_layers=3, cell="qrnn", **options
    )
    return AWDLSTM(config)


def test_model_layers_windows_and_state() -> None:
    model = qrnn_model().double().eval()
    inner = [layer.module for layer in model.layers]
    assert [q.window for q in inner] == [2, 1, 1]
    assert [(q.input_size, q.hidden_size) for q in inner] == [(6, 8), (8, 8), (8, 6)]
    hidden = model.init_hidden(B)
    assert [(c.shape, x.shape) for c, x in hidden] == [
        ((1, B, 8), (1, B, 6)),
        ((1, B, 8), (1, B, 0)),
        ((1, B, 6), (1, B, 0)),
    ]
    assert all(not c.any() and not x.any() for c, x in hidden)
    tokens = torch.randint(20, (T, B))
    out = model(tokens, hidden)
    torch.testing.assert_close(out.output, model(tokens).output)  # zeros state == reset
    # the carried x of layer 1 is the last embedded (here undropped: eval) input
    torch.testing.assert_close(out.hidden[0][1], model.embedding(tokens[-1:]))
    first = model(tokens[:4])
    rest = model(tokens[4:], first.hidden)
    torch.testing.assert_close(torch.cat([first.output, rest.output]), out.output)


def test_model_trains_with_every_regularizer_on() -> None:
    torch.manual_seed(0)
    model = qrnn_model(qrnn={"zoneout": 0.1}, weight_drop=0.1).train()
    tokens = torch.randint(20, (T, B))
    out = model(tokens)
    model.decoder(out.output).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
