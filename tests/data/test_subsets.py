"""Labelled subsets of train (`src/data/subsets.py`) and ``data.train_subset`` on the datamodule."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from src.data.labelled import ClassifyDataModule
from src.data.subsets import class_quotas, stratified_subset, unlabelled_indices
from tests.helpers.labelled import write_tiny_csv

#: 4 classes of 50 / 30 / 15 / 5 documents, interleaved so indices do not follow the classes
LABELS = [c for i in range(50) for c, n in (("a", 50), ("b", 30), ("c", 15), ("d", 5)) if i < n]


def counts(indices: np.ndarray, labels: list[str] = LABELS) -> dict[str, int]:
    return dict(sorted(Counter(labels[i] for i in indices).items()))


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (10, {"a": 5, "b": 3, "c": 1, "d": 1}),  # exact shares 5, 3, 1.5, 0.5
        (37, {"a": 18, "b": 11, "c": 6, "d": 2}),  # 18.5, 11.1, 5.55, 1.85: remainders d, c
        (4, {"a": 1, "b": 1, "c": 1, "d": 1}),  # d rounded to 0 takes one from a
        (99, {"a": 49, "b": 30, "c": 15, "d": 5}),
    ],
)
def test_stratified_counts_follow_the_class_shares(n: int, expected: dict[str, int]) -> None:
    picked = stratified_subset(LABELS, n, seed=0)
    assert len(picked) == n == len(set(picked.tolist()))
    assert counts(picked) == expected
    assert list(picked) == sorted(picked)


def test_every_class_keeps_one_when_n_reaches_the_classes() -> None:
    sizes = [200, 3, 1, 1, 1]
    for n in range(5, 40):
        quota = class_quotas(sizes, n)
        assert quota.sum() == n and (quota >= 1).all() and (quota <= sizes).all(), (n, quota)
    assert class_quotas(sizes, 2).tolist() == [2, 0, 0, 0, 0]  # fewer than the classes


def test_seeded_and_deterministic() -> None:
    first = stratified_subset(LABELS, 20, seed=3)
    assert np.array_equal(first, stratified_subset(LABELS, 20, seed=3))
    assert not np.array_equal(first, stratified_subset(LABELS, 20, seed=4))
    assert counts(first) == counts(stratified_subset(LABELS, 20, seed=4))  # same quotas


def test_complement_is_the_rest_of_train() -> None:
    picked = stratified_subset(LABELS, 30, seed=1)
    rest = unlabelled_indices(LABELS, 30, seed=1)
    assert len(rest) == len(LABELS) - 30
    assert sorted([*picked.tolist(), *rest.tolist()]) == list(range(len(LABELS)))
    assert unlabelled_indices(LABELS, len(LABELS), seed=1).size == 0


def test_all_or_more_keeps_every_document_and_bad_n_is_refused() -> None:
    assert stratified_subset(LABELS, 500, seed=0).tolist() == list(range(len(LABELS)))
    for bad in (0, -3, True, 2.5):
        with pytest.raises(ValueError, match="data.train_subset"):
            stratified_subset(LABELS, bad, seed=0)  # type: ignore[arg-type]


def module(folder: Path, **overrides: object) -> ClassifyDataModule:
    kwargs = dict(format="csv", path=str(folder), batch_size=4, eval_batch_size=3, seed=0)
    return ClassifyDataModule(**{**kwargs, **overrides})  # type: ignore[arg-type]


def test_datamodule_trains_on_the_subset_and_exposes_the_rest(tmp_path: Path) -> None:
    folder = write_tiny_csv(tmp_path / "csv")  # 50 train rows: 25 animal, 25 colour
    whole = module(folder)
    dm = module(folder, train_subset=6, subset_seed=2)
    train = whole.raw_split("train")
    picked = stratified_subset(train.labels, 6, seed=2)
    assert dm.raw_split("train").tokens == [train.tokens[i] for i in picked]
    assert dm.class_counts("train") == {"animal": 3, "colour": 3}
    assert dm.classes == whole.classes
    rest = dm.unlabelled_train
    assert rest.tokens == [train.tokens[i] for i in unlabelled_indices(train.labels, 6, 2)]
    assert len(rest) == 44 and len(whole.unlabelled_train) == 0
    assert dm.class_counts("valid") == whole.class_counts("valid")  # valid/test untouched
    batches = list(dm.train_dataloader())
    assert sum(len(b.labels) for b in batches) == 6
    assert len(dm.vocab) < len(whole.vocab)  # the built vocabulary comes from the subset


def test_datamodule_checks_the_subset_keys(tmp_path: Path) -> None:
    folder = write_tiny_csv(tmp_path / "csv")
    for key, value in [("train_subset", 0), ("train_subset", "10"), ("subset_seed", 1.5)]:
        with pytest.raises(ValueError, match=f"data.{key} must be"):
            module(folder, **{key: value})
