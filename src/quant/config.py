"""The ``quant`` group: float (``enabled: false``) or quantization-aware training.

``quant=none`` is the float model; ``quant=qat`` fake-quantizes every tensor the integer engine
holds (docs/quantization.md). Values are checked here, so a bad setting fails when the model is
built, with the key named.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: What can be fake-quantized (docs/quantization.md, "where each fake quantizer sits"):
#: ``embedding`` the embedding matrix (int8 per row); ``input`` layer 1's input (int8 affine);
#: ``weights`` every W_ih and W_hh (int8 per output channel); ``hidden`` h_t and h_{t-1} (int8
#: affine); ``gates`` the gate pre-activations (int16 at 2^-12) and the sigmoid/tanh outputs
#: (int16 at 2^-15); ``cell`` the cell state (int16, power-of-two scale); ``decoder`` the decoder
#: weight (int8 per row). The integer engine needs all of them.
QUANTIZABLE_TENSORS = ("embedding", "input", "hidden", "weights", "gates", "cell", "decoder")


@dataclass
class QuantConfig:
    """Fake-quantization settings (Jacob et al. 2018); ``enabled: false`` is the float model."""

    enabled: bool = False
    weight_bits: int = 8  # symmetric per output channel, [-(2^(b-1)-1), 2^(b-1)-1], int8 storage
    activation_bits: int = 8  # affine, EMA min/max observers, int8 storage
    delay_steps: int = 0  # train in float for this many optimizer steps first
    freeze_observers_step: int | None = None  # stop updating ranges from this step (None: never)
    # observer update: range <- range + momentum * (batch min/max - range), once per batch.
    # 0.1, not 0.01: trained from scratch at lr 30, ranges grow for hundreds of steps and a
    # 0.01 EMA lagged so far behind that clipping diverged the run (docs/quantization.md).
    ema_momentum: float = 0.1
    calibration_batches: int = 20  # training windows that re-calibrate ranges for ASGD averages
    tensors: list[str] = field(default_factory=lambda: list(QUANTIZABLE_TENSORS))

    def __post_init__(self) -> None:
        for name in ("weight_bits", "activation_bits"):
            bits = getattr(self, name)
            if not _is_int(bits) or not 2 <= bits <= 8:
                raise ValueError(
                    f"quant.{name} must be an integer in [2, 8] (codes are stored in int8 and "
                    f"multiplied by int8 x int8 -> int32 GEMMs), got {bits!r}"
                )
        if not _is_int(self.delay_steps) or self.delay_steps < 0:
            raise ValueError(f"quant.delay_steps must be an integer >= 0, got {self.delay_steps!r}")
        step = self.freeze_observers_step
        if step is not None and (not _is_int(step) or step < 0):
            raise ValueError(f"quant.freeze_observers_step must be null or >= 0, got {step!r}")
        if isinstance(self.ema_momentum, bool) or not 0.0 < float(self.ema_momentum) <= 1.0:
            raise ValueError(f"quant.ema_momentum must be in (0, 1], got {self.ema_momentum!r}")
        if not _is_int(self.calibration_batches) or self.calibration_batches < 0:
            raise ValueError(
                f"quant.calibration_batches must be an integer >= 0, got "
                f"{self.calibration_batches!r}"
            )
        unknown = sorted(set(self.tensors) - set(QUANTIZABLE_TENSORS))
        if unknown:
            raise ValueError(
                f"quant.tensors has unknown entries {unknown}; choose from {QUANTIZABLE_TENSORS}"
            )
        self.tensors = list(self.tensors)

    def quantizes(self, tensor: str) -> bool:
        """True when QAT is on and ``tensor`` (one of QUANTIZABLE_TENSORS) is fake-quantized."""
        if tensor not in QUANTIZABLE_TENSORS:
            raise ValueError(f"unknown tensor {tensor!r}; choose from {QUANTIZABLE_TENSORS}")
        return self.enabled and tensor in self.tensors

    @property
    def integer_ready(self) -> bool:
        """Whether the integer engine can be built: QAT on and every tensor quantized."""
        return self.enabled and set(self.tensors) == set(QUANTIZABLE_TENSORS)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
