"""The pinned CPU settings (src/utils/cpu.py, src/pinned.py) take effect, and only when asked."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from src.utils.cpu import PINNED_ENV, is_pinned, pinned_env
from tests.conftest import REPO

#: an AVX2-only machine as far as environment variables can emulate one on an AVX-512 CPU
AVX2_MACHINE = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "OMP_NUM_THREADS": "2",
}


def _numerics(*launcher: str, env: dict[str, str]) -> dict:
    """``python -m [launcher] src.utils.cpu``'s report of the kernels in effect."""
    proc = subprocess.run(
        [sys.executable, "-m", *launcher, "src.utils.cpu"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_pinned_launcher_overrides_the_callers_cpu_settings() -> None:
    """Whatever the caller's environment, the child runs ATen's scalar kernels, MKL's
    compatible branch, oneDNN at SSE4.1 and one thread."""
    got = _numerics("src.pinned", env={**os.environ, **AVX2_MACHINE})
    assert got["cpu_capability"] == "DEFAULT" and got["num_threads"] == 1
    assert got["onednn_max_cpu_isa"] == "SSE41" and got["cpu_pinned"] is True
    assert got["mkl_code_path"] in (None, "COMPATIBLE")  # None: a torch build without MKL


def test_without_the_launcher_the_native_paths_run() -> None:
    env = {k: v for k, v in os.environ.items() if k not in PINNED_ENV}
    got = _numerics(env={**env, "ATEN_CPU_CAPABILITY": "avx2"})
    assert got["cpu_pinned"] is False and got["cpu_capability"] == "AVX2"
    assert got["mkl_code_path"] is None or got["mkl_code_path"].startswith("auto:")
    assert not is_pinned(env) and is_pinned(pinned_env(env))
