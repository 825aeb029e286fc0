"""``model.bin``: the integer model for the standalone C runtime (``src.export format=c``).

Every integer tensor, multiplier, shift, zero point and table of an :class:`IntegerLM`, and the
vocabulary, little-endian, in a fixed order that ``runtime/awd_model.c`` reads back (layout:
docs/quantization.md, "The C runtime's model.bin")::

    header   8s magic "AWDINT8M", u32 version, u32 header bytes (32), u64 payload bytes,
             u32 CRC-32 (zlib) of the payload, u32 reserved (0)
    payload  records: 4-byte ASCII tag, u32 element type, u32 element count, the elements,
             zero padding to a multiple of 4 bytes

Element types: 1 int8, 2 int16, 3 int32, 4 float32, 5 uint8. Tables are stored as direct
65,536-entry lookups (interpolated ones expanded, bit-identical), multipliers and shifts per
channel (a per-tensor value is repeated), so the runtime needs none of ``lut.py``'s arithmetic.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from src.utils.io import atomic_write

from .engine import IntegerLSTMLayer
from .engine_mlstm import IntegerMLSTMLayer
from .kernel import direct_table
from .lm import IntegerLM

__all__ = ["HEADER", "MAGIC", "VERSION", "encode", "read_header", "write"]

MAGIC = b"AWDINT8M"
VERSION = 1
HEADER = struct.Struct("<8sIIQII")  # magic, version, header bytes, payload bytes, crc, reserved
_TYPES = {torch.int8: 1, torch.int16: 2, torch.int32: 3, torch.float32: 4, torch.uint8: 5}
_NUMPY = {1: "<i1", 2: "<i2", 3: "<i4", 4: "<f4", 5: "u1"}
LAYER_INTS = 24  # the LAYR record: see _layer_header


class _Writer:
    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def record(self, tag: str, values: Tensor | Sequence[int] | bytes, dtype: int = 3) -> None:
        """One record; ``values`` a tensor (its dtype decides the type), ints, or raw bytes."""
        if isinstance(values, bytes):
            dtype, data = 5, values
        else:
            if isinstance(values, Tensor):
                dtype = _TYPES[values.dtype]
                values = values.detach().cpu().reshape(-1).numpy()
            data = np.asarray(values).astype(_NUMPY[dtype]).tobytes()
        count = len(data) // np.dtype(_NUMPY[dtype]).itemsize
        assert len(tag) == 4, tag
        self.parts.append(tag.encode("ascii") + struct.pack("<II", dtype, count) + data)
        self.parts.append(b"\0" * (-len(data) % 4))

    def payload(self) -> bytes:
        return b"".join(self.parts)


def _i32(t: Tensor | int, channels: int) -> Tensor:
    """int32 [channels]: a per-channel tensor as is, a per-tensor value repeated."""
    t = torch.as_tensor(t).to(torch.int32).reshape(-1)
    return t.expand(channels).contiguous() if t.numel() == 1 else t.contiguous()


def _bounds(pair: Any) -> list[int]:
    return [0, 0, 0] if pair is None else [1, int(pair[0]), int(pair[1])]


def _layer_header(layer: IntegerLSTMLayer | IntegerMLSTMLayer) -> list[int]:
    """The LAYR record's ints (unused ones 0): cell, sizes, exponents, scalar requantizers."""
    if isinstance(layer, IntegerMLSTMLayer):
        s = layer.scalars
        ints = [1, layer.input_size, layer.hidden_size, layer.output_size]
        ints += [layer.cell_exponent, layer.bits, layer.hidden_zero_point]
        ints += [int(s["output_multiplier"]), int(s["output_shift"]), layer.output_zero_point]
        ints += [int(s["product_multiplier"]), int(s["product_shift"]), layer.product_zero_point]
        ints += [int(layer.peephole is not None), int(layer.weight_hr is not None)]
        ints += _bounds(layer.cell_bounds) + _bounds(layer.proj_bounds)
    else:
        ints = [0, layer.input_size, layer.hidden_size, layer.hidden_size]
        ints += [layer.cell_exponent, layer.bits, layer.hidden_zero_point]
        ints += [layer.output_multiplier, layer.output_shift] + [0] * 12
    return ints + [0] * (LAYER_INTS - len(ints))


def _lstm_records(w: _Writer, layer: IntegerLSTMLayer) -> None:
    G = 4 * layer.hidden_size
    w.record("WIH_", layer.weight_ih)
    w.record("WHH_", layer.weight_hh)
    w.record("BX__", layer.bias_x)
    w.record("BH__", layer.bias_h)
    for tag, t in (("MX", layer.multiplier_x), ("SX", layer.shift_x)):
        w.record(tag + "__", _i32(t, G))
    for tag, t in (("MH", layer.multiplier_h), ("SH", layer.shift_h)):
        w.record(tag + "__", _i32(t, G))


def _mlstm_records(w: _Writer, layer: IntegerMLSTMLayer) -> None:
    H, P = layer.hidden_size, layer.output_size
    for tag, name in (("WIH_", "weight_ih"), ("WMX_", "weight_mx")):
        w.record(tag, getattr(layer, name))
    for tag, name in (("WMH_", "weight_mh"), ("WHM_", "weight_hm")):
        w.record(tag, getattr(layer, name))
    for key, channels in (("x", 4 * H), ("u", H), ("v", H), ("m", 4 * H)):
        tag = key.upper()
        w.record(f"B{tag}__", getattr(layer, f"bias_{key}"))
        w.record(f"M{tag}__", _i32(getattr(layer, f"multiplier_{key}"), channels))
        w.record(f"S{tag}__", _i32(getattr(layer, f"shift_{key}"), channels))
    if layer.peephole is not None:
        w.record("PEEP", layer.peephole.to(torch.int16))
        w.record("PEM_", _i32(layer.peephole_multiplier, 3))
        w.record("PES_", _i32(layer.peephole_shift, 3))
    if layer.weight_hr is not None:
        w.record("WHR_", layer.weight_hr)
        w.record("BR__", layer.bias_r)
        w.record("MR__", _i32(layer.multiplier_r, P))
        w.record("SR__", _i32(layer.shift_r, P))


def _token_ids(vocab: list[str]) -> tuple[int, int]:
    stoi = {tok: i for i, tok in enumerate(vocab)}
    return stoi.get("<eos>", 0), stoi.get("<unk>", -1)


def encode(lm: IntegerLM, meta: dict[str, Any], tables: str = "interpolated") -> bytes:
    """The whole file: header, then the payload records (module docstring)."""
    vocab = list(meta.get("vocab") or [])
    emb, dec = lm.embedding, lm.decoder
    V, E = emb.weight.shape
    if len(vocab) != V:
        raise ValueError(f"the vocabulary has {len(vocab)} tokens, the model {V} rows")
    data = dict(meta.get("data") or {})
    tokenizer = str(getattr(data.get("tokenizer", "word"), "value", data.get("tokenizer", "word")))
    if tokenizer not in ("word", "char"):
        raise ValueError(f"the runtime reads word or char tokenized text, not {tokenizer!r}")
    tied = dec.weight is emb.weight or (
        dec.weight.data_ptr() == emb.weight.data_ptr() and dec.weight.shape == emb.weight.shape
    )
    eos, unk = _token_ids(vocab)
    w = _Writer()
    info = [V, E, len(lm.layers), int(tokenizer == "char"), int(bool(data.get("char_level")))]
    info += [eos, unk, int(tied), int(tables == "full"), dec.weight.shape[1]]
    w.record("INFO", info)
    encoded = [tok.encode("utf-8") for tok in vocab]
    w.record("VOCL", [len(b) for b in encoded])
    w.record("VOCB", b"".join(encoded))
    w.record("EMBW", emb.weight)
    w.record("EMBM", _i32(emb.multiplier, V))
    w.record("EMBS", _i32(emb.shift, V))
    w.record("EMBZ", [emb.zero_point, emb.bits])
    first = lm.layers[0]
    w.record("SIGM", direct_table(first.sigmoid))
    w.record("TANH", direct_table(first.tanh))
    for layer in lm.layers:
        if not torch.equal(direct_table(layer.sigmoid), direct_table(first.sigmoid)) or not (
            torch.equal(direct_table(layer.tanh), direct_table(first.tanh))
        ):
            raise ValueError("the runtime shares one sigmoid and one tanh table across layers")
        w.record("LAYR", _layer_header(layer))
        if isinstance(layer, IntegerMLSTMLayer):
            _mlstm_records(w, layer)
        else:
            _lstm_records(w, layer)
        w.record("TCEL", direct_table(layer.tanh_cell))
    if not tied:
        w.record("DECW", dec.weight)
    w.record("DECB", dec.bias.to(torch.int32))
    w.record("DECS", dec.scale.to(torch.float32))
    w.record("END_", b"")
    payload = w.payload()
    header = HEADER.pack(MAGIC, VERSION, HEADER.size, len(payload), zlib.crc32(payload), 0)
    return header + payload


def write(path: str | os.PathLike[str], lm: IntegerLM, meta: dict[str, Any], tables: str) -> int:
    """Write ``model.bin`` atomically (temp file + rename); return its size in bytes."""
    blob = encode(lm, meta, tables)
    atomic_write(path, lambda fh: fh.write(blob))
    return Path(path).stat().st_size


def read_header(path: str | os.PathLike[str]) -> dict[str, int]:
    """The header's fields, checked against the file (magic, version, size, CRC-32)."""
    blob = Path(path).read_bytes()
    if len(blob) < HEADER.size:
        raise ValueError(f"{path}: truncated ({len(blob)} bytes, the header alone has 32)")
    magic, version, size, payload, crc, _ = HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise ValueError(f"{path}: not an awd_int8 model (bad magic {magic!r})")
    if version != VERSION or size != HEADER.size:
        raise ValueError(f"{path}: model.bin version {version}, this code writes {VERSION}")
    if len(blob) != size + payload:
        raise ValueError(f"{path}: {len(blob)} bytes, the header says {size + payload}")
    if zlib.crc32(blob[size:]) != crc:
        raise ValueError(f"{path}: corrupted (CRC-32 mismatch)")
    return {"version": version, "payload_bytes": payload, "crc32": crc}
