"""Learning-rate schedules stepped once per optimizer step: ``scheduler=none|one_cycle|stlr``.

* ``one_cycle``: ``torch.optim.lr_scheduler.OneCycleLR`` (Smith 2018), each group's own rate as
  its peak (``max_lr`` per group), torch's defaults otherwise.
* ``stlr``: ULMFiT's slanted triangular rate (Howard & Ruder 2018, eq. 3) as a ``LambdaLR``:
  with ``cut = floor(T * cut_frac)``, ``p = t / cut`` for ``t < cut``, else
  ``1 - (t - cut) / (cut * (1 / cut_frac - 1))``; ``lr_t = lr_max * (1 + p (ratio - 1)) / ratio``.

``T`` is ``scheduler.total_steps``, else the trainer's estimate of the run's optimizer steps.
Both scale every group's own rate, so discriminative rates keep their ratios. NT-ASGD has its
own policy for the rate (constant, then averaging); combining the two is refused.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

SCHEDULERS = ("none", "one_cycle", "stlr")


def stlr_factor(step: int, total_steps: int, cut_frac: float = 0.1, ratio: float = 32.0) -> float:
    """ULMFiT eq. 3, as a factor of the peak rate: 1/ratio at step 0, 1 at ``cut``, back to
    1/ratio at ``total_steps``."""
    cut = max(1, math.floor(total_steps * cut_frac))
    decay = (step - cut) / (cut * (1.0 / cut_frac - 1.0))
    p = step / cut if step < cut else max(0.0, 1.0 - decay)
    return (1.0 + p * (ratio - 1.0)) / ratio


def check_scheduler(scheduler: dict[str, Any] | None, optim: dict[str, Any]) -> str:
    """The schedule's name; NT-ASGD with a schedule is refused (two policies for one rate)."""
    name = (scheduler or {}).get("name", "none")
    if name not in SCHEDULERS:
        raise ValueError(f"scheduler.name={name!r}: expected one of {', '.join(SCHEDULERS)}")
    if name != "none" and optim.get("name") == "sgd" and optim.get("nt_asgd", False):
        raise ValueError(
            f"scheduler={name} with optim.nt_asgd=true: two policies for one learning rate "
            "(NT-ASGD keeps it constant, then averages). Set optim.nt_asgd=false, or optim=adam, "
            "or scheduler=none"
        )
    return name


def build_scheduler(
    optimizer: torch.optim.Optimizer, scheduler: dict[str, Any], total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """The configured schedule over ``total_steps`` optimizer steps (``scheduler.name`` != none)."""
    if total_steps < 1:
        raise ValueError(
            f"a learning-rate schedule needs the run's length: got {total_steps} steps; set "
            "trainer.max_steps or scheduler.total_steps"
        )
    name = scheduler["name"]
    if name == "one_cycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=[group["lr"] for group in optimizer.param_groups],
            total_steps=total_steps,
            pct_start=scheduler.get("pct_start", 0.3),
            div_factor=scheduler.get("div_factor", 25.0),
            final_div_factor=scheduler.get("final_div_factor", 1e4),
            anneal_strategy=scheduler.get("anneal_strategy", "cos"),
            cycle_momentum=scheduler.get("cycle_momentum", True),
        )
    if name == "stlr":
        cut_frac, ratio = scheduler.get("cut_frac", 0.1), scheduler.get("ratio", 32.0)
        factor: Callable[[int], float] = _Slanted(total_steps, cut_frac, ratio)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    raise ValueError(f"no schedule to build for scheduler.name={name!r}")


class _Slanted:
    """Picklable ``LambdaLR`` factor (checkpoints save the scheduler's state)."""

    def __init__(self, total_steps: int, cut_frac: float, ratio: float) -> None:
        self.total_steps, self.cut_frac, self.ratio = total_steps, cut_frac, ratio

    def __call__(self, step: int) -> float:
        return stlr_factor(step, self.total_steps, self.cut_frac, self.ratio)
