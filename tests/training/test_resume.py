"""Exact resume: a run killed with SIGKILL mid-epoch and resumed from last.ckpt ends with the
same validation loss and the same weights as an uninterrupted run (deterministic mode)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, TINY_OVERRIDES, write_tiny_corpus


def train_cli(
    run_dir: Path, data_dir: Path, cache: Path, *extra: str
) -> subprocess.CompletedProcess:
    args = [
        *TINY_OVERRIDES,
        "trainer.max_epochs=3",
        "trainer.deterministic=true",
        "callbacks.step_checkpoint.every_n_train_steps=5",
        f"paths.data_dir={data_dir}",
        f"paths.cache_dir={cache}",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]
    return subprocess.run(
        [sys.executable, "-m", "src.train", *args],
        cwd=REPO,
        text=True,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=600,
    )


@pytest.mark.parametrize("phase", ["sgd", "asgd"])
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(
    tmp_path: Path, phase: str
) -> None:
    """Killed in epoch 2 at step 37 (checkpoint at step 35), in plain SGD or after the switch to
    averaged SGD (forced after epoch 1: the averages and the live weights must both resume)."""
    data_dir = tmp_path / "corpora"
    write_tiny_corpus(data_dir, n_lines=(120, 12, 12))
    cache = tmp_path / "cache"
    force = ["+callbacks.force._target_=tests.helpers.kill.ForceASGD"] if phase == "asgd" else []

    full = train_cli(tmp_path / "full", data_dir, cache, *force)
    assert full.returncode == 0, full.stderr

    killed = train_cli(
        tmp_path / "killed",
        data_dir,
        cache,
        *force,
        "+callbacks.killer._target_=tests.helpers.kill.KillAtStep",
        "+callbacks.killer.step=37",
    )
    assert killed.returncode == -9, f"expected SIGKILL, got {killed.returncode}: {killed.stderr}"
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=False)
    assert saved["global_step"] == 35, "the step checkpoint before the kill"
    epoch_windows = saved["LMDataModule"]
    assert epoch_windows["windows_done"] > 0, f"not mid-epoch: {epoch_windows}"

    if phase == "asgd":
        assert saved["nt_asgd"]["active"] and "ax" in str(saved["optimizer_states"][0]["state"])
    resumed = train_cli(tmp_path / "killed", data_dir, cache, *force, f"ckpt_path={last}")
    assert resumed.returncode == 0, resumed.stderr

    a = json.loads((tmp_path / "full" / "results.json").read_text())
    b = json.loads((tmp_path / "killed" / "results.json").read_text())
    assert a["val/loss"] == b["val/loss"]
    assert a["test/loss"] == b["test/loss"]
    wa = torch.load(tmp_path / "full" / "checkpoints" / "last.ckpt", weights_only=False)
    wb = torch.load(last, weights_only=False)
    assert wa["global_step"] == wb["global_step"]
    for name, tensor in wa["state_dict"].items():
        assert torch.equal(tensor, wb["state_dict"][name]), name
