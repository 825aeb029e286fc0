"""The LSTM step, the two runners (same numbers, same parameter names), Gal's recurrent dropout,
and `build_recurrent_layer`."""

from __future__ import annotations

import copy
import math
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from src.models.cells import lstm_step
from src.models.dropout import WeightDrop
from src.models.recurrent import (
    LAYERS,
    CuDNNLSTMLayer,
    LoopLSTMLayer,
    build_recurrent_layer,
    compiled_cell,
    register_runner,
)

T, B, I, H = 6, 3, 5, 7


def paired_runners(weight_drop: float = 0.0) -> tuple[nn.Module, nn.Module]:
    """A cuDNN and a loop layer in float64 with the same weights (loaded by state dict)."""
    torch.manual_seed(0)
    cudnn, loop = CuDNNLSTMLayer(I, H).double(), LoopLSTMLayer(I, H).double()
    if weight_drop > 0:
        cudnn = WeightDrop(cudnn, ["weight_hh_l0"], weight_drop)
        loop = WeightDrop(loop, ["weight_hh_l0"], weight_drop)
    loop.load_state_dict(cudnn.state_dict())
    return cudnn, loop


def test_lstm_step_matches_lstm_cell() -> None:
    torch.manual_seed(0)
    cell = nn.LSTMCell(I, H).double()
    x, h, c = (torch.randn(B, n, dtype=torch.float64) for n in (I, H, H))
    expected_h, expected_c = cell(x, (h, c))
    gates_x = F.linear(x, cell.weight_ih, cell.bias_ih)
    got_h, got_c = lstm_step(gates_x, h, c, cell.weight_hh, cell.bias_hh)
    torch.testing.assert_close(got_h, expected_h)
    torch.testing.assert_close(got_c, expected_c)


def test_runners_share_parameter_names() -> None:
    names = {n: p.shape for n, p in CuDNNLSTMLayer(I, H).named_parameters()}
    assert names == {n: p.shape for n, p in LoopLSTMLayer(I, H).named_parameters()}
    assert set(names) == {"weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"}


@pytest.mark.parametrize("runner", [CuDNNLSTMLayer, LoopLSTMLayer])
def test_runner_init_is_uniform_in_one_over_sqrt_h(runner: type[nn.Module]) -> None:
    torch.manual_seed(0)
    bound = 1 / math.sqrt(64)
    params = torch.cat([p.flatten() for p in runner(32, 64).parameters()])
    assert params.abs().max() <= bound
    assert params.abs().max() > 0.99 * bound
    assert abs(params.mean()) < 6 * bound / math.sqrt(3 * len(params))  # U(-b, b): var b^2/3


@pytest.mark.parametrize("with_state", [False, True])
def test_runners_give_identical_outputs_and_gradients(with_state: bool) -> None:
    cudnn, loop = paired_runners()
    x = torch.randn(T, B, I, dtype=torch.float64)
    state = (torch.randn(1, B, H, dtype=torch.float64), torch.randn(1, B, H, dtype=torch.float64))
    results = [layer(x, state if with_state else None) for layer in (cudnn, loop)]
    (y1, (h1, c1)), (y2, (h2, c2)) = results
    assert y1.shape == (T, B, H) and h1.shape == c1.shape == (1, B, H)
    torch.testing.assert_close(y1, y2, rtol=0, atol=1e-12)
    torch.testing.assert_close(h1, h2, rtol=0, atol=1e-12)
    torch.testing.assert_close(c1, c2, rtol=0, atol=1e-12)
    (y1.sum() + c1.sum()).backward()
    (y2.sum() + c2.sum()).backward()
    grads = dict(loop.named_parameters())
    for name, p in cudnn.named_parameters():
        torch.testing.assert_close(p.grad, grads[name].grad, rtol=0, atol=1e-11)


def test_weight_dropped_runners_agree_under_the_same_seed() -> None:
    """The same RNG state draws the same DropConnect mask in both runners."""
    cudnn, loop = paired_runners(weight_drop=0.5)
    x = torch.randn(T, B, I, dtype=torch.float64)
    torch.manual_seed(1)
    y1, _ = cudnn(x, None)
    torch.manual_seed(1)
    y2, _ = loop(x, None)
    torch.testing.assert_close(y1, y2, rtol=0, atol=1e-12)


def test_loop_layer_carries_the_state_across_calls() -> None:
    _, loop = paired_runners()
    x = torch.randn(T, B, I, dtype=torch.float64)
    y, state = loop(x, None)
    y_first, mid = loop(x[:2], None)
    y_rest, end = loop(x[2:], mid)
    torch.testing.assert_close(torch.cat([y_first, y_rest]), y)
    torch.testing.assert_close(end[1], state[1])


def recording_lstm(inputs: list[torch.Tensor]):
    """An lstm_step that records the h_{t-1} it is given."""

    def cell(gates_x_t, h, c, weight_hh, bias_hh):
        inputs.append(h)
        return lstm_step(gates_x_t, h, c, weight_hh, bias_hh)

    return cell


def test_recurrent_dropout_uses_one_mask_per_sequence() -> None:
    torch.manual_seed(2)
    p, hidden = 0.5, 32
    seen: list[torch.Tensor] = []
    layer = LoopLSTMLayer(I, hidden, recurrent_dropout=p, cell_fn=recording_lstm(seen))
    state = (torch.randn(1, B, hidden), torch.randn(1, B, hidden))
    y, (h, _) = layer(torch.randn(T, B, I), state)
    previous = torch.cat([state[0], y[:-1]])  # h_{t-1} for t = 0 .. T-1
    masks = torch.stack(seen) / previous
    kept = masks != 0
    assert (kept == kept[0]).all(), "same units of h_{t-1} dropped at every step"
    torch.testing.assert_close(masks[kept], torch.full_like(masks[kept], 1 / (1 - p)))
    assert not (kept[0] == kept[0, :1]).all(), "one mask per batch element"
    assert 0 < kept.float().mean() < 1
    torch.testing.assert_close(h[0], y[-1])  # the state passed on is the undropped h_T

    seen.clear()
    layer(torch.randn(T, B, I), state)
    assert not torch.equal(seen[0] != 0, kept[0]), "a new mask on the next call"

    seen.clear()
    layer.eval()(torch.randn(T, B, I), state)
    torch.testing.assert_close(seen[0], state[0][0], rtol=0, atol=0)


def test_recurrent_dropout_rate() -> None:
    torch.manual_seed(3)
    p, hidden, calls = 0.3, 50, 40
    seen: list[torch.Tensor] = []
    layer = LoopLSTMLayer(I, hidden, recurrent_dropout=p, cell_fn=recording_lstm(seen))
    state = (torch.rand(1, B, hidden) + 0.5, torch.zeros(1, B, hidden))
    for _ in range(calls):
        layer(torch.randn(1, B, I), state)
    rate = (torch.stack(seen) == 0).float().mean().item()
    assert abs(rate - p) < 6 * math.sqrt(p * (1 - p) / (calls * B * hidden))


def test_loop_layer_reads_weights_once_per_call() -> None:
    """Subclasses swap what the cell gets (fake-quantized W_hh, mLSTM weights) in one place."""

    class Halved(LoopLSTMLayer):
        def recurrent_weights(self):
            return self.weight_hh_l0 / 2, self.bias_hh_l0

    torch.manual_seed(4)
    halved, reference = Halved(I, H), LoopLSTMLayer(I, H)
    reference.load_state_dict(halved.state_dict())
    with torch.no_grad():
        reference.weight_hh_l0 /= 2
    x = torch.randn(T, B, I)
    torch.testing.assert_close(halved(x)[0], reference(x)[0])


def test_weight_dropped_loop_layer_pickles_and_copies() -> None:
    layer = WeightDrop(LoopLSTMLayer(I, H, recurrent_dropout=0.2), ["weight_hh_l0"], 0.5)
    x = torch.randn(T, B, I)
    layer(x, None)[0].sum().backward()
    for clone in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
        torch.testing.assert_close(clone.eval()(x, None)[0], layer.eval()(x, None)[0])


# --- build_recurrent_layer ----------------------------------------------------------------------


def build(**kwargs) -> nn.Module:
    options = dict(weight_drop=0.0, weight_drop_mode="elementwise", recurrent_dropout=0.0)
    return build_recurrent_layer(I, H, **{**options, **kwargs})


def test_build_picks_the_runner() -> None:
    assert type(build()) is CuDNNLSTMLayer
    assert type(build(recurrent_dropout=0.1)) is LoopLSTMLayer
    assert type(build(runner="loop")) is LoopLSTMLayer
    assert type(build(runner="cudnn")) is CuDNNLSTMLayer
    assert build(runner="loop", recurrent_dropout=0.1).recurrent_dropout == 0.1


def test_build_wraps_in_weight_drop() -> None:
    layer = build(weight_drop=0.5, weight_drop_mode="column")
    assert isinstance(layer, WeightDrop) and type(layer.module) is CuDNNLSTMLayer
    assert (layer.weight_names, layer.p, layer.mode) == (["weight_hh_l0"], 0.5, "column")
    assert "module.weight_hh_l0_raw" in layer.state_dict()


def test_build_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="cannot apply recurrent_dropout"):
        build(runner="cudnn", recurrent_dropout=0.1)
    with pytest.raises(ValueError, match="lstm/cudnn.*lstm/loop"):
        build(runner="fused")
    with pytest.raises(ValueError, match="^weight_drop must"):
        build(weight_drop=1.0)
    with pytest.raises(ValueError, match="^recurrent_dropout must"):
        build(recurrent_dropout=-0.5)
    with pytest.raises(ValueError, match="row"):
        build(weight_drop_mode="gates")


def test_runner_registry() -> None:
    assert LAYERS[("lstm", "cudnn")] is CuDNNLSTMLayer
    assert LAYERS[("lstm", "loop")] is LoopLSTMLayer
    with pytest.raises(ValueError, match="already registered"):
        register_runner("loop")(LoopLSTMLayer)
    try:

        @register_runner("test-halved")
        class Variant(LoopLSTMLayer):
            pass

        assert type(build(runner="test-halved")) is Variant
    finally:
        LAYERS.pop(("lstm", "test-halved"), None)


@pytest.mark.slow  # compiles two cells with inductor (about 10-20 s each on a cold cache)
@pytest.mark.parametrize("cell", ["lstm", "mlstm"])
def test_compiled_cell_matches_the_eager_cell(cell: str) -> None:
    """`model.compile_cell`: the same outputs and gradients as the eager loop runner (float32
    kernels may reassociate sums: compared to 1e-5), weight drop and recurrent dropout kept."""
    options = dict(weight_drop=0.5, weight_drop_mode="elementwise", recurrent_dropout=0.2)
    torch.manual_seed(0)
    eager = build_recurrent_layer(I, H, runner="loop", cell=cell, **options)
    compiled = build_recurrent_layer(I, H, runner="loop", cell=cell, compile_cell=True, **options)
    compiled.load_state_dict(eager.state_dict())
    assert compiled.module.cell_fn is not eager.module.cell_fn
    x = torch.randn(T, B, I)
    grads = []
    for layer in (eager, compiled):
        torch.manual_seed(1)  # same dropout masks
        y, (h, c) = layer(x)
        (y.square().sum() + c.sum()).backward()
        grads.append([p.grad for p in layer.parameters()])
        layer.zero_grad()
        if layer is eager:
            ref = (y.detach(), c.detach())
    torch.testing.assert_close(y.detach(), ref[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(c.detach(), ref[1], rtol=1e-5, atol=1e-5)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # two inductor compiles
@pytest.mark.parametrize("cell", ["lstm", "mlstm"])
def test_compiled_fake_quantized_cell_is_exact_and_traced_a_few_times(cell: str) -> None:
    """`model.compile_cell` with `quant=qat`: the same outputs as the eager fake-quantized cell,
    bit for bit, over training calls whose ranges move and evaluation calls, and a handful of
    traced graphs (the qparams and clip bounds are tensors, not per-call Python constants)."""
    import copy

    from torch._dynamo.utils import counters

    from src.models.dropout import WeightDrop
    from src.quant.config import QuantConfig
    from src.quant.qat.lstm import QATLSTMLayer
    from src.quant.qat.mlstm import QATMLSTMLayer

    options = {} if cell == "lstm" else {"peephole": True, "cell_clip": 1.0, "proj_size": 6}
    if cell == "mlstm":
        options["proj_clip"] = 0.5
    torch.manual_seed(0)
    cls = QATLSTMLayer if cell == "lstm" else QATMLSTMLayer
    layer = cls(I, H, recurrent_dropout=0.2, quant=QuantConfig(enabled=True), **options)
    eager = WeightDrop(layer, list(cls.recurrent_weight_names), 0.5, "elementwise")
    x = torch.randn(T, B, I)
    eager(x)  # the first call initializes the observers (in float)
    compiled = copy.deepcopy(eager)
    compiled.module.cell_fn = compiled_cell(compiled.module.cell_fn)
    torch._dynamo.reset()
    counters.clear()
    for step in range(4):  # training: the observed ranges move every call
        outs = []
        for layer in (eager, compiled):
            torch.manual_seed(step)
            y, (h, c) = layer(x * (1 + step))
            y.sum().backward()
            outs.append((y.detach(), c.detach()))
        assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    for layer in (eager, compiled):
        layer.eval()
    assert torch.equal(eager(x)[0], compiled(x)[0])
    assert counters["stats"]["unique_graphs"] <= 5
