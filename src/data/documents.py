"""Labelled documents: CSV reading, tokens, the classifier's vocabulary, ids and labels.

A document's tokens follow `data.tokenizer` (`src/data/tokenizers.py`); with `word` (the
default) every non-blank line of its text gives `line.split() + ["<eos>"]`, the language-model
corpora's rule, so a WikiText paragraph is tokenized exactly as the language model read it.
Case is kept (the WikiText vocabulary is cased). Classes are the train split's labels sorted
by name; the class id is the position in that list.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from src.data.corpus import SPLITS, UNK, Vocab
from src.data.tokenizers import tokenize_document

log = logging.getLogger(__name__)
PAD = "<pad>"
TEXT, LABEL = "text", "label"
_FIELD_LIMIT = 2**31 - 1  # the csv module's default (128 KiB per field) is too small for documents


class LabelledDataError(ValueError):
    """Labelled data that cannot be used; the message names the file, the row and the fix."""


@dataclass
class RawSplit:
    """One split as read: each document's tokens and label, and where it came from."""

    name: str
    path: Path
    tokens: list[list[str]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    where: list[str] = field(default_factory=list)  # "row 3 (line 4)": for error messages

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class EncodedSplit:
    """One split as ids: documents (int64, cut to max_len), their lengths and class ids."""

    docs: list[np.ndarray]
    lengths: np.ndarray  # int64 [N], every entry >= 1
    labels: np.ndarray  # int64 [N]

    def __len__(self) -> int:
        return len(self.docs)


def tokenize_text(text: str, tokenizer: str = "word") -> list[str]:
    """The tokens of every non-blank line of `text`, each line followed by `<eos>` (``word``:
    ``line.split()``; the other rules: `src/data/tokenizers.py`)."""
    return tokenize_document(text, tokenizer)


def read_rows(path: Path, label: bool = True) -> Iterator[tuple[str, str, str]]:
    """``(where, text, label)`` of every row of a CSV file whose header names `text` (and
    `label`, when `label`; otherwise a missing label column reads as "").

    Quoted fields may hold commas, quotes ("") and newlines (the csv module's rules). Rows are
    numbered from 1 after the header, blank lines skipped; `where` gives the row and the line
    on which it starts (the header is line 1).
    """
    path = Path(path)
    if not path.is_file():
        raise LabelledDataError(
            f"{path}: file not found. data=csv reads train.csv, valid.csv and test.csv from the "
            f"folder data.path ({path.parent}); create the file or point data.path at the folder"
        )
    csv.field_size_limit(max(csv.field_size_limit(), _FIELD_LIMIT))
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            header = [name.strip() for name in next(reader, [])]
            for column in (TEXT, LABEL) if label else (TEXT,):
                if column not in header:
                    raise LabelledDataError(
                        f"{path}: no {column!r} column (header: {', '.join(header) or 'empty'})."
                        f" The first row must name the columns {TEXT!r} and {LABEL!r}"
                    )
            text_at = header.index(TEXT)
            label_at = header.index(LABEL) if LABEL in header else None
            row, start = 0, reader.line_num + 1
            for fields in reader:
                if fields:
                    row += 1
                    where = f"row {row} (line {start})"
                    _check_width(path, fields, len(header), where)
                    found = fields[label_at] if label_at is not None else ""
                    yield where, fields[text_at], found
                start = reader.line_num + 1
    except UnicodeDecodeError as err:
        raise LabelledDataError(
            f"{path}: invalid UTF-8 ({err.reason}); save the file as UTF-8"
        ) from None
    except csv.Error as err:
        raise LabelledDataError(f"{path}: line {reader.line_num}: malformed CSV ({err})") from None


def read_csv_split(path: Path, split: str, tokenizer: str = "word") -> RawSplit:
    """Read `<split>.csv`: a header row naming `text` and `label`, then one row per document
    (:func:`read_rows`), each text split by `tokenizer`. A row with an empty label is text for
    the language model (``task=lm data=csv``) and is skipped here."""
    out = RawSplit(split, Path(path))
    unlabelled: list[str] = []  # text for the language model (task=lm data=csv), skipped here
    for where, text, label in read_rows(path):
        if label.strip():
            _add_row(out, text, label, where, tokenizer)
        else:
            unlabelled.append(where)
    if not out.labels and unlabelled:
        raise LabelledDataError(
            f"{path}: {unlabelled[0]}: empty label, and no row has a label; give the rows their "
            "class (rows without one are text for task=lm only)"
        )
    if not out.labels:
        raise LabelledDataError(f"{path}: no data rows after the header; add documents")
    if unlabelled:
        log.info("%s: %d rows without a label skipped (text for task=lm)", path, len(unlabelled))
    return out


def _check_width(path: Path, fields: list[str], width: int, where: str) -> None:
    if len(fields) != width:
        hint = (
            'a comma inside an unquoted text? Quote the field: "..." (double any quote in it)'
            if len(fields) > width
            else "fill the missing fields"
        )
        raise LabelledDataError(
            f"{path}: {where}: {len(fields)} fields, the header has {width}; {hint}"
        )


def _add_row(out: RawSplit, text: str, label: str, where: str, tokenizer: str) -> None:
    tokens = tokenize_text(text, tokenizer)
    if not tokens:
        raise LabelledDataError(
            f"{out.path}: {where}: empty text; every document needs at least one word "
            "(fill the text or delete the row)"
        )
    out.tokens.append(tokens)
    out.labels.append(label.strip())
    out.where.append(where)


def read_csv_folder(folder: Path, tokenizer: str = "word") -> dict[str, RawSplit]:
    """`train.csv`, `valid.csv`, `test.csv` of `folder`; every valid/test label occurs in train."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise LabelledDataError(
            f"{folder}: no such folder. Set data.path to the folder holding train.csv, "
            "valid.csv and test.csv"
        )
    splits = {split: read_csv_split(folder / f"{split}.csv", split, tokenizer) for split in SPLITS}
    for split in ("valid", "test"):
        check_known_labels(splits["train"], splits[split])
    return splits


def check_known_labels(train: RawSplit, other: RawSplit) -> None:
    """Refuse a label of `other` that train lacks, naming its first row."""
    known = set(train.labels)
    for label, where in zip(other.labels, other.where, strict=True):
        if label not in known:
            raise LabelledDataError(
                f"{other.path}: {where}: label {label!r} does not occur in {train.path.name}, "
                f"which defines the classes ({', '.join(sorted(known))}). Add training rows "
                "with this label, or fix or delete the row"
            )


def class_names(train: RawSplit) -> list[str]:
    """The classes: the train labels, sorted by name (so ids do not depend on row order)."""
    return sorted(set(train.labels))


def build_doc_vocab(docs: Iterable[Sequence[str]], min_freq: int) -> Vocab:
    """`<unk>`, then the words seen at least `min_freq` times in first-seen order, then `<pad>`."""
    counts: Counter[str] = Counter()
    for tokens in docs:
        counts.update(tokens)
    words = [w for w, n in counts.items() if n >= min_freq and w not in (UNK, PAD)]
    return Vocab([UNK, *words, PAD])


def with_specials(vocab: Vocab) -> Vocab:
    """A copy of a given (language model's) vocabulary with `<unk>` then `<pad>` appended when
    absent; existing ids never change, so the encoder's embedding rows still line up."""
    out = Vocab(vocab.itos)
    out.add(UNK)
    out.add(PAD)
    return out


def encode_split(
    raw: RawSplit,
    vocab: Vocab,
    classes: Sequence[str],
    max_len: int,
    tail: bool = False,
    reverse: bool = False,
) -> EncodedSplit:
    """Ids of every document, cut to its first (or, with `tail`, last) `max_len` tokens, then
    reversed with `reverse` (a backward encoder reads the same cut text as a forward one)."""
    class_id = {name: i for i, name in enumerate(classes)}
    stoi, unk = vocab.stoi, vocab.stoi[UNK]
    docs = []
    for tokens in raw.tokens:
        kept = tokens[-max_len:] if tail else tokens[:max_len]
        if reverse:
            kept = kept[::-1]
        docs.append(np.fromiter((stoi.get(t, unk) for t in kept), np.int64, len(kept)))
    lengths = np.fromiter(map(len, docs), np.int64, len(docs))
    labels = np.fromiter((class_id[label] for label in raw.labels), np.int64, len(raw))
    return EncodedSplit(docs, lengths, labels)
