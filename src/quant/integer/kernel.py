"""The fused integer LSTM kernels: ``runtime/int_lstm.c``, compiled on first use (ctypes).

:class:`~src.quant.integer.engine.IntegerLSTMLayer` runs a window step by step in torch (about
60 small integer ops per layer and time step, launch-bound at small batch). The C function
``awd_int_lstm_layer`` runs the same recurrence in one call per layer and window, with the same
integer operations (bit-identical: ``tests/quant/test_kernel.py``); the window's input GEMM and
the decoder are :func:`.gemm.weight_gemm` (``torch._int_mm`` where oneDNN sums exactly, else
the kernel's own GEMM). The mLSTM has its twin, ``awd_int_mlstm_layer``
(peepholes, cell clip, projection; ``tests/quant/test_kernel_mlstm.py``). This module builds
and loads the library and holds what both calls share; :mod:`.kernel_lstm` and
:mod:`.kernel_mlstm` pack each layer's operands and call it.

Build: the source is compiled with the system C compiler (``$CC``, else ``cc``/``gcc``/``clang``)
as ``-O3 -march=native`` (falling back to portable flags) into a shared library cached under
``$AWD_KERNEL_CACHE``, else ``$XDG_CACHE_HOME/awd-lstm-lab/kernels`` (``~/.cache/...``), keyed
by the source, the flags, the compiler and the CPU, written to a temp name and renamed into
place; later runs load it in milliseconds. ctypes, not ``torch.utils.cpp_extension``: the
kernel needs no torch headers (ninja-free, a compile of about a second). Without a compiler
(or with ``AWD_INT_KERNEL=0``) the engine warns once and keeps the pure-torch path.

Instruction set: ``AWD_INT8_ISA`` picks the build (:data:`ISAS`): ``native`` (default: what the
CPU has; AVX-512 VNNI dot products where present), ``avx2`` (``-march=x86-64-v3``: the AVX2 code
an AVX2-only CPU runs, also on a newer one) or ``generic`` (the plain C loops). The codes are
the same on every path; :attr:`Kernel.isa` names the one loaded.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

try:
    from torch.utils._python_dispatch import _get_current_dispatch_mode
except ImportError:  # pragma: no cover - a torch without it
    _get_current_dispatch_mode = None

__all__ = [
    "Kernel",
    "MLSTMArgs",
    "cache_dir",
    "channelwise",
    "compiler",
    "direct_table",
    "dispatch_mode_active",
    "enabled",
    "load",
    "pack_weight",
    "ptr",
    "run_rows",
    "set_enabled",
]

RUNTIME_DIR = Path(__file__).with_name("runtime")
SOURCE = RUNTIME_DIR / "int_lstm.c"  # also linked into the standalone runtime (format=c)
SCORE_SOURCE = RUNTIME_DIR / "int_score.c"  # the engine's float step (dequantization), kernel only
HEADER = RUNTIME_DIR / "awd_kernel.h"
ABI = 6
ENV_SWITCH = "AWD_INT_KERNEL"
ISA_ENV = "AWD_INT8_ISA"
_NATIVE_FLAGS = ("-O3", "-march=native", "-shared", "-fPIC", "-std=c11")
_PORTABLE_FLAGS = ("-O3", "-shared", "-fPIC", "-std=c11")
#: ``AWD_INT8_ISA`` -> (first-choice compiler flags, extra defines); portable flags are the
#: fallback of each (a compiler or CPU without the ISA)
ISAS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "native": (_NATIVE_FLAGS, ()),
    "avx2": (("-O3", "-march=x86-64-v3", "-shared", "-fPIC", "-std=c11"), ()),
    "generic": (_NATIVE_FLAGS, ("-DAWD_GENERIC",)),
}

_lock = threading.Lock()
_loaded: dict[tuple[str, ...], Kernel | None] = {}
_enabled: bool | None = None  # None: follow the environment variable


class MLSTMArgs(ctypes.Structure):
    """``awd_mlstm_args`` of awd_kernel.h, field for field (all 8 bytes wide: no padding)."""

    _fields_ = [
        (name, ctypes.c_int64)
        for name in (
            "hidden",
            "proj",
            "gp_v",
            "gp_m",
            "gp_r",
            "cell_exponent",
            "bits",
            "product_zero_point",
            "output_zero_point",
            "hidden_zero_point",
            "peephole",
            "cell_clip",
            "cell_lo",
            "cell_hi",
            "projection",
            "proj_clip",
            "proj_lo",
            "proj_hi",
        )
    ] + [
        (name, ctypes.c_void_p)
        for name in (
            "acc_in",
            "h0",
            "c",
            "h_out",
            "w_mh",
            "w_hm",
            "w_hr",
            "corr_mh",
            "corr_hm",
            "corr_hr",
            "bias_x",
            "bias_u",
            "bias_v",
            "bias_m",
            "bias_r",
            "rq_x",
            "rq_u",
            "rq_v",
            "rq_m",
            "rq_r",
            "rq_product",
            "rq_output",
            "peephole_w",
            "rq_peephole",
            "sigmoid",
            "tanh_table",
            "tanh_cell",
        )
    ]


@dataclass(frozen=True)
class Kernel:
    """A loaded library: the C functions, the weight layout they want (``packed``: 0 row-major,
    1 VNNI, 2 AVX2; :func:`pack_weight`), and the code path it was built with (``isa``:
    ``avx512-vnni``, ``avx2`` or ``generic``)."""

    lib: ctypes.CDLL
    path: Path
    packed: int
    isa: str = "generic"

    def __post_init__(self) -> None:
        i, p, i64 = ctypes.c_int, ctypes.c_void_p, ctypes.c_int64
        fn = self.lib.awd_int_lstm_layer
        fn.restype = ctypes.c_int
        fn.argtypes = [i] * 6 + [p] * 14 + [i64, i64, i64, i, i, i, p, p, p]
        fn = self.lib.awd_int_mlstm_layer
        fn.restype = ctypes.c_int
        fn.argtypes = [i, i, i, i, ctypes.POINTER(MLSTMArgs)]
        fn = self.lib.awd_int_gemm
        fn.restype = ctypes.c_int
        fn.argtypes = [i, i, i, p, p, p, p, i]
        fn = self.lib.awd_dequantize
        fn.restype = None
        fn.argtypes = [i, i, p, i, p, p, p, i]


def cache_dir() -> Path:
    if env := os.environ.get("AWD_KERNEL_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "awd-lstm-lab" / "kernels"


def enabled() -> bool:
    """Whether the engine may use the kernel (``set_enabled``, else ``AWD_INT_KERNEL != 0``)."""
    if _enabled is not None:
        return _enabled
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def set_enabled(value: bool | None) -> None:
    """Force the kernel on or off for this process (``None``: back to the environment)."""
    global _enabled
    _enabled = value


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    return None


def compiler() -> str | None:
    """The C compiler the kernel (and the standalone runtime) is built with, or None."""
    return _compiler()


def _cpu_id() -> str:
    """CPU model and flags (a -march=native build is only valid on the CPU it was built on)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or platform.machine()
    keep = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags"))][:2]
    return platform.machine() + "\n" + "\n".join(keep)


def _compile(cc: str, flags: tuple[str, ...], defines: tuple[str, ...], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        cmd = [cc, *flags, *defines, str(SOURCE), str(SCORE_SOURCE), "-o", tmp]
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)
        os.chmod(tmp, 0o755)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _version(cc: str) -> str:
    try:
        proc = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30)
        return proc.stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def isa() -> str:
    """The build ``AWD_INT8_ISA`` asks for (``native`` when unset; an unknown name warns)."""
    name = os.environ.get(ISA_ENV, "").strip().lower() or "native"
    if name not in ISAS:
        warnings.warn(
            f"{ISA_ENV}={name!r} is not one of {', '.join(ISAS)}: using native (unset it or "
            "pick one of those)",
            RuntimeWarning,
            stacklevel=3,
        )
        return "native"
    return name


def _build_and_load(defines: tuple[str, ...], first: tuple[str, ...] = _NATIVE_FLAGS) -> Kernel:
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (set CC, or install gcc)")
    source = b"\0".join(p.read_bytes() for p in (SOURCE, SCORE_SOURCE, HEADER))
    errors = []
    for flags in (first, _PORTABLE_FLAGS):
        key = hashlib.sha256(
            b"\0".join(
                [
                    source,
                    " ".join(flags + defines).encode(),
                    _version(cc).encode(),
                    _cpu_id().encode(),
                ]
            )
        ).hexdigest()[:20]
        path = cache_dir() / f"int_lstm-{key}.so"
        try:
            if not path.is_file():
                _compile(cc, flags, defines, path)
            lib = ctypes.CDLL(str(path))
            if lib.awd_abi() != ABI:
                raise RuntimeError(f"{path}: ABI {lib.awd_abi()} != {ABI}")
            if lib.awd_mlstm_args_size() != ctypes.sizeof(MLSTMArgs):
                raise RuntimeError(f"{path}: awd_mlstm_args size != {ctypes.sizeof(MLSTMArgs)}")
            lib.awd_isa.restype = ctypes.c_char_p
            return Kernel(lib, path, int(lib.awd_packed()), lib.awd_isa().decode())
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            detail = getattr(exc, "stderr", "") or ""
            errors.append(f"{' '.join(flags)}: {exc} {detail}".strip())
    raise RuntimeError("; ".join(errors))


def load(defines: tuple[str, ...] | None = None) -> Kernel | None:
    """The compiled kernel (built on first call, then cached), or None with a warning.

    ``defines`` are extra compiler arguments (tests build ``-DAWD_GENERIC``, the portable C
    loop, beside the native one); None: the build ``AWD_INT8_ISA`` names (:func:`isa`).
    """
    first = _NATIVE_FLAGS
    if defines is None:
        first, defines = ISAS[isa()]
    key = defines if first is _NATIVE_FLAGS else (*first, *defines)
    with _lock:
        if key not in _loaded:
            try:
                _loaded[key] = _build_and_load(defines, first)
            except Exception as exc:  # noqa: BLE001 - any failure means: use the torch path
                warnings.warn(
                    f"integer LSTM kernel unavailable, using the pure-torch engine path: {exc}",
                    RuntimeWarning,
                    stacklevel=2,
                )
                _loaded[key] = None
        return _loaded[key]


def dispatch_mode_active() -> bool:
    """A TorchDispatchMode (tracing, the dtype checks of the tests) must see every op."""
    return _get_current_dispatch_mode is not None and _get_current_dispatch_mode() is not None


def pack_weight(w: Tensor, packed: int) -> tuple[Tensor, Tensor | None, int]:
    """int8 ``w`` [G, K] -> (the kernel's weight, corr, the accumulator stride Gp), in the
    layout ``Kernel.packed`` names (``awd_packed()`` of int_lstm.c):

    - 1 (VNNI): int8 [Gp / 64][Kq][64][4] (each tile of 64 channels one contiguous slab), K
      padded to ``4 Kq`` and G to Gp, a multiple of 64, with zeros, and
      ``corr = 128 sum_k W[j, k]`` (int32 [G]);
    - 2 (AVX2): int16 [Gp / 32][2 Kq][32][2] (pairs for vpmaddwd), Gp a multiple of 32, no corr;
    - 0: the row-major weight, None and G."""
    G, K = w.shape
    if not packed:
        return w.contiguous(), None, G
    tile, width = (64, 4) if packed == 1 else (32, 2)
    Kq, Gp = -(-K // 4), -(-G // tile) * tile
    padded = w.new_zeros((Gp, 4 * Kq))
    padded[:G, :K] = w
    tiles = padded.view(Gp // tile, tile, 4 * Kq // width, width)
    weight = tiles.permute(0, 2, 1, 3).contiguous()
    if packed == 2:
        return weight.to(torch.int16), None, Gp
    corr = (128 * w.to(torch.int32).sum(1, dtype=torch.int32)).contiguous()
    return weight, corr, Gp


def channelwise(t: Tensor, channels: int) -> Tensor:
    return t.to(torch.int64).reshape(-1).expand(channels).contiguous()


def direct_table(lut: torch.nn.Module) -> Tensor:
    """The 65,536-entry table of ``lut`` (itself when already direct)."""
    if not lut.interpolated and not lut.input_left_shift:
        return lut.table.contiguous()
    codes = torch.arange(-32768, 32768, dtype=torch.int16, device=lut.table.device)
    return lut(codes).contiguous()


def ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def run_rows(rows: Callable[[int, int], int], batch: int) -> None:
    """``rows(begin, end)`` over the batch: rows are independent, so they are split over torch's
    intra-op thread count (ctypes drops the GIL during the call), one range in this thread, the
    others in the pool. A nonzero status is a failed scratch allocation."""
    parts = min(torch.get_num_threads(), batch, _MAX_PARTS)
    bounds = [batch * i // parts for i in range(parts + 1)]
    ranges = list(zip(bounds[:-1], bounds[1:], strict=True))
    futures = [_pool().submit(rows, lo, hi) for lo, hi in ranges[1:]]
    status = [rows(*ranges[0])] + [f.result() for f in futures]
    if any(status):
        raise MemoryError("integer LSTM kernel: scratch allocation failed")


_MAX_PARTS = 64
_executor: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(thread_name_prefix="int-lstm")
        return _executor
