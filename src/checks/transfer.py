"""``+transfer.ckpt_path``: the checkpoint's recorded tokenizer must be the run's.

A language model's words are the tokens of its tokenizer (``data.tokenizer``, saved in its
hyperparameters; a checkpoint without one was trained with ``word``). Transferring it into a
run that splits text otherwise would match embedding rows to other words, so the run is refused
at start, naming both tokenizers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import ConfigError


def check_transfer_tokenizer(data: dict[str, Any]) -> list[ConfigError]:
    """One error when ``transfer.ckpt_path`` was trained with another ``data.tokenizer``
    (a missing or unreadable file is left to the path rule and to the run)."""
    path = (data.get("transfer") or {}).get("ckpt_path")
    if not isinstance(path, str) or not Path(path).is_file():
        return []
    from src.training.checkpoint import read_checkpoint  # torch: only when a path is given
    from src.training.transfer import checkpoint_tokenizer

    ours = str((data.get("data") or {}).get("tokenizer") or "word")
    try:
        theirs = checkpoint_tokenizer(read_checkpoint(Path(path)))
    except ValueError:
        return []  # not a checkpoint: the run names the problem when it reads it
    if theirs == ours:
        return []
    msg = (
        f"the checkpoint transfer.ckpt_path={path} was trained with data.tokenizer={theirs}; "
        f"set data.tokenizer={theirs} (its words are that tokenizer's)"
    )
    return [ConfigError("data.tokenizer", ours, message=msg)]
