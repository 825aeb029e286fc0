"""Which CPU code paths torch takes, and the settings that make them the same on every x86 CPU.

A float32 result depends on more than the code: three libraries inside torch pick their kernels
by the CPU they find, and each choice moves the last bits of some results.

- ATen's vectorized kernels (``torch.backends.cpu.get_cpu_capability()``: ``DEFAULT``, ``AVX2``,
  ``AVX512``). Reductions such as ``log_softmax`` sum in vector-width chunks (AVX2 and AVX-512
  differ); ``sigmoid``, ``tanh``'s and ``sigmoid``'s backward and ``normal_`` use SLEEF and
  fused multiply-adds in the vector kernels and libm in the scalar ones (``DEFAULT`` differs
  from both).
- MKL's GEMMs dispatch on the instruction set (AVX2 and AVX-512 kernels sum in other orders),
  and on the thread count.
- oneDNN, which runs torch's fused CPU ``nn.LSTM``, JIT-compiles for the best ISA it finds.

Training in float absorbs such differences; fake quantization does not: a last-bit change moves
a value across a rounding boundary, the integer code changes, and training carries it on.
:data:`PINNED_ENV` fixes all four (ATen's scalar kernels, MKL's compatible branch, oneDNN capped
at SSE4.1, one thread), so the same code gives the same bits on any x86-64 CPU. The variables
are read when each library first runs, so they must be set before the process starts:
``python -m src.pinned src.train ...`` does that. This module imports torch only inside the
functions that report what is in effect.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

#: The environment that gives bit-identical CPU results on every x86-64 machine (module doc).
PINNED_ENV: dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "default",
    "MKL_CBWR": "COMPATIBLE",
    "ONEDNN_MAX_CPU_ISA": "SSE41",
    "OMP_NUM_THREADS": "1",
}

#: MKL's conditional-numerical-reproducibility branches (``mkl_service.h``), by number.
_MKL_BRANCHES = {
    1: "OFF",
    2: "AUTO",
    3: "COMPATIBLE",
    4: "SSE2",
    6: "SSSE3",
    7: "SSE4_1",
    8: "SSE4_2",
    9: "AVX",
    10: "AVX2",
    11: "AVX512_MIC",
    12: "AVX512",
    13: "AVX512_MIC_E1",
    14: "AVX512_E1",
}
_MKL_CBWR_BRANCH, _MKL_CBWR_OFF, _MKL_CBWR_STRICT = 1, 1, 0x10000
#: ``/proc/cpuinfo`` flags worth recording: what bf16 and int8 paths the CPU has.
_FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


def pinned_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) with :data:`PINNED_ENV` laid over it."""
    return {**(os.environ if base is None else base), **PINNED_ENV}


def is_pinned(env: Mapping[str, str] | None = None) -> bool:
    """Whether every pinned variable has its pinned value in ``env`` (default: this process)."""
    env = os.environ if env is None else env
    return all(env.get(k, "").lower() == v.lower() for k, v in PINNED_ENV.items())


@cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (``/proc/cpuinfo``); empty where it cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_capability() -> str:
    """ATen's kernel set in this process: ``DEFAULT``, ``AVX2``, ``AVX512`` (x86) and others."""
    import torch

    return str(torch.backends.cpu.get_cpu_capability())


def _mkl() -> ctypes.CDLL | None:
    """torch's CPU library, when it carries MKL's service functions (an MKL build)."""
    import torch

    path = Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"
    try:
        lib = ctypes.CDLL(str(path))
    except OSError:
        return None
    wanted = ("mkl_serv_cbwr_get", "mkl_serv_cbwr_get_auto_branch")
    return lib if all(hasattr(lib, name) for name in wanted) else None


def mkl_code_path() -> str | None:
    """MKL's code path: the branch ``MKL_CBWR`` fixes (e.g. ``COMPATIBLE``, ``AVX2,STRICT``) or,
    when unset, ``auto:<branch>`` (the one MKL dispatches to on this CPU, e.g.
    ``auto:AVX512_E1``). None without MKL."""
    if not _torch_has_mkl() or (lib := _mkl()) is None:
        return None
    branch = int(lib.mkl_serv_cbwr_get(_MKL_CBWR_BRANCH))
    if branch == _MKL_CBWR_OFF:
        auto = int(lib.mkl_serv_cbwr_get_auto_branch())
        return f"auto:{_MKL_BRANCHES.get(auto, str(auto))}"
    strict = int(lib.mkl_serv_cbwr_get(-1)) & _MKL_CBWR_STRICT
    return _MKL_BRANCHES.get(branch, str(branch)) + (",STRICT" if strict else "")


def _torch_has_mkl() -> bool:
    import torch

    return bool(torch.backends.mkl.is_available())


def numerics() -> dict[str, Any]:
    """What decides this process's CPU bits, for ``provenance.json`` and the bench JSON."""
    import torch

    flags = cpu_flags()
    return {
        "cpu_capability": cpu_capability(),
        "amx": "amx_tile" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "cpu_features": [f for f in _FEATURES if f in flags],
        "mkl_code_path": mkl_code_path(),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
        "num_threads": torch.get_num_threads(),
        "cpu_pinned": is_pinned(),
    }


if __name__ == "__main__":  # python -m src.utils.cpu: what this machine and environment give
    import json

    print(json.dumps(numerics()))
