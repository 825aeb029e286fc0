"""Sweep summaries from job folders (made-up curves, no training)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from src.analysis.runs import find_jobs, job_labels, varying_overrides
from src.analysis.summary import SweepSummary, best_row, summarize, summary_rows
from tests.analysis.fake_runs import write_job, write_sweep


def test_rows_have_the_sweep_axes_and_metrics(tmp_path: Path) -> None:
    jobs = find_jobs(write_sweep(tmp_path / "sweep"))
    assert [j.name for j in jobs] == ["0", "1", "2", "3"]
    columns, rows = summary_rows(jobs)
    assert columns[:4] == ["job", "model", "quant", "status"]
    assert {"val/ppl", "test/ppl", "n_parameters"} <= set(columns)
    assert "experiment" not in columns  # the same in every job: not an axis
    assert [r["model"] for r in rows] == ["awd_lstm", "awd_lstm", "mlstm", "mlstm"]
    assert best_row(rows, "val/ppl") == 2


def test_summarize_writes_csv_and_prints_table(tmp_path: Path, capsys) -> None:
    sweep = write_sweep(tmp_path / "sweep")
    out = summarize(sweep)
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 and rows[2]["quant"] == "none"
    printed = capsys.readouterr().out
    assert "best (min val/ppl): job 2" in printed
    assert "awd_lstm" in printed and "summary.csv" in printed


def test_failed_job_is_listed_without_metrics(tmp_path: Path) -> None:
    write_job(tmp_path / "s" / "0", ["optim=adam"])
    write_job(tmp_path / "s" / "1", ["optim=nt_asgd"], results=False)
    _, rows = summary_rows(find_jobs(tmp_path / "s"))
    assert [r["status"] for r in rows] == ["ok", "no results"]
    assert rows[1]["val/ppl"] == ""


def test_location_overrides_are_not_axes(tmp_path: Path) -> None:
    write_job(tmp_path / "s" / "0", ["optim=adam", "paths.data_dir=/a", "hydra.run.dir=x"])
    write_job(tmp_path / "s" / "1", ["optim=nt_asgd", "paths.data_dir=/b", "hydra.run.dir=y"])
    jobs = find_jobs(tmp_path / "s")
    assert varying_overrides(jobs) == ["optim"]
    assert job_labels(jobs) == ["optim=adam", "optim=nt_asgd"]


def test_single_run_folder_is_one_job(tmp_path: Path) -> None:
    write_job(tmp_path / "run", ["experiment=smoke"])
    jobs = find_jobs(tmp_path / "run")
    assert len(jobs) == 1 and job_labels(jobs) == ["fake"]


def test_empty_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no job folders"):
        find_jobs(tmp_path)


def test_hydra_callback_summarizes_the_sweep_dir(tmp_path: Path, capsys) -> None:
    sweep = write_sweep(tmp_path / "sweep")
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}})
    SweepSummary(metric="test/ppl").on_multirun_end(config=config)
    assert (sweep / "summary.csv").is_file()
    assert "best (min test/ppl): job 2" in capsys.readouterr().out


def test_summary_is_rewritten_after_every_job_of_a_multirun(tmp_path: Path) -> None:
    """A sweep that stops at a failed job still leaves the finished jobs' summary."""
    from hydra.core.utils import JobReturn
    from hydra.types import RunMode

    sweep = tmp_path / "sweep"
    write_job(sweep / "0", ["optim=adam"])
    write_job(sweep / "1", ["optim=nt_asgd"], results=False)  # crashed
    for mode, written in ((RunMode.RUN, False), (RunMode.MULTIRUN, True)):
        config = OmegaConf.create({"hydra": {"mode": mode, "sweep": {"dir": str(sweep)}}})
        SweepSummary().on_job_end(config=config, job_return=JobReturn())
        assert (sweep / "summary.csv").is_file() == written
    with open(sweep / "summary.csv", newline="") as fh:
        assert [r["status"] for r in csv.DictReader(fh)] == ["ok", "no results"]
