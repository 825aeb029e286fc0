"""``data.reverse``: a corpus and labelled documents read backwards (fastai's ``backwards``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from src.data.bptt import batchify
from src.data.corpus import Vocab
from src.data.documents import RawSplit, encode_split
from src.data.labelled import ClassifyDataModule
from tests.data.test_datamodule import datamodule
from tests.helpers.labelled import write_tiny_csv


def test_a_reversed_corpus_is_the_stream_read_backwards(tmp_path: Path) -> None:
    forward = datamodule(tmp_path, batch_size=4)
    backward = datamodule(tmp_path, batch_size=4, reverse=True)
    forward.setup("fit")
    backward.setup("fit")
    for split in ("train", "valid", "test"):
        ids = np.asarray(forward._load().split(split))
        size = {"train": 4, "valid": 2, "test": 1}[split]
        assert np.array_equal(backward._split(split), batchify(ids[::-1].copy(), size))
        assert not np.array_equal(backward._split(split), forward._split(split))
    window = next(iter(backward.val_dataloader()))  # the first target is the text's last word
    valid = np.asarray(forward._load().split("valid"))
    assert window.inputs[0, 0].item() == valid[-1] and window.targets[0, 0].item() == valid[-2]
    assert backward.train_counts().tolist() == forward.train_counts().tolist()


def test_documents_are_cut_then_reversed() -> None:
    raw = RawSplit("train", Path("x.csv"))
    raw.tokens, raw.labels = [["a", "b", "c", "d"], ["c"]], ["x", "y"]
    vocab = Vocab(["<unk>", "a", "b", "c", "d"])
    head = encode_split(raw, vocab, ["x", "y"], max_len=3, reverse=True)
    assert head.docs[0].tolist() == [3, 2, 1] and head.docs[1].tolist() == [3]  # c b a
    tail = encode_split(raw, vocab, ["x", "y"], max_len=3, tail=True, reverse=True)
    assert tail.docs[0].tolist() == [4, 3, 2]  # d c b: the last three, backwards
    assert head.lengths.tolist() == [3, 1] and head.labels.tolist() == [0, 1]


def test_a_reversed_classifier_datamodule_reads_each_document_backwards(tmp_path: Path) -> None:
    folder = write_tiny_csv(tmp_path / "csv")
    kwargs = dict(format="csv", path=str(folder), batch_size=4, eval_batch_size=3, seed=0)
    forward = ClassifyDataModule(**kwargs)
    backward = ClassifyDataModule(**kwargs, reverse=True)
    assert forward.vocab.itos == backward.vocab.itos  # the words do not depend on the direction
    for split in ("train", "valid", "test"):
        a, b = forward.encoded(split), backward.encoded(split)
        assert [d[::-1].tolist() for d in a.docs] == [d.tolist() for d in b.docs]
        assert a.labels.tolist() == b.labels.tolist()
