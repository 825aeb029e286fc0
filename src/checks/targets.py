"""``_target_`` nodes of a composed train config (trainer, its plugins, loggers, callbacks):
the target imports, every key is one of its arguments, and no required argument is missing."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Iterator
from typing import Any

from .errors import ConfigError


def target_nodes(data: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    trainer = data.get("trainer")
    if isinstance(trainer, dict):
        yield "trainer", trainer
        for i, plugin in enumerate(trainer.get("plugins") or []):
            if isinstance(plugin, dict) and "_target_" in plugin:
                yield f"trainer.plugins.{i}", plugin
    for group in ("logger", "callbacks"):
        node = data.get(group)
        if isinstance(node, dict):
            for name, entry in node.items():
                if isinstance(entry, dict) and "_target_" in entry:
                    yield f"{group}.{name}", entry


def _locate(path: str) -> Any:
    """The object a ``_target_`` names (Hydra's ``get_object`` logs an error line first)."""
    import importlib

    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(f"cannot import {path!r}")


#: arguments that src.train passes itself when it instantiates these nodes
PASSED_BY_CODE = {"trainer": ("callbacks", "logger")}


def check_target(key: str, node: dict[str, Any]) -> list[ConfigError]:
    """The ``_target_`` imports, and every key is one of its arguments (and none is missing)."""
    target = node.get("_target_")
    try:
        obj = _locate(str(target))
        signature = inspect.signature(obj)
    except (ImportError, AttributeError, ValueError, TypeError):
        return [ConfigError(f"{key}._target_", target, "an importable class or function")]
    params = signature.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return []
    names = [n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
    errors = []
    for name, value in node.items():
        if not name.startswith("_") and name not in params:
            close = difflib.get_close_matches(name, names, n=1)
            hint = f"did you mean {close[0]}?" if close else "see its signature"
            errors.append(ConfigError(f"{key}.{name}", value, f"an argument of {target} ({hint})"))
    if node.get("_partial_"):  # a partial: the code passes the rest
        return errors
    passed = PASSED_BY_CODE.get(key, ())
    for name, p in params.items():
        required = p.default is inspect.Parameter.empty and p.kind in (
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            inspect.Parameter.KEYWORD_ONLY,
        )
        if required and name not in node and name not in passed:
            errors.append(
                ConfigError(f"{key}.{name}", message=f"missing: a required argument of {target}")
            )
    return errors
