"""The fused integer LSTM kernels: ``int_lstm.c``, compiled on first use and loaded with ctypes.

:class:`~src.quant.engine.IntegerLSTMLayer` runs a window step by step in torch (about 60 small
integer ops per layer and time step, launch-bound at small batch). The C function
``awd_int_lstm_layer`` runs the same recurrence in one call per layer and window, with the same
integer operations (bit-identical: ``tests/quant/test_kernel.py``); the window's input GEMM and
the decoder stay ``torch._int_mm``. :class:`~src.quant.engine_mlstm.IntegerMLSTMLayer` has its
twin, ``awd_int_mlstm_layer`` (peepholes, cell clip, projection; its three recurrent GEMMs on
the same VNNI GEMM; ``tests/quant/test_kernel_mlstm.py``). :func:`usable` and
:func:`layer_forward` take either layer.

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
from collections.abc import Callable
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
    from .engine_mlstm import IntegerMLSTMLayer

__all__ = ["Kernel", "cache_dir", "enabled", "layer_forward", "load", "set_enabled", "usable"]

SOURCE = Path(__file__).with_name("int_lstm.c")
ABI = 3
ENV_SWITCH = "AWD_INT_KERNEL"
_NATIVE_FLAGS = ("-O3", "-march=native", "-shared", "-fPIC", "-std=c11")
_PORTABLE_FLAGS = ("-O3", "-shared", "-fPIC", "-std=c11")

_lock = threading.Lock()
_loaded: dict[tuple[str, ...], Kernel | None] = {}
_enabled: bool | None = None  # None: follow the environment variable


class MLSTMArgs(ctypes.Structure):
    """``awd_mlstm_args`` of int_lstm.c, field for field (all 8 bytes wide: no padding)."""

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
    """A loaded library: the C functions and whether they want VNNI-packed weights."""

    lib: ctypes.CDLL
    path: Path
    packed: bool

    def __post_init__(self) -> None:
        i, p, i64 = ctypes.c_int, ctypes.c_void_p, ctypes.c_int64
        fn = self.lib.awd_int_lstm_layer
        fn.restype = ctypes.c_int
        fn.argtypes = [i] * 6 + [p] * 14 + [i64, i64, i64, i, i, i, p, p, p]
        fn = self.lib.awd_int_mlstm_layer
        fn.restype = ctypes.c_int
        fn.argtypes = [i, i, i, i, ctypes.POINTER(MLSTMArgs)]


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
            if lib.awd_mlstm_args_size() != ctypes.sizeof(MLSTMArgs):
                raise RuntimeError(f"{path}: awd_mlstm_args size != {ctypes.sizeof(MLSTMArgs)}")
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


def usable(layer: IntegerLSTMLayer | IntegerMLSTMLayer, x: Tensor, h: Tensor, c: Tensor) -> bool:
    """Whether ``layer(x, (h, c))`` may run in the kernel: the switch on, the layer's own step
    (a subclass that overrides the step math keeps the torch path), CPU tensors of the engine's
    types and shapes, no dispatch mode, and a compiled kernel. Anything else takes the torch
    path, which also raises the errors for wrong inputs."""
    from .engine import IntegerLSTMLayer
    from .engine_mlstm import IntegerMLSTMLayer

    if isinstance(layer, IntegerMLSTMLayer):
        return _mlstm_usable(layer, x, h, c)
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
        G = layer.weight_hh.shape[0]
        self.weight, self.corr, self.gp = _pack_weight(layer.weight_hh, packed)
        self.bias_x = layer.bias_x.contiguous()
        self.bias_h = layer.bias_h.contiguous()
        rx, rh, ro = layer.requantize_x, layer.requantize_h, layer.requantize_out
        self.rx = [_channelwise(t, G) for t in (rx.m0, rx.left, rx.right)]
        self.rh = [_channelwise(t, G) for t in (rh.m0, rh.left, rh.right)]
        self.out = [int(t.reshape(-1)[0]) for t in (ro.m0, ro.left, ro.right)]
        if any(t.numel() != 1 for t in (ro.m0, ro.left, ro.right)):
            raise ValueError("the output requantizer must be per tensor")
        self.tables = [_direct_table(lut) for lut in (layer.sigmoid, layer.tanh, layer.tanh_cell)]


def _pack_weight(w: Tensor, packed: bool) -> tuple[Tensor, Tensor | None, int]:
    """int8 ``w`` [G, K] -> (the kernel's weight, corr, the accumulator stride Gp).

    Packed (VNNI): int8 [Kq][Gp][4], K padded to ``4 Kq`` and G to a multiple of 64 with zeros,
    and ``corr = 128 sum_k W[j, k]`` (int32 [G]); else the row-major weight, None and G."""
    G, K = w.shape
    if not packed:
        return w.contiguous(), None, G
    Kq, Gp = -(-K // 4), -(-G // 64) * 64
    padded = w.new_zeros((Gp, 4 * Kq))
    padded[:G, :K] = w
    weight = padded.view(Gp, Kq, 4).permute(1, 0, 2).contiguous()
    corr = (128 * w.to(torch.int32).sum(1, dtype=torch.int32)).contiguous()
    return weight, corr, Gp


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
    layer: IntegerLSTMLayer | IntegerMLSTMLayer,
    x: Tensor,
    h: Tensor,
    c: Tensor,
    kernel: Kernel | None = None,
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """``layer.forward`` in the kernel: x int8 [T, B, I] -> (h int8 [T, B, H], (h_T, c_T))."""
    from .engine_mlstm import IntegerMLSTMLayer
    from .fixed_point import int_matmul

    kernel = kernel or load()
    if kernel is None:
        raise RuntimeError("the integer LSTM kernel is unavailable")
    if isinstance(layer, IntegerMLSTMLayer):
        return _mlstm_forward(layer, x, h, c, kernel)
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

    _run_rows(rows, B)
    return h_out, (h_out[-1], c_out)


def _run_rows(rows: Callable[[int, int], int], batch: int) -> None:
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


# ------------------------------------------------------------------------------------------
# The mLSTM (awd_int_mlstm_layer)
# ------------------------------------------------------------------------------------------


def _mlstm_usable(layer: IntegerMLSTMLayer, x: Tensor, h: Tensor, c: Tensor) -> bool:
    """:func:`usable` for an :class:`~src.quant.engine_mlstm.IntegerMLSTMLayer`."""
    from .engine_mlstm import IntegerMLSTMLayer

    cls = type(layer)
    if not (
        enabled()
        and cls.step is IntegerMLSTMLayer.step
        and cls.project_inputs is IntegerMLSTMLayer.project_inputs
        and cls._peephole is IntegerMLSTMLayer._peephole
    ):
        return False
    H, P = layer.hidden_size, layer.output_size
    projection = layer.weight_hr is not None
    weights = [layer.weight_ih, layer.weight_mx, layer.weight_mh, layer.weight_hm]
    biases = [layer.bias_x, layer.bias_u, layer.bias_v, layer.bias_m]
    if projection:
        weights.append(layer.weight_hr)
        biases.append(layer.bias_r)
    tensors = [x, h, c, *weights, *biases]
    if layer.peephole is not None:
        tensors.append(layer.peephole)
    if not (
        all(isinstance(t, Tensor) and t.device.type == "cpu" for t in tensors)
        and x.dim() == 3
        and x.size(0) > 0
        and x.size(1) > 0
        and x.size(2) == layer.input_size
    ):
        return False
    B = x.size(1)
    per_tensor = (layer.requantize_product, layer.requantize_out)
    return (
        tuple(h.shape) == (B, P)
        and tuple(c.shape) == (B, H)
        and x.dtype == h.dtype == torch.int8
        and c.dtype == torch.int16
        and all(w.dtype == torch.int8 for w in weights)
        and all(b.dtype == torch.int32 for b in biases)
        and (layer.peephole is None or layer.peephole.dtype == torch.int16)
        and (projection or P == H)
        and all(rq.m0.numel() == 1 for rq in per_tensor)
        and _bounds_ok(layer.cell_bounds, -32768, 32767)
        and _bounds_ok(layer.proj_bounds, -128, 127)
        and 2 <= layer.bits <= 8
        and 0 <= layer.cell_exponent <= 30
        and max(H, P) <= 1 << 16  # (x + 128) W sums stay inside int32
        and not _dispatch_mode_active()
        and load() is not None
    )


def _bounds_ok(bounds: object, lo: int, hi: int) -> bool:
    """No clip, or a pair of Python ints inside the clamped tensor's dtype."""
    if bounds is None:
        return True
    pair = tuple(bounds) if isinstance(bounds, (tuple, list)) else ()
    return len(pair) == 2 and all(isinstance(v, int) and lo <= v <= hi for v in pair)


def _requantizer_rows(rq: torch.nn.Module, channels: int) -> Tensor:
    """int64 [3, channels]: the rows m0, left, right of a Requantizer (per tensor: broadcast)."""
    return torch.stack([_channelwise(t, channels) for t in (rq.m0, rq.left, rq.right)]).contiguous()


def _mlstm_tensors(layer: IntegerMLSTMLayer) -> list[Tensor]:
    """Every tensor the mLSTM pack is derived from (its key)."""
    tensors = [
        layer.weight_ih,
        layer.weight_mx,
        layer.weight_mh,
        layer.weight_hm,
        layer.bias_x,
        layer.bias_u,
        layer.bias_v,
        layer.bias_m,
        layer.sigmoid.table,
        layer.tanh.table,
        layer.tanh_cell.table,
    ]
    requantizers = [layer.requantize_x, layer.requantize_u, layer.requantize_v]
    requantizers += [layer.requantize_m, layer.requantize_product, layer.requantize_out]
    if layer.peephole is not None:
        tensors.append(layer.peephole)
        requantizers.append(layer.requantize_peephole)
    if layer.weight_hr is not None:
        tensors += [layer.weight_hr, layer.bias_r]
        requantizers.append(layer.requantize_r)
    return tensors + [rq.m0 for rq in requantizers]  # (a Requantizer's buffers move together)


def _mlstm_key(layer: IntegerMLSTMLayer, packed: bool) -> list:
    """Compared (never hashed) with the pack's: storage, version, shape and dtype of every
    source tensor (a move to another device or dtype is new storage), and the Python
    constants."""
    return [
        packed,
        layer.cell_bounds,
        layer.proj_bounds,
        layer.bits,
        layer.cell_exponent,
        layer.product_zero_point,
        layer.output_zero_point,
        layer.hidden_zero_point,
        *[(t.data_ptr(), t._version, t.shape, t.dtype) for t in _mlstm_tensors(layer)],
    ]


class _MLSTMPack:
    """An mLSTM layer's kernel operands, rebuilt when a buffer (or a constant) changes: the
    concatenated input weight [5H, I] (one GEMM for a_x and u), the packed recurrent weights,
    requantizer rows, direct tables, and the argument struct's constant fields."""

    def __init__(self, layer: IntegerMLSTMLayer, packed: bool) -> None:
        self.key = _mlstm_key(layer, packed)
        H, P = layer.hidden_size, layer.output_size
        G = 4 * H
        self.weight_in = torch.cat([layer.weight_ih, layer.weight_mx]).contiguous()
        self.w_mh, self.corr_mh, gp_v = _pack_weight(layer.weight_mh, packed)
        self.w_hm, self.corr_hm, gp_m = _pack_weight(layer.weight_hm, packed)
        self.w_hr, self.corr_hr, gp_r = None, None, P
        self.bias_r = self.rq_r = None
        if layer.weight_hr is not None:
            self.w_hr, self.corr_hr, gp_r = _pack_weight(layer.weight_hr, packed)
            self.bias_r = layer.bias_r.contiguous()
            self.rq_r = _requantizer_rows(layer.requantize_r, P)
        self.biases = [t.contiguous() for t in (layer.bias_x, layer.bias_u, layer.bias_v)]
        self.biases.append(layer.bias_m.contiguous())
        self.rq = [
            _requantizer_rows(layer.requantize_x, G),
            _requantizer_rows(layer.requantize_u, H),
            _requantizer_rows(layer.requantize_v, H),
            _requantizer_rows(layer.requantize_m, G),
            _requantizer_rows(layer.requantize_product, 1),
            _requantizer_rows(layer.requantize_out, 1),
        ]
        self.peephole = self.rq_peephole = None
        if layer.peephole is not None:
            self.peephole = layer.peephole.contiguous()
            self.rq_peephole = _requantizer_rows(layer.requantize_peephole, 3)
        self.tables = [_direct_table(lut) for lut in (layer.sigmoid, layer.tanh, layer.tanh_cell)]
        cell, proj = layer.cell_bounds, layer.proj_bounds
        self.constants = {
            "hidden": H,
            "proj": P,
            "gp_v": gp_v,
            "gp_m": gp_m,
            "gp_r": gp_r,
            "cell_exponent": layer.cell_exponent,
            "bits": layer.bits,
            "product_zero_point": layer.product_zero_point,
            "output_zero_point": layer.output_zero_point,
            "hidden_zero_point": layer.hidden_zero_point,
            "peephole": int(layer.peephole is not None),
            "cell_clip": int(cell is not None),
            "cell_lo": 0 if cell is None else int(cell[0]),
            "cell_hi": 0 if cell is None else int(cell[1]),
            "projection": int(layer.weight_hr is not None),
            "proj_clip": int(proj is not None),
            "proj_lo": 0 if proj is None else int(proj[0]),
            "proj_hi": 0 if proj is None else int(proj[1]),
        }

    def args(self, acc_in: Tensor, h0: Tensor, c: Tensor, h_out: Tensor) -> MLSTMArgs:
        bias_x, bias_u, bias_v, bias_m = self.biases
        rq_x, rq_u, rq_v, rq_m, rq_product, rq_output = self.rq
        sigmoid, tanh, tanh_cell = self.tables
        tensors = {
            "acc_in": acc_in,
            "h0": h0,
            "c": c,
            "h_out": h_out,
            "w_mh": self.w_mh,
            "w_hm": self.w_hm,
            "w_hr": self.w_hr,
            "corr_mh": self.corr_mh,
            "corr_hm": self.corr_hm,
            "corr_hr": self.corr_hr,
            "bias_x": bias_x,
            "bias_u": bias_u,
            "bias_v": bias_v,
            "bias_m": bias_m,
            "bias_r": self.bias_r,
            "rq_x": rq_x,
            "rq_u": rq_u,
            "rq_v": rq_v,
            "rq_m": rq_m,
            "rq_r": self.rq_r,
            "rq_product": rq_product,
            "rq_output": rq_output,
            "peephole_w": self.peephole,
            "rq_peephole": self.rq_peephole,
            "sigmoid": sigmoid,
            "tanh_table": tanh,
            "tanh_cell": tanh_cell,
        }
        return MLSTMArgs(**self.constants, **{k: _ptr(t) for k, t in tensors.items()})


def _mlstm_forward(
    layer: IntegerMLSTMLayer, x: Tensor, h: Tensor, c: Tensor, kernel: Kernel
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    from .fixed_point import int_matmul

    cache = layer.__dict__.setdefault("_kernel_packs", {})
    pack = cache.get(kernel.packed)
    if pack is None or pack.key != _mlstm_key(layer, kernel.packed):
        pack = cache[kernel.packed] = _MLSTMPack(layer, kernel.packed)
    T, B, _ = x.shape
    flat = x.reshape(T * B, layer.input_size)
    acc_in = int_matmul(flat, pack.weight_in.t()).contiguous()  # [T B, 5H]: a_x, then u
    h0 = h.contiguous()
    c_out = c.clone(memory_format=torch.contiguous_format)
    h_out = torch.empty((T, B, layer.output_size), dtype=torch.int8)
    args = pack.args(acc_in, h0, c_out, h_out)
    ref = ctypes.byref(args)

    def rows(begin: int, end: int) -> int:
        return kernel.lib.awd_int_mlstm_layer(T, B, begin, end, ref)

    _run_rows(rows, B)
    return h_out, (h_out[-1], c_out)


_MAX_PARTS = 64
_executor: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(thread_name_prefix="int-lstm")
        return _executor
