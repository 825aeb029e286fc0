"""Find the jobs of a run or sweep folder and read what each left behind.

A *job folder* is what one ``src.train`` job writes (``.hydra/overrides.yaml``, ``config.yaml``,
``csv/metrics.csv``, ``results.json``). A single run's folder is one job; a sweep folder
(``multirun/...``) holds one numbered job folder per combination or trial.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# Overrides that say where things are, not what was trained: never a variant's name.
PATH_KEYS = ("paths.", "hydra.", "ckpt_path", "data.data_dir", "data.cache_dir")


@dataclass
class Job:
    """One training job's folder and the files it wrote (missing files read as empty)."""

    path: Path
    overrides: list[str] = field(default_factory=list)
    results: dict[str, Any] | None = None  # results.json; None if the job did not finish
    config: dict[str, Any] = field(default_factory=dict)  # the resolved config.yaml

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def num(self) -> int | None:
        """The job number of a sweep member (its folder name), else None."""
        return int(self.name) if self.name.isdigit() else None

    @property
    def metrics_csv(self) -> Path:
        return self.path / "csv" / "metrics.csv"

    @property
    def char_level(self) -> bool:
        return bool(self.config.get("data", {}).get("char_level", False))

    def override_dict(self) -> dict[str, str]:
        """``key -> value`` of this job's command-line overrides, location keys left out."""
        out: dict[str, str] = {}
        for item in self.overrides:
            key, sep, value = item.partition("=")
            key = key.lstrip("+~")
            if not sep:
                key, value = item.lstrip("~"), "<deleted>"
            if not key.startswith(PATH_KEYS):
                out[key] = value
        return out


def is_job_dir(path: Path) -> bool:
    return path.is_dir() and any(
        (path / name).exists() for name in ("results.json", "csv/metrics.csv", ".hydra")
    )


def load_job(path: Path) -> Job:
    """Read the job folder ``path`` (tolerates a job that crashed before writing everything)."""
    job = Job(path=path)
    overrides = path / ".hydra" / "overrides.yaml"
    if overrides.is_file():
        job.overrides = [str(o) for o in (yaml.safe_load(overrides.read_text()) or [])]
    results = path / "results.json"
    if results.is_file():
        job.results = json.loads(results.read_text())
    config = path / "config.yaml"
    if config.is_file():
        job.config = yaml.safe_load(config.read_text()) or {}
    return job


def _sort_key(path: Path) -> tuple[int, int, str]:
    return (0, int(path.name), "") if path.name.isdigit() else (1, 0, path.name)


def find_jobs(root: Path) -> list[Job]:
    """The jobs under ``root``: ``root`` itself if it is a job folder, else its job subfolders
    in job-number order (hidden folders such as ``.submitit`` are skipped)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    if (root / "results.json").exists() or (root / "csv" / "metrics.csv").exists():
        return [load_job(root)]
    subdirs = [d for d in root.iterdir() if not d.name.startswith(".") and is_job_dir(d)]
    if not subdirs:
        raise FileNotFoundError(
            f"{root} holds no job folders (expected csv/metrics.csv or results.json in it or "
            "in its numbered subfolders)"
        )
    return [load_job(d) for d in sorted(subdirs, key=_sort_key)]


def varying_overrides(jobs: list[Job]) -> list[str]:
    """Override keys whose value is not the same in every job (the sweep's axes), in order of
    first appearance."""
    dicts = [j.override_dict() for j in jobs]
    keys: list[str] = []
    for d in dicts:
        keys.extend(k for k in d if k not in keys)
    return [k for k in keys if len({d.get(k) for d in dicts}) > 1]


def short_value(value: str, width: int = 10) -> str:
    """Shorten long floats from samplers (0.123456789 -> 0.1235) for labels."""
    if re.fullmatch(r"-?\d+\.\d{5,}(e-?\d+)?", value):
        return f"{float(value):.4g}"
    return value if len(value) <= 3 * width else value[: 3 * width - 1] + "…"


def job_labels(jobs: list[Job]) -> list[str]:
    """A short, distinct label per job: its values of the sweep's varying overrides."""
    keys = varying_overrides(jobs)
    labels = []
    for job in jobs:
        d = job.override_dict()
        if keys:
            parts = [f"{k.rsplit('.', 1)[-1]}={short_value(d.get(k, '-'))}" for k in keys]
            label = ", ".join(parts)
        else:
            label = str(job.config.get("task_name") or job.name)
        labels.append(label)
    if len(set(labels)) < len(labels):  # same overrides twice: tell them apart by folder
        labels = [f"{job.name}: {label}" for job, label in zip(jobs, labels, strict=True)]
    return labels


def read_metrics(path: Path) -> list[dict[str, float]]:
    """Rows of a Lightning ``metrics.csv`` as ``{column: value}``, empty cells left out."""
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return [
            {k: float(v) for k, v in row.items() if k is not None and v not in ("", None)}
            for row in csv.DictReader(fh)
        ]


def series(
    rows: list[dict[str, float]], y: str, x: str = "step"
) -> tuple[list[float], list[float]]:
    """(xs, ys) of the rows that have both ``x`` and ``y``, in file order."""
    pairs = [(r[x], r[y]) for r in rows if x in r and y in r]
    return [p[0] for p in pairs], [p[1] for p in pairs]
