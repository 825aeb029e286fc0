"""The learning-curve commands (issue 22): ``src.benchmarks.curve`` runs one point (both
directions' classifiers, their ensemble, the baseline) on the real wt2_sections data, and
``src.benchmarks.curve_table`` prints the table and draws the plot from finished points."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from src.benchmarks import curve_table
from tests.conftest import REPO


def write_point(root: Path, name: str, budget: int | None, seed: int, figures: dict) -> None:
    folder = root / name / f"b{'all' if budget is None else budget}" / f"s{seed}"
    folder.mkdir(parents=True)
    methods = {
        m: {"valid_acc": v[0], "valid_f1": v[1], "test_acc": v[2], "test_f1": v[3]}
        for m, v in figures.items()
    }
    point = {"name": name, "budget": budget, "seed": seed, "methods": methods}
    (folder / "point.json").write_text(json.dumps(point))


def test_table_means_spreads_and_verdicts(tmp_path: Path, capsys) -> None:
    write_point(tmp_path, "ulmfit", 100, 0, {"baseline": (0.5, 0.4, 0.6, 0.5),
                                             "ensemble": (0.6, 0.5, 0.7, 0.6)})  # fmt: skip
    write_point(tmp_path, "ulmfit", 100, 1, {"baseline": (0.5, 0.4, 0.6, 0.5),
                                             "ensemble": (0.6, 0.5, 0.5, 0.6)})  # fmt: skip
    write_point(tmp_path, "ulmfit", None, 0, {"baseline": (0.7, 0.6, 0.7, 0.7),
                                              "fwd": (0.8, 0.6, 0.8, 0.6)})  # fmt: skip
    rows = curve_table.summarize(curve_table.read_points(tmp_path))
    ens = next(r for r in rows if r["method"] == "ensemble")
    assert ens["test_acc"] == pytest.approx(0.6)
    assert ens["test_acc_std"] == pytest.approx(0.1414, abs=1e-4)
    assert ens["seeds"] == [0, 1]
    verdicts = curve_table.verdicts(rows)
    assert verdicts[("ulmfit", 100)] == "split (ensemble)"  # acc 0.6 = 0.6, F1 0.6 > 0.5
    assert verdicts[("ulmfit", None)] == "split (fwd)"  # no ensemble: the single direction
    png = tmp_path / "curve.png"
    curve_table.main([str(tmp_path), "--plot", str(png), "--markdown", str(tmp_path / "t.md")])
    out = capsys.readouterr().out
    assert "| ulmfit | 100 | ensemble | 2 | 0.600 ± 0.141 | 0.600 ± 0.000 |" in out
    assert "all (2,760)" in out and (tmp_path / "t.md").read_text() in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_one_point_end_to_end(corpora_dir: Path, tmp_path: Path) -> None:
    """Both directions of experiment=smoke_classify from scratch at 100 labels, their ensemble
    and a one-setting baseline, through the real commands; a rerun reuses every stage. This is
    also the acceptance run of ``experiment=smoke_classify`` on the real WikiText-2 files."""
    pytest.importorskip("sklearn")
    if not (corpora_dir / "wikitext-2" / "train.txt").is_file():
        pytest.skip(f"no wikitext-2 under {corpora_dir}")
    root = tmp_path / "curve"
    args = [
        sys.executable, "-m", "src.benchmarks.curve", "budget=100", "seed=1", "scratch=true",
        "recipe=smoke_classify", "min_steps=0", "min_epochs=1", f"root={root}",
        f"paths.data_dir={corpora_dir}", f"paths.cache_dir={tmp_path / 'cache'}", "threads=1",
        "baseline_overrides=['grid.C=[1.0]','grid.class_weight=[balanced]','grid.ngram_max=[1]',"
        "'grid.sublinear_tf=[true]','grid.lowercase=[false]']",
    ]  # fmt: skip
    env = {**os.environ, "WANDB_SILENT": "true", "WANDB_MODE": "offline"}
    env.pop("WANDB_SERVICE", None)
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    point = json.loads((root / "ulmfit" / "b100" / "s1" / "point.json").read_text())
    assert set(point["methods"]) == {"fwd", "bwd", "ensemble", "baseline"}
    assert point["epochs"] == 1 and point["fwd_lm"] is None
    for method, figures in point["methods"].items():
        for key in ("valid_acc", "valid_f1", "test_acc", "test_f1"):
            assert 0.0 <= figures[key] <= 1.0, (method, key)
    config = (root / "ulmfit" / "b100" / "s1" / "bwd" / "config.yaml").read_text()
    assert "train_subset: 100" in config and "reverse: true" in config
    assert "data.reverse=true" in point["methods"]["bwd"]["command"]
    assert point["methods"]["baseline"]["settings"]["C"] == 1.0
    stamp = (root / "ulmfit" / "b100" / "s1" / "fwd" / "results.json").stat().st_mtime
    again = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (root / "ulmfit" / "b100" / "s1" / "fwd" / "results.json").stat().st_mtime == stamp
    assert json.loads(again.stdout.strip().splitlines()[-1])["methods"] == point["methods"]
