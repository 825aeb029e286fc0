"""The integer mLSTM layer in the C kernel (``awd_int_mlstm_layer``): peepholes, cell clip
and projection, its three recurrent GEMMs on the same packed GEMM as the LSTM's.

Bit-identical to :meth:`~src.quant.integer.engine_mlstm.IntegerMLSTMLayer.forward_steps`
(``tests/quant/test_kernel_mlstm.py``); the layer calls :func:`usable` and :func:`layer_forward`.
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .gemm import weight_gemm
from .kernel import (
    Kernel,
    MLSTMArgs,
    channelwise,
    direct_table,
    dispatch_mode_active,
    enabled,
    load,
    pack_weight,
    ptr,
    run_rows,
)

if TYPE_CHECKING:  # annotations only: the engine imports this module
    from .engine_mlstm import IntegerMLSTMLayer

__all__ = ["layer_forward", "usable"]


def usable(layer: IntegerMLSTMLayer, x: Tensor, h: Tensor, c: Tensor) -> bool:
    """Whether the mLSTM ``layer(x, (h, c))`` may run in the kernel (as
    :func:`src.quant.integer.kernel_lstm.usable`: switch, devices, dtypes, shapes, clips)."""
    if not enabled():
        return False
    H, P = layer.hidden_size, layer.output_size
    projection = layer.weight_hr is not None
    weights = [layer.weight_ih, layer.weight_mx, layer.weight_mh, layer.weight_hm]
    biases = [layer.bias_x, layer.bias_u, layer.bias_v, layer.bias_m]
    if projection:
        weights.append(layer.weight_hr)
        biases.append(layer.bias_r)
    tensors = [x, h, c, *weights, *biases]
    if layer.peephole is not None:
        tensors.append(layer.peephole)
    if not (
        all(isinstance(t, Tensor) and t.device.type == "cpu" for t in tensors)
        and x.dim() == 3
        and x.size(0) > 0
        and x.size(1) > 0
        and x.size(2) == layer.input_size
    ):
        return False
    B = x.size(1)
    per_tensor = (layer.requantize_product, layer.requantize_out)
    return (
        tuple(h.shape) == (B, P)
        and tuple(c.shape) == (B, H)
        and x.dtype == h.dtype == torch.int8
        and c.dtype == torch.int16
        and all(w.dtype == torch.int8 for w in weights)
        and all(b.dtype == torch.int32 for b in biases)
        and (layer.peephole is None or layer.peephole.dtype == torch.int16)
        and (projection or P == H)
        and all(rq.m0.numel() == 1 for rq in per_tensor)
        and _bounds_ok(layer.cell_bounds, -32768, 32767)
        and _bounds_ok(layer.proj_bounds, -128, 127)
        and 2 <= layer.bits <= 8
        and 0 <= layer.cell_exponent <= 30
        and max(H, P) <= 1 << 16  # (x + 128) W sums stay inside int32
        and not dispatch_mode_active()
        and load() is not None
    )


def _bounds_ok(bounds: object, lo: int, hi: int) -> bool:
    """No clip, or a pair of Python ints inside the clamped tensor's dtype."""
    if bounds is None:
        return True
    pair = tuple(bounds) if isinstance(bounds, (tuple, list)) else ()
    return len(pair) == 2 and all(isinstance(v, int) and lo <= v <= hi for v in pair)


def _requantizer_rows(rq: torch.nn.Module, channels: int) -> Tensor:
    """int64 [3, channels]: the rows m0, left, right of a Requantizer (per tensor: broadcast)."""
    return torch.stack([channelwise(t, channels) for t in (rq.m0, rq.left, rq.right)]).contiguous()


def _mlstm_tensors(layer: IntegerMLSTMLayer) -> list[Tensor]:
    """Every tensor the mLSTM pack is derived from (its key)."""
    tensors = [
        layer.weight_ih,
        layer.weight_mx,
        layer.weight_mh,
        layer.weight_hm,
        layer.bias_x,
        layer.bias_u,
        layer.bias_v,
        layer.bias_m,
        layer.sigmoid.table,
        layer.tanh.table,
        layer.tanh_cell.table,
    ]
    requantizers = [layer.requantize_x, layer.requantize_u, layer.requantize_v]
    requantizers += [layer.requantize_m, layer.requantize_product, layer.requantize_out]
    if layer.peephole is not None:
        tensors.append(layer.peephole)
        requantizers.append(layer.requantize_peephole)
    if layer.weight_hr is not None:
        tensors += [layer.weight_hr, layer.bias_r]
        requantizers.append(layer.requantize_r)
    return tensors + [rq.m0 for rq in requantizers]  # (a Requantizer's buffers move together)


def _mlstm_key(layer: IntegerMLSTMLayer, packed: int) -> list:
    """Compared (never hashed) with the pack's: storage, version, shape and dtype of every
    source tensor (a move to another device or dtype is new storage), and the Python
    constants."""
    return [
        packed,
        layer.cell_bounds,
        layer.proj_bounds,
        layer.bits,
        layer.cell_exponent,
        layer.product_zero_point,
        layer.output_zero_point,
        layer.hidden_zero_point,
        *[(t.data_ptr(), t._version, t.shape, t.dtype) for t in _mlstm_tensors(layer)],
    ]


class _MLSTMPack:
    """An mLSTM layer's kernel operands, rebuilt when a buffer (or a constant) changes: the
    concatenated input weight [5H, I] (one GEMM for a_x and u), the packed recurrent weights,
    requantizer rows, direct tables, and the argument struct's constant fields."""

    def __init__(self, layer: IntegerMLSTMLayer, packed: int) -> None:
        self.key = _mlstm_key(layer, packed)
        H, P = layer.hidden_size, layer.output_size
        G = 4 * H
        self.weight_in = torch.cat([layer.weight_ih, layer.weight_mx]).contiguous()
        self.w_mh, self.corr_mh, gp_v = pack_weight(layer.weight_mh, packed)
        self.w_hm, self.corr_hm, gp_m = pack_weight(layer.weight_hm, packed)
        self.w_hr, self.corr_hr, gp_r = None, None, P
        self.bias_r = self.rq_r = None
        if layer.weight_hr is not None:
            self.w_hr, self.corr_hr, gp_r = pack_weight(layer.weight_hr, packed)
            self.bias_r = layer.bias_r.contiguous()
            self.rq_r = _requantizer_rows(layer.requantize_r, P)
        self.biases = [t.contiguous() for t in (layer.bias_x, layer.bias_u, layer.bias_v)]
        self.biases.append(layer.bias_m.contiguous())
        self.rq = [
            _requantizer_rows(layer.requantize_x, G),
            _requantizer_rows(layer.requantize_u, H),
            _requantizer_rows(layer.requantize_v, H),
            _requantizer_rows(layer.requantize_m, G),
            _requantizer_rows(layer.requantize_product, 1),
            _requantizer_rows(layer.requantize_out, 1),
        ]
        self.peephole = self.rq_peephole = None
        if layer.peephole is not None:
            self.peephole = layer.peephole.contiguous()
            self.rq_peephole = _requantizer_rows(layer.requantize_peephole, 3)
        self.tables = [direct_table(lut) for lut in (layer.sigmoid, layer.tanh, layer.tanh_cell)]
        cell, proj = layer.cell_bounds, layer.proj_bounds
        self.constants = {
            "hidden": H,
            "proj": P,
            "gp_v": gp_v,
            "gp_m": gp_m,
            "gp_r": gp_r,
            "cell_exponent": layer.cell_exponent,
            "bits": layer.bits,
            "product_zero_point": layer.product_zero_point,
            "output_zero_point": layer.output_zero_point,
            "hidden_zero_point": layer.hidden_zero_point,
            "peephole": int(layer.peephole is not None),
            "cell_clip": int(cell is not None),
            "cell_lo": 0 if cell is None else int(cell[0]),
            "cell_hi": 0 if cell is None else int(cell[1]),
            "projection": int(layer.weight_hr is not None),
            "proj_clip": int(proj is not None),
            "proj_lo": 0 if proj is None else int(proj[0]),
            "proj_hi": 0 if proj is None else int(proj[1]),
        }

    def args(self, acc_in: Tensor, h0: Tensor, c: Tensor, h_out: Tensor) -> MLSTMArgs:
        bias_x, bias_u, bias_v, bias_m = self.biases
        rq_x, rq_u, rq_v, rq_m, rq_product, rq_output = self.rq
        sigmoid, tanh, tanh_cell = self.tables
        tensors = {
            "acc_in": acc_in,
            "h0": h0,
            "c": c,
            "h_out": h_out,
            "w_mh": self.w_mh,
            "w_hm": self.w_hm,
            "w_hr": self.w_hr,
            "corr_mh": self.corr_mh,
            "corr_hm": self.corr_hm,
            "corr_hr": self.corr_hr,
            "bias_x": bias_x,
            "bias_u": bias_u,
            "bias_v": bias_v,
            "bias_m": bias_m,
            "bias_r": self.bias_r,
            "rq_x": rq_x,
            "rq_u": rq_u,
            "rq_v": rq_v,
            "rq_m": rq_m,
            "rq_r": self.rq_r,
            "rq_product": rq_product,
            "rq_output": rq_output,
            "peephole_w": self.peephole,
            "rq_peephole": self.rq_peephole,
            "sigmoid": sigmoid,
            "tanh_table": tanh,
            "tanh_cell": tanh_cell,
        }
        return MLSTMArgs(**self.constants, **{k: ptr(t) for k, t in tensors.items()})


def layer_forward(
    layer: IntegerMLSTMLayer,
    x: Tensor,
    h: Tensor,
    c: Tensor,
    kernel: Kernel | None = None,
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """``layer.forward`` in the kernel: x int8 [T, B, I] -> (h int8 [T, B, P], (h_T, c_T))."""
    kernel = kernel or load()
    if kernel is None:
        raise RuntimeError("the integer LSTM kernel is unavailable")
    cache = layer.__dict__.setdefault("_kernel_packs", {})
    pack = cache.get(kernel.packed)
    if pack is None or pack.key != _mlstm_key(layer, kernel.packed):
        pack = cache[kernel.packed] = _MLSTMPack(layer, kernel.packed)
    T, B, _ = x.shape
    flat = x.reshape(T * B, layer.input_size)
    acc_in = weight_gemm(kernel, flat, pack.weight_in, pack)  # [T B, 5H]: a_x, then u
    h0 = h.contiguous()
    c_out = c.clone(memory_format=torch.contiguous_format)
    h_out = torch.empty((T, B, layer.output_size), dtype=torch.int8)
    args = pack.args(acc_in, h0, c_out, h_out)
    ref = ctypes.byref(args)

    def rows(begin: int, end: int) -> int:
        return kernel.lib.awd_int_mlstm_layer(T, B, begin, end, ref)

    run_rows(rows, B)
    return h_out, (h_out[-1], c_out)
