"""Truncated-BPTT batching (REFERENCE §2): parallel streams cut into ordered windows.

The token stream is cut into B contiguous streams (rows); windows walk along all streams in
step, in order, so a hidden state carried from one window to the next sees continuous text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import IterableDataset


class Window(NamedTuple):
    """One training/evaluation step: `targets[t] = token after inputs[t]` for each stream."""

    inputs: torch.Tensor  # LongTensor[T, B]
    targets: torch.Tensor  # LongTensor[T, B]
    lr_scale: float  # T / bptt for variable-length training windows, else 1.0


def batchify(ids: np.ndarray, batch_size: int, rank: int = 0, world_size: int = 1) -> np.ndarray:
    """(B_local, N) view of `ids` cut into `batch_size` contiguous streams; rank r's share.

    Trailing tokens that do not fill a full column are dropped (salesforce). Rank r keeps
    streams [r*B/W, (r+1)*B/W), so the shards of all ranks together are the single-process
    batch and every rank walks the same number of windows.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if world_size <= 0 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    if batch_size % world_size:
        raise ValueError(
            f"batch_size {batch_size} is not divisible by the number of processes {world_size}"
        )
    n = len(ids) // batch_size
    if n < 2:
        raise ValueError(
            f"{len(ids)} tokens cannot fill {batch_size} streams of at least 2 tokens each"
        )
    streams = ids[: n * batch_size].reshape(batch_size, n)
    per_rank = batch_size // world_size
    return streams[rank * per_rank : (rank + 1) * per_rank]


def sample_seq_len(
    rng: np.random.Generator, bptt: int, p: float = 0.95, std: float = 5.0, min_len: int = 5
) -> int:
    """Variable BPTT length: base = bptt w.p. `p` else bptt / 2; max(min_len, int(N(base, std)))."""
    base = bptt if rng.random() < p else bptt / 2
    return max(min_len, int(rng.normal(base, std)))


class WindowIterable(IterableDataset):
    """Ordered BPTT windows over a (B, N) streams array (use with `DataLoader(batch_size=None)`).

    Windows start at i = 0 and advance by their length T; the last is cut so that targets
    stay inside the streams, so each target position 1..N-1 is predicted exactly once per pass.
    With `variable=True`, T is drawn by `sample_seq_len` from an RNG seeded by (seed, epoch),
    identical on every rank; the epoch is `epoch_fn()` read at iteration start when that gives
    a number (e.g. the trainer's current epoch), else the last `set_epoch` value.
    `skip_fn()`, read at iteration start, gives a number of leading windows to skip: a run
    resumed mid-epoch continues with the window after the last one it trained on.
    """

    def __init__(
        self,
        streams: np.ndarray,
        bptt: int,
        *,
        variable: bool = False,
        p: float = 0.95,
        std: float = 5.0,
        min_len: int = 5,
        seed: int = 0,
        epoch_fn: Callable[[], int | None] | None = None,
        skip_fn: Callable[[], int] | None = None,
    ) -> None:
        if streams.ndim != 2 or streams.shape[1] < 2:
            raise ValueError(f"streams must be (B, N) with N >= 2, got shape {streams.shape}")
        if bptt <= 0:
            raise ValueError(f"bptt must be positive, got {bptt}")
        self.streams = streams
        self.bptt = bptt
        self.variable = variable
        self.p, self.std, self.min_len = p, std, min_len
        self.seed = seed
        self.epoch_fn = epoch_fn
        self.skip_fn = skip_fn
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def seq_lens(self) -> Iterator[int]:
        """Window lengths of one pass at the current epoch (last one cut at the end)."""
        epoch = self.epoch_fn() if self.epoch_fn is not None else None
        if epoch is not None:
            self.set_epoch(epoch)
        rng = np.random.default_rng([self.seed, self.epoch]) if self.variable else None
        i, last = 0, self.streams.shape[1] - 1
        while i < last:
            T = self.bptt
            if rng is not None:
                T = sample_seq_len(rng, self.bptt, self.p, self.std, self.min_len)
            T = min(T, last - i)
            yield T
            i += T

    def num_windows(self) -> int:
        """Exact number of windows in the next pass (replays the RNG; no data is read)."""
        return sum(1 for _ in self.seq_lens())

    def __iter__(self) -> Iterator[Window]:
        i = 0
        skip = self.skip_fn() if self.skip_fn is not None else 0
        for n, T in enumerate(self.seq_lens()):
            if n < skip:  # the lengths are still drawn, so the RNG stays in step
                i += T
                continue
            chunk = np.array(self.streams[:, i : i + T + 1], dtype=np.int64).T  # (T + 1, B)
            block = torch.from_numpy(np.ascontiguousarray(chunk))
            lr_scale = T / self.bptt if self.variable else 1.0
            yield Window(block[:-1], block[1:], lr_scale)
            i += T
