"""The GRU layer: `gru_step` and both runners against `torch.nn.GRU` (outputs and gradients),
the state pair, recurrent dropout, weight drop and the model around it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from src.models.awd import AWDLSTM, AWDLSTMConfig
from src.models.dropout import WeightDrop
from src.models.gru import CuDNNGRULayer, LoopGRULayer, gru_step
from src.models.recurrent import LAYERS, build_recurrent_layer

T, B, I, H = 6, 3, 5, 7
RUNNERS = [CuDNNGRULayer, LoopGRULayer]


def test_gru_step_matches_gru_cell() -> None:
    torch.manual_seed(0)
    cell = nn.GRUCell(I, H).double()
    x, h = torch.randn(B, I, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64)
    gates_x = F.linear(x, cell.weight_ih, cell.bias_ih)
    torch.testing.assert_close(gru_step(gates_x, h, cell.weight_hh, cell.bias_hh), cell(x, h))


def test_gru_step_drops_h_only_inside_the_recurrent_product() -> None:
    """With mask m: r, z, n see W_hh (h * m); the carried z * h is the undropped h."""
    torch.manual_seed(1)
    w_hh, b_hh = torch.randn(3 * H, H), torch.randn(3 * H)
    gates_x, h = torch.randn(B, 3 * H), torch.randn(B, H)
    mask = (torch.rand(B, H) > 0.5).float() * 2
    got = gru_step(gates_x, h, w_hh, b_hh, mask)
    x_r, x_z, x_n = gates_x.chunk(3, 1)
    h_r, h_z, h_n = F.linear(h * mask, w_hh, b_hh).chunk(3, 1)
    r, z = (x_r + h_r).sigmoid(), (x_z + h_z).sigmoid()
    n = (x_n + r * h_n).tanh()
    torch.testing.assert_close(got, (1 - z) * n + z * h)


def test_runners_are_registered_with_torch_names() -> None:
    assert LAYERS[("gru", "cudnn")] is CuDNNGRULayer and LAYERS[("gru", "loop")] is LoopGRULayer
    shapes = {n: p.shape for n, p in nn.GRU(I, H).named_parameters()}
    for runner in RUNNERS:
        assert {n: p.shape for n, p in runner(I, H).named_parameters()} == shapes


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("with_state", [False, True])
def test_runner_equals_torch_gru(runner: type[nn.Module], with_state: bool) -> None:
    """Same weights (one state dict) -> same outputs, final state and gradients as nn.GRU."""
    torch.manual_seed(0)
    ref = nn.GRU(I, H).double()
    layer = runner(I, H).double()
    layer.load_state_dict(ref.state_dict())
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(1, B, H, dtype=torch.float64) if with_state else None
    y_ref, h_ref = ref(x, h0)
    state = None if h0 is None else (h0, h0.new_zeros(1, B, 0))
    y, (h, empty) = layer(x, state)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(h, h_ref)
    assert empty.shape == (1, B, 0)
    weights = torch.randn_like(y_ref)
    grads_ref = torch.autograd.grad((y_ref * weights).sum(), [x, *ref.parameters()])
    grads = torch.autograd.grad((y * weights).sum(), [x, *layer.parameters()])
    for got, want in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(got, want)


def test_weight_dropped_runners_agree_under_the_same_seed() -> None:
    torch.manual_seed(0)
    cudnn = WeightDrop(CuDNNGRULayer(I, H).double(), ["weight_hh_l0"], 0.5)
    loop = WeightDrop(LoopGRULayer(I, H).double(), ["weight_hh_l0"], 0.5)
    loop.load_state_dict(cudnn.state_dict())
    x = torch.randn(T, B, I, dtype=torch.float64)
    torch.manual_seed(3)
    y1, _ = cudnn(x)
    torch.manual_seed(3)
    y2, _ = loop(x)
    torch.testing.assert_close(y1, y2)
    torch.manual_seed(4)
    assert not torch.allclose(y1, cudnn(x)[0]), "a new mask per call"


def test_recurrent_dropout_uses_one_mask_per_call() -> None:
    """The loop runner's mask is drawn once per call; eval drops nothing."""
    torch.manual_seed(0)
    layer = LoopGRULayer(I, H, recurrent_dropout=0.5).double()
    seen: list[torch.Tensor] = []

    def spy(gates_x_t, h, w, b, mask):  # noqa: ANN001, ANN202
        seen.append(mask)
        return gru_step(gates_x_t, h, w, b, mask)

    layer.cell_fn = spy
    x = torch.randn(T, B, I, dtype=torch.float64)
    layer(x)
    assert len(seen) == T and all(m is seen[0] for m in seen)
    assert set(seen[0].unique().tolist()) <= {0.0, 2.0}
    seen.clear()
    layer.eval()
    layer(x)
    assert all(m is None for m in seen)


def test_cudnn_runner_refuses_recurrent_dropout() -> None:
    with pytest.raises(ValueError, match="recurrent_dropout"):
        CuDNNGRULayer(I, H, recurrent_dropout=0.1)


def test_build_picks_the_runner() -> None:
    def inner(layer: nn.Module) -> nn.Module:
        return layer.module if isinstance(layer, WeightDrop) else layer

    common = {"weight_drop": 0.5, "weight_drop_mode": "elementwise", "cell": "gru"}
    fused = build_recurrent_layer(I, H, recurrent_dropout=0.0, **common)
    looped = build_recurrent_layer(I, H, recurrent_dropout=0.2, **common)
    assert type(inner(fused)) is CuDNNGRULayer and type(inner(looped)) is LoopGRULayer
    assert fused.weight_names == ["weight_hh_l0"]


@pytest.mark.parametrize("runner", ["cudnn", "loop"])
def test_gru_model_carries_its_state_across_windows(runner: str) -> None:
    config = AWDLSTMConfig(
        vocab_size=20, emb_size=6, hidden_size=8, num_layers=2, cell="gru", runner=runner
    )
    model = AWDLSTM(config).double().eval()
    hidden = model.init_hidden(B)
    assert [(h.shape, e.shape) for h, e in hidden] == [
        ((1, B, 8), (1, B, 0)),
        ((1, B, 6), (1, B, 0)),
    ]
    x = torch.randint(20, (T, B))
    whole = model(x, hidden)
    first = model(x[:2])
    rest = model(x[2:], first.hidden)
    torch.testing.assert_close(torch.cat([first.output, rest.output]), whole.output)
    for (h1, _), (h2, _) in zip(rest.hidden, whole.hidden, strict=True):
        torch.testing.assert_close(h1, h2)
