"""Labelled documents: CSV reading and its errors, the vocabulary, padding, sortish batches,
the datamodule, and the wt2_sections rule (on a hand-made WikiText file and the real one)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from src.data.corpus import EOS, UNK, Vocab
from src.data.doc_batches import DocBatch, DocBatches, collate, sorted_batches, sortish_batches
from src.data.documents import PAD, EncodedSplit, LabelledDataError, tokenize_text
from src.data.labelled import ClassifyDataModule
from src.data.wt2_sections import heading, read_sections
from tests.helpers.labelled import write_tiny_csv


def csv_module(folder: Path, **overrides) -> ClassifyDataModule:
    kwargs = dict(format="csv", path=str(folder), batch_size=4, eval_batch_size=3, seed=0)
    return ClassifyDataModule(**{**kwargs, **overrides})


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text, encoding="utf-8")
    return folder / name


GOOD_VALID = "text,label\nthe cat,pos\nthe dog,neg\n"


def write_folder(folder: Path, train: str, valid: str = GOOD_VALID, test: str = GOOD_VALID):
    for name, text in (("train.csv", train), ("valid.csv", valid), ("test.csv", test)):
        write(folder, name, text)
    return folder


# ------------------------------------------------------------------------------ CSV


def test_csv_happy_path_with_quoting(tmp_path: Path) -> None:
    train = (
        "id,label,text\n"
        '1,pos,"the cat, the dog"\n'
        '2,neg,"she said ""no""\nthen left"\n'
        "\n"  # a blank line is no row
        "3, neg ,the cat\n"
    )
    dm = csv_module(write_folder(tmp_path, train), min_freq=1, eval_batch_size=8)
    dm.setup("fit")
    assert dm.classes == ["neg", "pos"] and dm.num_classes == 2  # sorted by name
    assert dm.class_counts("train") == {"neg": 2, "pos": 1}
    assert dm.class_counts("valid") == {"neg": 1, "pos": 1}
    assert dm.char_level is False
    docs = {}
    for batch in dm.train_dataloader():
        for row, n, label in zip(batch.tokens, batch.lengths, batch.labels, strict=True):
            docs[tuple(dm.vocab.decode(row[:n]))] = dm.classes[label]
    assert docs == {
        ("the", "cat,", "the", "dog", EOS): "pos",
        ("she", "said", '"no"', EOS, "then", "left", EOS): "neg",
        ("the", "cat", EOS): "neg",
    }


def test_tokenize_text_follows_the_corpus_word_rule() -> None:
    assert tokenize_text("  A b\n\n c  \n") == ["A", "b", EOS, "c", EOS]  # case kept
    assert tokenize_text(" \n\t") == []


def test_csv_missing_column_names_the_file_and_the_column(tmp_path: Path) -> None:
    dm = csv_module(write_folder(tmp_path, "text,class\nthe cat,pos\n"))
    with pytest.raises(LabelledDataError, match=r"train\.csv: no 'label' column \(header: text"):
        dm.setup()


def test_csv_empty_text_names_file_row_and_line(tmp_path: Path) -> None:
    train = 'text,label\nthe cat,pos\n"a\nb",neg\n"  ",pos\n'
    dm = csv_module(write_folder(tmp_path, train))
    with pytest.raises(LabelledDataError, match=r"train\.csv: row 3 \(line 5\): empty text"):
        dm.setup()


def test_csv_unseen_label_in_valid_names_the_row(tmp_path: Path) -> None:
    valid = "text,label\nthe cat,pos\nthe dog,maybe\n"
    dm = csv_module(write_folder(tmp_path, GOOD_VALID, valid=valid))
    with pytest.raises(LabelledDataError) as err:
        dm.setup()
    msg = str(err.value)
    assert "valid.csv: row 2 (line 3): label 'maybe' does not occur in train.csv" in msg
    assert "(neg, pos)" in msg


@pytest.mark.parametrize(
    ("train", "expected"),
    [
        (
            "text,label\nthe cat,pos,extra\n",
            r"row 1 \(line 2\): 3 fields, the header has 2; a comma",
        ),
        ("text,label\nthe cat\n", r"row 1 \(line 2\): 1 fields, the header has 2"),
        ("text,label\nthe cat, \n", r"row 1 \(line 2\): empty label"),
        ("text,label\n", r"no data rows"),
        ("", r"no 'text' column \(header: empty\)"),
    ],
)
def test_csv_other_bad_rows(tmp_path: Path, train: str, expected: str) -> None:
    with pytest.raises(LabelledDataError, match=expected):
        csv_module(write_folder(tmp_path, train)).setup()


def test_csv_missing_file_and_folder(tmp_path: Path) -> None:
    write(tmp_path, "train.csv", GOOD_VALID)
    write(tmp_path, "valid.csv", GOOD_VALID)
    with pytest.raises(LabelledDataError, match=r"test\.csv: file not found.*data\.path"):
        csv_module(tmp_path).setup()
    with pytest.raises(LabelledDataError, match=r"nowhere: no such folder. Set data\.path"):
        csv_module(tmp_path / "nowhere").setup()


def test_csv_num_classes_must_match(tmp_path: Path) -> None:
    dm = csv_module(write_folder(tmp_path, GOOD_VALID), num_classes=3)
    with pytest.raises(LabelledDataError, match=r"2 labels \(neg, pos\), but data.num_classes=3"):
        dm.setup()


def test_constructor_checks_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^data\.path must be a folder"):
        ClassifyDataModule(format="csv", seed=0)
    with pytest.raises(ValueError, match=r"^data\.max_len must be a positive integer, got 0"):
        csv_module(tmp_path, max_len=0)
    with pytest.raises(ValueError, match=r"^data\.num_classes must be an integer >= 2"):
        ClassifyDataModule(format="wt2_sections", num_classes=None, seed=0)
    with pytest.raises(ValueError, match=r"^data\.format must be one of \[csv, wt2_sections\]"):
        csv_module(tmp_path, format="tsv")


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["data=csv"], "data.path=null: expected a folder holding train.csv"),
        (["data=csv", "data.path=x", "data.min_freq=0"], "data.min_freq=0: expected a positive"),
        (["data=wt2_sections", "data.num_classes=1"], "data.num_classes=1: expected an integer"),
        (["data=wt2_sections", "data.tokenizer=char"], "data.tokenizer=char: expected one of"),
        (["data=wt2_sections", "data.max_len=0"], "data.max_len=0: expected a positive"),
        (["data=csv", "data.path=x"], None),
        (["data=wt2_sections"], None),
    ],
)
def test_labelled_configs_compose_and_give_one_line_errors(
    tmp_path: Path, overrides: list[str], expected: str | None
) -> None:
    from omegaconf import OmegaConf

    from src.checks import problems
    from src.config import LabelledDataConfig
    from tests.conftest import compose_train

    overrides = [*overrides, "task=classify", "logger=csv"]
    cfg = compose_train(overrides, tmp_path / "run", tmp_path, tmp_path)
    assert OmegaConf.get_type(cfg.data) is LabelledDataConfig
    errors = [str(e) for e in problems(cfg) if str(e).startswith("config error: data.")]
    if expected is None:
        assert errors == []
    else:
        assert len(errors) == 1 and expected in errors[0] and "\n" not in errors[0], errors


# ------------------------------------------------------------------------------ vocabulary


def test_vocab_built_from_train_with_min_freq(tmp_path: Path) -> None:
    train = "text,label\nthe cat,pos\nthe dog,neg\nThe end,pos\n"
    dm = csv_module(write_folder(tmp_path, train), min_freq=2)
    assert dm.vocab.itos == [UNK, "the", EOS, PAD]  # cased; cat, dog, The, end seen once
    assert (dm.unk_id, dm.pad_id) == (0, 3)
    dm1 = csv_module(tmp_path, min_freq=1)
    assert dm1.vocab.itos == [UNK, "the", "cat", EOS, "dog", "The", "end", PAD]  # first seen


def test_vocab_given_keeps_ids_appends_pad_and_maps_unknown_to_unk(tmp_path: Path) -> None:
    write_folder(tmp_path, "text,label\nthe zebra,pos\nthe dog,neg\n")
    lm_vocab = Vocab(["the", UNK, EOS, "cat", "dog"])
    dm = csv_module(tmp_path, vocab=lm_vocab, eval_batch_size=8)
    assert dm.vocab.itos == [*lm_vocab.itos, PAD]  # one longer: the encoder grows a row
    assert (dm.unk_id, dm.pad_id) == (1, 5)
    assert lm_vocab.itos == ["the", UNK, EOS, "cat", "dog"]  # the caller's vocab is not changed
    batch = next(iter(dm.val_dataloader()))  # valid: "the cat", "the dog"
    assert sorted(batch.tokens.tolist()) == [[0, 3, 2], [0, 4, 2]]
    train = next(iter(dm.train_dataloader()))
    assert [0, 1, 2] in train.tokens.tolist()  # zebra -> <unk>

    no_unk = csv_module(tmp_path, vocab=["the", EOS], eval_batch_size=8)
    assert no_unk.vocab.itos == ["the", EOS, UNK, PAD]


# ------------------------------------------------------------------------------ batches


def split_of(lengths: list[int], seed: int = 0) -> EncodedSplit:
    rng = np.random.default_rng(seed)
    docs = [rng.integers(1, 50, size=n) for n in lengths]
    return EncodedSplit(docs, np.array(lengths, dtype=np.int64), rng.integers(0, 3, len(lengths)))


def test_collate_pads_at_the_end_with_true_lengths() -> None:
    split = split_of([3, 1, 5])
    batch = collate(split, [2, 0, 1], pad_id=99)
    assert isinstance(batch, DocBatch)
    assert batch.tokens.dtype == batch.lengths.dtype == batch.labels.dtype == torch.int64
    assert batch.tokens.shape == (3, 5) and batch.lengths.tolist() == [5, 3, 1]
    for row, i in enumerate([2, 0, 1]):
        n = split.lengths[i]
        assert batch.tokens[row, :n].tolist() == split.docs[i].tolist()
        assert (batch.tokens[row, n:] == 99).all()
    assert batch.labels.tolist() == split.labels[[2, 0, 1]].tolist()


def test_sortish_is_reproducible_and_covers_every_document_once() -> None:
    lengths = np.random.default_rng(1).integers(1, 400, size=1001)
    first = sortish_batches(lengths, 8, np.random.default_rng([3, 0]))
    again = sortish_batches(lengths, 8, np.random.default_rng([3, 0]))
    other_epoch = sortish_batches(lengths, 8, np.random.default_rng([3, 1]))
    assert [b.tolist() for b in first] == [b.tolist() for b in again]
    assert [b.tolist() for b in first] != [b.tolist() for b in other_epoch]
    for batches in (first, other_epoch):
        assert sorted(np.concatenate(batches).tolist()) == list(range(1001))
        assert all(len(b) == 8 for b in batches[:-1]) or 1 not in map(len, batches)
        assert lengths[batches[0]].max() == lengths.max()  # the longest batch goes first


def test_sortish_batches_have_similar_lengths() -> None:
    lengths = np.random.default_rng(2).integers(1, 400, size=2000)
    batches = sortish_batches(lengths, 16, np.random.default_rng(0))
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    random_spread = np.mean([np.ptp(c) for c in np.array_split(lengths, len(batches))])
    assert spread < random_spread / 5  # sorted within chunks of 50 batches
    order = [b[0] for b in batches[1:]]  # and still shuffled across the epoch
    assert not all(lengths[a] >= lengths[b] for a, b in zip(order, order[1:], strict=False))


def test_a_lone_leftover_document_joins_the_batch_before() -> None:
    assert [len(b) for b in sorted_batches(np.arange(9), 4)] == [4, 5]
    assert [len(b) for b in sorted_batches(np.arange(10), 4)] == [4, 4, 2]
    sizes = [len(b) for b in sortish_batches(np.arange(9), 4, np.random.default_rng(0))]
    assert sorted(sizes) == [4, 5]


def test_evaluation_batches_are_longest_first() -> None:
    split = split_of([4, 9, 1, 9, 6, 2, 3])
    batches = list(DocBatches(split, 3, pad_id=0))
    lengths = torch.cat([b.lengths for b in batches]).tolist()
    assert lengths == [9, 9, 6, 4, 3, 2, 1]


def test_training_passes_follow_the_epoch_and_shard_by_rank() -> None:
    split = split_of(list(np.random.default_rng(4).integers(1, 30, size=50)))
    epoch = {"n": 0}
    it = DocBatches(split, 4, 0, shuffle=True, seed=7, epoch_fn=lambda: epoch["n"])
    a, b = it.batches(), it.batches()
    epoch["n"] = 1
    c = it.batches()
    assert [x.tolist() for x in a] == [x.tolist() for x in b] != [x.tolist() for x in c]
    assert len(it) == len(a) == sum(1 for _ in it)
    shards = [DocBatches(split, 4, 0, shuffle=True, seed=7, rank=r, world=3) for r in range(3)]
    parts = [s.batches() for s in shards]
    assert len({len(p) for p in parts}) == 1 and len(parts[0]) == len(shards[0]) == 4
    seen = np.concatenate([np.concatenate(p) for p in parts])
    assert len(set(seen.tolist())) == len(seen)  # disjoint
    skip = DocBatches(split, 4, 0, shuffle=True, seed=7, skip_fn=lambda: 5)
    assert [x.labels.tolist() for x in skip] == [split.labels[i].tolist() for i in a[5:]]


def test_a_restored_position_skips_the_batches_already_trained(tmp_path: Path) -> None:
    dm = csv_module(write_tiny_csv(tmp_path / "tiny"), batch_size=8)
    full = [b.labels.tolist() for b in dm.train_dataloader()]
    dm.load_state_dict({"epoch": 0, "batches_done": 3})
    assert [b.labels.tolist() for b in dm.train_dataloader()] == full[3:]
    assert dm.state_dict() == {"epoch": 0, "batches_done": 3}
    assert [b.labels.tolist() for b in dm.train_dataloader()] == full  # only once


def test_truncation_keeps_head_or_tail(tmp_path: Path) -> None:
    write_folder(tmp_path, "text,label\na b c d e,pos\nb,neg\n")
    for truncate, expected in (("head", ["a", "b", "c"]), ("tail", ["d", "e", EOS])):
        dm = csv_module(tmp_path, max_len=3, truncate=truncate, min_freq=1)
        batch = next(iter(dm.train_dataloader()))
        row = batch.lengths.argmax()
        assert dm.vocab.decode(batch.tokens[row]) == expected
        assert batch.lengths.max() == 3


def test_fixture_folder_trains_through_lightning(tmp_path: Path) -> None:
    """`write_tiny_csv` (the end-to-end fixture) gives a balanced two-class task."""
    import lightning as L

    dm = csv_module(write_tiny_csv(tmp_path / "tiny"), batch_size=8)
    seen: list[int] = []

    class Probe(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch: DocBatch, idx: int) -> torch.Tensor:
            assert isinstance(batch, DocBatch) and (batch.lengths >= 1).all()
            seen.extend(batch.labels.tolist())
            return (self.w**2).sum()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer = L.Trainer(
        max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu",
    )  # fmt: skip
    trainer.fit(Probe(), datamodule=dm)
    assert dm.classes == ["animal", "colour"]
    assert dm.class_counts("train") == {"animal": 25, "colour": 25}
    assert dm.class_counts("test") == {"animal": 6, "colour": 6}
    assert len(seen) == 2 * 50  # every training document once per epoch
    assert dm.state_dict() == {"epoch": 1, "batches_done": len(dm.train_dataloader())}


# ------------------------------------------------------------------------------ wt2_sections

WIKI_LINES = [
    "",
    "= Alpha =",
    "",
    "Lead paragraph of Alpha .",
    "",
    "= = History = =",
    "",
    "Alpha was founded .",
    "",
    "= = = Early years = = =",
    "",
    "A sub @-@ section paragraph .",
    "",
    "= = Reception = =",
    "",
    "Critics liked it .",
    "Another review .",
    "",
    "= = <unk> = =",
    "",
    "Unknown heading text .",
    "",
    "= Beta =",
    "",
    "= = History = =",
    "",
    "Beta history .",
    "",
    "= = Plot = =",
    "",
    "A story .",
    "B story .",
    "C story .",
    "",
    "= = Reception = =",
    "",
    "Fine .",
]
WIKI = "".join(f" {line} \n" for line in WIKI_LINES)  # WikiText spacing


def test_heading_levels() -> None:
    def level_title(line: str) -> tuple[int, str] | None:
        return heading(line.split())

    assert level_title("= Alpha =") == (1, "Alpha")
    assert level_title("= = Early life = =") == (2, "Early life")
    assert level_title("= = = Music = = =") == (3, "Music")
    assert level_title("= = Odd =") is None
    assert level_title("1 = 2") is None


def test_wt2_sections_rule_on_a_hand_made_file(tmp_path: Path) -> None:
    for split in ("train", "valid", "test"):
        write(tmp_path, f"{split}.txt", WIKI)
    splits, classes = read_sections(tmp_path, 2)
    # History and Reception head 2 sections each; Plot has more paragraphs but 1 section;
    # <unk> is never a class
    assert classes == ["History", "Reception"]
    train = splits["train"]
    got = list(zip(train.labels, [" ".join(t) for t in train.tokens], strict=True))
    assert got == [
        ("History", "Alpha was founded . <eos>"),
        ("History", "A sub @-@ section paragraph . <eos>"),  # level 3 inherits level 2
        ("Reception", "Critics liked it . <eos>"),
        ("Reception", "Another review . <eos>"),
        ("History", "Beta history . <eos>"),
        ("Reception", "Fine . <eos>"),
    ]
    assert train.where[0] == "line 8"
    with pytest.raises(LabelledDataError, match=r"only 3 informative level-2 headings"):
        read_sections(tmp_path, 4)


WT2_COUNTS = {
    "train": {
        "Background": 286, "Description": 146, "History": 1090, "Legacy": 167, "Plot": 268,
        "Production": 339, "Reception": 381, "Route description": 83,
    },
    "valid": {
        "Background": 57, "Description": 31, "History": 114, "Legacy": 17, "Plot": 27,
        "Production": 37, "Reception": 22, "Route description": 24,
    },
    "test": {
        "Background": 30, "Description": 17, "History": 88, "Legacy": 8, "Plot": 26,
        "Production": 42, "Reception": 26, "Route description": 12,
    },
}  # fmt: skip


@pytest.fixture(scope="module")
def wt2_dir(corpora_dir: Path) -> Path:
    path = corpora_dir / "wikitext-2"
    if not (path / "test.txt").is_file():
        msg = f"WikiText-2 not found under {corpora_dir}"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def test_wt2_sections_on_the_real_corpus(wt2_dir: Path) -> None:
    dm = ClassifyDataModule(
        format="wt2_sections", num_classes=8, data_dir=str(wt2_dir.parent), download=False, seed=0
    )
    dm.setup("fit")
    assert dm.num_classes == 8 and not any(UNK in c for c in dm.classes)
    assert {split: dm.class_counts(split) for split in WT2_COUNTS} == WT2_COUNTS
    batch = next(iter(dm.train_dataloader()))
    assert batch.tokens.shape == (64, 670)  # the longest paragraph comes first

    splits, _ = read_sections(wt2_dir, 8)  # every test document is a line of test.txt
    test_lines = (wt2_dir / "test.txt").read_text(encoding="utf-8").splitlines()
    train_lines = set((wt2_dir / "train.txt").read_text(encoding="utf-8").splitlines())
    seen_in_train = Counter()
    for tokens, where in zip(splits["test"].tokens, splits["test"].where, strict=True):
        line = test_lines[int(where.split()[1]) - 1]
        assert line.split() + [EOS] == tokens
        seen_in_train[line in train_lines] += 1
    assert seen_in_train == {False: 249}  # no test paragraph occurs in train.txt
