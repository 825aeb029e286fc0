"""One line at the start of a bf16 run on the CPU: what this CPU's bf16 units make of it.

Autocast on the CPU (``trainer.precision=bf16-mixed``) runs GEMMs and the fused LSTM in bf16.
They pay only where the CPU multiplies bf16 natively: AMX tiles (``amx_tile``; the issue's
Sapphire Rapids machine: raw ``nn.LSTM`` training 1.59x) and, far less, AVX512-BF16's
``vdpbf16ps`` (measured here without AMX: bf16 GEMMs of the tiny shape at 0.55-0.8x of float32).
Without either, bf16 is converted to float32 around every operation and only costs.
"""

from __future__ import annotations

import logging

import lightning as L
from lightning.pytorch.callbacks import Callback

from src.utils.cpu import cpu_flags

log = logging.getLogger(__name__)

_AVX512_BF16_ONLY = (
    "{p} on a CPU with AVX512-BF16 but no AMX: bf16 GEMMs run at about 0.55-0.8x of float32's "
    "speed here, so expect no speed-up over trainer.precision=32-true (one ptb_tiny epoch: see "
    "README, bf16 on the CPU); bf16 pays on AMX CPUs (amx_tile)"
)
_NO_BF16 = (
    "{p} on a CPU without AMX or AVX512-BF16: bf16 is emulated (converted to float32 around "
    "every operation), so it is slower than trainer.precision=32-true; use that here"
)


def bf16_cpu_advice(precision: str, flags: frozenset[str]) -> tuple[int, str] | None:
    """(log level, line) for a bf16 ``precision`` on a CPU with ``flags``; None if not bf16."""
    if "bf16" not in precision:
        return None
    where = f"trainer.precision={precision}"
    if "amx_tile" in flags:
        return logging.INFO, f"{where} on a CPU with AMX: bf16 GEMMs run on its tiles"
    if "avx512_bf16" in flags:
        return logging.WARNING, _AVX512_BF16_ONLY.format(p=where)
    return logging.WARNING, _NO_BF16.format(p=where)


class PrecisionAdvice(Callback):
    """Log :func:`bf16_cpu_advice`'s one line when a fit starts in bf16 on the CPU."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if pl_module.device.type != "cpu":
            return
        advice = bf16_cpu_advice(str(trainer.precision), cpu_flags())
        if advice is not None:
            log.log(*advice)
