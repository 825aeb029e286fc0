"""The mLSTM: one step by hand, the options against a per-gate reference, gradcheck, init, the
projection, weight drop on its two recurrent matrices (same statistics as the LSTM's W_hh), and
the layer inside the AWD model."""

from __future__ import annotations

import copy
import dataclasses
import math
import pickle
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from src.models.awd import AWDLSTM, AWDLSTMConfig
from src.models.cells import lstm_step
from src.models.dropout import WeightDrop
from src.models.mlstm import MLSTMLayer, MLSTMOptions, mlstm_step
from src.models.recurrent import LAYERS, LoopLSTMLayer, build_recurrent_layer
from tests.conftest import compose_train
from tests.models.test_dropout import capture_weights, rate_tolerance

T, B, I, H, P = 5, 3, 4, 6, 3


def sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def step_inputs(hidden: int = H, proj: int | None = None, seed: int = 0, batch: int = B) -> dict:
    """Random float64 arguments of `mlstm_step` (all requiring grad), peepholes included."""
    g = torch.Generator().manual_seed(seed)
    out = proj or hidden

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_()

    return dict(
        gates_x_t=rand(batch, 4 * hidden),
        mx_t=rand(batch, hidden),
        h=rand(batch, out),
        c=rand(batch, hidden),
        weight_mh=rand(hidden, out),
        weight_hm=rand(4 * hidden, hidden),
        peephole=(rand(hidden), rand(hidden), rand(hidden)),
        weight_hr=rand(out, hidden) if proj else None,
    )


# --- the step -----------------------------------------------------------------------------------


def test_one_step_by_hand() -> None:
    """I = H = 1, numbers worked out on paper; the layer (T = 1) must give the same h and c."""
    layer = MLSTMLayer(1, 1, forget_bias=1.0).double()
    with torch.no_grad():
        layer.weight_mx_l0.fill_(2.0)
        layer.weight_mh_l0.fill_(1.5)
        layer.weight_ih_l0.copy_(
            torch.tensor([[0.1], [-0.2], [0.3], [0.4]], dtype=torch.float64)
        )  # i, f, g, o
        layer.weight_hm_l0.copy_(torch.tensor([[1.0], [0.5], [-1.0], [2.0]], dtype=torch.float64))
    assert layer.bias_ih_l0.tolist() == [0.0, 1.0, 0.0, 0.0]  # forget bias 1
    x, h0, c0 = 0.5, 0.2, -0.3
    m = (2.0 * x) * (1.5 * h0)  # (W_mx x) * (W_mh h) = 1.0 * 0.3
    i = 0.1 * x + 1.0 * m  # 0.35
    f = -0.2 * x + 1.0 + 0.5 * m  # 1.05
    g = 0.3 * x - 1.0 * m  # -0.15
    o = 0.4 * x + 2.0 * m  # 0.8
    c1 = sigmoid(f) * c0 + sigmoid(i) * math.tanh(g)
    h1 = sigmoid(o) * math.tanh(c1)
    assert (m, i, f, g, o) == pytest.approx((0.3, 0.35, 1.05, -0.15, 0.8))

    state = (
        torch.tensor([[[h0]]], dtype=torch.float64),
        torch.tensor([[[c0]]], dtype=torch.float64),
    )
    y, (h, c) = layer(torch.tensor([[[x]]], dtype=torch.float64), state)
    assert y.item() == pytest.approx(h1, abs=1e-14) and h.item() == pytest.approx(h1, abs=1e-14)
    assert c.item() == pytest.approx(c1, abs=1e-14)


def test_mlstm_is_an_lstm_fed_m() -> None:
    """REFERENCE §4: the mLSTM step is the LSTM step with m_t in place of h_{t-1}."""
    a = step_inputs()
    m = a["mx_t"] * F.linear(a["h"], a["weight_mh"])
    expected = lstm_step(a["gates_x_t"], m, a["c"], a["weight_hm"], None)
    got = mlstm_step(a["gates_x_t"], a["mx_t"], a["h"], a["c"], a["weight_mh"], a["weight_hm"])
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-14)


def reference_step(a: dict, cell_clip: float, proj_clip: float) -> tuple[torch.Tensor, ...]:
    """The TensorFlow LSTMCell's order of operations, one matrix per gate, on m_t."""
    hidden = a["c"].size(1)
    m = (a["mx_t"].unsqueeze(2) * (a["weight_mh"] @ a["h"].unsqueeze(2))).squeeze(2)
    pre = {}
    for k, gate in enumerate("ifgo"):
        rows = slice(k * hidden, (k + 1) * hidden)
        pre[gate] = a["gates_x_t"][:, rows] + m @ a["weight_hm"][rows].T
    w_ic, w_fc, w_oc = a["peephole"]
    c_prev = a["c"]
    c = torch.sigmoid(pre["f"] + w_fc * c_prev) * c_prev
    c = c + torch.sigmoid(pre["i"] + w_ic * c_prev) * torch.tanh(pre["g"])
    c = torch.clip(c, -cell_clip, cell_clip)
    h = torch.sigmoid(pre["o"] + w_oc * c) * torch.tanh(c)
    h = torch.clip(h @ a["weight_hr"].T, -proj_clip, proj_clip)
    return h, c


def test_peephole_clips_and_projection_match_a_per_gate_reference() -> None:
    a = step_inputs(proj=P)
    with torch.no_grad():
        a["c"].mul_(3)  # some |c_t| beyond the clip
    expected = reference_step(a, cell_clip=1.5, proj_clip=0.3)
    got = mlstm_step(**a, cell_clip=1.5, proj_clip=0.3)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-13)
    h, c = got
    assert h.shape == (B, P) and c.shape == (B, H)
    assert c.abs().max() == 1.5 and h.abs().max() == 0.3, "both clips are active in this case"


@pytest.mark.parametrize("proj", [None, 2], ids=["plain", "projection"])
def test_step_gradcheck_float64(proj: int | None) -> None:
    """Peepholes on, clipping off (clip is not differentiable at the bound); every input and
    weight is checked element by element, so the sizes are small."""
    a = step_inputs(hidden=3, proj=proj, seed=1, batch=2)
    names = ["gates_x_t", "mx_t", "h", "c", "weight_mh", "weight_hm"]
    inputs = [a[k] for k in names] + list(a["peephole"]) + ([a["weight_hr"]] if proj else [])

    def step(gx, mx, h, c, w_mh, w_hm, w_ic, w_fc, w_oc, *w_hr):
        return mlstm_step(gx, mx, h, c, w_mh, w_hm, (w_ic, w_fc, w_oc), *w_hr)

    assert torch.autograd.gradcheck(step, inputs, eps=1e-6, atol=1e-7)


def test_layer_gradcheck_over_a_sequence() -> None:
    torch.manual_seed(2)
    steps, batch, hidden = 3, 2, 3
    layer = MLSTMLayer(2, hidden, peephole=True).double()
    x = torch.randn(steps, batch, 2, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(1, batch, hidden, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(1, batch, hidden, dtype=torch.float64, requires_grad=True)

    def run(x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y, (h, c) = layer(x, (h0, c0))
        return y, c

    assert torch.autograd.gradcheck(run, (x, h0, c0), eps=1e-6, atol=1e-7)


# --- the layer ----------------------------------------------------------------------------------


def test_layer_runs_the_step_over_time() -> None:
    torch.manual_seed(3)
    layer = MLSTMLayer(I, H, peephole=True, cell_clip=2.0).double()
    x = torch.randn(T, B, I, dtype=torch.float64)
    y, (h_T, c_T) = layer(x)
    assert y.shape == (T, B, H) and h_T.shape == c_T.shape == (1, B, H)
    h = c = torch.zeros(B, H, dtype=torch.float64)
    peephole = (layer.weight_ic_l0, layer.weight_fc_l0, layer.weight_oc_l0)
    for t in range(T):
        gates_x = x[t] @ layer.weight_ih_l0.T + layer.bias_ih_l0
        mx = x[t] @ layer.weight_mx_l0.T
        h, c = mlstm_step(
            gates_x, mx, h, c, layer.weight_mh_l0, layer.weight_hm_l0, peephole, cell_clip=2.0
        )
        torch.testing.assert_close(y[t], h, rtol=0, atol=1e-14)
    torch.testing.assert_close(c_T[0], c, rtol=0, atol=1e-14)


def test_layer_carries_the_state_across_calls() -> None:
    torch.manual_seed(4)
    layer = MLSTMLayer(I, H, proj_size=P).double()
    x = torch.randn(T, B, I, dtype=torch.float64)
    y, (h, c) = layer(x)
    y1, state = layer(x[:2])
    y2, (h2, c2) = layer(x[2:], state)
    torch.testing.assert_close(torch.cat([y1, y2]), y)
    torch.testing.assert_close((h2, c2), (h, c))


def test_parameter_names_and_shapes() -> None:
    plain = {n: tuple(p.shape) for n, p in MLSTMLayer(I, H).named_parameters()}
    assert plain == {
        "weight_ih_l0": (4 * H, I),
        "bias_ih_l0": (4 * H,),
        "weight_mx_l0": (H, I),
        "weight_mh_l0": (H, H),
        "weight_hm_l0": (4 * H, H),
    }
    full = dict(MLSTMLayer(I, H, peephole=True, proj_size=P).named_parameters())
    assert full["weight_mh_l0"].shape == (H, P) and full["weight_hr_l0"].shape == (P, H)
    assert all(full[f"weight_{g}c_l0"].shape == (H,) for g in "ifo")
    assert MLSTMLayer.recurrent_weight_names == ("weight_mh_l0", "weight_hm_l0")
    assert LAYERS[("mlstm", "loop")] is MLSTMLayer


def test_wrong_state_shape_is_a_clear_error() -> None:
    layer = MLSTMLayer(I, H, proj_size=P)
    bad = (torch.zeros(1, B, H), torch.zeros(1, B, H))  # h must be P wide
    with pytest.raises(ValueError, match=r"h \[1, B, 3\], c \[1, B, 6\]"):
        layer(torch.randn(T, B, I), bad)


# --- init ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("forget_bias", [1.0, 0.5, 0.0])
def test_forget_gate_bias_init(forget_bias: float) -> None:
    bias = MLSTMLayer(I, H, forget_bias=forget_bias).bias_ih_l0.detach()
    i, f, g, o = bias.chunk(4)
    assert (f == forget_bias).all()
    assert (torch.cat([i, g, o]) == 0).all()


def test_default_init_is_uniform_in_one_over_sqrt_h() -> None:
    torch.manual_seed(5)
    hidden = 64
    layer = MLSTMLayer(32, hidden, peephole=True, proj_size=16)
    bound = hidden**-0.5
    weights = torch.cat([p.flatten() for n, p in layer.named_parameters() if n != "bias_ih_l0"])
    assert weights.abs().max() <= bound and weights.abs().max() > 0.99 * bound


def test_orthogonal_init() -> None:
    torch.manual_seed(6)
    layer = MLSTMLayer(I, H, orthogonal_init=True)
    eye = torch.eye(H)
    torch.testing.assert_close(layer.weight_mh_l0.T @ layer.weight_mh_l0, eye)
    for block in layer.weight_hm_l0.detach().split(H):  # each gate's [H, H] block
        torch.testing.assert_close(block.T @ block, eye)
    projected = MLSTMLayer(I, H, proj_size=P, orthogonal_init=True).weight_mh_l0  # [H, P]
    torch.testing.assert_close(projected.T @ projected, torch.eye(P))  # orthonormal columns
    assert (MLSTMLayer(I, H, orthogonal_init=True).bias_ih_l0[H : 2 * H] == 1).all()


def test_reset_parameters_works_on_a_weight_dropped_layer() -> None:
    wd = WeightDrop(MLSTMLayer(I, H, orthogonal_init=True), MLSTMLayer.recurrent_weight_names, 0.5)
    with torch.no_grad():
        wd.module.weight_mh_l0_raw.zero_()
    wd.module.reset_parameters()
    raw = wd.module.weight_mh_l0_raw
    torch.testing.assert_close(raw.T @ raw, torch.eye(H))


# --- projection ---------------------------------------------------------------------------------


def test_projection_shapes_and_clip() -> None:
    torch.manual_seed(7)
    layer = MLSTMLayer(I, H, proj_size=P, proj_clip=0.05)
    y, (h, c) = layer(torch.randn(T, B, I) * 10)
    assert y.shape == (T, B, P) and h.shape == (1, B, P) and c.shape == (1, B, H)
    assert y.abs().max() <= 0.05
    assert "proj_size=3" in repr(layer)


def test_projection_lets_a_wide_cell_tie_to_a_narrow_embedding() -> None:
    """TF's num_proj use: a 6-unit cell outputs E = 3, so the decoder can share the embedding."""
    torch.manual_seed(8)
    vocab, emb = 11, P
    embedding = nn.Embedding(vocab, emb)
    layer = MLSTMLayer(emb, H, proj_size=emb)
    decoder = nn.Linear(emb, vocab)
    decoder.weight = embedding.weight
    tokens = torch.randint(0, vocab, (T, B))
    y, _ = layer(embedding(tokens))
    logits = decoder(y)
    F.cross_entropy(logits.view(-1, vocab), tokens.view(-1)).backward()
    assert logits.shape == (T, B, vocab)
    assert layer.weight_hr_l0.grad is not None and embedding.weight.grad is not None


def test_cell_clip_bounds_the_cell_state() -> None:
    torch.manual_seed(9)
    layer = MLSTMLayer(I, H, cell_clip=0.1)
    with torch.no_grad():
        layer.bias_ih_l0.fill_(5.0)  # open gates, candidate near 1: c grows past the clip
    _, (_, c) = layer(torch.randn(20, B, I))
    assert c.abs().max().item() == pytest.approx(0.1)


# --- options ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(forget_bias=float("nan")), "forget_bias"),
        (dict(cell_clip=0.0), "cell_clip"),
        (dict(proj_size=0), "proj_size"),
        (dict(proj_size=2.5), "proj_size"),
        (dict(proj_clip=1.0), "needs mlstm.proj_size"),
    ],
)
def test_options_are_validated(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MLSTMOptions(**kwargs)
    with pytest.raises(ValueError, match=message):
        MLSTMLayer(I, H, **kwargs)


# --- recurrent dropout --------------------------------------------------------------------------


def test_recurrent_dropout_uses_one_mask_per_sequence() -> None:
    torch.manual_seed(10)
    p, hidden = 0.5, 32
    seen: list[torch.Tensor] = []

    def recording_step(gates_x_t, mx_t, h, *args, **kwargs):
        seen.append(h)
        return mlstm_step(gates_x_t, mx_t, h, *args, **kwargs)

    layer = MLSTMLayer(I, hidden, recurrent_dropout=p, cell_fn=recording_step)
    state = (torch.rand(1, B, hidden) + 0.5, torch.randn(1, B, hidden))
    y, (h, _) = layer(torch.randn(T, B, I), state)
    masks = torch.stack(seen) / torch.cat([state[0], y[:-1]])
    kept = masks != 0
    assert (kept == kept[0]).all() and 0 < kept.float().mean() < 1
    torch.testing.assert_close(masks[kept], torch.full_like(masks[kept], 1 / (1 - p)))
    torch.testing.assert_close(h[0], y[-1])  # the state passed on is undropped
    seen.clear()
    layer.eval()(torch.randn(T, B, I), state)
    torch.testing.assert_close(seen[0], state[0][0], rtol=0, atol=0)


# --- weight drop: the mLSTM's matrices behave as the LSTM's W_hh --------------------------------

RECURRENT = [("lstm", "weight_hh_l0"), ("mlstm", "weight_mh_l0"), ("mlstm", "weight_hm_l0")]


def weight_dropped(cell: str, p: float, mode: str, hidden: int = 20) -> WeightDrop:
    layer = build_recurrent_layer(
        I,
        hidden,
        weight_drop=p,
        weight_drop_mode=mode,
        recurrent_dropout=0.0,
        runner="loop",
        cell=cell,
    )
    assert isinstance(layer, WeightDrop)
    return layer


@pytest.mark.parametrize("mode", ["elementwise", "row", "column"])
@pytest.mark.parametrize(("cell", "name"), RECURRENT)
def test_weight_drop_mask_shape_rate_and_freshness(cell: str, name: str, mode: str) -> None:
    torch.manual_seed(11)
    p, calls = 0.4, 40
    wd = weight_dropped(cell, p, mode)
    raw = getattr(wd.module, f"{name}_raw").detach()
    seen = capture_weights(wd.module, name)
    for _ in range(calls):
        wd(torch.randn(2, B, I), None)
    kept_rate = 0.0
    for weight in seen:
        mask = weight.detach() / raw
        assert ((mask == 0) | torch.isclose(mask, torch.tensor(1 / (1 - p)))).all()
        kept = mask != 0
        if mode == "row":  # (out, 1)
            assert (kept == kept[:, :1]).all()
        if mode == "column":  # (1, in)
            assert (kept == kept[:1]).all()
        kept_rate += kept.float().mean().item() / calls
    rows, cols = raw.shape
    draws = calls * {"elementwise": rows * cols, "row": rows, "column": cols}[mode]
    assert abs((1 - kept_rate) - p) < rate_tolerance(p, draws)
    assert not torch.equal(seen[0], seen[1]), "a new mask on every forward"


@pytest.mark.parametrize(("cell", "name"), RECURRENT)
def test_weight_drop_one_mask_for_every_time_step(cell: str, name: str) -> None:
    torch.manual_seed(12)
    wd = weight_dropped(cell, 0.5, "elementwise")
    per_step: list[torch.Tensor] = []
    position = 3 if cell == "lstm" else {"weight_mh_l0": 4, "weight_hm_l0": 5}[name]

    def recording(*args, **kwargs):
        per_step.append(args[position])
        return original(*args, **kwargs)

    original, wd.module.cell_fn = wd.module.cell_fn, recording
    wd(torch.randn(T, B, I), None)
    assert len(per_step) == T and all(w is per_step[0] for w in per_step)
    wd(torch.randn(T, B, I), None)
    assert not torch.equal(per_step[T], per_step[0])


@pytest.mark.parametrize("mode", ["elementwise", "row", "column"])
@pytest.mark.parametrize(("cell", "name"), RECURRENT)
def test_weight_drop_gradient_reaches_the_raw_weight(cell: str, name: str, mode: str) -> None:
    torch.manual_seed(13)
    p = 0.5
    wd = weight_dropped(cell, p, mode, hidden=8)
    seen = capture_weights(wd.module, name)
    state = (torch.randn(1, B, 8), torch.randn(1, B, 8))
    y, _ = wd(torch.randn(T, B, I), state)
    y.pow(2).sum().backward()
    raw, dropped = getattr(wd.module, f"{name}_raw"), seen[0]
    kept = dropped.detach() != 0
    assert (~kept).any() and (raw.grad[~kept] == 0).all()
    torch.testing.assert_close(raw.grad[kept], dropped.grad[kept] / (1 - p))


@pytest.mark.parametrize("cell", ["lstm", "mlstm"])
def test_weight_drop_is_the_raw_weight_in_eval(cell: str) -> None:
    torch.manual_seed(14)
    wd = weight_dropped(cell, 0.5, "elementwise").eval()
    plain = LoopLSTMLayer(I, 20) if cell == "lstm" else MLSTMLayer(I, 20)
    plain.load_state_dict({k.replace("_raw", ""): v for k, v in wd.module.state_dict().items()})
    x = torch.randn(T, B, I)
    torch.testing.assert_close(wd(x, None)[0], plain.eval()(x, None)[0], rtol=0, atol=0)


def test_the_two_mlstm_matrices_get_independent_masks() -> None:
    torch.manual_seed(15)
    hidden = 16
    wd = weight_dropped("mlstm", 0.5, "column", hidden=hidden)  # both [*, 16]: comparable masks
    mh, hm = capture_weights(wd.module, "weight_mh_l0"), capture_weights(wd.module, "weight_hm_l0")
    same = 0
    for _ in range(20):
        wd(torch.randn(2, B, I), None)
        kept_mh = mh[-1].detach()[0] / wd.module.weight_mh_l0_raw[0].detach() != 0
        kept_hm = hm[-1].detach()[0] / wd.module.weight_hm_l0_raw[0].detach() != 0
        same += int(torch.equal(kept_mh, kept_hm))
    assert same < 2


def test_weight_dropped_mlstm_pickles_and_copies() -> None:
    layer = weight_dropped("mlstm", 0.5, "row")
    x = torch.randn(T, B, I)
    layer(x, None)[0].sum().backward()
    for clone in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
        torch.testing.assert_close(clone.eval()(x, None)[0], layer.eval()(x, None)[0])


# --- build and the AWD model --------------------------------------------------------------------


def test_build_passes_the_options_and_picks_the_loop_runner() -> None:
    layer = build_recurrent_layer(
        I,
        H,
        weight_drop=0.3,
        weight_drop_mode="row",
        recurrent_dropout=0.1,
        cell="mlstm",
        forget_bias=2.0,
        peephole=True,
    )
    assert isinstance(layer, WeightDrop) and type(layer.module) is MLSTMLayer
    assert layer.weight_names == ["weight_mh_l0", "weight_hm_l0"] and layer.mode == "row"
    assert layer.module.recurrent_dropout == 0.1 and layer.module.peephole
    assert (layer.module.bias_ih_l0[H : 2 * H] == 2.0).all()
    with pytest.raises(ValueError, match="no layer for cell='mlstm' runner='cudnn'"):
        build_recurrent_layer(
            I,
            H,
            weight_drop=0.0,
            weight_drop_mode="row",
            recurrent_dropout=0.0,
            cell="mlstm",
            runner="cudnn",
        )


V, E = 30, 4


def tiny_mlstm(**overrides) -> AWDLSTMConfig:
    return AWDLSTMConfig(vocab_size=V, emb_size=E, hidden_size=H, cell="mlstm", **overrides)


def test_awd_model_with_mlstm_layers() -> None:
    torch.manual_seed(16)
    options = MLSTMOptions(forget_bias=0.5, peephole=True, cell_clip=3.0, orthogonal_init=True)
    model = AWDLSTM(tiny_mlstm(mlstm=options, recurrent_dropout=0.1))
    assert all(type(layer.module) is MLSTMLayer for layer in model.layers)
    assert [layer.module.output_size for layer in model.layers] == [H, H, E]
    assert all(layer.module.cell_clip == 3.0 and layer.module.peephole for layer in model.layers)
    out = model(torch.randint(0, V, (T, B)))
    assert out.output.shape == (T, B, E)
    assert [h.shape for h, _ in out.hidden] == [(1, B, H), (1, B, H), (1, B, E)]
    model.decoder(out.output).logsumexp(-1).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []
    assert "layers.0.module.weight_hm_l0_raw" in dict(model.named_parameters())
    assert model.decoder.weight is model.embedding.weight


def test_lstm_models_ignore_the_mlstm_options() -> None:
    model = AWDLSTM(AWDLSTMConfig(vocab_size=V, emb_size=E, hidden_size=H))
    assert not any(isinstance(m, MLSTMLayer) for m in model.modules())


def test_config_takes_the_options_as_a_dict_and_round_trips() -> None:
    config = tiny_mlstm(mlstm={"peephole": True, "forget_bias": 2.0})  # as from hparams
    assert config.mlstm == MLSTMOptions(peephole=True, forget_bias=2.0)
    assert AWDLSTMConfig(**dataclasses.asdict(config)) == config
    assert tiny_mlstm(mlstm={"proj_size": E}).mlstm.proj_size == E
    with pytest.raises(TypeError, match="peepholes"):
        tiny_mlstm(mlstm={"peepholes": True})


def test_hydra_model_group(tmp_path: Path) -> None:
    from hydra.errors import ConfigCompositionException
    from omegaconf.errors import OmegaConfBaseException

    cfg = compose_train(["model=mlstm", "model.mlstm.peephole=true"], tmp_path, tmp_path, tmp_path)
    assert cfg.model.cell == "mlstm" and cfg.model.mlstm.peephole is True
    assert cfg.model.mlstm.forget_bias == 1.0 and cfg.model.mlstm.cell_clip is None
    for override, message in [
        ("model.mlstm.clip=1", "clip"),
        ("model.mlstm.forget_bias=high", "high"),
    ]:
        with pytest.raises((ConfigCompositionException, OmegaConfBaseException)) as info:
            compose_train(["model=mlstm", override], tmp_path, tmp_path, tmp_path)
        assert message in str(info.value) + str(info.value.__cause__)


def test_awd_model_ties_a_projected_mlstm_stack() -> None:
    """With mlstm.proj_size every cell keeps hidden_size and projects; the last layer projects
    to emb_size so the decoder shares the embedding matrix."""
    from src.models.awd import AWDLSTM, AWDLSTMConfig

    cfg = AWDLSTMConfig(
        vocab_size=50,
        emb_size=8,
        hidden_size=24,
        num_layers=3,
        cell="mlstm",
        mlstm={"proj_size": 12},
    )
    model = AWDLSTM(cfg)
    assert model.layer_specs() == [(8, 24, 12), (12, 24, 12), (12, 24, 8)]
    assert model.decoder.weight is model.embedding.weight
    out = model(torch.randint(50, (5, 3)))
    assert [(h.shape[-1], c.shape[-1]) for h, c in out.hidden] == [(12, 24), (12, 24), (8, 24)]
    assert [(h.shape[-1], c.shape[-1]) for h, c in model.init_hidden(3)] == [
        (12, 24),
        (12, 24),
        (8, 24),
    ]
    again = model(torch.randint(50, (5, 3)), out.hidden)  # the state carries over
    assert model.decoder(again.output).shape == (5, 3, 50)


def test_projection_needs_the_mlstm_cell() -> None:
    from src.models.awd import AWDLSTMConfig

    with pytest.raises(ValueError, match="proj_size needs cell=mlstm"):
        AWDLSTMConfig(cell="lstm", mlstm={"proj_size": 12})
