"""Embedding, locked and weight dropout: mask shapes, sharing, rates, expectation, eval, plumbing.

Statistical checks use a fixed seed and a tolerance of 6 standard errors of the estimate, so they
test the distribution without flaking.
"""

from __future__ import annotations

import copy
import math
import pickle
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from src.models.cells import lstm_step
from src.models.dropout import EmbeddingDropout, LockedDropout, WeightDrop, embedding_dropout
from src.models.recurrent import LoopLSTMLayer, build_recurrent_layer


def rate_tolerance(p: float, n: int) -> float:
    """6 standard errors of a Bernoulli(p) frequency over n draws."""
    return 6 * math.sqrt(p * (1 - p) / n)


def mean_tolerance(p: float, n: int) -> float:
    """6 standard errors (relative to |x|) of the mean of n draws of x * Bernoulli(1-p) / (1-p)."""
    return 6 * math.sqrt(p / ((1 - p) * n))


def capture_weights(module: nn.Module, name: str) -> list[torch.Tensor]:
    """Record the tensor `module.<name>` holds during every forward (the dropped weight)."""
    seen: list[torch.Tensor] = []

    def hook(mod: nn.Module, args: tuple) -> None:
        weight = getattr(mod, name)
        if weight.requires_grad:
            weight.retain_grad()
        seen.append(weight)

    module.register_forward_pre_hook(hook)
    return seen


# --- embedding dropout --------------------------------------------------------------------------


def test_embedding_dropout_drops_whole_rows_and_scales_the_rest() -> None:
    torch.manual_seed(0)
    weight, p = torch.randn(2000, 5), 0.3
    dropped = embedding_dropout(weight, p, training=True)
    zero_rows = (dropped == 0).all(dim=1)
    assert ((dropped == 0).any(dim=1) == zero_rows).all(), "a row is dropped whole or not at all"
    torch.testing.assert_close(dropped[~zero_rows], weight[~zero_rows] / (1 - p))
    assert abs(zero_rows.float().mean().item() - p) < rate_tolerance(p, len(weight))


def test_embedding_dropout_preserves_expectation() -> None:
    torch.manual_seed(1)
    weight, p, n = torch.randn(6, 4), 0.4, 4000
    mean = torch.stack([embedding_dropout(weight, p, True) for _ in range(n)]).mean(0)
    assert ((mean - weight).abs() <= mean_tolerance(p, n) * weight.abs()).all()


def test_embedding_dropout_is_identity_in_eval_and_at_zero() -> None:
    weight = torch.randn(10, 3)
    assert embedding_dropout(weight, 0.5, training=False) is weight
    assert embedding_dropout(weight, 0.0, training=True) is weight


def test_embedding_dropout_module_drops_a_word_everywhere_it_occurs() -> None:
    torch.manual_seed(2)
    embedding = nn.Embedding(8, 6)
    drop = EmbeddingDropout(embedding, 0.5)
    tokens = torch.arange(8).repeat(5, 3)  # [15, 8]: every word at many positions
    out = drop(tokens)
    for word in range(8):
        rows = out[tokens == word]
        dropped = (rows == 0).all(dim=-1)
        assert dropped.all() or not dropped.any()
        if not dropped.any():
            torch.testing.assert_close(rows, embedding.weight[word].expand_as(rows) / 0.5)
    drop.eval()
    torch.testing.assert_close(drop(tokens), embedding(tokens))


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5, float("nan")])
def test_dropouts_reject_bad_probabilities(p: float) -> None:
    with pytest.raises(ValueError, match=r"^p must be"):
        LockedDropout(p)
    with pytest.raises(ValueError, match=r"^p must be"):
        EmbeddingDropout(nn.Embedding(3, 2), p)
    with pytest.raises(ValueError, match=r"^p must be"):
        WeightDrop(nn.Linear(2, 2), ["weight"], p)


# --- locked dropout -----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(7, 4, 5), (6, 3, 2, 4)])
def test_locked_dropout_mask_is_shared_over_time(shape: tuple[int, ...]) -> None:
    torch.manual_seed(3)
    p = 0.5
    x = torch.rand(shape) + 0.5  # never zero, so zeros in the output are the mask
    mask = LockedDropout(p)(x) / x
    assert ((mask == 0) | torch.isclose(mask, torch.tensor(1 / (1 - p)))).all()
    assert (mask == mask[:1]).all(), "same units dropped at every time step"
    assert not (mask[0] == mask[0, :1]).all(), "each batch element has its own mask"


def test_locked_dropout_rate_and_expectation() -> None:
    torch.manual_seed(4)
    p, n = 0.25, 3000
    x = torch.randn(3, 2, 4)
    drop = LockedDropout(p)
    samples = torch.stack([drop(x) for _ in range(n)])  # [n, T, B, H]
    rate = (samples[:, 0] == 0).float().mean().item()  # independent draws: n * B * H
    assert abs(rate - p) < rate_tolerance(p, n * 2 * 4)
    assert ((samples.mean(0) - x).abs() <= mean_tolerance(p, n) * x.abs()).all()


def test_locked_dropout_is_identity_in_eval_and_at_zero() -> None:
    x = torch.randn(4, 3, 2)
    drop = LockedDropout(0.5).eval()
    assert drop(x) is x
    assert LockedDropout(0.0)(x) is x


# --- weight drop --------------------------------------------------------------------------------


def test_weight_drop_moves_the_weight_to_a_raw_parameter() -> None:
    lstm = nn.LSTM(3, 4)
    original = lstm.weight_hh_l0
    wd = WeightDrop(lstm, ["weight_hh_l0"], 0.5)
    assert lstm.weight_hh_l0_raw is original
    assert lstm.weight_hh_l0 is None, "no tensor outside a forward"
    keys = set(wd.state_dict())
    assert "module.weight_hh_l0_raw" in keys and "module.weight_hh_l0" not in keys
    assert sum(p.numel() for p in wd.parameters()) == sum(
        p.numel() for p in nn.LSTM(3, 4).parameters()
    )


def test_weight_drop_validates_arguments() -> None:
    with pytest.raises(ValueError, match="elementwise"):
        WeightDrop(nn.Linear(2, 2), ["weight"], 0.5, mode="gates")
    with pytest.raises(ValueError, match="no parameter 'weight_hh'"):
        WeightDrop(nn.Linear(2, 2), ["weight_hh"], 0.5)
    with pytest.raises(ValueError, match="matrix"):
        WeightDrop(nn.Linear(2, 2), ["bias"], 0.5, mode="row")


@pytest.mark.parametrize("mode", ["elementwise", "row", "column"])
def test_weight_drop_mask_shape_and_rate(mode: str) -> None:
    torch.manual_seed(5)
    p, out_features, in_features, calls = 0.4, 40, 30, 50
    linear = nn.Linear(in_features, out_features)
    raw = linear.weight
    wd = WeightDrop(linear, ["weight"], p, mode)
    seen = capture_weights(linear, "weight")
    for _ in range(calls):
        wd(torch.randn(2, in_features))
    kept = 0.0
    for weight in seen:
        mask = weight.detach() / raw.detach()
        assert ((mask == 0) | torch.isclose(mask, torch.tensor(1 / (1 - p)))).all()
        is_kept = mask != 0
        if mode == "row":  # (out, 1): a unit's whole input row
            assert (is_kept == is_kept[:, :1]).all()
        if mode == "column":  # (1, in): an input's whole column
            assert (is_kept == is_kept[:1]).all()
        kept += is_kept.float().mean().item() / calls
    draws = calls * {"elementwise": out_features * in_features, "row": out_features}.get(
        mode, in_features
    )
    assert abs((1 - kept) - p) < rate_tolerance(p, draws)
    assert not torch.equal(seen[0], seen[1]), "a new mask on every forward"


@pytest.mark.parametrize("mode", ["elementwise", "row", "column"])
def test_weight_drop_preserves_expectation(mode: str) -> None:
    torch.manual_seed(6)
    p, n = 0.5, 4000
    linear = nn.Linear(3, 4)
    raw = linear.weight.detach().clone()
    wd = WeightDrop(linear, ["weight"], p, mode)
    seen = capture_weights(linear, "weight")
    with torch.no_grad():
        for _ in range(n):
            wd(torch.zeros(1, 3))
    mean = torch.stack(seen).mean(0)
    assert ((mean - raw).abs() <= mean_tolerance(p, n) * raw.abs()).all()


def test_weight_drop_uses_one_mask_for_every_batch_element() -> None:
    torch.manual_seed(7)
    linear = nn.Linear(5, 6)
    wd = WeightDrop(linear, ["weight"], 0.5)
    seen = capture_weights(linear, "weight")
    x = torch.randn(9, 5)
    torch.testing.assert_close(wd(x), F.linear(x, seen[0], linear.bias))


def test_weight_drop_uses_one_mask_for_every_time_step() -> None:
    torch.manual_seed(8)
    weights_per_step: list[torch.Tensor] = []

    def recording_cell(gates_x_t, h, c, weight_hh, bias_hh):
        weights_per_step.append(weight_hh)
        return lstm_step(gates_x_t, h, c, weight_hh, bias_hh)

    wd = WeightDrop(LoopLSTMLayer(3, 4, cell_fn=recording_cell), ["weight_hh_l0"], 0.5)
    wd(torch.randn(6, 2, 3), None)
    assert len(weights_per_step) == 6
    assert all(w is weights_per_step[0] for w in weights_per_step)
    wd(torch.randn(6, 2, 3), None)
    assert weights_per_step[6] is not weights_per_step[0]
    assert not torch.equal(weights_per_step[6], weights_per_step[0])


def test_weight_dropped_nn_lstm_runs_with_the_dropped_weight() -> None:
    """nn.LSTM's fused kernel reads _flat_weights: the dropped W_hh must be in it."""
    torch.manual_seed(9)
    lstm = nn.LSTM(3, 4).double()
    loop = LoopLSTMLayer(3, 4).double()
    loop.load_state_dict(lstm.state_dict())
    undropped = copy.deepcopy(lstm)
    wd = WeightDrop(lstm, ["weight_hh_l0"], 0.5)
    seen = capture_weights(lstm, "weight_hh_l0")
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    y, (h, c) = wd(x)
    loop.weight_hh_l0.data.copy_(seen[0].detach())
    y_loop, (h_loop, c_loop) = loop(x)
    torch.testing.assert_close(y, y_loop)
    torch.testing.assert_close(c, c_loop)
    assert not torch.allclose(y, undropped(x)[0])


@pytest.mark.parametrize("mode", ["elementwise", "row", "column"])
def test_weight_drop_gradient_reaches_the_raw_weight_through_the_mask(mode: str) -> None:
    torch.manual_seed(10)
    p = 0.5
    lstm = nn.LSTM(3, 8)
    wd = WeightDrop(lstm, ["weight_hh_l0"], p, mode)
    seen = capture_weights(lstm, "weight_hh_l0")
    y, _ = wd(torch.randn(5, 2, 3), (torch.randn(1, 2, 8), torch.randn(1, 2, 8)))
    y.pow(2).sum().backward()
    raw, dropped = lstm.weight_hh_l0_raw, seen[0]
    assert raw.grad is not None
    kept = dropped.detach() != 0
    assert (raw.grad[~kept] == 0).all() and (~kept).any()
    torch.testing.assert_close(raw.grad[kept], dropped.grad[kept] / (1 - p))


@pytest.mark.parametrize("mode", ["elementwise", "row", "column"])
def test_weight_drop_is_the_unscaled_raw_weight_in_eval(mode: str) -> None:
    torch.manual_seed(11)
    lstm = nn.LSTM(3, 4)
    reference = copy.deepcopy(lstm)
    wd = WeightDrop(lstm, ["weight_hh_l0"], 0.5, mode).eval()
    x = torch.randn(5, 2, 3)
    y1, _ = wd(x)
    y2, _ = wd(x)
    torch.testing.assert_close(y1, reference(x)[0], rtol=0, atol=0)
    torch.testing.assert_close(y1, y2, rtol=0, atol=0)
    y1.sum().backward()  # gradients still flow in eval (e.g. dynamic evaluation)
    assert lstm.weight_hh_l0_raw.grad is not None


def test_weight_drop_survives_deepcopy_pickle_and_state_dict_after_a_forward() -> None:
    torch.manual_seed(12)
    wd = WeightDrop(nn.LSTM(3, 4), ["weight_hh_l0"], 0.5)
    x = torch.randn(5, 2, 3)
    wd(x)[0].sum().backward()  # a training forward leaves no non-leaf tensor behind
    for clone in (copy.deepcopy(wd), pickle.loads(pickle.dumps(wd))):
        assert clone.module.weight_hh_l0_raw is not wd.module.weight_hh_l0_raw
        torch.testing.assert_close(clone.eval()(x)[0], wd.eval()(x)[0])
        clone.train()(x)[0].sum().backward()
        assert clone.module.weight_hh_l0_raw.grad is not None
    fresh = WeightDrop(nn.LSTM(3, 4), ["weight_hh_l0"], 0.5).eval()
    fresh.load_state_dict(wd.state_dict())
    torch.testing.assert_close(fresh(x)[0], wd.eval()(x)[0])


@pytest.mark.parametrize("layer", [lambda: nn.LSTM(3, 4), lambda: LoopLSTMLayer(3, 4)])
def test_weight_drop_survives_dtype_and_device_moves(layer) -> None:
    wd = WeightDrop(layer(), ["weight_hh_l0"], 0.5).double().to("cpu")
    assert wd.module.weight_hh_l0_raw.dtype == torch.float64
    y, (h, c) = wd(torch.randn(4, 2, 3, dtype=torch.float64), None)
    assert y.dtype == torch.float64
    y.sum().backward()
    wd.float()
    assert wd(torch.randn(4, 2, 3), None)[0].dtype == torch.float32


def test_weight_dropped_nn_lstm_flattens_and_warns_nothing() -> None:
    wd = WeightDrop(nn.LSTM(3, 4), ["weight_hh_l0"], 0.5)
    wd.module.flatten_parameters()  # nn.LSTM calls it itself after .to(); must not crash
    x = torch.randn(5, 2, 3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wd(x)[0].sum().backward()
        wd.eval()(x)
    assert caught == []


# --- weight drop targets: [input, hidden] ---------------------------------------------------------

#: (cell, runner) -> the matrices `[input, hidden]` drops (hidden first, then input)
BOTH_TARGETS = {
    ("lstm", "cudnn"): ["weight_hh_l0", "weight_ih_l0"],
    ("lstm", "loop"): ["weight_hh_l0", "weight_ih_l0"],
    ("gru", "cudnn"): ["weight_hh_l0", "weight_ih_l0"],
    ("gru", "loop"): ["weight_hh_l0", "weight_ih_l0"],
    ("mlstm", "loop"): ["weight_mh_l0", "weight_hm_l0", "weight_ih_l0", "weight_mx_l0"],
}


def targeted_layer(cell: str, runner: str, targets: list[str], p: float, size: int) -> nn.Module:
    return build_recurrent_layer(
        size,
        size,  # input size = hidden size: the input and recurrent matrices have one shape
        weight_drop=p,
        weight_drop_mode="elementwise",
        recurrent_dropout=0.0,
        runner=runner,
        cell=cell,
        weight_drop_targets=targets,
    )


@pytest.mark.parametrize(("cell", "runner"), list(BOTH_TARGETS))
def test_hidden_target_is_todays_weight_drop(cell: str, runner: str) -> None:
    layer = targeted_layer(cell, runner, ["hidden"], 0.5, 4)
    recurrent = BOTH_TARGETS[(cell, runner)][: 2 if cell == "mlstm" else 1]
    assert layer.weight_names == recurrent
    assert "weight_ih_l0" in dict(layer.module.named_parameters())  # W_ih left alone


@pytest.mark.parametrize(("cell", "runner"), list(BOTH_TARGETS))
def test_input_and_hidden_targets_mask_each_matrix_independently(cell: str, runner: str) -> None:
    """Every matrix masked at rate p with entries 0 or 1/(1-p); a fresh mask per call; the input
    and recurrent masks independent (both dropped at rate p^2); gradients reach every raw weight."""
    torch.manual_seed(13)
    p, size, calls = 0.4, 12, 30
    names = BOTH_TARGETS[(cell, runner)]
    layer = targeted_layer(cell, runner, ["input", "hidden"], p, size)
    assert layer.weight_names == names
    inner = layer.module
    raw = {n: getattr(inner, f"{n}_raw") for n in names}
    seen = {n: capture_weights(inner, n) for n in names}
    x = torch.randn(4, 2, size)
    for _ in range(calls):
        layer(x)[0].sum().backward()
    masks = {n: torch.stack([w.detach() / raw[n].detach() for w in seen[n]]) for n in names}
    for name, mask in masks.items():
        assert ((mask == 0) | torch.isclose(mask, torch.tensor(1 / (1 - p)))).all(), name
        rate = (mask == 0).float().mean().item()
        assert abs(rate - p) < rate_tolerance(p, mask.numel()), (name, rate)
        assert not torch.equal(mask[0], mask[1]), f"{name}: a new mask every call"
        assert raw[name].grad is not None and raw[name].grad.abs().sum() > 0
    hidden = "weight_hm_l0" if cell == "mlstm" else "weight_hh_l0"  # [gates, size], as W_ih
    inputs = "weight_ih_l0"
    both = ((masks[hidden] == 0) & (masks[inputs] == 0)).float().mean().item()
    assert abs(both - p * p) < rate_tolerance(p * p, masks[inputs].numel()), both


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_fused_and_loop_runners_drop_the_input_weights_alike(cell: str) -> None:
    """The fused kernel uses the dropped W_ih too: same seed, same masks, same outputs."""
    torch.manual_seed(0)
    fused = targeted_layer(cell, "cudnn", ["input", "hidden"], 0.5, 5).double()
    loop = targeted_layer(cell, "loop", ["input", "hidden"], 0.5, 5).double()
    loop.load_state_dict(fused.state_dict())
    x = torch.randn(6, 3, 5, dtype=torch.float64)
    torch.manual_seed(1)
    y1 = fused(x)[0]
    torch.manual_seed(1)
    y2 = loop(x)[0]
    torch.testing.assert_close(y1, y2)
    only_hidden = targeted_layer(cell, "cudnn", ["hidden"], 0.5, 5).double()
    state = {k.replace("ih_l0_raw", "ih_l0"): v for k, v in fused.state_dict().items()}
    only_hidden.load_state_dict(state)
    torch.manual_seed(1)
    assert not torch.allclose(only_hidden(x)[0], y1), "W_ih is dropped as well"


@pytest.mark.parametrize("targets", [[], ["kernel"], ["input", "input"], "hidden"])
def test_weight_drop_targets_are_checked(targets: object) -> None:
    with pytest.raises(ValueError, match="weight_drop_targets"):
        targeted_layer("lstm", "loop", targets, 0.5, 4)  # type: ignore[arg-type]
