"""The exact int8 GEMMs of the integer engine's input projections and decoder.

``torch._int_mm`` runs oneDNN's s8 x s8 GEMM on the CPU: exact with VNNI (``vpdpbusd``), but on
CPUs without it (AVX2-only, or oneDNN capped below VNNI) pairs of products meet in saturating
int16 (``vpmaddubsw``) and the sums come back wrong
(:func:`~.fixed_point.cpu_int_mm_is_exact`). The C kernel's own GEMM (``awd_int_gemm`` of
int_lstm.c: VNNI, or AVX2's exact int16 ``vpmaddwd``) sums exactly everywhere.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .fixed_point import cpu_int_mm_is_exact, int_matmul
from .kernel import Kernel, pack_weight, ptr, run_rows

__all__ = ["matmul", "weight_gemm"]


def matmul(
    kernel: Kernel, x: Tensor, packed: tuple[Tensor, Tensor | None, int], out: Tensor
) -> Tensor:
    """``out`` int32 [M, G] = ``x`` int8 [M, K] @ ``W^T``, exact (``int_matmul``'s sums), with
    ``packed`` = :func:`pack_weight` (W, ``kernel.packed``); rows split over torch's threads."""
    weight, corr, _ = packed
    (M, K), G = x.shape, out.size(1)
    x = x.contiguous()
    if out.stride(1) != 1 or x.dtype != torch.int8 or out.dtype != torch.int32:
        raise ValueError("matmul takes int8 rows and a row-major int32 output")
    stride = out.stride(0)

    def rows(begin: int, end: int) -> int:
        xp, op = x.data_ptr() + begin * K, out.data_ptr() + 4 * begin * stride
        return kernel.lib.awd_int_gemm(end - begin, K, G, xp, ptr(weight), ptr(corr), op, stride)

    if M:
        run_rows(rows, M)
    return out


def weight_gemm(
    kernel: Kernel | None, x: Tensor, weight: Tensor, owner: object, out: Tensor | None = None
) -> Tensor:
    """``x`` int8 [M, K] @ ``weight.T`` (int8 [G, K]) -> int32 [M, G] (into ``out`` if given),
    exact: ``torch._int_mm`` where it sums exactly (oneDNN with VNNI; faster there than the
    kernel's GEMM), else the kernel's GEMM on ``weight`` packed once and cached on ``owner``
    (always under the AVX2 build, which stands for an AVX2 CPU, where oneDNN saturates), else
    :func:`~.fixed_point.int_matmul`'s exact float64 path."""
    if kernel is None or (kernel.packed != 2 and cpu_int_mm_is_exact()):
        acc = int_matmul(x, weight.t())
        return acc if out is None else out.copy_(acc)
    packs = owner.__dict__.setdefault("_gemm_packs", {})
    key = (weight.data_ptr(), weight._version, tuple(weight.shape))
    entry = packs.get(kernel.packed)
    if entry is None or entry[0] != key:
        entry = packs[kernel.packed] = (key, pack_weight(weight, kernel.packed))
    if out is None:
        out = torch.empty((x.size(0), weight.size(0)), dtype=torch.int32)
    return matmul(kernel, x, entry[1], out)
