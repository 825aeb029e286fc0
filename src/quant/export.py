"""Trained QAT model -> integer model (:func:`convert`), and the exported file (save / load).

Conversion reads every scale from the fake-quantized model, so the integer engine computes the
same grid values the model was trained and evaluated on (docs/quantization.md):

* weights: the int8 codes of each weight quantizer (``WeightFakeQuantize.quantize``);
* activation qparams: the EMA observers' ``(scale, zero_point)``; the cell's exponent ``k``;
* multipliers: ``quantize_multipliers`` of the real rescale factors (float64, at export only);
* biases: ``quantize_bias`` at the accumulator scale, with the input zero point folded in;
* tables: int16 sigmoid / tanh over the int16 input codes (``interpolated`` 513-knot tables in
  the file, TFLite's layout, expanded to direct 65,536-entry lookups at load; or ``full``).

File format (``torch.save`` of plain tensors, ints and strings; no pickled code)::

    {"format": "awd-lstm-integer", "version": 1, "tables": "interpolated" | "full",
     "embedding": {...}, "layers": [{...}, ...], "decoder": {...}, "luts": {...},
     "scales": {...}  # real scales, for inspection only: the engine never reads them
     "meta": {"vocab", "data", "model", "quant", "source", "source_bytes"}}
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from src.models.awd import AWDLSTM
from src.models.dropout import WeightDrop
from src.utils.io import atomic_write

from .conversion import (
    TABLE_KINDS,
    activation_qparams,
    folded_bias,
    gate_tables,
    require_quantizer,
)
from .convert_mlstm import convert_mlstm_layer
from .engine import IntegerDecoder, IntegerEmbedding, IntegerLM, IntegerLSTMLayer
from .engine_mlstm import IntegerMLSTMLayer
from .fake_quant import FixedScaleFakeQuantize, PowerOfTwoFakeQuantize, WeightFakeQuantize
from .fixed_point import quantize_multiplier, quantize_multipliers
from .lut import GATE_EXPONENT, OUTPUT_EXPONENT, Int16LUT
from .qat_layers import QATLSTMLayer
from .qat_mlstm import QATMLSTMLayer

__all__ = [
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "TABLE_KINDS",
    "convert",
    "convert_layer",
    "direct_lookup",
    "is_export",
    "load",
    "save",
]

EXPORT_FORMAT = "awd-lstm-integer"
EXPORT_VERSION = 1


# --------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------


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
    s_x, z_x = input_qparams
    s_h, z_h = activation_qparams(inner.hidden_quant, f"layer {index} hidden state")
    cell = require_quantizer(inner.cell_quant, PowerOfTwoFakeQuantize, f"layer {index} cell state")
    if not bool(cell.observer.initialized):
        raise ValueError(f"cannot build the integer model: layer {index} cell range unobserved")
    require_quantizer(inner.preactivation_quant, FixedScaleFakeQuantize, f"layer {index} gates")
    require_quantizer(inner.gate_quant, FixedScaleFakeQuantize, f"layer {index} gate outputs")
    k = -cell.exponent()
    q_ih, s_ih = require_quantizer(inner.weight_ih_quant, WeightFakeQuantize, "W_ih").quantize(
        inner.weight_ih_l0
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


def direct_lookup(lut: Int16LUT) -> Int16LUT:
    """The same function as a 65,536-entry table indexed by the raw input code.

    ``T'[x + 32768] = lut(x)`` for every int16 ``x`` (shift and interpolation included), so a
    lookup is one gather and the results are bit-identical to ``lut``'s.
    """
    codes = torch.arange(-32768, 32768, dtype=torch.int16, device=lut.table.device)
    return Int16LUT(lut(codes), lut.input_exponent)


def expand_tables(lm: IntegerLM) -> IntegerLM:
    """Replace every interpolated table of ``lm`` by its :func:`direct_lookup` (in place)."""
    for layer in lm.layers:
        for name in ("sigmoid", "tanh", "tanh_cell"):
            lut = getattr(layer, name)
            if lut.interpolated or lut.input_left_shift:
                setattr(layer, name, direct_lookup(lut))
    return lm


# --------------------------------------------------------------------------------------------
# File
# --------------------------------------------------------------------------------------------


def _lut_entry(lut: Int16LUT) -> dict[str, Any]:
    return {
        "table": lut.table,
        "input_exponent": lut.input_exponent,
        "input_left_shift": lut.input_left_shift,
    }


def _lut(entry: dict[str, Any]) -> Int16LUT:
    return Int16LUT(entry["table"], entry["input_exponent"], entry["input_left_shift"])


def to_payload(
    lm: IntegerLM, tables: str, scales: dict[str, Any], meta: dict[str, Any]
) -> dict[str, Any]:
    """The exported file's contents (see the module docstring)."""
    emb, dec = lm.embedding, lm.decoder
    first = lm.layers[0]
    layers = []
    for layer in lm.layers:
        if isinstance(layer, IntegerMLSTMLayer):
            layers.append(
                {**layer.entry(), "cell": "mlstm", "tanh_cell": _lut_entry(layer.tanh_cell)}
            )
            continue
        entry = {
            name: getattr(layer, name)
            for name in (
                "weight_ih",
                "bias_x",
                "multiplier_x",
                "shift_x",
                "weight_hh",
                "bias_h",
                "multiplier_h",
                "shift_h",
            )
        }
        entry.update(
            cell_exponent=layer.cell_exponent,
            output_multiplier=layer.output_multiplier,
            output_shift=layer.output_shift,
            hidden_zero_point=layer.hidden_zero_point,
            bits=layer.bits,
            tanh_cell=_lut_entry(layer.tanh_cell),
        )
        layers.append(entry)
    return {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "tables": tables,
        "embedding": {
            "weight": emb.weight,
            "multiplier": emb.multiplier,
            "shift": emb.shift,
            "zero_point": emb.zero_point,
            "bits": emb.bits,
        },
        "layers": layers,
        "luts": {"sigmoid": _lut_entry(first.sigmoid), "tanh": _lut_entry(first.tanh)},
        "decoder": {
            "weight": dec.weight,
            "bias": dec.bias,
            "scale": dec.scale,
            "tied": dec.weight is emb.weight,
        },
        "scales": scales,
        "meta": meta,
    }


def from_payload(payload: dict[str, Any], expand: bool = True) -> IntegerLM:
    """Rebuild the integer model; ``expand`` turns compact tables into direct lookups."""
    if payload.get("format") != EXPORT_FORMAT:
        raise ValueError(f"not an exported integer model (format {payload.get('format')!r})")
    if payload.get("version") != EXPORT_VERSION:
        raise ValueError(
            f"exported model has format version {payload.get('version')}, this code reads "
            f"version {EXPORT_VERSION}: export the checkpoint again with python -m src.export"
        )
    e = payload["embedding"]
    embedding = IntegerEmbedding(
        e["weight"], e["multiplier"], e["shift"], e["zero_point"], e["bits"]
    )
    sigmoid, tanh = _lut(payload["luts"]["sigmoid"]), _lut(payload["luts"]["tanh"])
    layers = []
    for entry in payload["layers"]:
        kwargs = {k: v for k, v in entry.items() if k not in ("tanh_cell", "cell")}
        cls = IntegerMLSTMLayer if entry.get("cell", "lstm") == "mlstm" else IntegerLSTMLayer
        layers.append(cls(**kwargs, sigmoid=sigmoid, tanh=tanh, tanh_cell=_lut(entry["tanh_cell"])))
    d = payload["decoder"]
    weight = embedding.weight if d["tied"] else d["weight"]
    lm = IntegerLM(embedding, layers, IntegerDecoder(weight, d["bias"], d["scale"]))
    return expand_tables(lm) if expand else lm


def save(path: str | os.PathLike[str], payload: dict[str, Any]) -> int:
    """Write the payload atomically (temp file + rename); return the file size in bytes."""
    atomic_write(path, lambda fh: torch.save(payload, fh))
    return Path(path).stat().st_size


def is_export(obj: object) -> bool:
    """Whether a loaded object is an exported integer model."""
    return isinstance(obj, dict) and obj.get("format") == EXPORT_FORMAT


def load(path: str | os.PathLike[str], expand: bool = True) -> tuple[IntegerLM, dict[str, Any]]:
    """Read an exported file -> (integer model, its meta: vocab, data settings, ...)."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not is_export(payload):
        raise ValueError(f"{path} is not an exported integer model (python -m src.export)")
    return from_payload(payload, expand), payload.get("meta", {})
