"""The ``quant`` group: float (``enabled: false``) or quantization-aware training."""

from __future__ import annotations

from dataclasses import dataclass, field

QUANTIZABLE_TENSORS = ("embedding", "input", "hidden", "weights", "gates", "cell", "decoder")


@dataclass
class QuantConfig:
    """Fake-quantization settings (Jacob et al. 2018); ``enabled: false`` is the float model."""

    enabled: bool = False
    weight_bits: int = 8  # symmetric per output channel, [-(2^(b-1)-1), 2^(b-1)-1]
    activation_bits: int = 8  # affine, EMA min/max observers
    delay_steps: int = 0  # train in float for this many optimizer steps first
    freeze_observers_step: int | None = None  # stop updating ranges after this step (None: never)
    ema_momentum: float = 0.01
    tensors: list[str] = field(default_factory=lambda: list(QUANTIZABLE_TENSORS))
