"""The one-line configuration error: the full key, the value given, what is accepted."""

from __future__ import annotations

from typing import Any

#: exit status of a run stopped by a configuration error (argparse's, for bad arguments)
EXIT_CODE = 2


class _NoValue:
    def __repr__(self) -> str:
        return "<no value>"


NO_VALUE: Any = _NoValue()


class ConfigError(ValueError):
    """A bad configuration value: the full ``key``, the ``value`` given and what is ``accepted``.

    ``message`` replaces "expected <accepted>" when a reused check phrases it otherwise.
    ``others`` holds the further errors :func:`validate` found in the same config.
    """

    def __init__(
        self, key: str, value: Any = NO_VALUE, accepted: str = "", *, message: str | None = None
    ) -> None:
        self.key = key
        self.value = value
        self.accepted = accepted or (message or "")
        self.message = message
        self.others: list[ConfigError] = []
        super().__init__(self.line())

    def line(self) -> str:
        where = self.key if self.value is NO_VALUE else f"{self.key}={show(self.value)}"
        what = self.message if self.message is not None else f"expected {self.accepted}"
        return _one_line(f"config error: {where}: {what}")

    @property
    def lines(self) -> list[str]:
        return [self.line(), *(e.line() for e in self.others)]

    def __str__(self) -> str:
        return "\n".join(self.lines)


def show(value: Any) -> str:
    """A value as it would be written on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value and not any(c.isspace() for c in value) else repr(value)
    return repr(value)


def _one_line(text: str) -> str:
    return " ".join(text.split())
