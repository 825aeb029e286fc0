"""The integer model's loss in row blocks: the same float32 numbers as one ``cross_entropy``.

:meth:`~src.quant.integer.lm.IntegerLM.score` computes, over all N rows at once::

    acc = h W^T + bias          int32 [N, V]   (exact)
    logits = float32(acc) * s   float32 [N, V] (one rounding each: the conversion, the product)
    nll = cross_entropy(logits, targets, sum) = nll_loss(log_softmax(logits), targets, sum)

Three [N, V] buffers, fresh at every window (page faults at batch 10 cost more than the GEMM).
Here a few rows at a time go through the same ops into buffers reused across windows (the GEMM
is :func:`.gemm.weight_gemm`: the same exact sums, in the C kernel where oneDNN's are not
exact or slower; the dequantization is :func:`dequantize`: one C pass where the kernel is
loaded), and only the target's log-probability of each row is kept. Every op is row-wise
(``log_softmax`` over the last dim reduces each row on its own), so each kept value is the one
the full computation gives; ``nll_loss`` over those N values as an [N, 1] input with target 0
then sums them in the same (cascade) order as over the [N, V] input: the loss is bit-identical
(``tests/quant/test_int8_codes.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import kernel
from .gemm import weight_gemm

__all__ = ["BLOCK_BYTES", "block_rows", "blocked_nll", "dequantize", "usable"]

#: bytes of one [rows, V] float32 block (about 3 of them are kept): the GEMM wants many rows (its
#: weight reused), the log-softmax passes want them in cache; 4 MiB measured best at V = 10,000
BLOCK_BYTES = 1 << 22


def usable(h: Tensor) -> bool:
    """CPU tensors (the decoder GEMM: :func:`.gemm.weight_gemm`, exact on every path)."""
    return h.device.type == "cpu"


def block_rows(vocab: int, rows: int) -> int:
    """Rows per block: ``BLOCK_BYTES`` of float32 logits, at least 8 (GEMM efficiency)."""
    return max(1, min(rows, max(8, BLOCK_BYTES // (4 * max(vocab, 1)))))


def _buffers(decoder: nn.Module, rows: int, vocab: int) -> tuple[Tensor, Tensor, Tensor]:
    """The decoder's reused (int32 acc, float32 logits, float32 log-probs) [rows, V] blocks."""
    bufs = decoder.__dict__.get("_score_blocks")
    if bufs is None or bufs[0].shape != (rows, vocab):
        acc = torch.empty((rows, vocab), dtype=torch.int32)
        bufs = (acc, torch.empty(acc.shape), torch.empty(acc.shape))
        decoder.__dict__["_score_blocks"] = bufs
    return bufs


def dequantize(
    kern: kernel.Kernel | None, acc: Tensor, bias: Tensor, scale: Tensor, out: Tensor
) -> Tensor:
    """``out`` = float32(``acc`` + ``bias``) * ``scale`` (``acc`` int32 [R, V], clobbered): the
    kernel's one fused pass where loaded, else torch's add, conversion and product (the same
    roundings, bit for bit)."""
    rows, vocab = acc.shape
    fused = (
        kern is not None
        and acc.stride(1) == 1
        and out.stride(1) == 1
        and bias.dtype == torch.int32
        and scale.dtype == torch.float32
        and bias.is_contiguous()
        and scale.is_contiguous()
    )
    if not fused:
        return torch.mul(acc.add_(bias), scale, out=out)
    astride, ostride = acc.stride(0), out.stride(0)
    a0, o0, b, s = acc.data_ptr(), out.data_ptr(), bias.data_ptr(), scale.data_ptr()

    def part(lo: int, hi: int) -> int:  # rows split over torch's threads, as the GEMM's
        a, o = a0 + 4 * lo * astride, o0 + 4 * lo * ostride
        kern.lib.awd_dequantize(hi - lo, vocab, a, astride, b, s, o, ostride)
        return 0

    kernel.run_rows(part, rows)
    return out


def blocked_nll(decoder: nn.Module, h: Tensor, targets: Tensor) -> Tensor:
    """Summed NLL (float32 0-d) of ``targets`` [N] under the decoder's logits of ``h`` int8
    [N, E]: ``F.cross_entropy(decoder.dequantize(decoder(h)), targets, reduction="sum")``."""
    kern = kernel.load() if kernel.enabled() else None
    bias, scale = decoder.bias, decoder.scale
    N, V = h.size(0), decoder.weight.size(0)
    rows = block_rows(V, N)
    acc, logits, logp = _buffers(decoder, rows, V)
    picked = torch.empty((N, 1), dtype=torch.float32)
    targets = targets.reshape(-1, 1)
    for lo in range(0, N, rows):
        hi = min(N, lo + rows)
        a, f, lp = acc[: hi - lo], logits[: hi - lo], logp[: hi - lo]
        weight_gemm(kern, h[lo:hi], decoder.weight, decoder, out=a)
        dequantize(kern, a, bias, scale, out=f)
        torch.log_softmax(f, 1, out=lp)
        torch.gather(lp, 1, targets[lo:hi], out=picked[lo:hi])
    zeros = torch.zeros(N, dtype=torch.int64)
    return F.nll_loss(picked, zeros, reduction="sum")
