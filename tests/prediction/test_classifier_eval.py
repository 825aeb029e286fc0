"""python -m src.eval on a classifier checkpoint: the metrics agree with the training run's
test numbers and with each other, the confusion matrix is written as a PNG in the run folder,
and an offline wandb run gets them too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from tests.conftest import CONF_DIR


def eval_cfg(ckpt: Path | list[Path], *overrides: str):  # noqa: ANN201 - a DictConfig
    """src.eval's config (a list of checkpoints: an ensemble); data.path of a CSV run is
    absolute, so the paths are placeholders."""
    first = ckpt[0] if isinstance(ckpt, list) else ckpt
    value = "[" + ",".join(map(str, ckpt)) + "]" if isinstance(ckpt, list) else str(ckpt)
    paths = [f"paths.data_dir={first.parent}", f"paths.cache_dir={first.parent}"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="eval", overrides=[f"ckpt_path={value}", *paths, *overrides])


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


def test_backward_classifier_and_the_ensemble_of_both(classifiers: list[Path], tmp_path) -> None:
    """The backward classifier evaluates as its training run tested it (documents reversed);
    ``ckpt_path=[fwd,bwd]`` scores the mean of the two models' probabilities."""
    import torch
    import torch.nn.functional as F

    from src.checks import check_config
    from src.eval import evaluate
    from src.prediction.classifier_eval import split_logits

    bests = [c.parent / "best.ckpt" for c in classifiers]
    single = evaluate(eval_cfg(bests[1], "split=test", f"out={tmp_path / 'bwd.json'}"))
    trained = json.loads((bests[1].parent.parent / "results.json").read_text())
    assert single["acc"] == pytest.approx(trained["test/acc"], abs=1e-6)
    assert single["loss"] == pytest.approx(trained["test/loss"], abs=1e-5)

    run_paths = [f"paths.root_dir={tmp_path}", f"paths.output_dir={tmp_path}"]
    cfg = eval_cfg(bests, "split=test", *run_paths)
    check_config(cfg)  # a list of files passes the eval rules
    both = evaluate(cfg)
    assert both["ckpt_path"] == [str(b) for b in bests] and both["documents"] == 12
    paths = {"data_dir": str(tmp_path), "cache_dir": str(tmp_path)}
    probs = []
    for best in bests:
        logits, labels, order, _ = split_logits(best, "test", paths)
        p = torch.zeros(logits.shape, dtype=torch.float64)
        p[torch.from_numpy(order)] = torch.softmax(logits.double(), -1)
        probs.append(p)
        ordered = torch.zeros_like(labels)
        ordered[torch.from_numpy(order)] = labels
    mean = (probs[0] + probs[1]) / 2
    assert (probs[0] - probs[1]).abs().max() > 1e-3  # two different models
    assert both["loss"] == pytest.approx(float(F.nll_loss(mean.log(), ordered)), abs=1e-6)
    assert both["acc"] == pytest.approx(float((mean.argmax(1) == ordered).double().mean()))
    written = bests[0].with_name("ensemble-2.eval-test-float.json")
    assert json.loads(written.read_text())["acc"] == both["acc"]
    assert both["confusion_matrix_png"].endswith("confusion_matrix_test_ensemble.png")
