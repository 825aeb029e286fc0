"""The exported integer model: a versioned file of plain tensors (save / load), and the
direct-lookup expansion of its compact tables at load.

File format (``torch.save`` of plain tensors, ints and strings; no pickled code)::

    {"format": "awd-lstm-integer", "version": 1, "tables": "interpolated" | "full",
     "embedding": {...}, "layers": [{...}, ...], "decoder": {...}, "luts": {...},
     "scales": {...}  # real scales, for inspection only: the engine never reads them
     "meta": {"vocab", "data", "model", "quant", "source", "source_bytes"}}

Build the integer model with :func:`src.quant.integer.convert.convert`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from src.utils.io import atomic_write

from .engine import IntegerEmbedding, IntegerLSTMLayer
from .engine_mlstm import IntegerMLSTMLayer
from .lm import IntegerDecoder, IntegerLM
from .lut import Int16LUT

__all__ = [
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "direct_lookup",
    "expand_tables",
    "from_payload",
    "is_export",
    "load",
    "save",
    "to_payload",
]

EXPORT_FORMAT = "awd-lstm-integer"
EXPORT_VERSION = 1


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
