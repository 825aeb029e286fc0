"""Trained QAT model -> integer model: every integer tensor and multiplier of the engine.

Conversion reads every scale from the fake-quantized model, so the integer engine computes the
same grid values the model was trained and evaluated on (docs/quantization.md):

* weights: the int8 codes of each weight quantizer (``WeightFakeQuantize.quantize``);
* activation qparams: the EMA observers' ``(scale, zero_point)``; the cell's exponent ``k``;
* multipliers: ``quantize_multipliers`` of the real rescale factors (float64, at export only);
* biases: ``quantize_bias`` at the accumulator scale, with the input zero point folded in;
* tables: int16 sigmoid / tanh over the int16 input codes (``interpolated`` 513-knot tables,
  TFLite's layout, or ``full``). The mLSTM's layer converts in :mod:`.convert_mlstm`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from src.models.awd import AWDLSTM
from src.models.dropout import WeightDrop
from src.quant.qat.fake_quant import (
    FixedScaleFakeQuantize,
    PowerOfTwoFakeQuantize,
    WeightFakeQuantize,
)
from src.quant.qat.lstm import QATLSTMLayer
from src.quant.qat.mlstm import QATMLSTMLayer
from src.quant.scheme import GATE_EXPONENT, OUTPUT_EXPONENT

from .conversion import TABLE_KINDS, activation_qparams, folded_bias, gate_tables, require_quantizer
from .convert_mlstm import convert_mlstm_layer
from .engine import IntegerEmbedding, IntegerLSTMLayer
from .fixed_point import quantize_multiplier, quantize_multipliers
from .lm import IntegerDecoder, IntegerLM

__all__ = ["TABLE_KINDS", "convert", "convert_layer"]


def convert_layer(
    layer: nn.Module,
    input_qparams: tuple[float, int],
    bits: int,
    tables: str = "interpolated",
    index: int = 1,
) -> tuple[IntegerLSTMLayer, dict[str, Any]]:
    """One QAT layer (optionally WeightDrop-wrapped) -> integer layer and its real scales.

    ``input_qparams`` = ``(s_x, z_x)`` of the int8 codes it is fed; ``bits`` = activation bits.
    """
    inner = layer.module if isinstance(layer, WeightDrop) else layer
    inner = require_quantizer(inner, QATLSTMLayer, f"layer {index}")
    weight_hh = getattr(inner, "weight_hh_l0_raw", None)
    if weight_hh is None:
        weight_hh = inner.weight_hh_l0
    weight_ih = getattr(inner, "weight_ih_l0_raw", None)  # weight_drop_targets=[input, hidden]
    if weight_ih is None:
        weight_ih = inner.weight_ih_l0
    s_x, z_x = input_qparams
    s_h, z_h = activation_qparams(inner.hidden_quant, f"layer {index} hidden state")
    cell = require_quantizer(inner.cell_quant, PowerOfTwoFakeQuantize, f"layer {index} cell state")
    if not bool(cell.observer.initialized):
        raise ValueError(f"cannot build the integer model: layer {index} cell range unobserved")
    require_quantizer(inner.preactivation_quant, FixedScaleFakeQuantize, f"layer {index} gates")
    require_quantizer(inner.gate_quant, FixedScaleFakeQuantize, f"layer {index} gate outputs")
    k = -cell.exponent()
    q_ih, s_ih = require_quantizer(inner.weight_ih_quant, WeightFakeQuantize, "W_ih").quantize(
        weight_ih
    )
    q_hh, s_hh = require_quantizer(inner.weight_hh_quant, WeightFakeQuantize, "W_hh").quantize(
        weight_hh
    )
    s_ih64, s_hh64 = s_ih.to(torch.float64), s_hh.to(torch.float64)
    bias = inner.bias_ih_l0.detach() + inner.bias_hh_l0.detach()  # float32, as in training
    m_x, sh_x = quantize_multipliers(s_x * s_ih64 * 2.0**-GATE_EXPONENT)
    m_h, sh_h = quantize_multipliers(s_h * s_hh64 * 2.0**-GATE_EXPONENT)
    m_o, sh_o = quantize_multiplier(2.0 ** (2 * OUTPUT_EXPONENT) / s_h)
    sigmoid, tanh, tanh_cell = gate_tables(tables, k)
    int_layer = IntegerLSTMLayer(
        weight_ih=q_ih,
        bias_x=folded_bias(bias, q_ih, s_x * s_ih64, z_x),
        multiplier_x=m_x,
        shift_x=sh_x,
        weight_hh=q_hh,
        bias_h=folded_bias(None, q_hh, s_h * s_hh64, z_h),
        multiplier_h=m_h,
        shift_h=sh_h,
        cell_exponent=k,
        output_multiplier=m_o,
        output_shift=sh_o,
        hidden_zero_point=z_h,
        bits=bits,
        sigmoid=sigmoid,
        tanh=tanh,
        tanh_cell=tanh_cell,
    )
    scales = {
        "input": (s_x, z_x),
        "hidden": (s_h, z_h),
        "cell_exponent": -k,
        "weight_ih": s_ih,
        "weight_hh": s_hh,
    }
    return int_layer, scales


@torch.no_grad()
def convert(model: AWDLSTM, tables: str = "interpolated") -> tuple[IntegerLM, dict[str, Any]]:
    """Build the integer model from a trained QAT ``AWDLSTM``; also return its real scales.

    Needs ``quant.enabled`` with every tensor quantized and every observer initialized.
    """
    cell = model.config.cell
    if cell not in ("lstm", "mlstm"):
        raise ValueError(
            f"the integer engine runs lstm and mlstm models; this one has cell={cell}, which has "
            "no quantization-aware form (evaluate it as a float model with python -m src.eval)"
        )
    if getattr(getattr(model, "softmax", None), "kind", "full") == "split":
        raise ValueError(
            "the integer engine computes the full softmax; this model has loss.softmax=split "
            "(quant=qat and the int8 engine take loss.softmax=full models)"
        )
    quant = getattr(model, "quant", None)
    if quant is None or not getattr(quant, "enabled", False):
        raise ValueError(
            "cannot build the integer model from a float model: fine-tune it with quant=qat "
            "(python -m src.train quant=qat ckpt_path=<float checkpoint> ...) and export that"
        )
    if not quant.integer_ready:
        raise ValueError(f"the integer engine needs every tensor quantized; got {quant.tensors}")
    model = model.cpu().eval()
    bits = quant.activation_bits
    emb_q = require_quantizer(model.embedding_quant, WeightFakeQuantize, "the embedding")
    q_e, s_e = emb_q.quantize(model.embedding.weight)
    s_x, z_x = activation_qparams(model.input_quant, "layer 1 input")
    m_e, sh_e = quantize_multipliers(s_e.to(torch.float64) / s_x)
    embedding = IntegerEmbedding(q_e, m_e, sh_e, z_x, bits)
    scales: dict[str, Any] = {"embedding": s_e, "input": (s_x, z_x), "layers": []}

    layers, qparams = [], (s_x, z_x)
    for index, layer in enumerate(model.layers):
        inner = layer.module if isinstance(layer, WeightDrop) else layer
        convert_one = convert_mlstm_layer if isinstance(inner, QATMLSTMLayer) else convert_layer
        int_layer, layer_scales = convert_one(layer, qparams, bits, tables, index + 1)
        layers.append(int_layer)
        scales["layers"].append(layer_scales)
        qparams = layer_scales["hidden"]

    dec_q = require_quantizer(model.decoder.weight_quant, WeightFakeQuantize, "the decoder")
    q_d, s_d = dec_q.quantize(model.decoder.weight)
    tied = model.decoder.weight is model.embedding.weight and torch.equal(q_d, q_e)
    if tied:
        q_d = q_e  # one int8 matrix serves the lookup and the decoder
    s_h, z_h = qparams
    acc_scale = s_h * s_d.to(torch.float64)
    decoder = IntegerDecoder(
        q_d,
        folded_bias(model.decoder.bias, q_d, acc_scale, z_h),
        acc_scale.to(torch.float32),
    )
    scales["decoder"] = "embedding" if tied else s_d  # tied: the same per-row scales
    return IntegerLM(embedding, layers, decoder), scales
