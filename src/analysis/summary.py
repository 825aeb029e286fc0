"""Summary table of a sweep: one row per job (its varying overrides and final metrics).

:class:`SweepSummary` is a Hydra callback (``hydra.callbacks`` in ``conf/hydra/default.yaml``):
when a multirun ends it writes ``summary.csv`` in the sweep folder and prints the table. The
same table for any finished sweep: ``python -m src.analysis.summary multirun/<...>``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import logging
import math
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from src.analysis.runs import Job, find_jobs, short_value, varying_overrides
from src.utils.io import atomic_write_text

log = logging.getLogger(__name__)

# Metrics first in this order (when present); any other number in results.json follows.
METRIC_ORDER = ("val/loss", "val/ppl", "val/bpc", "test/loss", "test/ppl", "test/bpc")


def metric_columns(jobs: list[Job]) -> list[str]:
    """The numeric keys of the jobs' results.json, known metrics first, n_parameters last."""
    keys: set[str] = set()
    for job in jobs:
        for key, value in (job.results or {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                keys.add(key)
    ordered = [k for k in METRIC_ORDER if k in keys]
    rest = sorted(keys - set(ordered) - {"n_parameters"})
    return ordered + rest + (["n_parameters"] if "n_parameters" in keys else [])


def summary_rows(jobs: list[Job]) -> tuple[list[str], list[dict[str, Any]]]:
    """(column names, one dict per job): job, the varying overrides, status, metrics, dir."""
    axes = varying_overrides(jobs)
    metrics = metric_columns(jobs)
    columns = ["job", *axes, "status", *metrics, "dir"]
    rows = []
    for job in jobs:
        overrides = job.override_dict()
        row: dict[str, Any] = {"job": job.name, **{k: overrides.get(k, "") for k in axes}}
        row["status"] = "ok" if job.results is not None else "no results"
        for key in metrics:
            row[key] = (job.results or {}).get(key, "")
        row["dir"] = str(job.path)
        rows.append(row)
    return columns, rows


def best_row(rows: list[dict[str, Any]], metric: str | None, mode: str = "min") -> int | None:
    """Index of the row with the best finite ``metric`` (None when no row has one)."""
    if not metric:
        return None
    scored = [
        (float(r[metric]), i)
        for i, r in enumerate(rows)
        if isinstance(r.get(metric), int | float) and math.isfinite(r[metric])
    ]
    if not scored:
        return None
    return (min(scored) if mode == "min" else max(scored))[1]


def write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    """Write atomically: jobs of a parallel launcher may rewrite it at the same time."""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def _cell(key: str, value: Any) -> str:
    if isinstance(value, float):
        if key.endswith("/loss") or key.endswith("/bpc"):
            return f"{value:.4f}"
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return short_value(str(value))


def print_table(
    columns: list[str], rows: list[dict[str, Any]], title: str, best: int | None = None
) -> None:
    """Print the summary as a rich table; the best row is marked with an arrow."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    shown = [c for c in columns if c != "dir"]
    tails = [c.rsplit(".", 1)[-1] for c in shown]
    for col, tail in zip(shown, tails, strict=True):
        numeric = col not in ("job", "status") and any(
            isinstance(r.get(col), int | float) for r in rows
        )
        header = tail if tails.count(tail) == 1 else col  # model.dropout_emb -> dropout_emb
        table.add_column(header, justify="right" if numeric else "left", no_wrap=True)
    for i, row in enumerate(rows):
        cells = [_cell(c, row.get(c, "")) for c in shown]
        if i == best:
            cells[0] = f"→ {cells[0]}"
        table.add_row(*cells, style="bold" if i == best else None)
    Console(width=max(100, 14 * len(shown))).print(table)


def summarize(
    sweep_dir: Path,
    filename: str = "summary.csv",
    metric: str | None = "val/ppl",
    mode: str = "min",
    show: bool = True,
) -> Path:
    """Write ``<sweep_dir>/<filename>`` and print the table; return the CSV path."""
    jobs = find_jobs(sweep_dir)
    columns, rows = summary_rows(jobs)
    out = Path(sweep_dir) / filename
    write_csv(out, columns, rows)
    best = best_row(rows, metric, mode)
    if show:
        print_table(columns, rows, title=f"Sweep summary: {sweep_dir}", best=best)
        if best is not None:
            value = _cell(metric, rows[best][metric])
            print(f"best ({mode} {metric}): job {rows[best]['job']} with {metric} = {value}")
        print(f"summary written to {out}")
    return out


class SweepSummary(Callback):
    """Hydra callback: ``summary.csv`` rewritten after every job of a multirun (so a sweep that
    stops at a failed job still has one), and printed as a table when the multirun ends."""

    def __init__(self, filename: str = "summary.csv", metric: str | None = None, mode: str = "min"):
        self.filename = filename
        self.metric = metric
        self.mode = mode

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        with contextlib.suppress(FileNotFoundError):  # no job folder written yet
            summarize(Path(str(config.hydra.sweep.dir)), self.filename, self.metric, show=False)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            summarize(sweep_dir, self.filename, self.metric, self.mode)
        except FileNotFoundError as exc:  # e.g. a sweep of src.eval: no training job folders
            log.info("no sweep summary: %s", exc)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="a sweep (multirun) or run folder")
    parser.add_argument("--metric", default="val/ppl", help="mark the best job by this metric")
    parser.add_argument("--mode", choices=("min", "max"), default="min")
    parser.add_argument("--filename", default="summary.csv")
    args = parser.parse_args(argv)
    summarize(args.sweep_dir, args.filename, args.metric, args.mode)


if __name__ == "__main__":
    main()
