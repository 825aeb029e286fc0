"""Re-calibrating activation ranges, and moving quantizer state between float and QAT models.

NT-ASGD evaluates the *averaged* weights, whose activations differ from those of the live
weights the EMA ranges were tracked on. Before such an evaluation the training loop calls
:func:`calibrate` on a few training windows (no gradients, dropouts off, fake quantization as
configured) and restores the live ranges afterwards (:func:`observer_state` /
:func:`load_observer_state`). The calibrated range is the plain mean of the per-window min and
max (the EMA with momentum ``1 / n`` at window ``n``), not a slow EMA that would remember the
first window.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from .fake_quant import quantizers, reset_observers
from .observers import EMAMinMaxObserver

__all__ = [
    "align_quantizer_state",
    "calibrate",
    "is_quantizer_key",
    "load_observer_state",
    "observer_state",
]


def observer_state(model: nn.Module) -> dict[str, Tensor]:
    """A copy of every observer buffer of ``model`` (``min_val``, ``max_val``, ``initialized``)."""
    return {
        f"{name}.{key}": buf.detach().clone()
        for name, obs in model.named_modules()
        if isinstance(obs, EMAMinMaxObserver)
        for key, buf in obs.named_buffers(recurse=False)
    }


@torch.no_grad()
def load_observer_state(model: nn.Module, state: Mapping[str, Tensor]) -> None:
    """Put back buffers saved by :func:`observer_state`."""
    buffers = dict(model.named_buffers())
    for key, value in state.items():
        buffers[key].copy_(value)


@torch.no_grad()
def calibrate(model: nn.Module, windows: Iterable[Tensor], num_batches: int) -> int:
    """Re-estimate every observed range of ``model`` on up to ``num_batches`` token windows.

    ``model(tokens, hidden)`` runs in eval mode (no dropout) with its quantizers in training
    mode and observers on; the hidden state is carried from window to window. Every range is
    reset first, then becomes the mean over windows of each window's min and max. The model's
    modes, observer switches and momenta are restored. Returns the number of windows used.
    """
    observers = [m for m in model.modules() if isinstance(m, EMAMinMaxObserver)]
    if num_batches <= 0 or not observers:
        return 0
    was_training = model.training
    qs = list(quantizers(model))
    switches = [(q, q.training, q.observer_enabled) for q in qs]
    momenta = [obs.momentum for obs in observers]
    model.eval()
    for q in qs:
        q.train()
        q.enable_observer(True)
    reset_observers(model)
    used, hidden = 0, None
    try:
        for tokens in windows:
            if used == num_batches:
                break
            for obs in observers:
                obs.momentum = 1.0 / (used + 1)
            hidden = model(tokens, hidden).hidden
            used += 1
    finally:
        for obs, momentum in zip(observers, momenta, strict=True):
            obs.momentum = momentum
        for q, training, observing in switches:
            q.train(training)
            q.enable_observer(observing)
        model.train(was_training)
    return used


def is_quantizer_key(key: str) -> bool:
    """Whether a state-dict key belongs to a fake quantizer (modules named ``*_quant``)."""
    return any(part.endswith("_quant") for part in key.split(".")[:-1])


def align_quantizer_state(
    state_dict: dict[str, Tensor], expected: Mapping[str, object]
) -> tuple[list[str], list[str]]:
    """Fit a checkpoint's state dict to a model across float <-> QAT, in place.

    ``expected`` is the model's own ``state_dict()``. Quantizer entries the checkpoint lacks
    (a float checkpoint fine-tuned with QAT) are taken from the model: fresh observers that
    calibrate on the first batches. Quantizer entries the model lacks (a QAT checkpoint loaded
    as float) are dropped. Other keys are left for strict loading to check. Returns the keys
    added and dropped.
    """
    added = [k for k in expected if is_quantizer_key(k) and k not in state_dict]
    dropped = [k for k in state_dict if is_quantizer_key(k) and k not in expected]
    for key in added:
        state_dict[key] = expected[key]
    for key in dropped:
        del state_dict[key]
    return added, dropped
