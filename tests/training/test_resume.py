"""Exact resume: a run killed with SIGKILL and resumed from last.ckpt ends with the same weights,
results and records as an uninterrupted run (deterministic mode): metrics.csv row for row, one
wandb run for both parts, plots from step 0; also for a resumed multirun job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from src.analysis import figures
from src.plot import make_plots
from tests.conftest import REPO, TINY_OVERRIDES, write_tiny_corpus
from tests.helpers.history import assert_same_history, read_csv, wandb_run_ids

KILLER = ["+callbacks.killer._target_=tests.helpers.kill.KillAtStep"]


def train_cli(
    run_dir: Path, data_dir: Path, cache: Path, *extra: str
) -> subprocess.CompletedProcess:
    args = [
        *(["-m"] if "-m" in extra else []),  # Hydra takes its flags before the overrides
        *(o if o != "logger=csv" else "logger=wandb" for o in TINY_OVERRIDES),
        "trainer.max_epochs=3",
        "trainer.deterministic=true",
        "trainer.enable_progress_bar=false",
        "callbacks.step_checkpoint.every_n_train_steps=5",
        f"paths.data_dir={data_dir}",
        f"paths.cache_dir={cache}",
        f"hydra.run.dir={run_dir}",
        *(o for o in extra if o != "-m"),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    # A wandb run earlier in this worker leaves WANDB_SERVICE set: children would share its
    # service, which keeps a SIGKILLed child's run registered ("run ID ... is in use" on resume)
    env.pop("WANDB_SERVICE", None)
    return subprocess.run(
        [sys.executable, "-m", "src.train", *args],
        cwd=REPO,
        text=True,
        capture_output=True,
        env=env,
        timeout=600,
    )


def force(phase: str) -> list[str]:
    return ["+callbacks.force._target_=tests.helpers.kill.ForceASGD"] if phase == "asgd" else []


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("resume")
    write_tiny_corpus(root / "corpora", n_lines=(120, 12, 12))
    return root / "corpora", root / "cache"


@pytest.fixture(scope="module")
def full_run(corpus: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory):
    """The uninterrupted run of a phase (trained once per module)."""
    done: dict[str, Path] = {}

    def get(phase: str) -> Path:
        if phase not in done:
            run = tmp_path_factory.mktemp(f"full_{phase}")
            proc = train_cli(run, *corpus, *force(phase))
            assert proc.returncode == 0, proc.stderr
            done[phase] = run
        return done[phase]

    return get


@dataclass
class Resumed:
    phase: str
    full: Path  # the uninterrupted run
    run: Path  # killed, then resumed in the same folder
    saved: dict[str, Any]  # the checkpoint it resumed from
    killed_rows: list[dict[str, str]]  # metrics.csv as the kill left it


@pytest.fixture(scope="module", params=["sgd", "asgd"])
def resumed(request, corpus, full_run, tmp_path_factory: pytest.TempPathFactory) -> Resumed:
    """Killed in epoch 2 at step 37 (checkpoint at step 35), in plain SGD or after the switch to
    averaged SGD (forced after epoch 1: the averages and the live weights must both resume),
    then resumed from last.ckpt."""
    phase = request.param
    full = full_run(phase)
    run = tmp_path_factory.mktemp(f"killed_{phase}")
    killed = train_cli(run, *corpus, *force(phase), *KILLER, "+callbacks.killer.step=37")
    assert killed.returncode == -9, f"expected SIGKILL, got {killed.returncode}: {killed.stderr}"
    last = run / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=False)
    killed_rows = read_csv(run / "csv" / "metrics.csv")[1]
    proc = train_cli(run, *corpus, *force(phase), f"ckpt_path={last}")
    assert proc.returncode == 0, proc.stderr
    return Resumed(phase, full, run, saved, killed_rows)


def log_step(checkpoint: dict[str, Any]) -> int:
    """The CSV step of the checkpoint's last logged batch (Lightning's logger step)."""
    return checkpoint["loops"]["fit_loop"]["epoch_loop.state_dict"]["_batches_that_stepped"]


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(resumed: Resumed) -> None:
    saved = resumed.saved
    assert saved["global_step"] == 35, "the step checkpoint before the kill"
    epoch_windows = saved["LMDataModule"]
    assert epoch_windows["windows_done"] > 0, f"not mid-epoch: {epoch_windows}"
    if resumed.phase == "asgd":
        assert saved["nt_asgd"]["active"] and "ax" in str(saved["optimizer_states"][0]["state"])

    a = json.loads((resumed.full / "results.json").read_text())
    b = json.loads((resumed.run / "results.json").read_text())
    assert Path(a.pop("best_checkpoint")).name == Path(b.pop("best_checkpoint")).name
    assert a == b  # val/loss of the best checkpoint, test metrics, parameters
    wa = torch.load(resumed.full / "checkpoints" / "last.ckpt", weights_only=False)
    wb = torch.load(resumed.run / "checkpoints" / "last.ckpt", weights_only=False)
    assert wa["global_step"] == wb["global_step"]
    for name, tensor in wa["state_dict"].items():
        assert torch.equal(tensor, wb["state_dict"][name]), name


def test_resumed_run_keeps_its_whole_history(resumed: Resumed) -> None:
    """metrics.csv equals the uninterrupted run's row for row (every column but wall-clock
    timings); the rows logged between the checkpoint and the kill were dropped and logged once
    again; time/elapsed_s continues from the checkpoint; both parts are one wandb run."""
    step = log_step(resumed.saved)
    after = [r for r in resumed.killed_rows if int(r["step"]) > step]
    assert after, "the kill left no rows after the checkpoint: nothing to drop, a weak test"

    csv_path = resumed.run / "csv" / "metrics.csv"
    n = assert_same_history(resumed.full / "csv" / "metrics.csv", csv_path)
    assert n == len(read_csv(resumed.full / "csv" / "metrics.csv")[1]) > 80
    assert not list(csv_path.parent.glob("metrics.replaced-*")), "a resume is not a new run"

    rows = read_csv(csv_path)[1]
    first_resumed = next(r for r in rows if int(r["step"]) > step)
    assert (
        float(first_resumed["time/elapsed_s"])
        >= resumed.saved["callbacks"]["ElapsedTime"]["elapsed_s"]
    ), "wall time restarted from 0 instead of continuing from the checkpoint"

    ids = wandb_run_ids(resumed.run)
    assert len(ids) == 2, f"expected the killed and the resumed part: {sorted(ids)}"
    run_id = (resumed.run / "wandb_run_id").read_text().strip()
    assert all(part == {run_id} for part in ids.values()), ids
    assert {run_id} != set().union(*wandb_run_ids(resumed.full).values())


def drawn_curves(run: Path, monkeypatch: pytest.MonkeyPatch, out: Path) -> dict[str, Any]:
    """What ``src.plot`` draws for a run: {figure: [[(x, y) of each line] per axes]}."""
    drawn: dict[str, Any] = {}
    save = figures._save

    def capture(fig, path: Path) -> Path:
        drawn[path.name] = [
            [list(zip(line.get_xdata(), line.get_ydata(), strict=True)) for line in ax.get_lines()]
            for ax in fig.axes
        ]
        return save(fig, path)

    with monkeypatch.context() as patch:
        patch.setattr(figures, "_save", capture)
        written = make_plots(run, out)
    assert {p.name for p in written} == {"validation.png", "lr_phase.png", "final.png"}
    return drawn


def test_plot_of_resumed_run_starts_at_step_0(
    resumed: Resumed, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """src.plot on the resumed run's folder draws the whole run: the same curves as for the
    uninterrupted run (the wall-time panel aside), the training loss from step 0."""
    mine = drawn_curves(resumed.run, monkeypatch, tmp_path / "resumed")
    full = drawn_curves(resumed.full, monkeypatch, tmp_path / "full")
    lr, _, loss = mine["lr_phase.png"]
    assert loss[0][0][0] == 0 and lr[0][0][0] == 0, "the training curves start at step 0"
    assert loss[0][-1][0] == full["lr_phase.png"][2][0][-1][0], "and end where the full run ends"
    assert mine["lr_phase.png"] == full["lr_phase.png"]
    by_step = mine["validation.png"][0]
    assert by_step == full["validation.png"][0]
    assert len(by_step[0]) == 3, "one validation point per epoch, the first before the kill"


def test_resumed_multirun_job_keeps_its_history(corpus, full_run, tmp_path: Path) -> None:
    """A sweep job killed after the validation checkpoint at the end of epoch 1, resumed in its
    own folder (``-m`` again, same ``hydra.sweep.dir``, ``ckpt_path`` from the job's folder):
    its metrics.csv, wandb run and the sweep summary describe the whole job."""
    full = full_run("sgd")
    val_steps = [int(r["step"]) for r in read_csv(full / "csv" / "metrics.csv")[1] if r["val/loss"]]
    end_of_epoch = val_steps[0] + 1  # global step of the validation checkpoint of epoch 1
    assert (end_of_epoch + 1) % 5, "a step checkpoint at the kill would replace the one wanted"
    sweep = tmp_path / "sweep"
    multirun = ["-m", f"hydra.sweep.dir={sweep}"]
    kill = f"+callbacks.killer.step={end_of_epoch + 1}"
    killed = train_cli(tmp_path / "unused", *corpus, *multirun, *KILLER, kill)
    assert killed.returncode == -9, f"expected SIGKILL, got {killed.returncode}: {killed.stderr}"
    job = sweep / "0"
    saved = torch.load(job / "checkpoints" / "last.ckpt", weights_only=False)
    assert saved["global_step"] == end_of_epoch, "the validation checkpoint of epoch 1"

    resume = "ckpt_path=${paths.output_dir}/checkpoints/last.ckpt"  # each job its own checkpoint
    proc = train_cli(tmp_path / "unused", *corpus, *multirun, resume)
    assert proc.returncode == 0, proc.stderr

    assert assert_same_history(full / "csv" / "metrics.csv", job / "csv" / "metrics.csv") > 80
    ids = wandb_run_ids(job)
    assert len(ids) == 2 and all(part == set(next(iter(ids.values()))) for part in ids.values())
    summary = read_csv(sweep / "summary.csv")[1]
    results = json.loads((full / "results.json").read_text())
    assert len(summary) == 1 and float(summary[0]["val/ppl"]) == pytest.approx(
        results["val/ppl"], rel=1e-12
    )
    assert float(summary[0]["test/ppl"]) == pytest.approx(results["test/ppl"], rel=1e-12)
