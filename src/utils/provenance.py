"""What produced a run: ``provenance.json`` in the run folder, written when the run starts.

    {"git_commit": "4f1c...", "git_dirty": false, "versions": {"python": "3.12.3", "torch": ...},
     "device": "NVIDIA H200", "cpu": "AMD EPYC ...", "cpu_capability": "AVX512", "amx": false,
     "mkl_code_path": "auto:AVX512_E1", "cpu_pinned": false, "hostname": "node07",
     "argv": ["/.../src/train.py", "experiment=smoke"], "executable": "/.../python", ...}

The git fields describe the checkout the ``src`` package is imported from; they are null when
that is not the root of a git work tree (an installed package) or git is missing. Nothing here
raises: a field that cannot be read is null. The GPU name is asked of the driver
(``nvidia-smi``) when CUDA is not initialized yet, so that fork-based strategies still start.
"""

from __future__ import annotations

import platform
import socket
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from src.utils.cpu import numerics
from src.utils.io import atomic_write_json

FILENAME = "provenance.json"
#: distributions whose versions are recorded (import names differ: lightning, hydra, ...)
PACKAGES = ("torch", "lightning", "hydra-core", "omegaconf", "wandb", "numpy")
#: the folder holding the ``src`` package: a git checkout's root when run from a clone
PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def _git(*args: str, cwd: Path) -> str | None:
    try:
        proc = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def git_state(root: Path | None = None) -> dict[str, Any]:
    """``git_commit`` (full sha of HEAD) and ``git_dirty`` (tracked or untracked, not ignored,
    changes) of the work tree rooted at ``root`` (default: the folder holding ``src``); both
    null if ``root`` is not such a root (a package installed inside some other repository's
    folder is not that repository)."""
    none: dict[str, Any] = {"git_commit": None, "git_dirty": None}
    root = PACKAGE_ROOT if root is None else root
    if not root.is_dir():
        return none
    top = _git("rev-parse", "--show-toplevel", cwd=root)
    if top is None or Path(top).resolve() != root.resolve():
        return none
    commit = _git("rev-parse", "HEAD", cwd=root)
    status = _git("status", "--porcelain", cwd=root)
    return {"git_commit": commit, "git_dirty": None if status is None else bool(status)}


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo``'s ``model name``), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def gpu_names() -> list[str]:
    """Names of the visible CUDA devices; [] when there are none."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return []
    try:
        if torch.cuda.is_initialized():
            return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if not torch.cuda.is_available():
            return []
    except Exception:  # a broken driver must not stop the run
        return []
    # Not initialized yet: ask the driver, so a fork-based DDP strategy can still start.
    try:
        proc = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        names = [n.strip() for n in proc.stdout.splitlines() if n.strip()]
    except (OSError, subprocess.SubprocessError):
        names = []
    if names:
        return names
    try:
        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:
        return []


def on_gpu(accelerator: str | None) -> bool:
    """Whether a Lightning ``accelerator`` setting trains on CUDA devices."""
    name = str(accelerator or "auto").lower()
    if name in ("gpu", "cuda"):
        return True
    if name != "auto":
        return False
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False


def cpu_numerics() -> dict[str, Any]:
    """:func:`src.utils.cpu.numerics` (ATen capability, AMX, MKL code path, threads, whether the
    CPU settings are pinned), or nulls if torch cannot say."""
    try:
        return numerics()
    except Exception:  # a provenance field must never stop a run
        return {"cpu_capability": None, "amx": None, "mkl_code_path": None}


def collect(accelerator: str | None = None, argv: list[str] | None = None) -> dict[str, Any]:
    """The provenance record of a run on ``accelerator`` (a Lightning setting) started by
    ``argv`` (default ``sys.argv``)."""
    gpus = gpu_names() if on_gpu(accelerator) else []
    cpu = cpu_name()
    try:
        hostname = socket.gethostname()
    except OSError:  # pragma: no cover
        hostname = None
    return {
        **git_state(),
        "versions": versions(),
        "device": gpus[0] if gpus else cpu,
        "gpus": gpus,
        "cpu": cpu,
        **cpu_numerics(),
        "accelerator": None if accelerator is None else str(accelerator),
        "hostname": hostname,
        "argv": list(sys.argv if argv is None else argv),
        "executable": sys.executable,
        "cwd": str(Path.cwd()),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def write_provenance(
    out_dir: str | Path, accelerator: str | None = None, argv: list[str] | None = None
) -> Path:
    """Write ``provenance.json`` into ``out_dir`` (atomically) and return its path."""
    path = Path(out_dir) / FILENAME
    atomic_write_json(path, collect(accelerator, argv))
    return path
