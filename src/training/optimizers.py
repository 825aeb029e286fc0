"""Config -> optimizer and schedule, shared by every task's LightningModule.

``optim``: SGD (averaged SGD once NT-ASGD has switched, language models only) or Adam, over the
parameter groups of ``optim.groups`` (src/training/param_groups.py), each at its own rate;
``scheduler``: a rate schedule stepped per optimizer step (src/training/schedulers.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from src.training import nt_asgd
from src.training.param_groups import parameter_groups
from src.training.schedulers import build_scheduler, check_scheduler


def build_optimizer(
    model: nn.Module, optim: Mapping[str, Any], asgd_active: bool = False
) -> torch.optim.Optimizer:
    """SGD / averaged SGD (``asgd_active``: resuming after NT-ASGD's switch) / Adam over
    ``optim.groups``."""
    params = parameter_groups(
        model, optim.get("groups", "single"), optim["lr"], optim.get("lr_decay_per_group", 1.0)
    )
    if optim["name"] == "adam":
        return torch.optim.Adam(
            params, lr=optim["lr"], betas=tuple(optim["betas"]), weight_decay=optim["weight_decay"]
        )
    if asgd_active:  # resuming after the switch (REFERENCE §7)
        return nt_asgd.make_asgd(params, lr=optim["lr"], weight_decay=optim["weight_decay"])
    return torch.optim.SGD(params, lr=optim["lr"], weight_decay=optim["weight_decay"])


def configure_optimization(
    model: nn.Module,
    optim: Mapping[str, Any],
    scheduler: Mapping[str, Any] | None,
    estimated_steps: Callable[[], float],
    asgd_active: bool = False,
) -> Any:
    """What ``LightningModule.configure_optimizers`` returns: the optimizer alone, or with the
    configured schedule (``interval: step``) over ``scheduler.total_steps`` optimizer steps, else
    ``estimated_steps()`` (the trainer's estimate, read only when a schedule needs it)."""
    schedule = check_scheduler(scheduler, optim)
    opt = build_optimizer(model, optim, asgd_active)
    if schedule == "none":
        return opt
    assert scheduler is not None
    total = scheduler.get("total_steps") or estimated_steps()
    built = build_scheduler(opt, dict(scheduler), int(total))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": built, "interval": "step"}}
