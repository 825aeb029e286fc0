"""Hydra's composition errors as the same one line, and the entry points' exit on errors."""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from .errors import EXIT_CODE, NO_VALUE, ConfigError, _one_line
from .validate import _fields, _unknown_key, validate


def from_hydra(ex: BaseException) -> ConfigError | None:
    """One :class:`ConfigError` for a composition error raised by Hydra, else None."""
    from hydra.errors import (
        ConfigCompositionException,
        MissingConfigException,
        OverrideParseException,
    )

    if isinstance(ex, OverrideParseException):
        key, _, value = str(ex.override).partition("=")
        reason = str(ex.message).splitlines()[0] if str(ex.message) else "syntax error"
        return ConfigError(
            key or str(ex.override),
            value if value else NO_VALUE,
            message=f"cannot parse this override ({reason}); expected key=value in Hydra's "
            "override grammar (quote values with special characters)",
        )
    if isinstance(ex, MissingConfigException):
        missing = str(ex.missing_cfg_file or "")
        group, _, option = missing.rpartition("/")
        key, value = (group, option) if group else (missing, NO_VALUE)
        if ex.options:
            return ConfigError(key, value, f"one of {', '.join(ex.options)}")
        return ConfigError(key, value, message=_first_lines(str(ex)))
    if not isinstance(ex, ConfigCompositionException):
        return None
    cause = ex.__cause__
    if not isinstance(cause, OmegaConfBaseException) or not getattr(cause, "full_key", None):
        text = _first_lines(str(ex))
        found = re.search(r"'([\w./+~-]+)'", text)
        return ConfigError(found.group(1) if found else "<config>", message=text)
    key = str(cause.full_key)
    value = _override_value(str(ex), key)
    msg = _one_line(str(getattr(cause, "msg", "") or cause).split("\n    full_key:")[0])
    if re.match(r"Key '([^']+)' (is )?not in", msg):
        parent = getattr(cause, "parent_node", None)
        known = [str(k) for k in parent] if isinstance(parent, DictConfig) else []
        schema = getattr(cause, "object_type", None)
        known = known or _fields(schema)
        where = key.rsplit(".", 1)[0] if "." in key else "the top level"
        error = _unknown_key(key, value, known, where)
        if not dataclasses.is_dataclass(schema) and value is not NO_VALUE:  # a free-form group
            error = ConfigError(key, value, f"{error.accepted}; to add a key: +{key}={value}")
        return error
    accepted = _accepted_from(msg)
    return ConfigError(key, value, accepted) if accepted else ConfigError(key, value, message=msg)


def _first_lines(text: str) -> str:
    lines = []
    for line in text.splitlines():
        if line.startswith("Config search path"):
            break
        lines.append(line)
    return _one_line(" ".join(lines))


def _override_value(message: str, key: str) -> Any:
    for pattern in (r"override ([^\s=]+)=(.*)", r"use \+([^\s=]+)=(.*)"):
        for line in message.splitlines():
            found = re.search(pattern, line)
            if found and found.group(1).lstrip("+~") == key:
                return found.group(2)
    return NO_VALUE


_TYPE_NAMES = {
    "Integer": "an integer",
    "Float": "a number",
    "Boolean": "true or false",
    "String": "a string",
}


def _accepted_from(msg: str) -> str | None:
    found = re.search(r"could not be converted to (\w+)", msg)
    if found:
        return _TYPE_NAMES.get(found.group(1), found.group(1))
    found = re.search(r"expected one of (\[.*?\])", msg)
    if found:
        return f"one of {found.group(1)}"
    if "is not a ListConfig, list or tuple" in msg:
        return "a list, e.g. [a,b]"
    if "Cannot convert" in msg and "to string" in msg:
        return "a string"
    if "Non optional field cannot be assigned None" in msg or "field cannot be None" in msg:
        return "a value (not null)"
    return None


def _full_error() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def report(ex: BaseException) -> bool:
    """Print ``ex`` as one line per error on stderr if it is a configuration error (or a failed
    corpus download, whose message names the URL and the fixes)."""
    from src.data.download import DownloadError

    if isinstance(ex, DownloadError):
        sys.stdout.flush()
        print(f"download error: {ex}", file=sys.stderr, flush=True)
        return True
    error = ex if isinstance(ex, ConfigError) else from_hydra(ex)
    if error is None:
        return False
    sys.stdout.flush()
    for line in error.lines:
        print(line, file=sys.stderr)
    sys.stderr.flush()
    return True


def _exit_on_config_error(func: Callable[[], Any]) -> Any:
    try:
        return func()
    except Exception as ex:
        if _full_error() or not report(ex):
            raise
        raise SystemExit(EXIT_CODE) from None


def check_config(cfg: DictConfig) -> None:
    """:func:`validate`, then :func:`~src.checks.machine.check_machine` (accelerator, corpus
    folder, checkpoint files), for an entry point's task function (the first thing it does): on
    an error print one line per error and exit with status 2 (``HYDRA_FULL_ERROR=1``: raise).

    The exit happens inside the task, so Hydra adds no "Error executing job" line."""
    from .machine import check_machine

    _exit_on_config_error(lambda: (validate(cfg), check_machine(cfg)))


def exit_on_config_error(func: Callable[[], Any]) -> Any:
    """``func()``; a :class:`ConfigError` it raises ends the process with one line and status 2
    (for checks inside a task, e.g. :func:`~src.checks.files.load_checkpoint`)."""
    return _exit_on_config_error(func)


def exit_with(errors: list[ConfigError]) -> None:
    """Nothing if ``errors`` is empty, else one line each and exit with status 2."""
    if errors:
        _exit_on_config_error(lambda: raise_errors(errors))


def raise_errors(errors: list[ConfigError]) -> None:
    """Nothing if ``errors`` is empty, else raise the first with the others attached."""
    if errors:
        errors[0].others = errors[1:]
        raise errors[0]


@contextmanager
def one_line_config_errors() -> Iterator[None]:
    """Inside: configuration errors end the process with one line each and status 2.

    ``@hydra.main`` runs composition and the task inside ``run_and_report``, which prints a
    traceback and exits 1 for any exception; this wraps each such call so that Hydra's
    composition errors and :class:`ConfigError` are reported first. Every other exception
    keeps Hydra's report, and ``HYDRA_FULL_ERROR=1`` the full traceback.
    """
    import hydra._internal.utils as hydra_utils

    original = hydra_utils.run_and_report

    def run_and_report(func: Callable[[], Any]) -> Any:
        return original(lambda: _exit_on_config_error(func))

    hydra_utils.run_and_report = run_and_report
    try:
        yield
    finally:
        hydra_utils.run_and_report = original
