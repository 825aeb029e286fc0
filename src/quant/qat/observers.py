"""Range observers for activation fake quantizers (Jacob et al. 2018, EMA of min / max)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from src.quant.scheme import SCALE_EPS

__all__ = ["EMAMinMaxObserver"]


class EMAMinMaxObserver(nn.Module):
    """Running min/max of a tensor with an exponential moving average.

    First observed batch: ``min_val = min(x)``, ``max_val = max(x)``. Then
    ``min_val <- min_val + momentum * (min(x) - min_val)`` (same for max). Buffers ``min_val``,
    ``max_val`` (float32 0-d) and ``initialized`` (bool 0-d); updates never sync with the host.
    """

    min_val: Tensor
    max_val: Tensor
    initialized: Tensor

    def __init__(self, momentum: float = 0.01) -> None:
        super().__init__()
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"momentum must be in (0, 1], got {momentum}")
        self.momentum = momentum
        self.register_buffer("min_val", torch.tensor(0.0))
        self.register_buffer("max_val", torch.tensor(0.0))
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        """Update the running range with ``x``; return ``x`` unchanged."""
        if x.numel() == 0:
            return x
        lo, hi = torch.aminmax(x.detach().to(torch.float32))
        m = self.momentum
        first = ~self.initialized
        self.min_val.copy_(torch.where(first, lo, self.min_val + m * (lo - self.min_val)))
        self.max_val.copy_(torch.where(first, hi, self.max_val + m * (hi - self.max_val)))
        self.initialized.fill_(True)
        return x

    def reset(self) -> None:
        """Forget the range: the next batch initializes it again."""
        self.min_val.zero_()
        self.max_val.zero_()
        self.initialized.fill_(False)

    @torch.no_grad()
    def calculate_qparams(
        self, qmin: int, qmax: int, symmetric: bool = False
    ) -> tuple[Tensor, Tensor]:
        """``(scale, zero_point)`` (float32, int32 0-d tensors) for the range widened to hold 0.

        Affine: ``[lo, hi] = [min(min_val, 0), max(max_val, 0)]``,
        ``scale = (hi - lo) / (qmax - qmin)``, ``zero_point = qmin - round(lo / scale)`` clamped
        to ``[qmin, qmax]``: real 0 quantizes to ``zero_point`` and back to exactly 0.
        Symmetric (signed range): ``scale = max(|lo|, hi) / qmax``, ``zero_point = 0``.
        ``scale >= SCALE_EPS`` in both.
        """
        lo = torch.clamp(self.min_val, max=0.0)
        hi = torch.clamp(self.max_val, min=0.0)
        if symmetric:
            if not qmin < 0 < qmax:
                raise ValueError("symmetric quantization needs a signed range")
            scale = (torch.maximum(-lo, hi) / qmax).clamp(min=SCALE_EPS)
            zero_point = torch.zeros((), dtype=torch.int32, device=scale.device)
            return scale, zero_point
        scale = ((hi - lo) / float(qmax - qmin)).clamp(min=SCALE_EPS)
        zero_point = (qmin - torch.round(lo / scale)).clamp(qmin, qmax).to(torch.int32)
        return scale, zero_point
