"""What the config asks of this machine, checked before any data is read or model built:
the accelerator is present, the corpus folder is there (or can be downloaded), and every
checkpoint file the config names is a checkpoint. One :class:`ConfigError` per problem.

:func:`~src.checks.validate.problems` checks values alone (and passes on any machine); these
checks depend on the machine and its files, so an entry point runs them after it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from .errors import ConfigError
from .files import checkpoint_errors
from .rules import CKPT_SHORTCUTS
from .validate import _kind, _resolve


def _unavailable(name: str) -> str | None:
    """Why Lightning's accelerator ``name`` cannot run here, else None."""
    from lightning.pytorch.accelerators import AcceleratorRegistry

    names = ["cuda", "mps"] if name == "gpu" else [name]
    reasons = []
    for entry in names:
        if entry not in AcceleratorRegistry:
            return None  # an unknown name is the value rules' business
        try:
            if AcceleratorRegistry[entry]["accelerator"].is_available():
                return None
            reasons.append(f"no {entry} device")
        except (ImportError, ModuleNotFoundError, RuntimeError) as ex:
            reasons.append(str(ex).splitlines()[0])
    return "; ".join(reasons)


def available_accelerators() -> list[str]:
    """The accelerator names that can run on this machine (``auto`` first)."""
    from lightning.pytorch.accelerators import AcceleratorRegistry

    names = [n for n in sorted(AcceleratorRegistry.available_accelerators()) if not _unavailable(n)]
    if "cuda" in names or "mps" in names:
        names.append("gpu")
    return ["auto", *names]


def accelerator_errors(key: str, name: Any) -> list[ConfigError]:
    """``key`` names an accelerator this machine lacks (``trainer.accelerator=tpu``)."""
    if not isinstance(name, str) or name == "auto":
        return []
    why = _unavailable(name)
    if why is None:
        return []
    have = ", ".join(available_accelerators())
    return [ConfigError(key, name, message=f"not available on this machine ({why}); use {have}")]


def corpus_errors(values: dict[str, Any], key: str = "data.corpus") -> list[ConfigError]:
    """The data settings ``values`` (``corpus``, ``data_dir``, ``download``) must name a folder
    with train/valid/test.txt, or a corpus the project downloads (``download`` on). ``key``:
    the config key the line names (``src.eval`` reads the corpus from ``paths.data_dir``)."""
    from src.data.corpus import SPLITS
    from src.data.download import SOURCES

    if "format" in values or not values.get("corpus"):
        return []  # labelled data (its own files), or no corpus (the value rules say so)
    name, root = str(values["corpus"]), Path(str(values.get("data_dir", ""))).expanduser()
    folder, value = root / name, name if key == "data.corpus" else str(root)
    missing = [s for s in SPLITS if not (folder / f"{s}.txt").is_file()]
    empty = [s for s in SPLITS if s not in missing and (folder / f"{s}.txt").stat().st_size == 0]
    if empty:
        message = f"corpus file {folder / empty[0]}.txt is empty; write its text there"
        return [ConfigError(key, value, message=message)]
    if not missing or (name in SOURCES and values.get("download", True)):
        return []  # present, or fetched by the data module
    files = "has no " + ", ".join(f"{s}.txt" for s in missing) if folder.is_dir() else "is missing"
    fixes = ["set paths.data_dir to the folder that holds it (or AWD_DATA_DIR)"]
    if name in SOURCES and key == "data.corpus":
        fixes.append("or data.download=true to fetch it")
    else:
        fixes.insert(0, f"put train.txt, valid.txt and test.txt in {folder}")
    message = f"corpus folder {folder} {files}; {', '.join(fixes)}"
    return [ConfigError(key, value, message=message)]


def _is_file_path(ckpt: str, onnx_ok: bool) -> bool:
    """A local torch checkpoint path: not a Lightning shortcut, URL or (``onnx_ok``) .onnx file."""
    shortcut = ckpt in CKPT_SHORTCUTS or ckpt.startswith("registry:") or "://" in ckpt
    onnx = onnx_ok and ckpt.endswith(".onnx") and Path(ckpt).expanduser().is_file()
    return not shortcut and not onnx


def _checkpoint_keys(data: dict[str, Any], kind: str) -> list[tuple[str, Any]]:
    """(key, path) of the checkpoint files a config of ``kind`` names."""
    items = []
    ckpt = data.get("ckpt_path")
    if isinstance(ckpt, str) and _is_file_path(ckpt, onnx_ok=kind == "eval"):
        items.append(("ckpt_path", ckpt))
    transfer = (data.get("transfer") or {}).get("ckpt_path")
    if isinstance(transfer, str):
        items.append(("transfer.ckpt_path", transfer))
    for name, node in (data.get("callbacks") or {}).items():
        if isinstance(node, dict) and isinstance(node.get("ckpt_path"), str):
            items.append((f"callbacks.{name}.ckpt_path", node["ckpt_path"]))
    return items


def machine_problems(data: dict[str, Any], kind: str) -> list[ConfigError]:
    """Every problem of a resolved config ``data`` (of entry point ``kind``) on this machine."""
    errors = []
    if kind == "train":
        accelerator = (data.get("trainer") or {}).get("accelerator")
        errors += accelerator_errors("trainer.accelerator", accelerator)
        values = data.get("data")
        errors += corpus_errors(values) if isinstance(values, dict) else []
    elif kind == "eval":
        errors += accelerator_errors("accelerator", data.get("accelerator"))
    errors += checkpoint_errors(_checkpoint_keys(data, kind), exports=kind in ("eval", "export"))
    return errors


def check_machine(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` (the rest in ``.others``) if ``cfg`` asks what this machine
    lacks (call it after :func:`~src.checks.validate.validate`)."""
    data, errors = _resolve(cfg)
    errors = errors if data is None else machine_problems(data, _kind(cfg))
    if errors:
        errors[0].others = errors[1:]
        raise errors[0]
