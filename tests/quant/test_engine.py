"""The integer-only engine: its arithmetic against the reference primitives (exact), one step
against the fake-quantized step, the whole model, the file, and no float in the recurrence."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from src.models.awd import AWDLSTM, AWDLSTMConfig
from src.quant.config import QuantConfig
from src.quant.integer import convert as qconvert
from src.quant.integer import export as qexport
from src.quant.integer.engine import Requantizer, cell_update, round_shift
from src.quant.integer.fixed_point import (
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    quantize_multipliers,
    rounding_divide_by_pot,
)
from src.quant.integer.lut import sigmoid_lut, tanh_lut
from src.quant.qat import prepare
from src.quant.scheme import dequantize, quantize
from tests.quant.qat_helpers import V, toy_tokens, trained_qat_model


def rand_int(low: int, high: int, shape: tuple[int, ...], seed: int, dtype=torch.int32):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, high, shape, generator=g, dtype=torch.int64).to(dtype)


@pytest.fixture(scope="module")
def model() -> AWDLSTM:
    return trained_qat_model(seed=0)


# ---------------------------------------------------------------- arithmetic, exact


@pytest.mark.parametrize("exponent", [0, 1, 2, 7, 15, 30])
def test_round_shift_equals_rounding_divide_by_pot(exponent: int) -> None:
    """On its documented domain |x| + 2^(e-1) < 2^31, ties included."""
    bound = 2**31 - (1 << max(exponent - 1, 0))
    x = rand_int(-bound + 1, bound, (20_000,), seed=exponent)
    ties = torch.tensor([1, -1, 0], dtype=torch.int64) << max(exponent - 1, 0)
    if exponent <= 28:
        ties = torch.cat([ties, ties * 3, ties * 5])
    x = torch.cat([x, ties.to(torch.int32), -ties.to(torch.int32)])
    assert torch.equal(round_shift(x, exponent), rounding_divide_by_pot(x, exponent))


def test_requantizer_is_multiply_by_quantized_multiplier() -> None:
    """Per-channel multipliers spanning right shifts, no shift and left shifts, on random
    accumulators, int32 extremes and exact ties: bit-identical to the reference primitive."""
    real = torch.cat(
        [
            torch.logspace(-9, 1.5, 61, dtype=torch.float64),
            torch.tensor([0.5, 1.0, 2.0, 2.0**-20, 0.0], dtype=torch.float64),
        ]
    )
    m0, shift = quantize_multipliers(real)
    assert (shift > 0).any() and (shift < 0).any()
    acc = rand_int(-(2**31), 2**31, (400, real.numel()), seed=1)
    acc[:8] = torch.tensor([0, 1, -1, 2**31 - 1, -(2**31), 2**20, -(2**20), 3])[:, None]
    requant = Requantizer(m0, shift)
    assert torch.equal(requant(acc), multiply_by_quantized_multiplier(acc, m0, shift).long())
    for m in (0.37, 3.5e-7, 1.0):  # per tensor
        m0_s, shift_s = quantize_multiplier(m)
        got = Requantizer(m0_s, shift_s)(acc)
        assert torch.equal(got, multiply_by_quantized_multiplier(acc, m0_s, shift_s).long())


def test_requantizer_gathers_per_row_constants() -> None:
    m0, shift = quantize_multipliers(torch.rand(50, dtype=torch.float64) * 3)
    rows = rand_int(-128, 128, (7, 3, 16), seed=2, dtype=torch.int8)
    index = rand_int(0, 50, (7, 3), seed=3, dtype=torch.int64)
    ref = multiply_by_quantized_multiplier(rows, m0[index][..., None], shift[index][..., None])
    assert torch.equal(Requantizer(m0, shift)(rows, index=index), ref.long())


@pytest.mark.parametrize("k", [9, 11, 13, 15, 16, 20])
def test_cell_update_is_the_rounded_real_sum(k: int) -> None:
    """c_t = round((f c 2^-(15+k) + i g 2^-30) / 2^-k), saturated: exact for k = 15 (one
    rounding), else within one step (i g, or f c for k > 15, is pre-rounded by |15 - k| bits)."""
    n = 50_000
    f = rand_int(0, 32768, (n,), 4, torch.int16)
    i = rand_int(0, 32768, (n,), 5, torch.int16)
    g = rand_int(-32768, 32768, (n,), 6, torch.int16)
    c = rand_int(-32768, 32768, (n,), 7, torch.int16)
    got = cell_update(f, c, i, g, k).long()
    # exact reference in int64 at 2^-(30 + k): f c 2^15 + i g 2^k, rounded half away from zero
    num = f.long() * c.long() * 2**15 + i.long() * g.long() * 2**k
    den = 2**30
    ref = torch.sign(num) * torch.div(num.abs() + den // 2, den, rounding_mode="floor")
    ref = ref.clamp(-32768, 32767)
    diff = (got - ref).abs()
    assert diff.max() <= (0 if k == 15 else 1)
    assert (diff > 0).float().mean() < 1e-3
    assert got.dtype == torch.int64 and cell_update(f, c, i, g, k).dtype == torch.int16


def test_cell_update_saturates_and_rejects_bad_exponents() -> None:
    full = torch.full((3,), 32767, dtype=torch.int16)
    assert cell_update(full, full, full, full, 15).tolist() == [32767] * 3
    with pytest.raises(ValueError):
        cell_update(full, full, full, full, 31)


def test_direct_lookup_equals_the_interpolated_table() -> None:
    codes = torch.arange(-32768, 32768, dtype=torch.int16)
    for lut in (sigmoid_lut(-12, True), tanh_lut(-12, True), tanh_lut(-10, True)):
        direct = qexport.direct_lookup(lut)
        assert not direct.interpolated and direct.input_left_shift == 0
        assert torch.equal(direct(codes), lut(codes))


# ---------------------------------------------------------------- engine vs fake quantization


@pytest.mark.parametrize("layer_index", [0, 1])
@pytest.mark.parametrize("tables", ["full", "interpolated"])
def test_one_integer_step_equals_the_fake_quantized_step(
    model: AWDLSTM, layer_index: int, tables: str
) -> None:
    """From the same int8 input, int8 h_{t-1} and int16 c_{t-1}: h_t within one quantization
    step of h (almost always equal), c_t within one gate step (2^-12)."""
    lm, scales = qconvert.convert(model, tables)
    qexport.expand_tables(lm)
    fq_layer, int_layer = model.layers[layer_index], lm.layers[layer_index]
    sc = scales["layers"][layer_index]
    (s_x, z_x), (s_h, z_h), k = sc["input"], sc["hidden"], -sc["cell_exponent"]
    B, I, Hh = 512, int_layer.input_size, int_layer.hidden_size
    x_q = rand_int(-128, 128, (1, B, I), seed=10, dtype=torch.int8)
    h_q = rand_int(-128, 128, (B, Hh), seed=11, dtype=torch.int8)
    c_lim = min(int(fq_layer.module.cell_quant.observer.max_val.abs() * 2**k), 32767)
    c_q = rand_int(-c_lim, c_lim, (B, Hh), seed=12, dtype=torch.int16)
    with torch.no_grad():
        state = (dequantize(h_q, s_h, z_h)[None], dequantize(c_q, 2.0**-k, 0)[None])
        _, (h_f, c_f) = fq_layer(dequantize(x_q, s_x, z_x), state)
    _, (h_i, c_i) = int_layer(x_q, (h_q, c_q))
    assert h_i.dtype == torch.int8 and c_i.dtype == torch.int16
    h_code = quantize(h_f[0], s_h, z_h, -128, 127).long()
    c_code = quantize(c_f[0], 2.0**-k, 0, -32768, 32767).long()
    dh = (h_code - h_i.long()).abs()
    assert dh.max() <= 1
    assert (dh > 0).float().mean() < 0.01
    assert (c_code - c_i.long()).abs().max() * 2.0**-k <= 2.0**-12


def assert_integer_model_matches(model: AWDLSTM, max_differing: float = 0.05) -> None:
    """Over four windows with the state carried (one-step differences can propagate through the
    recurrence): the last layer's h codes agree to a step or two, all but ``max_differing`` of
    them exactly, and the summed NLL to 0.1%."""
    lm, scales = qconvert.convert(model)
    qexport.expand_tables(lm)
    s_h, z_h = scales["layers"][-1]["hidden"]
    state_f = state_i = None
    nll_f = nll_i = 0.0
    for w in range(4):
        tokens = toy_tokens(13, 5, seed=500 + w)
        with torch.no_grad():
            out = model(tokens[:-1], state_f)
            logits = model.decoder(out.output)
        state_f = out.hidden
        h_i, _ = lm(tokens[:-1], state_i)
        window_nll, state_i = lm.score(tokens[:-1], tokens[1:], state_i)
        h_code = quantize(out.output, s_h, z_h, -128, 127).long()
        dh = (h_code - h_i.long()).abs()
        assert dh.max() <= 2 and (dh > 0).float().mean() < max_differing
        nll_f += F.cross_entropy(logits.reshape(-1, V), tokens[1:].reshape(-1), reduction="sum")
        nll_i += float(window_nll)
    assert nll_i == pytest.approx(float(nll_f), rel=1e-3)


def test_integer_model_matches_the_fake_quantized_model(model: AWDLSTM) -> None:
    assert_integer_model_matches(model)


def test_zero_state_is_exact(model: AWDLSTM) -> None:
    lm, scales = qconvert.convert(model)
    for layer, sc in zip(lm.layers, scales["layers"], strict=True):
        h, c = layer.init_state(3)
        assert dequantize(h, *sc["hidden"]).abs().max() == 0 and c.abs().max() == 0


class DtypeRecorder(TorchDispatchMode):
    """Records (op, dtype of every tensor argument and result) of every aten op."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[tuple[str, list[torch.dtype]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
        leaves = tree_leaves((args, kwargs or {}, out))
        self.ops.append((str(func), [t.dtype for t in leaves if isinstance(t, torch.Tensor)]))
        return out


def test_no_float_tensor_enters_the_recurrence(model: AWDLSTM) -> None:
    """Every tensor read or written by every op from the token ids to the int32 logits, over
    two windows with the state carried, is an integer (or bool) tensor; in ``score`` the first
    float tensor is the dequantization of the final int32 logits."""
    lm, _ = qconvert.convert(model)
    qexport.expand_tables(lm)
    tokens = toy_tokens(9, 4, seed=7)
    state = lm.init_state(4)
    with DtypeRecorder() as rec:
        for _ in range(2):
            logits, state = lm.logits_int32(tokens, state)
    names = [name for name, _ in rec.ops]
    assert any("_int_mm" in n for n in names) and len(rec.ops) > 100
    floats = [(n, d) for n, dtypes in rec.ops for d in dtypes if d.is_floating_point]
    assert floats == []
    assert logits.dtype == torch.int32
    assert all(h.dtype == torch.int8 and c.dtype == torch.int16 for h, c in state)

    with DtypeRecorder() as rec:
        lm.score(tokens[:-1], tokens[1:], lm.init_state(4))
    first = next(i for i, (_, d) in enumerate(rec.ops) if any(x.is_floating_point for x in d))
    assert all(not any(x.is_floating_point for x in d) for _, d in rec.ops[:first])
    name, dtypes = rec.ops[first]
    assert "_to_copy" in name and dtypes == [torch.int32, torch.float32]  # dequantize logits
    assert not any("_int_mm" in n for n, _ in rec.ops[first:])


def test_four_bit_weights_convert_and_agree() -> None:
    m = trained_qat_model(seed=1, weight_bits=4)
    lm, _ = qconvert.convert(m)
    for layer in lm.layers:
        for w in (layer.weight_ih, layer.weight_hh):
            assert w.dtype == torch.int8 and w.abs().max() == 7
    assert lm.embedding.weight.abs().max() == 7
    tokens = toy_tokens(12, 3, seed=3)
    with torch.no_grad():
        out = m(tokens[:-1])
        ref = F.cross_entropy(
            m.decoder(out.output).reshape(-1, V), tokens[1:].reshape(-1), reduction="sum"
        )
    nll, _ = qexport.expand_tables(lm).score(tokens[:-1], tokens[1:])
    assert float(nll) == pytest.approx(float(ref), rel=1e-3)


# ---------------------------------------------------------------- conversion and the file


def test_convert_refuses_models_it_cannot_run() -> None:
    float_model = AWDLSTM(AWDLSTMConfig(vocab_size=V, emb_size=8, hidden_size=8, num_layers=1))
    with pytest.raises(ValueError, match="float model"):
        qconvert.convert(float_model)
    partial = QuantConfig(enabled=True, tensors=["weights", "hidden"])
    with pytest.raises(ValueError, match="every tensor"):
        qconvert.convert(
            prepare(
                AWDLSTM(AWDLSTMConfig(vocab_size=V, emb_size=8, hidden_size=8, num_layers=1)),
                partial,
            )
        )
    untrained = prepare(
        AWDLSTM(AWDLSTMConfig(vocab_size=V, emb_size=8, hidden_size=8, num_layers=1)),
        QuantConfig(enabled=True),
    )
    with pytest.raises(ValueError, match="never observed"):
        qconvert.convert(untrained)


@pytest.mark.parametrize("tables", ["interpolated", "full"])
def test_file_round_trip(model: AWDLSTM, tmp_path: Path, tables: str) -> None:
    lm, scales = qconvert.convert(model, tables)
    meta = {"vocab": [str(i) for i in range(V)], "data": {"corpus": "toy", "bptt": 8}}
    path = tmp_path / "model.int8.pt"
    size = qexport.save(path, qexport.to_payload(lm, tables, scales, meta))
    assert size == path.stat().st_size and not list(tmp_path.glob(".*.tmp"))
    loaded, loaded_meta = qexport.load(path)
    assert loaded_meta == meta
    assert loaded.decoder.weight is loaded.embedding.weight  # tied: one int8 matrix
    tokens = toy_tokens(10, 3, seed=9)
    qexport.expand_tables(lm)
    a, _ = lm.logits_int32(tokens)
    b, _ = loaded.logits_int32(tokens)
    assert torch.equal(a, b)
    # the tied matrix is stored once; tables: 513 int16 knots each, or 65,536 entries
    tables_bytes = (2 + len(lm.layers)) * 2 * (513 if tables == "interpolated" else 65536)
    assert size < 2 * lm.embedding.weight.numel() + tables_bytes + 100_000
    payload = torch.load(path, weights_only=True)
    assert payload["version"] == qexport.EXPORT_VERSION
    payload["version"] = qexport.EXPORT_VERSION + 1
    with pytest.raises(ValueError, match="version"):
        qexport.from_payload(payload)
    with pytest.raises(ValueError, match="not an exported"):
        qexport.from_payload({"format": "something else"})


def test_exported_integer_constants(model: AWDLSTM) -> None:
    """Multipliers reproduce their real rescale factors to 2^-30 relative; biases fold the zero
    points in; every engine tensor has its integer type."""
    lm, scales = qconvert.convert(model)
    for layer, sc in zip(lm.layers, scales["layers"], strict=True):
        s_x, z_x = sc["input"]
        real = s_x * sc["weight_ih"].double() * 2.0**12
        approx = layer.multiplier_x.double() * 2.0 ** (layer.shift_x.double() - 31)
        assert torch.allclose(approx, real, rtol=2.0**-30, atol=0)
        assert layer.weight_ih.dtype == layer.weight_hh.dtype == torch.int8
        assert layer.bias_x.dtype == layer.bias_h.dtype == torch.int32
        s_h, z_h = sc["hidden"]
        assert torch.equal(layer.bias_h.long(), -z_h * layer.weight_hh.long().sum(1))
        m_o = layer.output_multiplier * 2.0 ** (layer.output_shift - 31)
        assert math.isclose(m_o, 2.0**-30 / s_h, rel_tol=2.0**-30)
    assert lm.embedding.weight.dtype == torch.int8 and lm.decoder.bias.dtype == torch.int32
