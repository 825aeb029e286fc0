"""``+transfer.ckpt_path``: the checkpoint's recorded tokenizer and direction must be the run's.

A language model's words are the tokens of its tokenizer (``data.tokenizer``, saved in its
hyperparameters; a checkpoint without one was trained with ``word``). Transferring it into a
run that splits text otherwise would match embedding rows to other words, so the run is refused
at start, naming both tokenizers. The same holds for ``data.reverse``: a backward language
model's layers read text right to left.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import ConfigError


def check_transfer_tokenizer(data: dict[str, Any]) -> list[ConfigError]:
    """An error for each of ``data.tokenizer`` and ``data.reverse`` that ``transfer.ckpt_path``
    was trained with otherwise (a missing or unreadable file is left to the path rule and to
    the run)."""
    path = (data.get("transfer") or {}).get("ckpt_path")
    if not isinstance(path, str) or not Path(path).is_file():
        return []
    from src.training.checkpoint import read_checkpoint  # torch: only when a path is given
    from src.training.transfer import checkpoint_reverse, checkpoint_tokenizer

    run_data = data.get("data") or {}
    ours = str(run_data.get("tokenizer") or "word")
    try:
        ckpt = read_checkpoint(Path(path))
    except ValueError:
        return []  # not a checkpoint: the run names the problem when it reads it
    errors = []
    theirs = checkpoint_tokenizer(ckpt)
    if theirs != ours:
        msg = (
            f"the checkpoint transfer.ckpt_path={path} was trained with data.tokenizer={theirs}; "
            f"set data.tokenizer={theirs} (its words are that tokenizer's)"
        )
        errors.append(ConfigError("data.tokenizer", ours, message=msg))
    backward, reverse = checkpoint_reverse(ckpt), bool(run_data.get("reverse", False))
    if backward != reverse:
        flag = str(backward).lower()
        how = "backwards (a backward language model)" if backward else "forwards"
        msg = f"the checkpoint transfer.ckpt_path={path} reads text {how}; set data.reverse={flag}"
        errors.append(ConfigError("data.reverse", reverse, message=msg))
    return errors
