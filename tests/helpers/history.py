"""Compare the records two runs left behind: metrics.csv row for row, wandb run ids."""

from __future__ import annotations

import csv
from pathlib import Path

# Wall-clock measurements: a resumed run cannot repeat them. Every other column must be equal.
TIMING_COLUMNS = frozenset(
    {"time/elapsed_s", "train/tokens_per_sec_step", "train/tokens_per_sec_epoch"}
)


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """(header, rows) of a metrics.csv, values as written."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def assert_same_history(expected: Path, actual: Path) -> int:
    """``actual`` metrics.csv equals ``expected`` row for row: same columns, same rows in the same
    order (so the same steps, each once), same values in every column but the timings (which
    must be present or absent together except ``train/tokens_per_sec_step``, missing on the
    first step after a (re)start). Returns the number of rows compared."""
    head_e, rows_e = read_csv(expected)
    head_a, rows_a = read_csv(actual)
    assert head_a == head_e
    steps = [r["step"] for r in rows_a]
    assert steps == [r["step"] for r in rows_e], "not the same steps in the same order"
    for i, (e, a) in enumerate(zip(rows_e, rows_a, strict=True)):
        exact_e = {k: v for k, v in e.items() if k not in TIMING_COLUMNS}
        exact_a = {k: v for k, v in a.items() if k not in TIMING_COLUMNS}
        assert exact_a == exact_e, f"row {i} (step {e['step']}) differs"
        assert bool(a["time/elapsed_s"]) == bool(e["time/elapsed_s"]), f"row {i}"
    return len(rows_a)


def wandb_run_ids(run_dir: Path) -> dict[str, set[str]]:
    """``{offline-run folder: run ids}`` of a run folder's wandb parts: the id in the folder name
    (``offline-run-<date>_<time>-<id>[-<n>]``) and in its data file (``run-<id>.wandb``)."""
    ids = {}
    for part in sorted((run_dir / "wandb").glob("offline-run-*")):
        in_name = part.name.removeprefix("offline-run-").split("-")[1]
        in_files = {
            f.name.removeprefix("run-").removesuffix(".wandb") for f in part.glob("*.wandb")
        }
        ids[part.name] = {in_name, *in_files}
    return ids
