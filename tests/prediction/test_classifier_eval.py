"""python -m src.eval on a classifier checkpoint: the metrics agree with the training run's
test numbers and with each other, the confusion matrix is written as a PNG in the run folder,
and an offline wandb run gets them too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from tests.conftest import CONF_DIR


def eval_cfg(ckpt: Path, *overrides: str):  # noqa: ANN201 - a DictConfig
    """src.eval's config; data.path of a CSV run is absolute, so the paths are placeholders."""
    paths = [f"paths.data_dir={ckpt.parent}", f"paths.cache_dir={ckpt.parent}"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="eval", overrides=[f"ckpt_path={ckpt}", *paths, *overrides])


def test_classifier_metrics_and_confusion_matrix(classifiers: list[Path], tmp_path: Path) -> None:
    from src.eval import evaluate

    best = classifiers[0].parent / "best.ckpt"
    run_dir = best.parent.parent
    results = evaluate(eval_cfg(best, "split=test", f"out={tmp_path / 'r.json'}"))
    trained = json.loads((run_dir / "results.json").read_text())
    assert results["acc"] == pytest.approx(trained["test/acc"], abs=1e-6)
    assert results["f1"] == pytest.approx(trained["test/f1"], abs=1e-6)
    assert results["loss"] == pytest.approx(trained["test/loss"], abs=1e-5)
    matrix, per_class = results["confusion_matrix"], results["per_class"]
    assert list(per_class) == ["animal", "colour"]
    assert sum(sum(row) for row in matrix) == results["documents"] == 12
    for i, name in enumerate(per_class):
        row = per_class[name]
        assert row["support"] == sum(matrix[i])
        assert row["recall"] == pytest.approx(matrix[i][i] / sum(matrix[i]))
        predicted = sum(r[i] for r in matrix)
        assert row["precision"] == pytest.approx(matrix[i][i] / predicted if predicted else 0.0)
    assert results["acc"] == pytest.approx((matrix[0][0] + matrix[1][1]) / 12)
    png = run_dir / "confusion_matrix_test.png"
    assert results["confusion_matrix_png"] == str(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert results["wandb"].startswith("skipped")  # the run logged to CSV only
    assert json.loads((tmp_path / "r.json").read_text())["acc"] == results["acc"]


def test_classifier_eval_refuses_language_model_options(classifiers: list[Path]) -> None:
    from src.eval import evaluate

    with pytest.raises(ValueError, match="is a classifier: pointer and dynamic are for LMs"):
        evaluate(eval_cfg(classifiers[0], "pointer.enabled=true"))


def test_metrics_go_to_the_runs_offline_wandb_run(tmp_path: Path) -> None:
    from src.prediction.classifier_eval import log_to_wandb, save_confusion_matrix

    run_dir = tmp_path / "run"
    (run_dir / "wandb").mkdir(parents=True)
    (run_dir / "wandb_run_id").write_text("t21btest\n")
    png = run_dir / "confusion_matrix_valid.png"
    save_confusion_matrix([[3, 1], [0, 4]], ["a", "b"], png, "valid")
    results = {"loss": 0.5, "acc": 0.875, "f1": 0.87}
    assert log_to_wandb(run_dir, "valid", results, png) == "logged to offline run t21btest"
    assert list((run_dir / "wandb").glob("offline-run-*-t21btest"))
