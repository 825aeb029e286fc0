"""Data pipeline: corpus files -> token-id cache -> ordered BPTT windows.

The names below are imported lazily (PEP 562), so ``import src.data.cache`` (e.g. a cache build
in a child process) loads numpy only, not torch and Lightning.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from src.data.bptt import Window, WindowIterable, batchify, sample_seq_len
    from src.data.cache import CorpusArrays, load_corpus
    from src.data.corpus import EOS, SPLITS, TOKENIZERS, UNK, Vocab, build_vocab, tokenize
    from src.data.datamodule import LMDataModule
    from src.data.doc_batches import DocBatch
    from src.data.documents import LabelledDataError
    from src.data.download import (
        SOURCES,
        CorpusSource,
        Download,
        DownloadError,
        Member,
        ensure_corpus,
    )
    from src.data.labelled import ClassifyDataModule

_EXPORTS = {
    "bptt": ("Window", "WindowIterable", "batchify", "sample_seq_len"),
    "cache": ("CorpusArrays", "load_corpus"),
    "corpus": ("EOS", "SPLITS", "TOKENIZERS", "UNK", "Vocab", "build_vocab", "tokenize"),
    "datamodule": ("LMDataModule",),
    "download": ("SOURCES", "CorpusSource", "Download", "DownloadError", "Member", "ensure_corpus"),
    "doc_batches": ("DocBatch",),
    "documents": ("LabelledDataError",),
    "labelled": ("ClassifyDataModule",),
}
_ORIGIN = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [
    "EOS",
    "SOURCES",
    "SPLITS",
    "TOKENIZERS",
    "UNK",
    "ClassifyDataModule",
    "CorpusArrays",
    "CorpusSource",
    "DocBatch",
    "Download",
    "DownloadError",
    "LMDataModule",
    "LabelledDataError",
    "Member",
    "Vocab",
    "Window",
    "WindowIterable",
    "batchify",
    "build_vocab",
    "ensure_corpus",
    "load_corpus",
    "sample_seq_len",
    "tokenize",
]


def __getattr__(name: str) -> Any:
    module = _ORIGIN.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
