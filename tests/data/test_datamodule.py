"""LMDataModule: argument checks, per-rank streams, epochs, and a real Lightning loop."""

import pickle
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch

from src.data import LMDataModule, Window, WindowIterable

WORDS = ["the", "a", "cat", "dog", "sat", "ran", "on", "under", "mat", "log"]


def make_corpus(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split, lines in [("train", 80), ("valid", 20), ("test", 20)]:
        text = "".join(" ".join(rng.choice(WORDS, size=6)) + "\n" for _ in range(lines))
        (root / "tiny").mkdir(parents=True, exist_ok=True)
        (root / "tiny" / f"{split}.txt").write_text(text)
    return root


def datamodule(tmp_path: Path, **overrides) -> LMDataModule:
    kwargs = dict(
        data_dir=str(make_corpus(tmp_path / "data")),
        corpus="tiny",
        cache_dir=str(tmp_path / "cache"),
        batch_size=4,
        eval_batch_size=2,
        bptt=10,
        download=False,
    )
    return LMDataModule(**{**kwargs, **overrides})


def test_loaders_yield_time_major_windows(tmp_path):
    dm = datamodule(tmp_path)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.vocab_size == len(WORDS) + 1 and dm.vocab.itos[-1] != "<unk>"
    train = list(dm.train_dataloader())
    assert all(isinstance(w, Window) for w in train)
    assert {w.inputs.shape[1] for w in train} == {4}
    assert sum(w.inputs.shape[0] for w in train) == 560 // 4 - 1
    assert len({w.inputs.shape[0] for w in train}) > 1  # variable BPTT by default
    valid = list(dm.val_dataloader())
    assert [w.inputs.shape for w in valid][0] == (10, 2)
    assert {w.lr_scale for w in valid} == {1.0}
    test = list(dm.test_dataloader())
    assert test[0].inputs.shape == (10, 1)
    assert sum(w.inputs.shape[0] for w in test) == 140 - 1


def test_vocab_is_available_before_setup(tmp_path):
    dm = datamodule(tmp_path)
    assert dm.vocab_size == len(WORDS) + 1


def test_fixed_bptt_when_variable_is_off(tmp_path):
    dm = datamodule(tmp_path, variable_bptt=False)
    lens = [w.inputs.shape[0] for w in dm.train_dataloader()]
    assert set(lens[:-1]) == {10}
    assert {w.lr_scale for w in dm.train_dataloader()} == {1.0}


def fake_trainer(rank: int = 0, world: int = 1, epoch: int = 0) -> SimpleNamespace:
    return SimpleNamespace(global_rank=rank, world_size=world, current_epoch=epoch)


def test_ranks_get_contiguous_shards_of_the_global_batch(tmp_path):
    single = datamodule(tmp_path)
    single.setup("fit")
    shards = []
    for rank in range(2):
        dm = datamodule(tmp_path)
        dm.trainer = fake_trainer(rank, 2)
        dm.setup("fit")
        shards.append(dm)
    for name in ("train_dataloader", "val_dataloader"):
        loaders = [getattr(dm, name)() for dm in shards]
        whole = getattr(single, name)()
        for parts, full in zip(zip(*loaders, strict=True), whole, strict=True):
            assert torch.equal(torch.cat([p.inputs for p in parts], dim=1), full.inputs)
    # test_batch_size 1 cannot be split over 2 ranks: every rank evaluates the whole stream
    tests = [list(dm.test_dataloader()) for dm in shards]
    assert all(torch.equal(a.targets, b.targets) for a, b in zip(*tests, strict=True))


def test_train_windows_follow_the_trainer_epoch(tmp_path):
    dm = datamodule(tmp_path)
    dm.trainer = fake_trainer(epoch=0)
    loader = dm.train_dataloader()
    epoch0 = [w.inputs.shape[0] for w in loader]
    dm.trainer.current_epoch = 1
    epoch1 = [w.inputs.shape[0] for w in loader]
    assert epoch0 != epoch1
    dm.trainer.current_epoch = 0
    assert [w.inputs.shape[0] for w in loader] == epoch0


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"bptt": 0}, "data.bptt"),
        ({"batch_size": -1}, "data.batch_size"),
        ({"eval_batch_size": 0}, "data.eval_batch_size"),
        ({"test_batch_size": 0}, "data.test_batch_size"),
        ({"min_bptt": 0}, "data.min_bptt"),
        ({"bptt_p": 1.5}, "data.bptt_p"),
        ({"bptt_std": -1.0}, "data.bptt_std"),
        ({"tokenizer": "bpe"}, "data.tokenizer"),
        ({"corpus": ""}, "data.corpus"),
    ],
)
def test_bad_arguments_name_the_config_key(tmp_path, overrides, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        datamodule(tmp_path, **overrides)


@pytest.mark.parametrize(
    "overrides, key",
    [
        ({"batch_size": 400}, "data.batch_size"),
        ({"eval_batch_size": 100}, "data.eval_batch_size"),
    ],
)
def test_batch_too_large_for_the_split_names_the_key(tmp_path, overrides, key):
    dm = datamodule(tmp_path, **overrides)
    with pytest.raises(ValueError, match=key.replace(".", r"\.") + " is too large"):
        dm.setup("fit")


def test_batch_must_divide_over_ranks(tmp_path):
    dm = datamodule(tmp_path, batch_size=5)
    dm.trainer = fake_trainer(0, 2)
    with pytest.raises(ValueError, match=r"data\.batch_size must be divisible.*\(2\)"):
        dm.setup("fit")


def test_pickling_drops_the_memmaps(tmp_path):
    dm = datamodule(tmp_path)
    dm.setup("fit")
    clone = pickle.loads(pickle.dumps(dm))
    assert clone._arrays is None and dm._arrays is not None
    clone.setup("fit")
    np.testing.assert_array_equal(clone._split("train"), dm._split("train"))


def test_missing_corpus_without_download(tmp_path):
    dm = datamodule(tmp_path, corpus="ptb-not-here")
    with pytest.raises(FileNotFoundError, match="AWD_DATA_DIR"):
        dm.prepare_data()


class Recorder(L.LightningModule):
    """Minimal consumer of Window batches that records what Lightning feeds it."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(vocab_size, vocab_size)
        self.seen: list[tuple[int, int, float]] = []
        self.val_tokens = 0

    def training_step(self, batch: Window, batch_idx: int) -> torch.Tensor:
        self.seen.append((self.current_epoch, batch.inputs.shape[0], batch.lr_scale))
        logits = self.emb(batch.inputs)
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch.targets.flatten())

    def validation_step(self, batch: Window, batch_idx: int) -> None:
        self.val_tokens += batch.targets.numel()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_fit_gets_ordered_windows_with_epoch_seeded_lengths(tmp_path):
    dm = datamodule(tmp_path)
    model = Recorder(dm.vocab_size)
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=dm)
    for epoch in range(2):
        reference = WindowIterable(dm._split("train"), 10, variable=True, seed=141)
        reference.set_epoch(epoch)
        lens = [T for e, T, _ in model.seen if e == epoch]
        assert lens == list(reference.seq_lens())
    assert all(scale == T / 10 for _, T, scale in model.seen)
    assert model.val_tokens == 2 * (140 // 2 - 1) * 2  # two passes over (N - 1) x B targets
