"""Data pipeline: corpus files -> token-id cache -> ordered BPTT windows."""

from src.data.bptt import Window, WindowIterable, batchify, sample_seq_len
from src.data.cache import CorpusArrays, load_corpus
from src.data.corpus import EOS, SPLITS, TOKENIZERS, UNK, Vocab, build_vocab, tokenize
from src.data.datamodule import LMDataModule
from src.data.download import (
    SOURCES,
    CorpusSource,
    Download,
    DownloadError,
    Member,
    ensure_corpus,
)

__all__ = [
    "EOS",
    "SOURCES",
    "SPLITS",
    "TOKENIZERS",
    "UNK",
    "CorpusArrays",
    "CorpusSource",
    "Download",
    "DownloadError",
    "LMDataModule",
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
