"""`LMDataModule`: corpus folder -> cached ids -> per-rank BPTT windows for Lightning."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from src.data.bptt import WindowIterable, batchify
from src.data.cache import CorpusArrays, load_corpus
from src.data.corpus import Vocab
from src.data.download import ensure_corpus
from src.data.tokenizers import check_tokenizer
from src.data.train_position import TrainPosition


class LMDataModule(TrainPosition, L.LightningDataModule):
    """Language-modeling data: ordered BPTT windows, never shuffled (REFERENCE §2).

    `batch_size` is global: under DDP each rank gets its own contiguous shard of the streams.
    Validation/test streams are sharded the same way when their batch size divides by the
    number of ranks, and otherwise every rank evaluates all streams (same metric, more work).
    Training windows have variable length (`variable_bptt`) drawn from an RNG seeded by
    (seed, epoch), so every rank draws the same lengths; evaluation windows are `bptt` long.
    """

    position_key = "windows_done"  # the training position in checkpoints (TrainPosition)

    def __init__(
        self,
        *,
        data_dir: str,
        corpus: str,
        tokenizer: str = "word",
        char_level: bool = False,
        batch_size: int = 20,
        eval_batch_size: int = 10,
        test_batch_size: int = 1,
        bptt: int = 70,
        variable_bptt: bool = True,
        bptt_p: float = 0.95,
        bptt_std: float = 5.0,
        min_bptt: int = 5,
        seed: int = 141,
        cache_dir: str,
        download: bool = True,
        url_overrides: Mapping[str, str] | None = None,
        reverse: bool = False,
    ) -> None:
        super().__init__()
        _check(bool(corpus), "data.corpus", "must name a corpus folder", corpus)
        check_tokenizer(tokenizer)  # a known name, and its library installed
        for key, value in [
            ("data.batch_size", batch_size),
            ("data.eval_batch_size", eval_batch_size),
            ("data.test_batch_size", test_batch_size),
            ("data.bptt", bptt),
            ("data.min_bptt", min_bptt),
        ]:
            ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
            _check(ok, key, "must be a positive integer", value)
        _check(0.0 <= bptt_p <= 1.0, "data.bptt_p", "must be a probability in [0, 1]", bptt_p)
        _check(bptt_std >= 0.0, "data.bptt_std", "must be >= 0", bptt_std)
        self.data_dir = Path(data_dir).expanduser()
        self.corpus = corpus
        self.tokenizer = tokenizer
        self.char_level = char_level
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.test_batch_size = test_batch_size
        self.bptt = bptt
        self.variable_bptt = variable_bptt
        self.bptt_p, self.bptt_std, self.min_bptt = bptt_p, bptt_std, min_bptt
        self.seed = seed
        self.cache_dir = Path(cache_dir).expanduser()
        self.download = download
        self.url_overrides = dict(url_overrides) if url_overrides else None
        self.reverse = bool(reverse)
        self._arrays: CorpusArrays | None = None
        self._streams: dict[str, np.ndarray] = {}
        # Position in the training epoch, for exact resume (saved through `state_dict`).
        self._init_position()

    # -- data ---------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Download the corpus if needed and build the token cache (Lightning: rank 0)."""
        self._load()

    def setup(self, stage: str | None = None) -> None:
        """Memory-map the cache and cut this rank's streams of every split."""
        arrays = self._load()
        rank, world = self._rank_world()
        rule = f"must be divisible by the number of processes ({world})"
        _check(self.batch_size % world == 0, "data.batch_size", rule, self.batch_size)
        sizes = {
            "train": ("data.batch_size", self.batch_size),
            "valid": ("data.eval_batch_size", self.eval_batch_size),
            "test": ("data.test_batch_size", self.test_batch_size),
        }
        self._streams = {
            split: _streams(_oriented(arrays.split(split), self.reverse), size, key, rank, world)
            for split, (key, size) in sizes.items()
        }

    @property
    def vocab(self) -> Vocab:
        """The train vocabulary (loads the cache on first use, downloading if allowed)."""
        return self._load().vocab

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def split_lengths(self) -> dict[str, int]:
        """Tokens in each split (train, valid, test); reads the cache's headers only."""
        arrays = self._load()
        return {split: len(arrays.split(split)) for split in ("train", "valid", "test")}

    def train_counts(self) -> np.ndarray:
        """How often each word id occurs in the training split, [V] int64 (the split softmax
        ranks words by it); read from the token cache 16M ids at a time."""
        arrays = self._load()
        counts = np.zeros(len(arrays.vocab), dtype=np.int64)
        step = 1 << 24
        for start in range(0, len(arrays.train), step):
            counts += np.bincount(arrays.train[start : start + step], minlength=len(counts))
        return counts

    # -- loaders ------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        windows = WindowIterable(
            self._split("train"),
            self.bptt,
            variable=self.variable_bptt,
            p=self.bptt_p,
            std=self.bptt_std,
            min_len=self.min_bptt,
            seed=self.seed,
            epoch_fn=self._trainer_epoch,
            skip_fn=self._start_train_pass,
        )
        return _loader(windows)

    def val_dataloader(self) -> DataLoader:
        return _loader(WindowIterable(self._split("valid"), self.bptt))

    def test_dataloader(self) -> DataLoader:
        return _loader(WindowIterable(self._split("test"), self.bptt))

    def __getstate__(self) -> dict:
        """Pickle without the memmaps (ddp_spawn would copy them whole); setup re-maps them."""
        state = self.__dict__.copy()
        state["_arrays"], state["_streams"] = None, {}
        return state

    # -- helpers ------------------------------------------------------------------------
    def _load(self) -> CorpusArrays:
        if self._arrays is None:
            corpus_dir = ensure_corpus(
                self.corpus, self.data_dir, download=self.download, url_overrides=self.url_overrides
            )
            self._arrays = load_corpus(corpus_dir, self.tokenizer, self.cache_dir)
        return self._arrays

    def _split(self, split: str) -> np.ndarray:
        if not self._streams:
            self.setup()
        return self._streams[split]

    def _rank_world(self) -> tuple[int, int]:
        if self.trainer is None:
            return 0, 1
        return self.trainer.global_rank, self.trainer.world_size


def _oriented(ids: np.ndarray, reverse: bool) -> np.ndarray:
    """The split as read: forwards (the memmap itself), or backwards (`data.reverse`, a copy).

    Reversing the whole stream reverses every line: `<eos>` then precedes the line it ended,
    which is how fastai's backward language model reads (its `xxbos` ends each document)."""
    return np.ascontiguousarray(ids[::-1]) if reverse else ids


def _loader(windows: WindowIterable) -> DataLoader:
    """Windows are already batches (`batch_size=None`). The loader gets a generator of its own:
    every `iter()` of a DataLoader draws a base seed, and from the global generator that draw
    would shift the dropout masks of a resumed run against the uninterrupted one."""
    return DataLoader(windows, batch_size=None, num_workers=0, generator=torch.Generator())


def _streams(ids: np.ndarray, batch_size: int, key: str, rank: int, world: int) -> np.ndarray:
    """This rank's streams; replicated on every rank when `batch_size` does not divide."""
    rule = f"is too large: {len(ids)} tokens cannot fill that many streams of >= 2 tokens each"
    _check(len(ids) // batch_size >= 2, key, rule, batch_size)
    if batch_size % world:
        return batchify(ids, batch_size)
    return batchify(ids, batch_size, rank, world)


def _check(ok: bool, key: str, rule: str, value: object) -> None:
    if not ok:
        raise ValueError(f"{key} {rule}, got {value!r}")
