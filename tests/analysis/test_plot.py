"""`python -m src.plot`: the PNGs of a sweep and of a single run (made-up curves)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image as mpimg
import pytest

from src.analysis.figures import asgd_switch_step
from src.analysis.runs import read_metrics
from src.plot import main, make_plots
from tests.analysis.fake_runs import write_job, write_sweep

NAMES = {"validation.png", "lr_phase.png", "final.png"}


def test_sweep_gets_every_figure(tmp_path: Path) -> None:
    written = make_plots(write_sweep(tmp_path / "sweep"))
    assert {p.name for p in written} == NAMES
    for path in written:
        image = mpimg.imread(path)
        assert image.shape[0] > 300 and image.shape[1] > 800  # a real figure, not a stub


def test_single_run_and_out_option(tmp_path: Path, capsys) -> None:
    write_job(tmp_path / "run", ["experiment=smoke"], switch_epoch=3)
    main([str(tmp_path / "run"), "--out", str(tmp_path / "figs")])
    printed = capsys.readouterr().out.split()
    assert {Path(p).name for p in printed} == NAMES
    assert all(Path(p).parent == tmp_path / "figs" for p in printed)


def test_asgd_switch_is_found(tmp_path: Path) -> None:
    job = write_job(tmp_path / "run", [], switch_epoch=4, steps_per_epoch=100)
    assert asgd_switch_step(read_metrics(job / "csv" / "metrics.csv")) == 400
    never = write_job(tmp_path / "adam", [], optim="adam")
    assert asgd_switch_step(read_metrics(never / "csv" / "metrics.csv")) is None


def test_character_level_runs_plot_bits_per_character(tmp_path: Path) -> None:
    job = write_job(tmp_path / "run", [])
    (job / "config.yaml").write_text(
        "task_name: c\ndata: {char_level: true}\noptim: {name: adam}\n"
    )
    text = (job / "csv" / "metrics.csv").read_text().replace("val/ppl", "val/bpc")
    (job / "csv" / "metrics.csv").write_text(text)
    results = json.loads((job / "results.json").read_text())
    results.update({"val/bpc": 1.4, "test/bpc": 1.38})
    (job / "results.json").write_text(json.dumps(results))
    assert {p.name for p in make_plots(job)} == NAMES


def test_nothing_to_plot_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "run" / ".hydra").mkdir(parents=True)
    (tmp_path / "run" / "results.json").write_text("{}")
    with pytest.raises(SystemExit, match="nothing to plot"):
        main([str(tmp_path / "run")])


def test_long_variant_names_become_job_numbers_in_legends(tmp_path: Path) -> None:
    """Optuna trials differ in six sampled values: legends say `job N`, the bars spell it out."""
    from src.analysis.figures import bar_label, curve_labels
    from src.analysis.runs import find_jobs, job_labels

    for k in range(2):
        overrides = [f"model.dropout_{d}=0.{k}23456789" for d in ("emb", "input", "hidden")]
        write_job(tmp_path / "s" / str(k), [*overrides, f"optim.lr={k + 1}.23456789"])
    jobs = find_jobs(tmp_path / "s")
    labels = job_labels(jobs)
    assert (
        labels[0] == "dropout_emb=0.02346, dropout_input=0.02346, dropout_hidden=0.02346, lr=1.235"
    )
    assert curve_labels(jobs, labels) == ["job 0", "job 1"]
    assert bar_label(jobs[1], labels[1], long=True).startswith("job 1: dropout_emb=0.1235")
    assert {p.name for p in make_plots(tmp_path / "s")} == NAMES
