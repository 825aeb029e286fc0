"""The quantization-aware mLSTM and its integer engine: the layer is built and trains, every
quantized tensor sits on its grid, one integer step and the whole integer model agree with the
fake-quantized ones, no float enters the integer recurrence, and the exported file round-trips.

Two configurations: the plain cell, and every option of the TensorFlow cell (peepholes, a cell
clip and a projection with a clip, both small enough to bind on this toy model)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from src.models.awd import AWDLSTM, AWDLSTMConfig
from src.models.dropout import WeightDrop
from src.models.mlstm import MLSTMLayer
from src.quant.config import QuantConfig
from src.quant.integer import convert as qconvert
from src.quant.integer import export as qexport
from src.quant.integer.engine_mlstm import IntegerMLSTMLayer
from src.quant.qat import mlstm as qat_mlstm
from src.quant.qat import prepare
from src.quant.qat.fake_quant import FakeQuantize, PowerOfTwoFakeQuantize, enable_fake_quant
from src.quant.qat.mlstm import QATMLSTMLayer, clip_codes
from src.quant.scheme import dequantize, quantize
from tests.quant.qat_helpers import V, toy_tokens, trained_qat_model
from tests.quant.test_engine import DtypeRecorder, assert_integer_model_matches, rand_int

OPTIONS = {
    "plain": {},
    "options": {"peephole": True, "cell_clip": 0.05, "proj_size": 16, "proj_clip": 0.02},
}


@pytest.fixture(scope="module", params=list(OPTIONS))
def model(request: pytest.FixtureRequest) -> AWDLSTM:
    return trained_qat_model(seed=0, cell="mlstm", mlstm=OPTIONS[request.param])


def inner(layer: torch.nn.Module) -> QATMLSTMLayer:
    return layer.module if isinstance(layer, WeightDrop) else layer


def test_built_when_quant_is_enabled_and_weight_drop_wraps_both_recurrent_matrices() -> None:
    cfg = AWDLSTMConfig(vocab_size=V, emb_size=8, hidden_size=12, num_layers=2, cell="mlstm")
    model = prepare(AWDLSTM(cfg), QuantConfig(enabled=True))
    for layer in model.layers:
        assert isinstance(layer, WeightDrop) and isinstance(layer.module, QATMLSTMLayer)
        assert layer.weight_names == ["weight_mh_l0", "weight_hm_l0"]
    names = dict(inner(model.layers[0]).named_modules())
    for q in ("factor_x_quant", "factor_h_quant", "cell_quant"):
        assert isinstance(names[q], PowerOfTwoFakeQuantize)
    for q in ("product_quant", "hidden_quant"):
        assert isinstance(names[q], FakeQuantize)
    with pytest.raises(ValueError, match="model.runner='loop'"):
        prepare(AWDLSTM(AWDLSTMConfig(cell="mlstm", runner="loop")), QuantConfig(enabled=True))


def test_float_weights_load_and_quantization_off_is_the_float_layer() -> None:
    torch.manual_seed(0)
    options = {"peephole": True, "proj_size": 6, "cell_clip": 2.0}
    float_layer = MLSTMLayer(5, 8, **options)
    qat = QATMLSTMLayer(5, 8, quant=QuantConfig(enabled=True), **options)
    missing, unexpected = qat.load_state_dict(float_layer.state_dict(), strict=False)
    assert unexpected == [] and all("_quant" in k for k in missing)
    enable_fake_quant(qat, False)
    x = torch.randn(7, 3, 5)
    torch.testing.assert_close(qat(x)[0], float_layer(x)[0], rtol=0, atol=0)


def on_grid(t: torch.Tensor, scale: float, zero_point: float = 0.0) -> bool:
    codes = t.double() / scale + zero_point
    return bool((codes - codes.round()).abs().max() < 1e-3)


def test_every_quantized_tensor_is_on_its_grid(
    model: AWDLSTM, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The factor u_t, c_t and h_t of every step lie on the grids of their quantizers, and so
    does every m_t the step computes: the quantizers really sit in the step."""
    layer = inner(model.layers[0])
    captured: dict[str, list[torch.Tensor]] = {"u": [], "c": [], "m": []}
    step = layer.cell_fn

    def spy(*args, **kwargs):
        captured["u"].append(args[1])
        h, c = step(*args, **kwargs)
        captured["c"].append(c)
        return h, c

    real_quantizers = qat_mlstm.MLSTMStepQuantizers

    def recording_quantizers(*args: object) -> qat_mlstm.MLSTMStepQuantizers:
        q = real_quantizers(*args)
        product = q.product

        def record(x: torch.Tensor) -> torch.Tensor:
            captured["m"].append(product(x))
            return captured["m"][-1]

        return q._replace(product=record)

    monkeypatch.setattr(layer, "cell_fn", spy)
    monkeypatch.setattr(qat_mlstm, "MLSTMStepQuantizers", recording_quantizers)
    x = dequantize(rand_int(-128, 128, (6, 4, layer.input_size), seed=3, dtype=torch.int8), 0.01, 0)
    with torch.no_grad():
        y, _ = model.layers[0](x)  # WeightDrop (eval: no drop) sets W_mh, W_hm
    s_u = float(layer.factor_x_quant.calculate_qparams()[0])
    s_c = float(layer.cell_quant.calculate_qparams()[0])
    s_h, z_h = (float(t) for t in layer.hidden_quant.calculate_qparams())
    s_m, z_m = (float(t) for t in layer.product_quant.calculate_qparams())
    assert all(on_grid(u, s_u) for u in captured["u"])
    assert all(on_grid(c, s_c) for c in captured["c"])
    assert on_grid(y, s_h, z_h)
    assert len(captured["m"]) == 6 and all(on_grid(m, s_m, z_m) for m in captured["m"])
    assert not on_grid(x @ torch.randn(layer.input_size, 3), s_m, z_m)  # the check can fail


def test_eval_before_observing_is_an_error() -> None:
    layer = QATMLSTMLayer(4, 6, quant=QuantConfig(enabled=True)).eval()
    with pytest.raises(RuntimeError, match="before observing"):
        layer(torch.randn(3, 2, 4))


def test_straight_through_gradients_reach_every_parameter() -> None:
    torch.manual_seed(1)
    options = {"peephole": True, "proj_size": 6, "cell_clip": 3.0, "proj_clip": 2.0}
    cfg = AWDLSTMConfig(
        vocab_size=V, emb_size=6, hidden_size=10, num_layers=2, cell="mlstm", mlstm=options
    )
    model = prepare(AWDLSTM(cfg), QuantConfig(enabled=True)).train()
    tokens = toy_tokens(9, 3, seed=2)
    model(tokens[:-1])  # first call initializes the observers (float)
    out = model(tokens[:-1])
    F.cross_entropy(model.decoder(out.output).reshape(-1, V), tokens[1:].reshape(-1)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


# ---------------------------------------------------------------- integer engine


def test_converts_to_integer_mlstm_layers(model: AWDLSTM) -> None:
    lm, scales = qconvert.convert(model)
    assert all(isinstance(layer, IntegerMLSTMLayer) for layer in lm.layers)
    for layer in lm.layers:
        for name in ("weight_ih", "weight_mx", "weight_mh", "weight_hm"):
            assert getattr(layer, name).dtype == torch.int8
        assert layer.bias_x.dtype == layer.bias_m.dtype == torch.int32
    layer, fq = lm.layers[0], inner(model.layers[0])
    if fq.peephole:
        assert layer.peephole.dtype == torch.int16 and layer.peephole.abs().max() == 32767
        assert layer.weight_hr.dtype == torch.int8 and layer.weight_hr.shape == (16, 20)
        assert layer.cell_bounds == clip_codes(0.05, 2.0**-layer.cell_exponent, 0, -32768, 32767)
    s_m, z_m = scales["layers"][0]["product"]
    assert torch.equal(layer.bias_m.long(), -z_m * layer.weight_hm.long().sum(1))


@pytest.mark.parametrize("layer_index", [0, 1])
def test_one_integer_step_equals_the_fake_quantized_step(model: AWDLSTM, layer_index: int) -> None:
    """From the same int8 input and int8 h_{t-1}, int16 c_{t-1}: h_t within one code (almost
    always equal), c_t within one gate step."""
    lm, scales = qconvert.convert(model, "full")
    fq, il = model.layers[layer_index], lm.layers[layer_index]
    sc = scales["layers"][layer_index]
    (s_x, z_x), (s_h, z_h), k = sc["input"], sc["hidden"], -sc["cell_exponent"]
    B = 512
    x_q = rand_int(-128, 128, (1, B, il.input_size), seed=10, dtype=torch.int8)
    h_q = rand_int(-128, 128, (B, il.output_size), seed=11, dtype=torch.int8)
    c_lim = min(int(inner(fq).cell_quant.observer.max_val.abs() * 2**k), 32767)
    c_q = rand_int(-c_lim, c_lim, (B, il.hidden_size), seed=12, dtype=torch.int16)
    with torch.no_grad():
        state = (dequantize(h_q, s_h, z_h)[None], dequantize(c_q, 2.0**-k, 0)[None])
        _, (h_f, c_f) = fq(dequantize(x_q, s_x, z_x), state)
    _, (h_i, c_i) = il(x_q, (h_q, c_q))
    assert h_i.dtype == torch.int8 and c_i.dtype == torch.int16
    dh = (quantize(h_f[0], s_h, z_h, -128, 127).long() - h_i.long()).abs()
    assert dh.max() <= 1 and (dh > 0).float().mean() < 0.02
    c_code = quantize(c_f[0], 2.0**-k, 0, -32768, 32767).long()
    assert (c_code - c_i.long()).abs().max() * 2.0**-k <= 2.0**-12
    if il.cell_bounds is not None:  # the clip binds and the engine clamps to the same codes
        lo, hi = il.cell_bounds
        assert c_i.min() >= lo and c_i.max() <= hi and bool(((c_i == lo) | (c_i == hi)).any())
    if il.proj_bounds is not None:
        lo, hi = il.proj_bounds
        assert h_i.min() >= lo and h_i.max() <= hi and bool(((h_i == lo) | (h_i == hi)).any())


def test_integer_model_matches_the_fake_quantized_model(model: AWDLSTM) -> None:
    assert_integer_model_matches(model, max_differing=0.08)


def test_no_float_tensor_enters_the_recurrence(model: AWDLSTM) -> None:
    lm, _ = qconvert.convert(model)
    qexport.expand_tables(lm)
    tokens = toy_tokens(9, 4, seed=7)
    state = lm.init_state(4)
    with DtypeRecorder() as rec:
        logits, state = lm.logits_int32(tokens, state)
    floats = [(n, d) for n, dtypes in rec.ops for d in dtypes if d.is_floating_point]
    assert floats == [] and logits.dtype == torch.int32
    assert any("_int_mm" in n for n, _ in rec.ops)


def test_file_round_trip(model: AWDLSTM, tmp_path: Path) -> None:
    lm, scales = qconvert.convert(model)
    path = tmp_path / "mlstm.int8.pt"
    qexport.save(path, qexport.to_payload(lm, "interpolated", scales, {"vocab": []}))
    loaded, _ = qexport.load(path)
    assert all(isinstance(layer, IntegerMLSTMLayer) for layer in loaded.layers)
    tokens = toy_tokens(10, 3, seed=9)
    a, _ = qexport.expand_tables(lm).logits_int32(tokens)
    b, _ = loaded.logits_int32(tokens)
    assert torch.equal(a, b)
