"""Fine-tuning: weights from a checkpoint, averaged SGD from the first step, stop on NT."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from tests.conftest import compose_train


def test_finetune_starts_in_asgd_and_stops_on_the_trigger(
    run_tiny, monkeypatch: pytest.MonkeyPatch
) -> None:
    import src.training.finetune as finetune

    first = run_tiny("trainer.max_epochs=1", out="pretrain")
    ckpt = first["best_checkpoint"]
    # The trigger fires at the third validation: the run must stop there, not at epoch 10.
    monkeypatch.setattr(finetune.nt_asgd, "should_switch_to_asgd", lambda h, v, n: len(h) >= 2)
    tuned = run_tiny(
        "+finetune=asgd",
        f"callbacks.finetune.ckpt_path={ckpt}",
        "trainer.max_epochs=10",
        out="finetune",
    )
    out = Path(tuned["best_checkpoint"]).parent.parent
    with open(out / "csv" / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    flags = {float(r["optim/asgd"]) for r in rows if r.get("optim/asgd")}
    epochs = {int(r["epoch"]) for r in rows if r.get("val/loss")}
    assert flags == {1.0}, "every step must run averaged SGD"
    assert epochs == {0, 1, 2}, "the NT condition must stop the run after the third epoch"
    last = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["nt_asgd"]["active"] is True and len(last["nt_asgd"]["history"]) == 3


def test_finetune_starts_from_the_checkpoint_weights(run_tiny, tmp_path: Path) -> None:
    """With a zero learning rate, fine-tuning validates the checkpoint's own weights."""
    first = run_tiny("trainer.max_epochs=1", out="pretrain")
    tuned = run_tiny(
        "+finetune=asgd",
        f"callbacks.finetune.ckpt_path={first['best_checkpoint']}",
        "trainer.max_epochs=1",
        "optim.lr=0",
        out="zero",
    )
    assert tuned["val/loss"] == pytest.approx(first["val/loss"], rel=1e-5)


def test_finetune_group_selects_averaged_sgd(tmp_path: Path) -> None:
    cfg = compose_train(
        ["+finetune=asgd", "callbacks.finetune.ckpt_path=x.ckpt"], tmp_path, tmp_path, tmp_path
    )
    assert cfg.optim.name == "sgd" and cfg.callbacks.finetune.nonmono == cfg.optim.nonmono


def test_float_checkpoint_finetunes_with_qat(run_tiny) -> None:
    """+finetune=asgd quant=qat from a float checkpoint: the observers start fresh."""
    first = run_tiny("trainer.max_epochs=1", out="pretrain")
    tuned = run_tiny(
        "+finetune=asgd",
        "quant=qat",
        f"callbacks.finetune.ckpt_path={first['best_checkpoint']}",
        "trainer.max_epochs=1",
        out="qat",
    )
    assert tuned["val/ppl"] > 1
