"""The fused integer LSTM kernel: ``int_lstm.c``, compiled on first use and loaded with ctypes.

:class:`~src.quant.engine.IntegerLSTMLayer` runs a window step by step in torch (about 60 small
integer ops per layer and time step, launch-bound at small batch). The C function
``awd_int_lstm_layer`` runs the same recurrence in one call per layer and window, with the same
integer operations (bit-identical: ``tests/quant/test_kernel.py``); the window's input GEMM and
the decoder stay ``torch._int_mm``.

Build: the source is compiled with the system C compiler (``$CC``, else ``cc``/``gcc``/``clang``)
as ``-O3 -march=native`` (falling back to portable flags) into a shared library cached under
``$AWD_KERNEL_CACHE``, else ``$XDG_CACHE_HOME/awd-lstm-lab/kernels`` (``~/.cache/...``), keyed
by the source, the flags, the compiler and the CPU, written to a temp name and renamed into
place; later runs load it in milliseconds. ctypes, not ``torch.utils.cpp_extension``: the
kernel needs no torch headers (ninja-free, a compile of about a second). Without a compiler
(or with ``AWD_INT_KERNEL=0``) the engine warns once and keeps the pure-torch path.
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

try:
    from torch.utils._python_dispatch import _get_current_dispatch_mode
except ImportError:  # pragma: no cover - a torch without it
    _get_current_dispatch_mode = None

if TYPE_CHECKING:
    from .engine import IntegerLSTMLayer

__all__ = ["Kernel", "cache_dir", "enabled", "layer_forward", "load", "set_enabled", "usable"]

SOURCE = Path(__file__).with_name("int_lstm.c")
ABI = 2
ENV_SWITCH = "AWD_INT_KERNEL"
_NATIVE_FLAGS = ("-O3", "-march=native", "-shared", "-fPIC", "-std=c11")
_PORTABLE_FLAGS = ("-O3", "-shared", "-fPIC", "-std=c11")

_lock = threading.Lock()
_loaded: dict[tuple[str, ...], Kernel | None] = {}
_enabled: bool | None = None  # None: follow the environment variable


@dataclass(frozen=True)
class Kernel:
    """A loaded library: the C function and whether it wants the VNNI-packed weight."""

    lib: ctypes.CDLL
    path: Path
    packed: bool

    def __post_init__(self) -> None:
        i, p, i64 = ctypes.c_int, ctypes.c_void_p, ctypes.c_int64
        fn = self.lib.awd_int_lstm_layer
        fn.restype = ctypes.c_int
        fn.argtypes = [i] * 6 + [p] * 14 + [i64, i64, i64, i, i, i, p, p, p]


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
        cmd = [cc, *flags, *defines, str(SOURCE), "-o", tmp]
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


def _build_and_load(defines: tuple[str, ...]) -> Kernel:
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (set CC, or install gcc)")
    source = SOURCE.read_bytes()
    errors = []
    for flags in (_NATIVE_FLAGS, _PORTABLE_FLAGS):
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
            return Kernel(lib, path, bool(lib.awd_packed()))
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            detail = getattr(exc, "stderr", "") or ""
            errors.append(f"{' '.join(flags)}: {exc} {detail}".strip())
    raise RuntimeError("; ".join(errors))


def load(defines: tuple[str, ...] = ()) -> Kernel | None:
    """The compiled kernel (built on first call, then cached), or None with a warning.

    ``defines`` are extra compiler arguments (tests build ``-DAWD_GENERIC``, the portable C
    loop, beside the native one).
    """
    with _lock:
        if defines not in _loaded:
            try:
                _loaded[defines] = _build_and_load(defines)
            except Exception as exc:  # noqa: BLE001 - any failure means: use the torch path
                warnings.warn(
                    f"integer LSTM kernel unavailable, using the pure-torch engine path: {exc}",
                    RuntimeWarning,
                    stacklevel=2,
                )
                _loaded[defines] = None
        return _loaded[defines]


def _dispatch_mode_active() -> bool:
    """A TorchDispatchMode (tracing, the dtype checks of the tests) must see every op."""
    return _get_current_dispatch_mode is not None and _get_current_dispatch_mode() is not None


def usable(layer: IntegerLSTMLayer, x: Tensor, h: Tensor, c: Tensor) -> bool:
    """Whether ``layer(x, (h, c))`` may run in the kernel: the switch on, the layer's own step
    (a subclass that overrides the step math keeps the torch path), CPU tensors of the engine's
    types and shapes, no dispatch mode, and a compiled kernel. Anything else takes the torch
    path, which also raises the errors for wrong inputs."""
    from .engine import IntegerLSTMLayer

    cls = type(layer)
    if not (
        enabled()
        and cls.step is IntegerLSTMLayer.step
        and cls.project_inputs is IntegerLSTMLayer.project_inputs
    ):
        return False
    B, H = (x.size(1) if x.dim() == 3 else -1), layer.hidden_size
    tensors = (x, h, c, layer.weight_ih, layer.weight_hh, layer.bias_x, layer.bias_h)
    return (
        all(t.device.type == "cpu" for t in tensors)
        and x.dim() == 3
        and x.size(0) > 0
        and B > 0
        and x.size(2) == layer.input_size
        and tuple(h.shape) == tuple(c.shape) == (B, H)
        and x.dtype == h.dtype == layer.weight_ih.dtype == layer.weight_hh.dtype == torch.int8
        and c.dtype == torch.int16
        and layer.bias_x.dtype == layer.bias_h.dtype == torch.int32
        and 2 <= layer.bits <= 8
        and 0 <= layer.cell_exponent <= 30
        and H <= 1 << 16  # (h + 128) W sums stay inside int32
        and not _dispatch_mode_active()
        and load() is not None
    )


class _Pack:
    """A layer's kernel operands (packed weight, direct tables), rebuilt if a buffer changes."""

    def __init__(self, layer: IntegerLSTMLayer, packed: bool) -> None:
        self.key = _pack_key(layer, packed)
        w = layer.weight_hh
        G, H = w.shape
        if packed:
            Kq, Gp = -(-H // 4), -(-G // 64) * 64
            padded = w.new_zeros((Gp, 4 * Kq))
            padded[:G, :H] = w
            self.weight = padded.view(Gp, Kq, 4).permute(1, 0, 2).contiguous()
            self.corr = (128 * w.to(torch.int32).sum(1, dtype=torch.int32)).contiguous()
            self.gp = Gp
        else:
            self.weight, self.corr, self.gp = w.contiguous(), None, G
        self.bias_x = layer.bias_x.contiguous()
        self.bias_h = layer.bias_h.contiguous()
        rx, rh, ro = layer.requantize_x, layer.requantize_h, layer.requantize_out
        self.rx = [_channelwise(t, G) for t in (rx.m0, rx.left, rx.right)]
        self.rh = [_channelwise(t, G) for t in (rh.m0, rh.left, rh.right)]
        self.out = [int(t.reshape(-1)[0]) for t in (ro.m0, ro.left, ro.right)]
        if any(t.numel() != 1 for t in (ro.m0, ro.left, ro.right)):
            raise ValueError("the output requantizer must be per tensor")
        self.tables = [_direct_table(lut) for lut in (layer.sigmoid, layer.tanh, layer.tanh_cell)]


def _channelwise(t: Tensor, channels: int) -> Tensor:
    return t.to(torch.int64).reshape(-1).expand(channels).contiguous()


def _direct_table(lut: torch.nn.Module) -> Tensor:
    """The 65,536-entry table of ``lut`` (itself when already direct)."""
    if not lut.interpolated and not lut.input_left_shift:
        return lut.table.contiguous()
    codes = torch.arange(-32768, 32768, dtype=torch.int16, device=lut.table.device)
    return lut(codes).contiguous()


def _pack_key(layer: IntegerLSTMLayer, packed: bool) -> tuple:
    tensors = [
        layer.weight_hh,
        layer.bias_x,
        layer.bias_h,
        layer.sigmoid.table,
        layer.tanh.table,
        layer.tanh_cell.table,
        layer.requantize_x.m0,
        layer.requantize_h.m0,
    ]
    return (packed, *((t.data_ptr(), t._version, tuple(t.shape)) for t in tensors))


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def layer_forward(
    layer: IntegerLSTMLayer, x: Tensor, h: Tensor, c: Tensor, kernel: Kernel | None = None
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """``layer.forward`` in the kernel: x int8 [T, B, I] -> (h int8 [T, B, H], (h_T, c_T))."""
    from .fixed_point import int_matmul

    kernel = kernel or load()
    if kernel is None:
        raise RuntimeError("the integer LSTM kernel is unavailable")
    cache = layer.__dict__.setdefault("_kernel_packs", {})
    pack = cache.get(kernel.packed)
    if pack is None or pack.key != _pack_key(layer, kernel.packed):
        pack = cache[kernel.packed] = _Pack(layer, kernel.packed)
    T, B, _ = x.shape
    H = layer.hidden_size
    acc_x = int_matmul(x.reshape(T * B, layer.input_size), layer.weight_ih.t()).contiguous()
    h0 = h.contiguous()
    c_out = c.clone(memory_format=torch.contiguous_format)
    h_out = torch.empty((T, B, H), dtype=torch.int8)
    args = (
        _ptr(acc_x),
        _ptr(h0),
        _ptr(c_out),
        _ptr(h_out),
        _ptr(pack.weight),
        _ptr(pack.corr),
        _ptr(pack.bias_x),
        _ptr(pack.bias_h),
        *(_ptr(t) for t in pack.rx),
        *(_ptr(t) for t in pack.rh),
        *pack.out,
        layer.cell_exponent,
        layer.hidden_zero_point,
        layer.bits,
        *(_ptr(t) for t in pack.tables),
    )

    def rows(begin: int, end: int) -> int:
        return kernel.lib.awd_int_lstm_layer(T, B, begin, end, H, pack.gp, *args)

    # Batch rows are independent: split them over torch's intra-op thread count (ctypes drops
    # the GIL during the call), one range in this thread, the others in the pool.
    parts = min(torch.get_num_threads(), B, _MAX_PARTS)
    bounds = [B * i // parts for i in range(parts + 1)]
    ranges = list(zip(bounds[:-1], bounds[1:], strict=True))
    futures = [_pool().submit(rows, lo, hi) for lo, hi in ranges[1:]]
    status = [rows(*ranges[0])] + [f.result() for f in futures]
    if any(status):
        raise MemoryError("integer LSTM kernel: scratch allocation failed")
    return h_out, (h_out[-1], c_out)


_MAX_PARTS = 64
_executor: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(thread_name_prefix="int-lstm")
        return _executor
