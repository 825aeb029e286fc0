"""One point of a learning curve: ULMFiT's classifiers and the classical baseline on the same
labelled subset (issue 22; the table: ``python -m src.benchmarks.curve_table``).

``python -m src.benchmarks.curve budget=100 seed=0 fwd_lm=FWD.ckpt bwd_lm=BWD.ckpt``

For ``data.train_subset=budget data.subset_seed=seed`` of ``data=wt2_sections`` it runs, each
as its own command (the real entry points, one after the other):

1. ``src.train experiment=<recipe>`` from the forward language model (``fwd_lm``), and
   again from the backward one (``bwd_lm``, ``data.reverse=true``); ``null``: that direction
   is skipped, and ``scratch=true`` trains both without a language model;
2. ``src.eval ckpt_path=[fwd,bwd]`` on valid and test: the ensemble's mean probabilities;
3. ``src.benchmarks.baseline`` (TF-IDF + logistic regression, its grid tuned on valid) on the
   same subset, shared by every curve under ``root`` (``<root>/baseline``).

Every setting is chosen on the validation split: the classifiers keep their best validation
accuracy (``best.ckpt``), the baseline its best grid setting. ``trainer.max_epochs`` follows
the budget, so that small subsets still get ``min_steps`` optimizer steps (and never fewer
than ``min_epochs`` epochs). A stage whose folder holds its results is not run again, and a
killed classifier run resumes from its ``last.ckpt``: rerunning the command finishes a point.
Writes ``<root>/<name>/b<budget>/s<seed>/point.json``: each method's validation and test
accuracy and macro F1, with the commands that made them.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from src.checks import one_line_config_errors
from src.utils.io import atomic_write_json

log = logging.getLogger(__name__)
EXIT_CODE = 2
#: train paragraphs of wt2_sections (README's table), the size of ``budget=null``
WT2_SECTIONS_TRAIN = 2760


@dataclass
class CurveConfig:
    task_name: str = "curve"
    name: str = "ulmfit"  # the curve (a recipe or an ablation): <root>/<name>/...
    root: str = "outputs/curve"
    budget: int | None = MISSING  # labelled train paragraphs; null: all of train
    seed: int = 0  # data.subset_seed: which stratified subset
    fwd_lm: str | None = None  # forward language model (best.ckpt of ulmfit_wt2_fwd)
    bwd_lm: str | None = None  # backward language model (best.ckpt of ulmfit_wt2_bwd)
    scratch: bool = False  # every direction without a language model (the ablation)
    directions: list[str] = field(default_factory=lambda: ["fwd", "bwd"])  # those to train
    recipe: str = "ulmfit_curve_clas"  # the classifier's experiment= config
    overrides: list[str] = field(default_factory=list)  # more src.train overrides (ablations)
    batch_size: int = 32  # data.batch_size of the classifiers
    min_steps: int = 200  # optimizer steps at least, whatever the budget
    min_epochs: int = 8
    val_checks: int = 12  # validations per run at most (every k epochs when epochs are many)
    baseline: bool = True  # also fit the baseline on this subset (once per root)
    baseline_overrides: list[str] = field(default_factory=list)  # e.g. a smaller grid (tests)
    threads: int | None = None  # OMP_NUM_THREADS of the commands; null: inherited
    paths: Any = MISSING


ConfigStore.instance().store(name="curve_schema", node=CurveConfig)


def budget_name(budget: int | None) -> str:
    return "all" if budget is None else str(budget)


def budget_override(budget: int | None) -> str:
    """The budget as a Hydra value (``null``: all of train)."""
    return "null" if budget is None else str(int(budget))


def epochs_for(budget: int | None, cfg: DictConfig) -> tuple[int, int]:
    """(epochs, validate every k epochs): at least ``min_steps`` optimizer steps and
    ``min_epochs`` epochs, at most ``val_checks`` validations, the last epoch validated."""
    documents = WT2_SECTIONS_TRAIN if budget is None else int(budget)
    steps_per_epoch = math.ceil(documents / cfg.batch_size)
    epochs = max(int(cfg.min_epochs), math.ceil(cfg.min_steps / steps_per_epoch))
    every = max(1, epochs // max(1, int(cfg.val_checks)))
    return math.ceil(epochs / every) * every, every


def run_command(args: list[str], log_file: Path, threads: int | None) -> None:
    """Run ``python -m ...`` with its output in ``log_file``; a failure names the log."""
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log.info("running: %s", " ".join(args))
    with open(log_file, "w", encoding="utf-8") as out:
        proc = subprocess.run(
            [sys.executable, "-m", *args], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    if proc.returncode:
        tail = log_file.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(
            f"{args[0]} failed (exit {proc.returncode}); see {log_file}: " + " | ".join(tail)
        )


def train_classifier(cfg: DictConfig, folder: Path, direction: str) -> dict[str, Any]:
    """One direction's classifier on the subset; its results.json (reused when present)."""
    results = folder / "results.json"
    lm = None if cfg.scratch else cfg.get(f"{direction}_lm")
    epochs, every = epochs_for(cfg.budget, cfg)
    args = [
        "src.train",
        f"experiment={cfg.recipe}",
        f"data.train_subset={budget_override(cfg.budget)}",
        f"data.subset_seed={int(cfg.seed)}",
        f"data.batch_size={int(cfg.batch_size)}",
        f"data.reverse={'true' if direction == 'bwd' else 'false'}",
        f"++transfer.ckpt_path={lm if lm else 'null'}",
        f"trainer.max_epochs={epochs}",
        f"trainer.check_val_every_n_epoch={every}",
        f"paths.data_dir={cfg.paths.data_dir}",
        f"paths.cache_dir={cfg.paths.cache_dir}",
        "trainer.enable_progress_bar=false",
        *[str(o) for o in cfg.overrides],
        f"hydra.run.dir={folder}",
    ]
    if not results.is_file():
        last = folder / "checkpoints" / "last.ckpt"
        resume = [f"ckpt_path={last}"] if last.is_file() else []
        run_command([*args, *resume], folder.with_suffix(".log"), cfg.threads)
    figures = json.loads(results.read_text())
    return {
        "valid_acc": figures["val/acc"],
        "valid_f1": figures["val/f1"],
        "test_acc": figures["test/acc"],
        "test_f1": figures["test/f1"],
        "best_ckpt": str(folder / "checkpoints" / "best.ckpt"),
        "command": "python -m " + " ".join(args),
    }


def ensemble(cfg: DictConfig, point: Path, members: list[str]) -> dict[str, Any]:
    """``src.eval`` of the forward + backward pair on valid and test (mean probabilities)."""
    out: dict[str, Any] = {}
    for split in ("valid", "test"):
        target = point / f"ensemble_{split}.json"
        args = [
            "src.eval",
            f"ckpt_path=[{','.join(members)}]",
            f"split={split}",
            f"out={target}",
            f"paths.data_dir={cfg.paths.data_dir}",
            f"paths.cache_dir={cfg.paths.cache_dir}",
            f"hydra.run.dir={point / 'eval'}",
        ]
        if not target.is_file():
            run_command(args, point / f"ensemble_{split}.log", cfg.threads)
        figures = json.loads(target.read_text())
        out[f"{split}_acc"], out[f"{split}_f1"] = figures["acc"], figures["f1"]
        out[f"{split}_command"] = "python -m " + " ".join(args)
    return out


def baseline(cfg: DictConfig) -> dict[str, Any]:
    """The TF-IDF + logistic-regression baseline on this subset (its default grid)."""
    folder = Path(cfg.root) / "baseline" / f"b{budget_name(cfg.budget)}" / f"s{int(cfg.seed)}"
    args = [
        "src.benchmarks.baseline",
        "data=wt2_sections",
        f"budget={budget_override(cfg.budget)}",
        f"seeds=[{int(cfg.seed)}]",
        f"paths.data_dir={cfg.paths.data_dir}",
        *[str(o) for o in cfg.baseline_overrides],
        f"hydra.run.dir={folder}",
    ]
    if not (folder / "results.json").is_file():
        run_command(args, folder.with_suffix(".log"), cfg.threads)
    run = json.loads((folder / "results.json").read_text())["runs"][0]
    keys = ("valid_acc", "valid_f1", "test_acc", "test_f1", "settings")
    return {**{k: run[k] for k in keys}, "command": "python -m " + " ".join(args)}


def run_point(cfg: DictConfig) -> dict[str, Any]:
    """Train, evaluate and compare at one (budget, seed); the content of point.json."""
    point = Path(cfg.root) / cfg.name / f"b{budget_name(cfg.budget)}" / f"s{int(cfg.seed)}"
    unknown = sorted(set(cfg.directions) - {"fwd", "bwd"})
    if unknown:
        raise ValueError(f"directions: {unknown} unknown; a list of fwd and bwd")
    wanted = [d for d in ("fwd", "bwd") if d in cfg.directions]
    directions = [d for d in wanted if cfg.scratch or cfg.get(f"{d}_lm")]
    if not directions:
        raise ValueError("no language model for the directions: give fwd_lm/bwd_lm or scratch=true")
    for d in directions:
        lm = cfg.get(f"{d}_lm")
        if lm and not cfg.scratch and not Path(lm).is_file():
            raise ValueError(f"{d}_lm={lm} does not exist; pretrain it (experiment=ulmfit_wt2_{d})")
    methods: dict[str, Any] = {d: train_classifier(cfg, point / d, d) for d in directions}
    if len(directions) == 2:
        members = [methods[d]["best_ckpt"] for d in directions]
        methods["ensemble"] = ensemble(cfg, point, members)
    if cfg.baseline:
        methods["baseline"] = baseline(cfg)
    figures = {
        "name": cfg.name,
        "budget": cfg.budget,
        "seed": int(cfg.seed),
        "recipe": cfg.recipe,
        "overrides": [str(o) for o in cfg.overrides],
        "fwd_lm": None if cfg.scratch else cfg.fwd_lm,
        "bwd_lm": None if cfg.scratch else cfg.bwd_lm,
        "epochs": epochs_for(cfg.budget, cfg)[0],
        "methods": methods,
    }
    atomic_write_json(point / "point.json", figures)
    return figures


@hydra.main(version_base="1.3", config_path="../../conf", config_name="curve")
def main(cfg: DictConfig) -> None:
    for key in sorted(OmegaConf.missing_keys(cfg)):
        print(f"curve error: {key} needs a value ({key}=...)", file=sys.stderr)
        raise SystemExit(EXIT_CODE)
    try:
        figures = run_point(cfg)
    except (ValueError, RuntimeError) as ex:
        print(f"curve error: {ex}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_CODE) from None
    for method, m in figures["methods"].items():
        print(f"{method:>9}: valid acc {m['valid_acc']:.3f} f1 {m['valid_f1']:.3f}; "
              f"test acc {m['test_acc']:.3f} f1 {m['test_f1']:.3f}")  # fmt: skip
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    with one_line_config_errors():  # Hydra's composition errors too
        main()
