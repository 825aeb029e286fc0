"""Plot a run or a sweep: ``python -m src.plot DIR [--out DIR]``.

``DIR`` is one run folder (``outputs/...``) or a sweep folder (``multirun/...``, one numbered
job folder per combination or trial). Writes ``validation.png``, ``lr_phase.png`` and
``final.png`` (see :mod:`src.analysis.figures`) into ``--out`` (default ``DIR/plots``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from src.analysis.figures import plot_final, plot_lr_phase, plot_validation
from src.analysis.runs import find_jobs, job_labels


def make_plots(root: Path, out: Path | None = None) -> list[Path]:
    """Write every figure that the folder's data allows; return the PNG paths."""
    root = Path(root)
    jobs = find_jobs(root)
    labels = job_labels(jobs)
    out = Path(out) if out is not None else root / "plots"
    kind = "sweep" if len(jobs) > 1 else "run"
    name = f"{kind} {root.resolve().name}"
    if jobs and jobs[0].config.get("task_name"):
        name = f"{jobs[0].config['task_name']} {name}"
    figures = [
        plot_validation(jobs, labels, out, f"Validation — {name}"),
        plot_lr_phase(jobs, labels, out, f"Optimization — {name}"),
        plot_final(jobs, labels, out, f"Final metrics per variant — {name}"),
    ]
    return [f for f in figures if f is not None]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path, help="a run folder or a sweep (multirun) folder")
    parser.add_argument("--out", type=Path, default=None, help="where to write the PNGs")
    args = parser.parse_args(argv)
    written = make_plots(args.dir, args.out)
    if not written:
        raise SystemExit(f"nothing to plot under {args.dir} (no csv/metrics.csv, no results.json)")
    for path in written:
        print(path)


if __name__ == "__main__":
    main()
