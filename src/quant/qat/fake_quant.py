"""Training-time quantization simulation (Jacob et al. 2018): the fake quantizers.

Each quantizer rounds with :func:`src.quant.scheme.quantize` / ``dequantize`` (bit-identical
to torch's fake-quant kernels), so the integer engine sees exactly the values training saw.

Gradients are the straight-through estimator of the torch ops: ``d x_hat / d x = 1`` where the
unclamped ``nearbyint(x / scale) + zero_point`` lies in ``[qmin, qmax]``, else 0. Scales and
zero points get no gradient (they come from observers or from the weight, detached).

Quantizers keep their on/off flags as Python bools (no host sync per forward) and save them in
the state dict through ``get_extra_state``. Observation happens only in training mode: to
re-calibrate in eval mode (e.g. after the switch to averaged ASGD weights) put the quantizers
alone in train mode (``for q in quantizers(model): q.train()``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from src.quant.scheme import SCALE_EPS, qrange, quantize

from .observers import EMAMinMaxObserver

__all__ = [
    "FakeQuantize",
    "FixedScaleFakeQuantize",
    "PowerOfTwoFakeQuantize",
    "WeightFakeQuantize",
    "enable_fake_quant",
    "enable_observer",
    "quantizers",
    "reset_observers",
]


# --------------------------------------------------------------------------------------------
# Fake quantizers
# --------------------------------------------------------------------------------------------


class _Quantizer(nn.Module):
    """Shared on/off switches, kept as Python bools and saved through the extra state."""

    def __init__(self, fake_quant_enabled: bool = True, observer_enabled: bool = False) -> None:
        super().__init__()
        self.fake_quant_enabled = fake_quant_enabled
        self.observer_enabled = observer_enabled

    def enable_fake_quant(self, enabled: bool = True) -> _Quantizer:
        """Quantization delay: when off, ``forward`` is the identity (it may still observe)."""
        self.fake_quant_enabled = bool(enabled)
        return self

    def enable_observer(self, enabled: bool = True) -> _Quantizer:
        """Turn range tracking on or off (no effect on quantizers without an observer)."""
        self.observer_enabled = bool(enabled)
        return self

    def freeze_observer(self) -> _Quantizer:
        """Stop updating the range; the current qparams stay fixed."""
        return self.enable_observer(False)

    def get_extra_state(self) -> dict[str, Any]:
        return {
            "fake_quant_enabled": self.fake_quant_enabled,
            "observer_enabled": self.observer_enabled,
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.fake_quant_enabled = bool(state["fake_quant_enabled"])
        self.observer_enabled = bool(state["observer_enabled"])

    def extra_repr(self) -> str:
        return f"fake_quant={self.fake_quant_enabled}, observer={self.observer_enabled}"


class FakeQuantize(_Quantizer):
    """Per-tensor activation fake quantizer with an EMA min/max range.

    ``bits`` (8), ``signed`` (int8 ``[-128, 127]`` by default, TFLite's activation type),
    ``symmetric`` (affine by default). ``forward``: observe ``x`` (training mode, observer on),
    then, if fake quant is on, ``fake_quantize_per_tensor_affine`` with the current qparams.
    Fake-quantizing before any observation is an error.
    """

    def __init__(
        self,
        bits: int = 8,
        signed: bool = True,
        symmetric: bool = False,
        momentum: float = 0.01,
        observer_enabled: bool = True,
        fake_quant_enabled: bool = True,
    ) -> None:
        super().__init__(fake_quant_enabled, observer_enabled)
        self.bits, self.signed, self.symmetric = bits, signed, symmetric
        self.qmin, self.qmax = qrange(bits, signed)
        self.observer = EMAMinMaxObserver(momentum)

    def calculate_qparams(self) -> tuple[Tensor, Tensor]:
        """Current ``(scale, zero_point)`` from the observer (see its equation)."""
        return self.observer.calculate_qparams(self.qmin, self.qmax, self.symmetric)

    def forward(self, x: Tensor) -> Tensor:
        if self.training and self.observer_enabled:
            self.observer(x)
        if not self.fake_quant_enabled:
            return x
        torch._assert_async(self.observer.initialized, "FakeQuantize used before observing data")
        scale, zero_point = self.calculate_qparams()
        return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, self.qmin, self.qmax)

    def extra_repr(self) -> str:
        kind = "symmetric" if self.symmetric else "affine"
        return f"bits={self.bits}, [{self.qmin}, {self.qmax}], {kind}, " + super().extra_repr()


class FixedScaleFakeQuantize(_Quantizer):
    """Fake quantizer with a fixed scale, e.g. int16 at ``2^-12`` for gate pre-activations.

    ``x_hat = scale * (clamp(round(x / scale) + zp, qmin, qmax) - zp)``: int16 at 2^-12 covers
    ``[-8, 8 - 2^-12]``; gradients are zero outside it.
    """

    scale: Tensor
    zero_point: Tensor

    def __init__(
        self,
        bits: int = 16,
        scale: float = 2.0**-12,
        zero_point: int = 0,
        signed: bool = True,
        fake_quant_enabled: bool = True,
    ) -> None:
        super().__init__(fake_quant_enabled, observer_enabled=False)
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.bits = bits
        self.qmin, self.qmax = qrange(bits, signed)
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32))
        self.register_buffer("zero_point", torch.tensor(zero_point, dtype=torch.int32))

    def calculate_qparams(self) -> tuple[Tensor, Tensor]:
        return self.scale, self.zero_point

    def forward(self, x: Tensor) -> Tensor:
        if not self.fake_quant_enabled:
            return x
        return torch.fake_quantize_per_tensor_affine(
            x, self.scale, self.zero_point, self.qmin, self.qmax
        )

    def extra_repr(self) -> str:
        return f"bits={self.bits}, scale={self.scale.item():.6g}, " + super().extra_repr()


class PowerOfTwoFakeQuantize(_Quantizer):
    """Symmetric fake quantizer whose scale is a power of two (TFLite's cell state).

    From the EMA range: ``R = 2^ceil(log2(max(|min_val|, |max_val|)))`` (max |x| rounded up to a
    power of two), ``scale = R / 2^(bits-1) = 2^exponent``, zero point 0; the code covers
    ``[-R, R - scale]``. The engine then rescales with shifts only (``exponent`` is an int).
    ``R >= 2^min_range_exponent`` guards ``log2(0)`` for an all-zero range.
    """

    def __init__(
        self,
        bits: int = 16,
        momentum: float = 0.01,
        observer_enabled: bool = True,
        fake_quant_enabled: bool = True,
        min_range_exponent: int = -8,
    ) -> None:
        super().__init__(fake_quant_enabled, observer_enabled)
        self.bits = bits
        self.qmin, self.qmax = qrange(bits, signed=True)
        self.min_range_exponent = min_range_exponent
        self.observer = EMAMinMaxObserver(momentum)

    def range_exponent(self) -> Tensor:
        """``ceil(log2(max |x|))`` as a float32 0-d tensor (at least ``min_range_exponent``)."""
        amax = torch.maximum(-self.observer.min_val, self.observer.max_val)
        amax = amax.clamp(min=2.0**self.min_range_exponent)
        return torch.ceil(torch.log2(amax))

    def calculate_qparams(self) -> tuple[Tensor, Tensor]:
        """``(2^(range_exponent - (bits - 1)), 0)``: exact powers of two in float32."""
        scale = torch.exp2(self.range_exponent() - (self.bits - 1))
        return scale, torch.zeros((), dtype=torch.int32, device=scale.device)

    def exponent(self) -> int:
        """Integer ``e`` with ``scale == 2^e`` (host sync; for export), e.g. -11 for range 16."""
        return int(self.range_exponent().item()) - (self.bits - 1)

    def forward(self, x: Tensor) -> Tensor:
        if self.training and self.observer_enabled:
            self.observer(x)
        if not self.fake_quant_enabled:
            return x
        torch._assert_async(
            self.observer.initialized, "PowerOfTwoFakeQuantize used before observing data"
        )
        scale, zero_point = self.calculate_qparams()
        return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, self.qmin, self.qmax)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, power-of-two scale, " + super().extra_repr()


class WeightFakeQuantize(_Quantizer):
    """Symmetric per-output-channel weight fake quantizer (no EMA: the scale follows the weight).

    Narrow range ``[-qmax, qmax]``, ``qmax = 2^(bits-1) - 1`` (127 for 8 bits, 7 for 4 bits);
    ``scale_c = max(max_k |w[c, k]|, qmax * SCALE_EPS) / qmax`` along ``axis`` (0: rows = output
    channels), zero point 0, so each row's largest weight maps to ``+-qmax`` exactly.
    Straight-through gradient (every weight is in range, so it is 1 everywhere).
    """

    def __init__(self, bits: int = 8, axis: int = 0, fake_quant_enabled: bool = True) -> None:
        super().__init__(fake_quant_enabled, observer_enabled=False)
        self.bits, self.axis = bits, axis
        self.qmin, self.qmax = qrange(bits, signed=True, narrow=True)

    @torch.no_grad()
    def calculate_scale(self, w: Tensor) -> Tensor:
        """Per-channel float32 scale ``[C]`` of ``w`` (detached)."""
        axis = self.axis % w.dim()
        dims = [d for d in range(w.dim()) if d != axis]
        amax = w.detach().to(torch.float32).abs().amax(dim=dims) if dims else w.detach().abs()
        return (amax.to(torch.float32) / self.qmax).clamp(min=SCALE_EPS)

    def forward(self, w: Tensor) -> Tensor:
        if not self.fake_quant_enabled:
            return w
        scale = self.calculate_scale(w)
        zero_point = torch.zeros_like(scale, dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(
            w, scale, zero_point, self.axis % w.dim(), self.qmin, self.qmax
        )

    @torch.no_grad()
    def quantize(self, w: Tensor) -> tuple[Tensor, Tensor]:
        """Export: int8 codes and float32 per-channel scales; ``dequantize`` gives ``forward``."""
        scale = self.calculate_scale(w)
        q = quantize(w, scale, 0, self.qmin, self.qmax, axis=self.axis % w.dim(), dtype=torch.int8)
        return q, scale

    def extra_repr(self) -> str:
        return f"bits={self.bits}, [{self.qmin}, {self.qmax}], axis={self.axis}, " + (
            super().extra_repr()
        )


# --------------------------------------------------------------------------------------------
# Whole-model switches
# --------------------------------------------------------------------------------------------


def quantizers(module: nn.Module) -> Iterator[_Quantizer]:
    """Every fake quantizer inside ``module``."""
    return (m for m in module.modules() if isinstance(m, _Quantizer))


def enable_fake_quant(module: nn.Module, enabled: bool = True) -> None:
    """Switch fake quantization of every quantizer in ``module`` (quantization delay)."""
    for q in quantizers(module):
        q.enable_fake_quant(enabled)


def enable_observer(module: nn.Module, enabled: bool = True) -> None:
    """Switch range tracking of every quantizer in ``module`` (``False`` freezes them)."""
    for q in quantizers(module):
        q.enable_observer(enabled)


def reset_observers(module: nn.Module) -> None:
    """Forget every observed range in ``module`` (before a re-calibration)."""
    for m in module.modules():
        if isinstance(m, EMAMinMaxObserver):
            m.reset()
