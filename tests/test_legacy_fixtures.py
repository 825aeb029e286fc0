"""Files written by older code still load and give the same numbers.

``tests/fixtures/legacy`` holds checkpoints and exported integer files written by commit
fef8003 (before QAT became a model transform and ``src/quant`` was split by concern), and the
losses that code measured (``make_legacy.py`` wrote them). Every check compares to 1e-6
relative: the refactor must not move a number.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TINY_OVERRIDES, compose_train, write_tiny_corpus
from tests.fixtures.legacy import make_legacy

LEGACY = Path(__file__).resolve().parent / "fixtures" / "legacy"
EXPECTED: dict[str, dict[str, Any]] = json.loads((LEGACY / "expected.json").read_text())
SMOKE: dict[str, dict[str, float]] = json.loads((LEGACY / "smoke_expected.json").read_text())[
    "runs"
]
QAT = [name for name, record in EXPECTED.items() if "int8_from_export" in record]
REL = 1e-6


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=REL, abs_tol=0.0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("legacy")
    write_tiny_corpus(root / "corpora")
    return root


def evaluate(ckpt: Path, root: Path, split: str, engine: str) -> float:
    """``python -m src.eval`` in this process, as ``make_legacy`` measured the fixtures."""
    return make_legacy.evaluate(ckpt, root / "corpora", root / "cache", split, engine)


@pytest.mark.parametrize("name", list(EXPECTED))
@pytest.mark.parametrize("split", ["valid", "test"])
def test_legacy_checkpoint_evaluates_as_before(name: str, split: str, tiny: Path) -> None:
    """Float and fake-quantized checkpoints (one with NT-ASGD's live weights and ranges)."""
    got = evaluate(LEGACY / f"{name}.ckpt", tiny, split, "float")
    assert close(got, EXPECTED[name]["eval"][split]), (got, EXPECTED[name]["eval"][split])


@pytest.mark.parametrize("name", QAT)
def test_legacy_integer_models_evaluate_as_before(name: str, tiny: Path) -> None:
    """The integer engine from the QAT checkpoint and from the file exported by old code."""
    from_ckpt = evaluate(LEGACY / f"{name}.ckpt", tiny, "test", "int8")
    from_file = evaluate(LEGACY / f"{name}.int8.pt", tiny, "test", "int8")
    assert close(from_ckpt, EXPECTED[name]["int8_from_checkpoint"])
    assert close(from_file, EXPECTED[name]["int8_from_export"])


@pytest.mark.parametrize("name", list(EXPECTED))
def test_training_reproduces_legacy_runs(name: str, tiny: Path) -> None:
    """Training with the same overrides and seed gives the old run's val and test loss."""
    from src.train import train

    overrides = [*TINY_OVERRIDES, *EXPECTED[name]["overrides"]]
    cfg = compose_train(overrides, tiny / "runs" / name, tiny / "corpora", tiny / "cache")
    results = train(cfg)
    for key, want in EXPECTED[name]["train"].items():
        assert close(results[key], want), (key, results[key], want)


@pytest.mark.slow
def test_smoke_runs_on_ptb_reproduce_legacy_numbers(
    tmp_path: Path, corpora_dir: Path, cache_dir: Path
) -> None:
    """``experiment=smoke`` on real PTB with the QAT transform (LSTM and mLSTM), as the old code
    gave. (All four were checked when the transform landed; the float runs are the same code
    path as the tiny float reruns above, so CI runs only the two that go through ``prepare``.)"""
    from src.train import train

    runs = {k: v for k, v in SMOKE.items() if "quant=qat" in k}
    for i, (overrides, want) in enumerate(runs.items()):
        cfg = compose_train(
            ["experiment=smoke", "logger=csv", "~callbacks.rich_progress_bar", *overrides.split()],
            tmp_path / str(i),
            corpora_dir,
            cache_dir,
        )
        results = train(cfg)
        for key, value in want.items():
            assert close(results[key], value), (overrides, key, results[key], value)
