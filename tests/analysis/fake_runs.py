"""Job folders as src.train writes them, with made-up but plausible curves (no training)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import yaml

COLUMNS = [
    "epoch",
    "lr",
    "optim/asgd",
    "step",
    "test/loss",
    "test/ppl",
    "time/elapsed_s",
    "train/loss_step",
    "val/loss",
    "val/ppl",
]


def write_job(
    folder: Path,
    overrides: list[str],
    *,
    optim: str = "sgd",
    lr: float = 30.0,
    switch_epoch: int | None = None,
    final_loss: float = 4.6,
    epochs: int = 12,
    steps_per_epoch: int = 100,
    seconds_per_step: float = 0.05,
    results: bool = True,
) -> Path:
    """A job folder: .hydra/overrides.yaml, config.yaml, csv/metrics.csv, results.json."""
    (folder / ".hydra").mkdir(parents=True, exist_ok=True)
    (folder / "csv").mkdir(exist_ok=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    config = {"task_name": "fake", "data": {"char_level": False}, "optim": {"name": optim}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    rows, best = [], math.inf
    for epoch in range(epochs):
        asgd = 1.0 if switch_epoch is not None and epoch >= switch_epoch else 0.0
        for k in range(0, steps_per_epoch, 10):
            step = epoch * steps_per_epoch + k
            loss = final_loss + 2.5 * math.exp(-step / 300) + 0.05 * math.sin(step)
            rows.append(
                {
                    "epoch": epoch,
                    "lr": lr,
                    "optim/asgd": asgd,
                    "step": step,
                    "time/elapsed_s": step * seconds_per_step,
                    "train/loss_step": loss,
                }
            )
        step = (epoch + 1) * steps_per_epoch - 1
        val = final_loss + 0.3 + 2.0 * math.exp(-step / 300) - (0.1 if asgd else 0.0)
        best = min(best, val)
        rows.append(
            {
                "epoch": epoch,
                "step": step,
                "val/loss": val,
                "val/ppl": math.exp(val),
                "time/elapsed_s": step * seconds_per_step + 1.0,
            }
        )
    with open(folder / "csv" / "metrics.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    if results:
        out = {
            "val/loss": best,
            "val/ppl": math.exp(best),
            "test/loss": best - 0.03,
            "test/ppl": math.exp(best - 0.03),
            "n_parameters": 1000,
            "best_checkpoint": str(folder / "checkpoints" / "best.ckpt"),
        }
        (folder / "results.json").write_text(json.dumps(out))
    return folder


def write_sweep(root: Path) -> Path:
    """A 2x2 sweep (model x quant) whose jobs differ in speed, final loss and ASGD switch."""
    specs = [
        (["experiment=smoke", "model=awd_lstm", "quant=none"], {"switch_epoch": 6}),
        (
            ["experiment=smoke", "model=awd_lstm", "quant=qat"],
            {"switch_epoch": 8, "final_loss": 4.75, "seconds_per_step": 0.09},
        ),
        (
            ["experiment=smoke", "model=mlstm", "quant=none"],
            {"final_loss": 4.5, "seconds_per_step": 0.07, "switch_epoch": 5},
        ),
        (
            ["experiment=smoke", "model=mlstm", "quant=qat"],
            {"optim": "adam", "lr": 0.002, "final_loss": 4.9, "seconds_per_step": 0.12},
        ),
    ]
    for i, (overrides, kw) in enumerate(specs):
        write_job(root / str(i), overrides, **kw)
    return root
