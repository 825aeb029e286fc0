"""Tiny trained models for the prediction tests: two classifiers on the tiny labelled CSVs
(seed 1 reading forwards, seed 2 backwards: ``data.reverse=true``) and a language model on the
tiny corpus, trained once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import TINY_OVERRIDES, compose_train, write_tiny_corpus
from tests.helpers.labelled import write_tiny_csv
from tests.training.test_classify import CLASSIFY as TRAINING_CLASSIFY

CLASSIFY = [*TRAINING_CLASSIFY, "trainer.enable_progress_bar=false"]


@pytest.fixture(scope="session")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(corpora root with the tiny LM corpus, folder of the tiny labelled CSVs)."""
    root = tmp_path_factory.mktemp("prediction")
    write_tiny_corpus(root / "corpora")
    return root / "corpora", write_tiny_csv(root / "csv")


def _train(overrides: list[str], out: Path, corpora: Path) -> Path:
    from src.train import train

    train(compose_train(overrides, out, corpora, out.parent / "cache"))
    return out / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="session")
def classifiers(
    labelled: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> list[Path]:
    """Two tiny classifiers of the same classes, last.ckpt of each run: seed 1 forwards,
    seed 2 backwards (``data.reverse=true``), the pair ULMFiT ensembles."""
    corpora, csv = labelled
    root = tmp_path_factory.mktemp("classifiers")
    runs = [("seed=1",), ("seed=2", "data.reverse=true")]
    return [
        _train([*CLASSIFY, f"data.path={csv}", *extra], root / f"run{i}", corpora)
        for i, extra in enumerate(runs)
    ]


@pytest.fixture(scope="session")
def language_model(labelled: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny language model trained one epoch on the tiny corpus."""
    out = tmp_path_factory.mktemp("lm")
    overrides = [*TINY_OVERRIDES, "trainer.max_epochs=1", "trainer.enable_progress_bar=false"]
    return _train(overrides, out / "run", labelled[0])
