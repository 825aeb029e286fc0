"""The integer LSTM layer in the C kernel: its operands packed once, one call per window.

Bit-identical to :meth:`~src.quant.integer.engine.IntegerLSTMLayer.forward_steps`
(``tests/quant/test_kernel.py``); the layer calls :func:`usable` and :func:`layer_forward`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .gemm import weight_gemm
from .kernel import (
    Kernel,
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
    from .engine import IntegerLSTMLayer

__all__ = ["layer_forward", "usable"]


def usable(layer: IntegerLSTMLayer, x: Tensor, h: Tensor, c: Tensor) -> bool:
    """Whether ``layer(x, (h, c))`` may run in the kernel: the switch on, CPU tensors of the
    engine's types and shapes, no dispatch mode, and a compiled kernel. Anything else takes the
    torch path, which also raises the errors for wrong inputs. (The layer itself checks that its
    step math is its class's own: ``IntegerLSTMLayer.kernel_usable``.)"""
    if not enabled():
        return False
    B, H = (x.size(1) if x.dim() == 3 else -1), layer.hidden_size
    tensors = (x, h, c, layer.weight_ih, layer.weight_hh, layer.bias_x, layer.bias_h)
    return (
        all(t.device.type == "cpu" for t in tensors)
        and x.dim() == 3
        and x.size(0) > 0
        and B > 0
        and x.size(2) == layer.input_size
        and tuple(h.shape) == tuple(c.shape) == (B, H)
        and x.dtype == h.dtype == layer.weight_ih.dtype == layer.weight_hh.dtype == torch.int8
        and c.dtype == torch.int16
        and layer.bias_x.dtype == layer.bias_h.dtype == torch.int32
        and 2 <= layer.bits <= 8
        and 0 <= layer.cell_exponent <= 30
        and H <= 1 << 16  # (h + 128) W sums stay inside int32
        and not dispatch_mode_active()
        and load() is not None
    )


class _Pack:
    """A layer's kernel operands (packed weight, direct tables), rebuilt if a buffer changes."""

    def __init__(self, layer: IntegerLSTMLayer, packed: int) -> None:
        self.key = _pack_key(layer, packed)
        G = layer.weight_hh.shape[0]
        self.weight, self.corr, self.gp = pack_weight(layer.weight_hh, packed)
        self.bias_x = layer.bias_x.contiguous()
        self.bias_h = layer.bias_h.contiguous()
        rx, rh, ro = layer.requantize_x, layer.requantize_h, layer.requantize_out
        self.rx = [channelwise(t, G) for t in (rx.m0, rx.left, rx.right)]
        self.rh = [channelwise(t, G) for t in (rh.m0, rh.left, rh.right)]
        self.out = [int(t.reshape(-1)[0]) for t in (ro.m0, ro.left, ro.right)]
        if any(t.numel() != 1 for t in (ro.m0, ro.left, ro.right)):
            raise ValueError("the output requantizer must be per tensor")
        self.tables = [direct_table(lut) for lut in (layer.sigmoid, layer.tanh, layer.tanh_cell)]


def _pack_key(layer: IntegerLSTMLayer, packed: int) -> tuple:
    tensors = [
        layer.weight_hh,
        layer.bias_x,
        layer.bias_h,
        layer.sigmoid.table,
        layer.tanh.table,
        layer.tanh_cell.table,
        layer.requantize_x.m0,
        layer.requantize_h.m0,
    ]
    return (packed, *((t.data_ptr(), t._version, tuple(t.shape)) for t in tensors))


def layer_forward(
    layer: IntegerLSTMLayer,
    x: Tensor,
    h: Tensor,
    c: Tensor,
    kernel: Kernel | None = None,
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """``layer.forward`` in the kernel: x int8 [T, B, I] -> (h int8 [T, B, H], (h_T, c_T))."""
    kernel = kernel or load()
    if kernel is None:
        raise RuntimeError("the integer LSTM kernel is unavailable")
    cache = layer.__dict__.setdefault("_kernel_packs", {})
    pack = cache.get(kernel.packed)
    if pack is None or pack.key != _pack_key(layer, kernel.packed):
        pack = cache[kernel.packed] = _Pack(layer, kernel.packed)
    T, B, _ = x.shape
    H = layer.hidden_size
    acc_x = weight_gemm(kernel, x.reshape(T * B, layer.input_size), layer.weight_ih, layer)
    h0 = h.contiguous()
    c_out = c.clone(memory_format=torch.contiguous_format)
    h_out = torch.empty((T, B, H), dtype=torch.int8)
    args = (
        ptr(acc_x),
        ptr(h0),
        ptr(c_out),
        ptr(h_out),
        ptr(pack.weight),
        ptr(pack.corr),
        ptr(pack.bias_x),
        ptr(pack.bias_h),
        *(ptr(t) for t in pack.rx),
        *(ptr(t) for t in pack.rh),
        *pack.out,
        layer.cell_exponent,
        layer.hidden_zero_point,
        layer.bits,
        *(ptr(t) for t in pack.tables),
    )

    def rows(begin: int, end: int) -> int:
        return kernel.lib.awd_int_lstm_layer(T, B, begin, end, H, pack.gp, *args)

    run_rows(rows, B)
    return h_out, (h_out[-1], c_out)
