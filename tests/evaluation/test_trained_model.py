"""The cache pointer and dynamic evaluation on trained models: each lowers test perplexity.

Fast: a tiny model on a made-up "bursty" corpus (each document uses 4 of 40 words, as topics
make real documents repeat their words). Slow: the smoke model on PTB, the paper's setting.
"""

from __future__ import annotations

import copy
import itertools
import random
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from src.data.bptt import WindowIterable
from src.data.datamodule import LMDataModule
from src.evaluation.cli_options import DynamicOptions, PointerOptions, describe, run_extras
from src.evaluation.dynamic import dynamic_evaluate
from src.evaluation.pointer import evaluate_pointer
from src.evaluation.scoring import evaluate_plain
from src.training.checkpoint import load_module
from tests.conftest import TINY_OVERRIDES, compose_train


def write_bursty_corpus(root: Path, docs: tuple[int, int, int] = (30, 4, 4), seed: int = 0) -> Path:
    """<root>/bursty/{train,valid,test}.txt: documents of 6 lines over 4 of 40 words each."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(40)]
    folder = root / "bursty"
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in zip(("train", "valid", "test"), docs, strict=True):
        lines = []
        for _ in range(n):
            topic = rng.sample(words, 4)
            lines += [" ".join(rng.choices(topic, k=rng.randint(4, 8))) for _ in range(6)]
        if split == "train":
            lines.append(" ".join(words))  # every word in the training vocabulary
        (folder / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def trained(run_dir: Path, data_dir: Path, cache: Path, overrides: list[str]):
    from src.train import train

    results = train(compose_train(overrides, run_dir, data_dir, cache))
    module, _ = load_module(Path(results["best_checkpoint"]))
    data = {**module.hparams.data, "data_dir": str(data_dir), "cache_dir": str(cache)}
    datamodule = LMDataModule(**data, seed=0)
    datamodule.prepare_data()
    return module, datamodule


@pytest.fixture(scope="module")
def bursty(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("bursty")
    data = write_bursty_corpus(root / "corpora")
    overrides = [*TINY_OVERRIDES, "data.corpus=bursty", "data.bptt=10", "trainer.max_epochs=1"]
    return trained(root / "run", data, root / "cache", overrides)


def test_pointer_lowers_test_perplexity(bursty) -> None:
    module, datamodule = bursty
    streams = datamodule.test_dataloader().dataset.streams
    scored = evaluate_pointer(
        module.model, WindowIterable(streams, 10), window=50, theta=1.0, lam=0.3
    )
    print(f"bursty: plain {scored.plain.ppl:.2f}, pointer {scored.pointer.ppl:.2f}")
    assert scored.pointer.ppl < 0.8 * scored.plain.ppl


def test_dynamic_evaluation_lowers_test_perplexity(bursty) -> None:
    module, datamodule = bursty
    streams = datamodule.test_dataloader().dataset.streams
    plain = evaluate_plain(module.model, WindowIterable(streams, 10))
    adapted = dynamic_evaluate(copy.deepcopy(module.model), WindowIterable(streams, 5), lr=1.0)
    print(f"bursty: plain {plain.ppl:.2f}, dynamic {adapted.ppl:.2f}")
    assert adapted.ppl < 0.8 * plain.ppl


def test_eval_cli_options_report_both_beside_plain(bursty) -> None:
    module, datamodule = bursty
    before = copy.deepcopy(module.model.state_dict())
    pointer = OmegaConf.structured(PointerOptions(enabled=True, window=50, lam=0.3))
    dynamic = OmegaConf.structured(DynamicOptions(enabled=True, lr=1.0, bptt=5))
    results = run_extras(module.model, datamodule, "test", pointer, dynamic)
    plain = evaluate_plain(
        module.model, WindowIterable(datamodule.test_dataloader().dataset.streams, 10)
    )
    assert results["pointer_ppl"] < plain.ppl and results["dynamic_ppl"] < plain.ppl
    assert results["dynamic_options"]["bptt"] == 5
    for key, value in module.model.state_dict().items():  # dynamic evaluation adapted a copy
        assert value.equal(before[key])
    assert "pointer (window 50" in describe(results) and "dynamic (lr 1" in describe(results)
    assert run_extras(module.model, datamodule, "test", PointerOptions(), DynamicOptions()) == {}


@pytest.mark.slow
def test_pointer_and_dynamic_evaluation_on_ptb(corpora_dir: Path, cache_dir: Path, tmp_path: Path):
    """The smoke model (tiny, trained for seconds) on the first 10,000 test tokens of PTB."""
    module, datamodule = trained(
        tmp_path / "run",
        corpora_dir,
        cache_dir,
        ["experiment=smoke", "logger=csv", "~callbacks.rich_progress_bar", "test=false"],
    )
    streams = datamodule.test_dataloader().dataset.streams[:, :10_001]
    bptt = datamodule.bptt
    scored = evaluate_pointer(
        module.model, WindowIterable(streams, bptt), window=500, theta=1.0, lam=0.1
    )
    windows = itertools.islice(WindowIterable(streams, 5), None)
    adapted = dynamic_evaluate(copy.deepcopy(module.model), windows, lr=1.0)
    print(
        f"PTB test[:10k], smoke model: plain {scored.plain.ppl:.2f}, pointer (500, 1.0, 0.1) "
        f"{scored.pointer.ppl:.2f}, dynamic (lr 1, bptt 5) {adapted.ppl:.2f}"
    )
    assert scored.pointer.ppl < scored.plain.ppl
    assert adapted.ppl < scored.plain.ppl
