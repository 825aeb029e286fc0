"""Non-monotonically triggered averaged SGD (Merity et al. 2017, section 3; REFERENCE §2).

Train with plain SGD; after each epoch's validation, switch to averaged SGD once the validation
loss stops improving over a window of ``nonmono`` epochs. From then on the model is evaluated
and checkpointed with the averaged iterate ``ax`` kept by ``torch.optim.ASGD``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn


def should_switch_to_asgd(history: Sequence[float], val_loss: float, nonmono: int) -> bool:
    """The authors' trigger: ``len(history) > nonmono and val_loss > min(history[:-nonmono])``.

    ``history`` holds the validation losses of the *previous* epochs; the caller appends the
    current one after the check. (The paper's algorithm box has a typo; this is the code's rule.)
    """
    return len(history) > nonmono and val_loss > min(history[:-nonmono])


def make_asgd(params: Iterable[nn.Parameter], lr: float, weight_decay: float) -> torch.optim.ASGD:
    """Averaged SGD with the averaging starting at once (``t0=0``) and no LR decay (``lambd=0``)."""
    return torch.optim.ASGD(params, lr=lr, t0=0, lambd=0.0, weight_decay=weight_decay)


def has_averages(optimizer: torch.optim.Optimizer) -> bool:
    """True when ``optimizer`` is ASGD and has taken at least one step (so ``ax`` exists)."""
    if not isinstance(optimizer, torch.optim.ASGD):
        return False
    return any("ax" in optimizer.state[p] for g in optimizer.param_groups for p in g["params"])


@torch.no_grad()
def swap_in_averages(optimizer: torch.optim.ASGD) -> dict[nn.Parameter, torch.Tensor]:
    """Copy each parameter's running average into it; return the live values to restore."""
    live: dict[nn.Parameter, torch.Tensor] = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state[p]
            if "ax" not in state:
                continue
            live[p] = p.detach().clone()
            p.copy_(state["ax"])
    return live


@torch.no_grad()
def restore_live(live: dict[nn.Parameter, torch.Tensor]) -> None:
    """Undo :func:`swap_in_averages`."""
    for p, value in live.items():
        p.copy_(value)
