"""Trained fake-quantized mLSTM layer -> :class:`~src.quant.integer.engine_mlstm.IntegerMLSTMLayer`.

Every constant comes from the QAT layer's quantizers (docs/quantization.md, "The mLSTM"), so the
engine computes on the grids the layer was trained on: int8 codes and per-row scales of the five
matrices, int16 codes of the peepholes, the power-of-two exponents of the two factors and the
cell, the affine qparams of m_t, the projection input and h_t; multipliers are the real rescale
factors quantized in float64, biases are folded with the zero points of what they multiply.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from src.models.dropout import WeightDrop
from src.quant.qat.fake_quant import FixedScaleFakeQuantize, WeightFakeQuantize
from src.quant.qat.mlstm import QATMLSTMLayer, clip_codes
from src.quant.scheme import GATE_EXPONENT, OUTPUT_EXPONENT, quantize

from .conversion import (
    activation_qparams,
    folded_bias,
    gate_tables,
    power_of_two_exponent,
    require_quantizer,
)
from .engine_mlstm import IntegerMLSTMLayer
from .fixed_point import quantize_multiplier, quantize_multipliers

__all__ = ["convert_mlstm_layer"]


def _weight(layer: nn.Module, name: str) -> Tensor:
    """The layer's weight ``name`` (the raw one when WeightDrop wraps it)."""
    raw = getattr(layer, f"{name}_raw", None)
    return raw if raw is not None else getattr(layer, name)


def _codes(quantizer: nn.Module, weight: Tensor, what: str) -> tuple[Tensor, Tensor]:
    """int8 codes and float64 per-row scales of ``weight``."""
    q, scale = require_quantizer(quantizer, WeightFakeQuantize, what).quantize(weight)
    return q, scale.to(torch.float64)


def _peephole_codes(quantizer: nn.Module, vectors: list[Tensor]) -> tuple[Tensor, Tensor]:
    """int16 codes [3, H] and float64 scales [3] of (w_ic, w_fc, w_oc), one scale per vector."""
    q = require_quantizer(quantizer, WeightFakeQuantize, "the peepholes")
    w = torch.stack([v.detach() for v in vectors])
    scale = q.calculate_scale(w)  # one per row = per vector, as in training (w[None] per vector)
    codes = quantize(w, scale, 0, q.qmin, q.qmax, axis=0, dtype=torch.int16)
    return codes, scale.to(torch.float64)


@torch.no_grad()
def convert_mlstm_layer(
    layer: nn.Module,
    input_qparams: tuple[float, int],
    bits: int,
    tables: str = "interpolated",
    index: int = 1,
) -> tuple[IntegerMLSTMLayer, dict[str, Any]]:
    """One QAT mLSTM layer (optionally WeightDrop-wrapped) -> integer layer and its real scales.

    ``input_qparams`` = ``(s_x, z_x)`` of the int8 codes it is fed; ``bits`` = activation bits.
    """
    inner = layer.module if isinstance(layer, WeightDrop) else layer
    inner = require_quantizer(inner, QATMLSTMLayer, f"layer {index}")
    what = f"layer {index}"
    require_quantizer(inner.preactivation_quant, FixedScaleFakeQuantize, f"{what} gates")
    require_quantizer(inner.gate_quant, FixedScaleFakeQuantize, f"{what} gate outputs")
    s_x, z_x = input_qparams
    s_h, z_h = activation_qparams(inner.hidden_quant, f"{what} hidden state")
    s_m, z_m = activation_qparams(inner.product_quant, f"{what} m_t")
    k = power_of_two_exponent(inner.cell_quant, f"{what} cell state")
    ku = power_of_two_exponent(inner.factor_x_quant, f"{what} factor W_mx x")
    kv = power_of_two_exponent(inner.factor_h_quant, f"{what} factor W_mh h")

    q_ih, s_ih = _codes(inner.weight_ih_quant, _weight(inner, "weight_ih_l0"), "W_x")
    q_mx, s_mx = _codes(inner.weight_mx_quant, _weight(inner, "weight_mx_l0"), "W_mx")
    q_mh, s_mh = _codes(inner.weight_mh_quant, _weight(inner, "weight_mh_l0"), "W_mh")
    q_hm, s_hm = _codes(inner.weight_hm_quant, _weight(inner, "weight_hm_l0"), "W_hm")
    m_x, sh_x = quantize_multipliers(s_x * s_ih * 2.0**-GATE_EXPONENT)
    m_u, sh_u = quantize_multipliers(s_x * s_mx * 2.0**ku)
    m_v, sh_v = quantize_multipliers(s_h * s_mh * 2.0**kv)
    m_m, sh_m = quantize_multipliers(s_m * s_hm * 2.0**-GATE_EXPONENT)
    m_p, sh_p = quantize_multiplier(2.0 ** -(ku + kv) / s_m)
    args: dict[str, Any] = {
        "weight_ih": q_ih,
        "bias_x": folded_bias(inner.bias_ih_l0.detach(), q_ih, s_x * s_ih, z_x),
        "multiplier_x": m_x,
        "shift_x": sh_x,
        "weight_mx": q_mx,
        "bias_u": folded_bias(None, q_mx, s_x * s_mx, z_x),
        "multiplier_u": m_u,
        "shift_u": sh_u,
        "weight_mh": q_mh,
        "bias_v": folded_bias(None, q_mh, s_h * s_mh, z_h),
        "multiplier_v": m_v,
        "shift_v": sh_v,
        "weight_hm": q_hm,
        "bias_m": folded_bias(None, q_hm, s_m * s_hm, z_m),
        "multiplier_m": m_m,
        "shift_m": sh_m,
        "product_multiplier": m_p,
        "product_shift": sh_p,
        "product_zero_point": z_m,
        "cell_exponent": k,
        "cell_bounds": None,
        "hidden_zero_point": z_h,
        "proj_bounds": None,
        "bits": bits,
        "peephole": None,
        "peephole_multiplier": None,
        "peephole_shift": None,
        "weight_hr": None,
        "bias_r": None,
        "multiplier_r": None,
        "shift_r": None,
    }
    scales: dict[str, Any] = {
        "input": (s_x, z_x),
        "hidden": (s_h, z_h),
        "product": (s_m, z_m),
        "cell_exponent": -k,
        "factor_exponents": (-ku, -kv),
    }
    if inner.cell_clip is not None:
        args["cell_bounds"] = clip_codes(inner.cell_clip, 2.0**-k, 0, -32768, 32767)
    if inner.peephole:
        vectors = [inner.weight_ic_l0, inner.weight_fc_l0, inner.weight_oc_l0]
        q_pc, s_pc = _peephole_codes(inner.peephole_quant, vectors)
        args["peephole"] = q_pc
        # w c is at s_pc 2^-k; the gate pre-activations at 2^-12
        args["peephole_multiplier"], args["peephole_shift"] = quantize_multipliers(
            s_pc * 2.0 ** (-k - GATE_EXPONENT)
        )
    if inner.weight_hr_l0 is None:
        out_scale, out_zero_point = s_h, z_h
    else:
        out_scale, out_zero_point = activation_qparams(
            inner.cell_output_quant, f"{what} projection input"
        )
        q_hr, s_hr = _codes(inner.weight_hr_quant, inner.weight_hr_l0, "W_hr")
        args["weight_hr"] = q_hr
        args["bias_r"] = folded_bias(None, q_hr, out_scale * s_hr, out_zero_point)
        args["multiplier_r"], args["shift_r"] = quantize_multipliers(out_scale * s_hr / s_h)
        if inner.proj_clip is not None:
            qmin, qmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
            args["proj_bounds"] = clip_codes(inner.proj_clip, s_h, z_h, qmin, qmax)
        scales["projection_input"] = (out_scale, out_zero_point)
    args["output_multiplier"], args["output_shift"] = quantize_multiplier(
        2.0 ** (2 * OUTPUT_EXPONENT) / out_scale
    )
    args["output_zero_point"] = out_zero_point
    sigmoid, tanh, tanh_cell = gate_tables(tables, k)
    int_layer = IntegerMLSTMLayer(sigmoid=sigmoid, tanh=tanh, tanh_cell=tanh_cell, **args)
    return int_layer, scales
