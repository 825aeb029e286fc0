"""`task=lm data=csv`: a CSV folder's texts as a language-model corpus (ULMFiT stage 2), the
classifier's CSV reading with a tokenizer, and `word` on CSV giving today's tokens."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from src.data import csv_lm
from src.data.corpus import EOS, UNK
from src.data.csv_lm import CSVLMDataModule, read_documents, token_corpus
from src.data.documents import read_csv_folder
from tests.helpers.raw_csv import write_raw_csv


def lm_module(folder: Path, cache: Path, **overrides) -> CSVLMDataModule:
    kwargs = dict(
        path=str(folder), tokenizer="wikitext", min_freq=2, data_dir=".", cache_dir=str(cache),
        batch_size=4, eval_batch_size=2, test_batch_size=1, bptt=10, seed=0,
    )  # fmt: skip
    return CSVLMDataModule(**{**kwargs, **overrides})


def test_documents_of_each_split(tmp_path: Path) -> None:
    folder = write_raw_csv(tmp_path / "csv", n_rows=(6, 3, 2))
    with open(folder / "valid.csv", "a", encoding="utf-8", newline="") as f:
        csv.writer(f).writerow(["An unlabelled valid row.", " "])
    docs = read_documents(folder, "wikitext")
    # train: its 6 labelled rows, its unlabelled row, the unlabelled valid row, unlabelled.csv
    assert [len(docs[s]) for s in ("train", "valid", "test")] == [9, 3, 2]
    unlabelled = ["Unlabelled", "text", ",", "by", "a", "co", "@-@", "author", "."]
    assert docs["train"][6] == [EOS, *unlabelled, EOS]
    assert docs["train"][7] == [EOS, "An", "unlabelled", "valid", "row", ".", EOS]
    assert docs["train"][8][1:3] == ["More", "raw"]  # unlabelled.csv last
    assert all(doc[0] == EOS for split in docs.values() for doc in split)  # document start


def test_fastai_documents_start_with_xxbos(tmp_path: Path) -> None:
    pytest.importorskip("spacy")
    docs = read_documents(write_raw_csv(tmp_path / "csv", n_rows=(2, 2, 2)), "fastai")
    assert all(doc[0] == "xxbos" and doc.count("xxbos") == 1 for doc in docs["train"])


def test_streams_hold_the_documents_with_rare_words_as_unk(tmp_path: Path) -> None:
    folder = write_raw_csv(tmp_path / "csv", n_rows=(40, 6, 6))
    dm = lm_module(folder, tmp_path / "cache")
    docs = read_documents(folder, "wikitext")
    counts: dict[str, int] = {}
    for doc in docs["train"]:
        for t in doc:
            counts[t] = counts.get(t, 0) + 1
    expected = [t if counts[t] >= 2 else UNK for doc in docs["train"] for t in doc]
    arrays = dm._load()
    assert dm.vocab.decode(arrays.train) == expected
    assert UNK in dm.vocab and "@,@" in dm.vocab and "'s" in dm.vocab
    valid = dm.vocab.decode(arrays.valid)
    assert valid == [t if t in dm.vocab else UNK for doc in docs["valid"] for t in doc]


def test_token_corpus_is_built_once_and_keyed_by_tokenizer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write_raw_csv(tmp_path / "csv", n_rows=(8, 3, 3))
    cache = tmp_path / "cache"
    first = token_corpus(folder, "wikitext", 2, cache)
    monkeypatch.setattr(csv_lm, "_write", lambda *a: pytest.fail("rebuilt a valid corpus"))
    assert token_corpus(folder, "wikitext", 2, cache) == first
    monkeypatch.undo()
    assert token_corpus(folder, "word", 2, cache) != first
    assert not list(cache.glob(".*tmp-*"))  # no temp folder left behind
    (folder / "unlabelled.csv").unlink()  # the files' contents are in the key
    assert token_corpus(folder, "wikitext", 2, cache) != first


def test_char_is_refused_for_a_csv_language_model(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^data\.tokenizer must be word, wikitext or fastai"):
        lm_module(tmp_path, tmp_path, tokenizer="char")


def test_word_on_csv_gives_todays_tokens(tmp_path: Path) -> None:
    folder = write_raw_csv(tmp_path / "csv", n_rows=(6, 2, 2))
    raw = read_csv_folder(folder)  # the default: word
    with open(folder / "train.csv", encoding="utf-8", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["label"].strip()]
    old = [[t for line in r["text"].splitlines() if line.split() for t in [*line.split(), EOS]]
           for r in rows]  # fmt: skip
    assert raw["train"].tokens == old
    assert raw["train"].tokens[0][-4:] == ["by", rows[0]["text"].split()[-2], "people.", EOS]


def test_classifier_reads_csv_with_the_tokenizer_and_skips_unlabelled_rows(
    tmp_path: Path,
) -> None:
    raw = read_csv_folder(write_raw_csv(tmp_path / "csv", n_rows=(6, 2, 2)), "wikitext")
    assert len(raw["train"]) == 6  # the unlabelled row is text for task=lm only
    assert "@,@" in raw["train"].tokens[0] and "people" in raw["train"].tokens[0]
