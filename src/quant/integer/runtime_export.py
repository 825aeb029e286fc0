"""The standalone C runtime of an integer model (``python -m src.export format=c out=DIR``).

:func:`write_runtime` writes ``DIR/model.bin`` (:mod:`.model_bin`) and copies the runtime's C99
sources beside it: ``awd_int8.c`` (command line, tokenizer, scoring, sampling), ``awd_model.c``
/ ``.h`` (the file reader and the network), and the recurrence the engine itself runs,
``int_lstm.c`` / ``awd_kernel.h`` (one copy of that arithmetic: :mod:`.kernel` compiles the same
file for ctypes), with a ``Makefile``. :func:`build` compiles them (tests, benchmarks).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from src.utils.io import atomic_write

from . import model_bin
from .kernel import RUNTIME_DIR, compiler
from .lm import IntegerLM

__all__ = ["BINARY", "BUILD_COMMAND", "SOURCES", "build", "strip_size", "write_runtime"]

SOURCES = ("awd_int8.c", "awd_model.c", "int_lstm.c", "awd_model.h", "awd_kernel.h", "Makefile")
BINARY = "awd_int8"
_C_FILES = ("awd_int8.c", "awd_model.c", "int_lstm.c")
#: The one-line build (the Makefile's default target).
BUILD_COMMAND = f"cc -std=c99 -O3 -march=native -o {BINARY} {' '.join(_C_FILES)} -lm"


def write_runtime(
    out_dir: str | os.PathLike[str], lm: IntegerLM, meta: dict[str, Any], tables: str
) -> dict[str, Any]:
    """``model.bin`` and the runtime's sources in ``out_dir`` (each written atomically)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file: format=c writes a folder (out=DIR)")
    out.mkdir(parents=True, exist_ok=True)
    size = model_bin.write(out / "model.bin", lm, meta, tables)
    for name in SOURCES:
        data = (RUNTIME_DIR / name).read_bytes()
        atomic_write(out / name, lambda fh, data=data: fh.write(data))
    umask = os.umask(0)
    os.umask(umask)
    for name in ("model.bin", *SOURCES):  # temp files are created 0600: the folder is to share
        os.chmod(out / name, 0o666 & ~umask)
    return {"model_bin": str(out / "model.bin"), "model_bin_bytes": size, "files": list(SOURCES)}


def build(
    src_dir: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    generic: bool = False,
    strip: bool = False,
    isa: str = "native",
) -> Path:
    """Compile the runtime in ``src_dir`` (a folder written by :func:`write_runtime`, or the
    package's own ``runtime/``) into ``out`` (default ``src_dir/awd_int8``): the Makefile's
    native flags, the portable ones if those fail; ``generic``: the plain C loops
    (``-DAWD_GENERIC``, as ``make portable``); ``isa="avx2"``: ``-march=x86-64-v3`` (``make
    avx2``: an AVX2-only CPU's code). Raises RuntimeError without a C compiler."""
    cc = compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (set CC, or install gcc)")
    src = Path(src_dir)
    target = Path(out) if out is not None else src / BINARY
    files = [str(src / name) for name in _C_FILES]
    march = "-march=x86-64-v3" if isa == "avx2" else "-march=native"
    attempts = [["-O3", "-DAWD_GENERIC"]] if generic else [["-O3", march], ["-O3"]]
    errors = []
    for flags in attempts:
        cmd = [cc, "-std=c99", *flags, *(["-s"] if strip else []), "-o", str(target), *files, "-lm"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if proc.returncode == 0:
            return target
        errors.append(f"{' '.join(cmd)}: {proc.stderr.strip()}")
    raise RuntimeError("; ".join(errors))


def strip_size(binary: str | os.PathLike[str]) -> int | None:
    """Size in bytes of a stripped copy of ``binary`` (None without ``strip``)."""
    tool = shutil.which("strip")
    if tool is None:
        return None
    copy = Path(f"{binary}.stripped")
    shutil.copyfile(binary, copy)
    try:
        subprocess.run([tool, str(copy)], check=True, capture_output=True, timeout=60)
        return copy.stat().st_size
    finally:
        copy.unlink(missing_ok=True)
