"""OmegaConf resolvers that name a job after how it was launched (single run or sweep member).

Used by ``conf/logger/wandb.yaml`` so that every job of a Hydra multirun is its own wandb run,
grouped by the sweep and named by its overrides (REFERENCE §7), while a single run keeps a
plain name. They read Hydra's runtime config themselves (rather than taking ``${hydra:...}``
arguments) so a config composed outside ``@hydra.main`` (tests, notebooks) still resolves.
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf


def _multirun() -> bool:
    """True inside a job launched by a Hydra sweep (``-m`` or ``hydra.mode=MULTIRUN``)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def sweep_group(prefix: str = "sweep") -> str | None:
    """In a multirun: ``<prefix>/<last two parts of hydra.sweep.dir>`` (for the default sweep
    folders ``<task>/<date>/<time>``), the same for every job of the sweep; else None."""
    if not _multirun():
        return None
    tail = Path(str(HydraConfig.get().sweep.dir)).parts[-2:]
    return "/".join([prefix, *tail])


def sweep_job_name(default: str) -> str:
    """In a multirun: the job's overrides (``hydra.job.override_dirname``), or ``job<N>`` when
    it has none; else ``default``."""
    if not _multirun():
        return default
    hc = HydraConfig.get()
    return str(hc.job.override_dirname) or f"job{hc.job.num}"


def register_resolvers() -> None:
    """Register ``${sweep_group:prefix}`` and ``${sweep_job_name:default}`` (idempotent)."""
    OmegaConf.register_new_resolver("sweep_group", sweep_group, replace=True)
    OmegaConf.register_new_resolver("sweep_job_name", sweep_job_name, replace=True)
