"""Mixed precision in the QAT layers: the input GEMMs in the autocast dtype, the recurrence and
every fake quantizer in float32.

Under autocast (``trainer.precision=bf16-mixed``) the per-step GEMM ``W_hh_hat h_{t-1}`` would
cast ``W_hh_hat`` to bf16 at every step (it is a fresh tensor each call, so autocast's cast cache
misses), its gradient would come back through one cast per step, and its output would reach the
fake quantizers in bf16, whose 8-bit significand cannot hold an int16 code (the "quantized"
value is off the grid). So the recurrence runs with autocast off, in float32 like the integer
engine's exact int32 sums; the input projections, one GEMM over all time steps per call, keep
the autocast dtype, cast back to float32 before they are quantized. Without autocast both helpers
are the plain float32 path, bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["float32_recurrence", "mixed_linear"]


@contextmanager
def float32_recurrence(device_type: str) -> Iterator[torch.dtype | None]:
    """Turn autocast off for the block; yield the dtype it had (None when it was off)."""
    if not torch.is_autocast_enabled(device_type):
        yield None
        return
    amp = torch.get_autocast_dtype(device_type)
    with torch.autocast(device_type, enabled=False):
        yield amp


def mixed_linear(x: Tensor, weight: Tensor, bias: Tensor | None, amp: torch.dtype | None) -> Tensor:
    """``x W^T + b`` computed in ``amp`` (None: float32, unchanged), returned in float32."""
    if amp is None:
        return F.linear(x, weight, bias)
    with torch.autocast(x.device.type, dtype=amp):
        return F.linear(x, weight, bias).float()
