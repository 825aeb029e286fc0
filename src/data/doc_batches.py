"""Batches of labelled documents: end padding, fastai's sortish order, per-rank shards.

Padding goes at the END of each row (fastai pads at the start): a forward recurrence's outputs
at real positions then never depend on the padding, and the backward direction reverses each
row within its length, so the whole encoder is padding-invariant.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import IterableDataset

from src.data.documents import EncodedSplit

SORTISH_CHUNK = 50  # batches per sorted chunk (fastai's SortishSampler: bs * 50 documents)


class DocBatch(NamedTuple):
    """A batch of documents, longest first within the sorted order it came from."""

    tokens: Tensor  # int64 [B, T]: ids, each row padded at the end with pad_id to T = max length
    lengths: Tensor  # int64 [B]: real tokens per row (>= 1)
    labels: Tensor  # int64 [B]: class ids


def collate(split: EncodedSplit, index: Sequence[int] | np.ndarray, pad_id: int) -> DocBatch:
    """The documents `index` of `split` as one end-padded batch."""
    lengths = split.lengths[np.asarray(index, dtype=np.int64)]
    tokens = np.full((len(lengths), int(lengths.max())), pad_id, dtype=np.int64)
    for row, i in enumerate(index):
        tokens[row, : lengths[row]] = split.docs[i]
    return DocBatch(
        torch.from_numpy(tokens),
        torch.from_numpy(lengths.copy()),
        torch.from_numpy(split.labels[np.asarray(index, dtype=np.int64)]),
    )


def _cut(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Consecutive batches of `order`; a lone leftover document joins the batch before it
    (no document is dropped, and BatchNorm cannot train on a batch of one)."""
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2:] = [np.concatenate(batches[-2:])]
    return batches


def sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Evaluation order: longest first (stable: ties keep file order), no shuffling."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return _cut(order, batch_size)


def sortish_batches(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """fastai's `SortishSampler`: shuffle, sort by length (longest first) within chunks of
    `SORTISH_CHUNK` batches, cut into batches, put the batch holding the longest document
    first (an out-of-memory error shows at the first step) and shuffle the others."""
    lengths = np.asarray(lengths)
    order = rng.permutation(len(lengths))
    size = batch_size * SORTISH_CHUNK
    chunks = [order[i : i + size] for i in range(0, len(order), size)]
    order = np.concatenate([c[np.argsort(-lengths[c], kind="stable")] for c in chunks] or [order])
    batches = _cut(order, batch_size)
    if len(batches) <= 1:
        return batches
    first = int(np.argmax([lengths[b[0]] for b in batches]))
    batches[0], batches[first] = batches[first], batches[0]
    rest = rng.permutation(len(batches) - 1) + 1
    return [batches[0], *(batches[i] for i in rest)]


class DocBatches(IterableDataset):
    """One pass over a split as `DocBatch`es (a DataLoader with `batch_size=None` passes them).

    Training (`shuffle=True`): sortish order from an RNG seeded by (seed, epoch), the same on
    every rank; the epoch is `epoch_fn()` at iteration start when that gives a number, else the
    last `set_epoch` value. Rank r of `world` takes batches r, r + world, ... of the first
    `world * (n // world)` (equal step counts; the few left out change with the epoch).
    `skip_fn()` gives leading batches to skip (a run resumed mid-epoch).
    Evaluation: longest first, every rank sees every batch (same metric, more work).
    """

    def __init__(
        self,
        split: EncodedSplit,
        batch_size: int,
        pad_id: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        epoch_fn: Callable[[], int | None] | None = None,
        skip_fn: Callable[[], int] | None = None,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.split = split
        self.batch_size = batch_size
        self.pad_id = pad_id
        self.shuffle = shuffle
        self.seed = seed
        self.rank, self.world = rank, world
        self.epoch_fn = epoch_fn
        self.skip_fn = skip_fn
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[np.ndarray]:
        """Document indices of each batch of this rank's next pass (reads no tokens)."""
        if not self.shuffle:
            return sorted_batches(self.split.lengths, self.batch_size)
        epoch = self.epoch_fn() if self.epoch_fn is not None else None
        if epoch is not None:
            self.set_epoch(epoch)
        rng = np.random.default_rng([self.seed, self.epoch])
        batches = sortish_batches(self.split.lengths, self.batch_size, rng)
        usable = len(batches) - len(batches) % self.world
        return batches[self.rank : usable : self.world]

    def __len__(self) -> int:
        if not self.shuffle:
            return len(sorted_batches(self.split.lengths, self.batch_size))
        n = -(-len(self.split) // self.batch_size)
        if n > 1 and len(self.split) % self.batch_size == 1:
            n -= 1
        return n // self.world

    def __iter__(self) -> Iterator[DocBatch]:
        skip = self.skip_fn() if self.skip_fn is not None else 0
        for index in self.batches()[skip:]:
            yield collate(self.split, index, self.pad_id)
