"""`ClassifyDataModule`: labelled documents (`data=csv`, `data=wt2_sections`) for a classifier.

Documents are read and tokenized in `setup` (WikiText-2's labelled paragraphs take about 0.3 s;
no cache). Ids come from the vocabulary given (the encoder's, from a language-model checkpoint;
unknown words -> `<unk>`) or, when none is given, from the train split (`<unk>`, the words seen
`min_freq` times, first-seen order). Either way `<unk>` and then `<pad>` are appended when
absent, so the vocabulary may be one or two entries longer than the encoder's; existing ids
never move. Classes are sorted by name. Batches: `DocBatch` (`src/data/doc_batches.py`), end
padded; training batches in fastai's sortish order, evaluation batches longest first.
With ``data.train_subset=N`` train is a stratified subset of N documents (``data.subset_seed``;
`src/data/subsets.py`, the baseline's too): classes still come from the whole train split, the
built vocabulary from the subset; the rest is `unlabelled_train`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from src.data.corpus import SPLITS, UNK, Vocab
from src.data.doc_batches import DocBatch, DocBatches
from src.data.documents import (
    PAD,
    EncodedSplit,
    LabelledDataError,
    RawSplit,
    build_doc_vocab,
    class_names,
    encode_split,
    read_csv_folder,
    with_specials,
)
from src.data.download import ensure_corpus
from src.data.subsets import split_train
from src.data.tokenizers import check_tokenizer
from src.data.train_position import TrainPosition
from src.data.wt2_sections import read_sections

__all__ = ["ClassifyDataModule", "DocBatch", "LabelledDataError"]

log = logging.getLogger(__name__)
FORMATS = ("csv", "wt2_sections")
TRUNCATE = ("head", "tail")


class ClassifyDataModule(TrainPosition, L.LightningDataModule):
    """Labelled documents as `DocBatch`es. The constructor takes the keys of
    `LabelledDataConfig` (src/config.py) and checks them without reading anything."""

    char_level = False  # read by src/train.py: classification reports no bits per character

    def __init__(
        self,
        *,
        format: str = "csv",  # noqa: A002  (the config key)
        path: str | None = None,
        corpus: str = "wikitext-2",
        data_dir: str = ".",
        cache_dir: str = ".",
        download: bool = True,
        url_overrides: Mapping[str, str] | None = None,
        batch_size: int = 64,
        eval_batch_size: int = 64,
        test_batch_size: int = 64,
        bptt: int = 72,
        max_len: int = 1440,
        truncate: str = "head",
        min_freq: int = 2,
        num_classes: int | None = None,
        tokenizer: str = "word",
        char_level: bool = False,
        variable_bptt: bool = True,  # the language model's keys, inherited from DataConfig:
        bptt_p: float = 0.95,  # accepted and unused
        bptt_std: float = 5.0,
        min_bptt: int = 5,
        train_subset: int | None = None,
        subset_seed: int = 0,
        reverse: bool = False,
        seed: int,
        vocab: Vocab | list[str] | None = None,
    ) -> None:
        super().__init__()
        format, truncate, tokenizer = (_plain(v) for v in (format, truncate, tokenizer))
        _check(format in FORMATS, "data.format", f"one of [{', '.join(FORMATS)}]", format)
        _check(truncate in TRUNCATE, "data.truncate", f"one of [{', '.join(TRUNCATE)}]", truncate)
        check_tokenizer(tokenizer)  # a known name, and its library installed
        wikitext_form = format == "csv" or tokenizer in ("word", "wikitext")
        rule = "one of [word, wikitext] for data=wt2_sections (WikiText's own tokens)"
        _check(wikitext_form, "data.tokenizer", rule, tokenizer)
        _check(not char_level, "data.char_level", "false for labelled data", char_level)
        for key, value in [
            ("batch_size", batch_size),
            ("eval_batch_size", eval_batch_size),
            ("test_batch_size", test_batch_size),
            ("bptt", bptt),
            ("max_len", max_len),
            ("min_freq", min_freq),
        ]:
            _check(_positive_int(value), f"data.{key}", "a positive integer", value)
        ok = train_subset is None or _positive_int(train_subset)
        _check(ok, "data.train_subset", "a positive integer or null (all of train)", train_subset)
        ok = isinstance(subset_seed, int) and not isinstance(subset_seed, bool)
        _check(ok, "data.subset_seed", "an integer", subset_seed)
        if format == "csv":
            rule = "a folder holding train.csv, valid.csv and test.csv"
            _check(bool(path), "data.path", rule, path)
            ok = num_classes is None or _positive_int(num_classes) and num_classes >= 2
            _check(ok, "data.num_classes", "null or an integer >= 2", num_classes)
        else:
            _check(bool(corpus), "data.corpus", "a WikiText corpus folder name", corpus)
            ok = _positive_int(num_classes) and num_classes >= 2  # type: ignore[operator]
            _check(ok, "data.num_classes", "an integer >= 2 (the headings kept)", num_classes)
        self.format = format
        self.tokenizer = tokenizer
        self.path = Path(path).expanduser() if path else None
        self.corpus = corpus
        self.data_dir = Path(data_dir).expanduser()
        self.download = download
        self.url_overrides = dict(url_overrides) if url_overrides else None
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.test_batch_size = test_batch_size
        self.bptt = bptt  # the encoder's chunk length; the batches do not depend on it
        self.max_len = max_len
        self.truncate = truncate
        self.min_freq = min_freq
        self.expected_classes = num_classes
        self.train_subset, self.subset_seed = train_subset, subset_seed
        self.reverse = bool(reverse)  # documents read backwards (a backward encoder's input)
        self.seed = seed
        self._given_vocab = (
            Vocab(vocab.itos if isinstance(vocab, Vocab) else vocab) if vocab else None
        )
        self._raw: dict[str, RawSplit] = {}
        self._unlabelled: RawSplit | None = None  # train outside data.train_subset
        self._classes: list[str] = []
        self._vocab: Vocab | None = None
        self._encoded: dict[str, EncodedSplit] = {}
        self._rank, self._world = 0, 1
        # Position in the training epoch, for exact resume (saved through `state_dict`).
        self._init_position()

    # -- data ---------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Download WikiText if missing and allowed (wt2_sections); csv needs nothing."""
        if self.format == "wt2_sections":
            self._corpus_dir()

    def setup(self, stage: str | None = None) -> None:
        """Read, tokenize and encode the three splits (once), and log the class counts."""
        if self.trainer is not None:
            self._rank, self._world = self.trainer.global_rank, self.trainer.world_size
        self._load()

    @property
    def vocab(self) -> Vocab:
        """The ids' vocabulary (the given one plus `<unk>`/`<pad>` if absent; or built)."""
        return self._load()[0]

    @property
    def pad_id(self) -> int:
        return self.vocab.stoi[PAD]

    @property
    def unk_id(self) -> int:
        return self.vocab.stoi[UNK]

    @property
    def classes(self) -> list[str]:
        """Label names sorted by name; the class id is the index."""
        return self._load()[1]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def unlabelled_train(self) -> RawSplit:
        """The train documents outside ``data.train_subset`` (none without one): text for
        ULMFiT's stage 2, whose labels no classifier or baseline may read."""
        self._load()
        return self._unlabelled or RawSplit("train", self._raw["train"].path)

    def class_counts(self, split: str) -> dict[str, int]:
        """Documents per class in `split` (train, valid or test), every class listed."""
        counts = Counter(self.raw_split(split).labels)
        return {name: counts[name] for name in self._classes}

    def encoded(self, split: str) -> EncodedSplit:
        """A split as the classifier reads it: ids, lengths and class ids (train: the subset)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
        return self._split(split)

    def raw_split(self, split: str) -> RawSplit:
        """A split's documents as read and tokenized, before ids (train: the subset)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
        self._load()
        return self._raw[split]

    # -- loaders ------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        batches = DocBatches(
            self._split("train"),
            self.batch_size,
            self.pad_id,
            shuffle=True,
            seed=self.seed,
            rank=self._rank,
            world=self._world,
            epoch_fn=self._trainer_epoch,
            skip_fn=self._start_train_pass,
        )
        return _loader(batches)

    def val_dataloader(self) -> DataLoader:
        return _loader(DocBatches(self._split("valid"), self.eval_batch_size, self.pad_id))

    def test_dataloader(self) -> DataLoader:
        return _loader(DocBatches(self._split("test"), self.test_batch_size, self.pad_id))

    # -- helpers ------------------------------------------------------------------------
    def _corpus_dir(self) -> Path:
        return ensure_corpus(
            self.corpus, self.data_dir, download=self.download, url_overrides=self.url_overrides
        )

    def _load(self) -> tuple[Vocab, list[str]]:
        if self._vocab is None:
            if self.format == "csv":
                assert self.path is not None
                raw = read_csv_folder(self.path, self.tokenizer)
                classes = class_names(raw["train"])
                if self.expected_classes is not None and len(classes) != self.expected_classes:
                    raise LabelledDataError(
                        f"{raw['train'].path}: {len(classes)} labels ({', '.join(classes)}), "
                        f"but data.num_classes={self.expected_classes}; fix the labels or set "
                        "data.num_classes=null"
                    )
            else:
                raw, classes = read_sections(self._corpus_dir(), int(self.expected_classes or 0))
            if self.train_subset is not None:  # classes stay those of the whole train split
                raw["train"], self._unlabelled = split_train(
                    raw["train"], self.train_subset, self.subset_seed
                )
            if self._given_vocab is not None:
                vocab = with_specials(self._given_vocab)
            else:
                vocab = build_doc_vocab(raw["train"].tokens, self.min_freq)
            tail = self.truncate == "tail"
            self._encoded = {
                split: encode_split(r, vocab, classes, self.max_len, tail, self.reverse)
                for split, r in raw.items()
            }
            self._raw, self._classes, self._vocab = raw, classes, vocab
            self._log_counts()
        return self._vocab, self._classes

    def _log_counts(self) -> None:
        source = self.path if self.format == "csv" else self.data_dir / self.corpus
        log.info(
            "%s (%s): %d classes, vocabulary %d (%s); documents per class:",
            self.format, source, len(self._classes), len(self._vocab or ()),
            "given" if self._given_vocab is not None else f"built, min_freq={self.min_freq}",
        )  # fmt: skip
        for split in SPLITS:
            counts = self.class_counts(split)
            listed = ", ".join(f"{name} {n}" for name, n in counts.items())
            log.info("  %s (%d): %s", split, sum(counts.values()), listed)

    def _split(self, split: str) -> EncodedSplit:
        self._load()
        return self._encoded[split]


def _loader(batches: DocBatches) -> DataLoader:
    """Batches are built by `DocBatches` (`batch_size=None`); the loader's own generator keeps
    its base-seed draw off the global RNG (as LMDataModule's loaders do)."""
    return DataLoader(batches, batch_size=None, num_workers=0, generator=torch.Generator())


def _plain(value: Any) -> Any:
    """An Enum member of the config schema -> its value (``LabelledFormat.csv`` -> "csv")."""
    return getattr(value, "value", value)


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _check(ok: bool, key: str, rule: str, value: object) -> None:
    if not ok:
        raise ValueError(f"{key} must be {rule}, got {value!r}")
