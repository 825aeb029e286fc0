"""Labelled subsets of train (``data.train_subset=N data.subset_seed=S``): the label budgets of a
learning curve, shared by the classifier (`ClassifyDataModule`) and the classical baseline
(``python -m src.benchmarks.baseline``), so both train on exactly the same documents.

The subset is stratified: class c of N_c train documents (N in all) gets a quota of
n * N_c / N documents, rounded by largest remainder (ties to the class first by name), so the
quotas add up to n. When n >= the number of classes every class keeps at least one document:
a class rounded to 0 takes one from the class whose quota most exceeds its exact share. The
members of class c are the first quota of a permutation of its documents drawn from
``numpy.random.default_rng(seed)`` (classes visited by name), so a (labels, n, seed) gives
the same indices on every machine. n >= N keeps every document.

The complement (`unlabelled_indices`) is the rest of train: its labels are never used. It is
text that ULMFiT's stage 2 (language-model fine-tuning on the task's text) may read, beside
the subset's own text.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import numpy as np

from src.data.documents import RawSplit


def class_quotas(sizes: Sequence[int], n: int) -> np.ndarray:
    """Documents per class for a stratified sample of `n` of ``sum(sizes)`` (n below it):
    largest-remainder rounding of n * N_c / N, then at least 1 per class when n >= classes."""
    sizes_arr = np.asarray(sizes, dtype=np.int64)
    exact = n * sizes_arr / sizes_arr.sum()
    quota = np.floor(exact).astype(np.int64)
    by_remainder = sorted(range(len(quota)), key=lambda k: (-(exact[k] - quota[k]), k))
    for k in by_remainder[: n - int(quota.sum())]:
        quota[k] += 1
    if n >= len(quota):
        for empty in np.flatnonzero(quota == 0):
            excess = np.where(quota > 1, quota - exact, -np.inf)
            quota[int(np.argmax(excess))] -= 1  # a donor exists: the quotas add up to n >= K
            quota[empty] = 1
    return quota


def stratified_subset(labels: Sequence[Hashable], n: int, seed: int) -> np.ndarray:
    """Ascending indices of a stratified, seeded sample of `n` of `labels` (module docstring);
    every index when n >= len(labels)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"data.train_subset must be a positive integer or null, got {n!r}")
    total = len(labels)
    if n >= total:
        return np.arange(total, dtype=np.int64)
    members: dict[Hashable, list[int]] = {}
    for i, label in enumerate(labels):
        members.setdefault(label, []).append(i)
    classes = sorted(members, key=str)
    quota = class_quotas([len(members[c]) for c in classes], n)
    rng = np.random.default_rng(seed)
    chosen = [
        rng.permutation(np.asarray(members[c], dtype=np.int64))[: int(q)]
        for c, q in zip(classes, quota, strict=True)
    ]
    return np.sort(np.concatenate(chosen))


def unlabelled_indices(labels: Sequence[Hashable], n: int, seed: int) -> np.ndarray:
    """Ascending indices of the documents `stratified_subset` leaves out (text without labels)."""
    return _complement(len(labels), stratified_subset(labels, n, seed))


def _complement(total: int, kept: np.ndarray) -> np.ndarray:
    return np.setdiff1d(np.arange(total, dtype=np.int64), kept, assume_unique=True)


def take(raw: RawSplit, indices: np.ndarray) -> RawSplit:
    """The documents of `raw` at `indices`, in that order (same name and path)."""
    picked = [int(i) for i in indices]
    return RawSplit(
        raw.name,
        raw.path,
        [raw.tokens[i] for i in picked],
        [raw.labels[i] for i in picked],
        [raw.where[i] for i in picked],
    )


def split_train(raw: RawSplit, n: int, seed: int) -> tuple[RawSplit, RawSplit]:
    """(the labelled subset, the unlabelled rest) of a train split."""
    kept = stratified_subset(raw.labels, n, seed)
    return take(raw, kept), take(raw, _complement(len(raw), kept))
