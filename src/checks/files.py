"""Checkpoint files named by the config: one line saying what the file is, and the fix.

A ``torch.save`` file is a zip archive holding ``<name>/data.pkl`` (or, from torch < 1.6, a
pickle stream): anything else is not a checkpoint, and a zip archive without its end record was
cut short. :func:`checkpoint_problem` looks only at the file's first and last bytes;
:func:`load_checkpoint` is the loader for entry points (``src.predict`` and the others): it
reads the file and raises :class:`ConfigError` instead of torch's traceback.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

from .errors import ConfigError

#: the first bytes of a zip archive, and of a pickle stream (protocol 2 or later)
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_MAGIC = b"\x80"

_FIX = "pass ckpt_path=<run dir>/checkpoints/best.ckpt (or last.ckpt)"


def checkpoint_problem(path: Path) -> str | None:
    """Why ``path`` is not a ``torch.save`` file (missing, a folder, empty, cut short, another
    kind of file), else None. Reads at most the head and the zip directory."""
    path = Path(path).expanduser()
    if path.is_dir():
        inside = path / "checkpoints" / "last.ckpt"
        hint = f"pass ckpt_path={inside}" if inside.is_file() else _FIX
        return f"is a folder, not a checkpoint file; {hint}"
    if not path.is_file():
        return f"does not exist; {_FIX}"
    size = path.stat().st_size
    if size == 0:
        return f"is empty (0 bytes), not a checkpoint; {_FIX}"
    with path.open("rb") as f:
        head = f.read(4)
    if head.startswith(_PICKLE_MAGIC):
        return None  # the legacy (torch < 1.6) format: read by torch.load
    if head != _ZIP_MAGIC:
        return f"is not a checkpoint (not a file written by torch.save); {_FIX}"
    if not zipfile.is_zipfile(path):
        return (
            f"is truncated ({size:,} bytes, the end of its zip archive is missing): use another "
            "checkpoint of the run (last.ckpt / best.ckpt) or retrain"
        )
    with zipfile.ZipFile(path) as archive:
        if not any(name.endswith("data.pkl") for name in archive.namelist()):
            return f"is a zip archive, not a checkpoint written by torch.save; {_FIX}"
    return None


def load_checkpoint(path: str | Path, key: str = "ckpt_path") -> Any:
    """``torch.load`` of the file that config key ``key`` names (on the CPU); raise
    :class:`ConfigError` with one line naming the key, the file and the fix when it is not a
    readable checkpoint. Entry points call it before anything else reads the file."""
    import torch

    problem = checkpoint_problem(Path(path))
    if problem is not None:
        raise ConfigError(key, str(path), message=problem)
    try:
        return torch.load(Path(path).expanduser(), map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError) as ex:
        reason = str(ex).splitlines()[0] if str(ex) else type(ex).__name__
        raise ConfigError(
            key,
            str(path),
            message=f"is corrupt ({type(ex).__name__}: {reason}); use another checkpoint of the "
            "run (last.ckpt / best.ckpt) or retrain",
        ) from ex


def content_problem(path: Path, exports: bool = False) -> str | None:
    """Why a ``torch.save`` file holds no Lightning checkpoint (a ``state_dict``; with
    ``exports``, also a file of ``python -m src.export``), else None. A zip file is opened with
    ``mmap``: its tensors are not read."""
    import torch

    with path.open("rb") as f:
        zipped = f.read(4) == _ZIP_MAGIC
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False, mmap=zipped)
    except Exception as ex:  # noqa: BLE001 - any failure to read is the file's problem
        reason = str(ex).splitlines()[0] if str(ex) else type(ex).__name__
        return f"is corrupt ({type(ex).__name__}: {reason}); use another checkpoint or retrain"
    if isinstance(obj, dict) and ("state_dict" in obj or (exports and "format" in obj)):
        return None
    what = "an exported model" if isinstance(obj, dict) and "format" in obj else "no state_dict"
    return f"is a torch.save file holding {what}, not a checkpoint of src.train; {_FIX}"


def checkpoint_errors(items: list[tuple[str, Any]], exports: bool = False) -> list[ConfigError]:
    """One error per (key, path) whose file is not a checkpoint: :func:`checkpoint_problem`,
    then :func:`content_problem`."""
    errors = []
    for key, value in items:
        path = Path(str(value)).expanduser()
        problem = checkpoint_problem(path) or content_problem(path, exports)
        if problem is not None:
            errors.append(ConfigError(key, value, message=problem))
    return errors
