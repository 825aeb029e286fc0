"""The learning-curve table and plot from finished points of ``src.benchmarks.curve``:
``python -m src.benchmarks.curve_table [ROOT] [--plot FILE] [--markdown FILE]``.

Reads every ``<ROOT>/<name>/b<budget>/s<seed>/point.json`` (ROOT: ``outputs/curve``) and prints,
per curve name and label budget, each method's test accuracy and macro F1 as mean ± sample
standard deviation over the seeds (validation beside them), with the baseline on the same
subsets, and whether the ensemble (else the best single direction) beats the baseline on both
test figures. ``--plot`` writes the curve as a PNG (accuracy and macro F1 against labels, error
bars one standard deviation); ``--markdown`` the table as Markdown.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from src.benchmarks.curve import WT2_SECTIONS_TRAIN
from src.utils.io import atomic_path, atomic_write_text

METHOD_ORDER = ("baseline", "fwd", "bwd", "ensemble")


def read_points(root: Path) -> list[dict[str, Any]]:
    """Every point.json under ``root`` (sorted by name, budget, seed)."""
    points = [json.loads(p.read_text()) for p in sorted(root.glob("*/b*/s*/point.json"))]
    return sorted(points, key=lambda p: (p["name"], _budget_key(p["budget"]), p["seed"]))


def _budget_key(budget: int | None) -> float:
    return float("inf") if budget is None else float(budget)


def _stats(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarize(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (name, budget, method): seeds, mean and std of valid/test acc and F1."""
    groups: dict[tuple[str, Any, str], list[dict[str, Any]]] = defaultdict(list)
    for p in points:
        for method, figures in p["methods"].items():
            groups[(p["name"], p["budget"], method)].append({"seed": p["seed"], **figures})
    rows = []
    for (name, budget, method), runs in groups.items():
        row: dict[str, Any] = {"name": name, "budget": budget, "method": method}
        row["seeds"] = sorted(r["seed"] for r in runs)
        for key in ("valid_acc", "valid_f1", "test_acc", "test_f1"):
            row[key], row[f"{key}_std"] = _stats([float(r[key]) for r in runs])
        rows.append(row)
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    return sorted(
        rows, key=lambda r: (r["name"], _budget_key(r["budget"]), order.get(r["method"], 9))
    )


def verdicts(rows: list[dict[str, Any]]) -> dict[tuple[str, Any], str]:
    """Per (name, budget): does ULMFiT (the ensemble, else its best direction on valid) beat
    the baseline in both test accuracy and macro F1 (means over the same seeds)?"""
    out = {}
    by_key: dict[tuple[str, Any], dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in rows:
        by_key[(r["name"], r["budget"])][r["method"]] = r
    for key, methods in by_key.items():
        base = methods.get("baseline")
        ulmfit = methods.get("ensemble") or max(
            (methods[m] for m in ("fwd", "bwd") if m in methods),
            key=lambda r: r["valid_acc"],
            default=None,
        )
        if base is None or ulmfit is None:
            continue
        wins = [ulmfit[k] > base[k] for k in ("test_acc", "test_f1")]
        out[key] = {(True, True): "yes", (False, False): "no"}.get(tuple(wins), "split")
        out[key] += f" ({ulmfit['method']})"
    return out


def _cell(row: dict[str, Any], key: str) -> str:
    return f"{row[key]:.3f} ± {row[f'{key}_std']:.3f}"


def markdown(rows: list[dict[str, Any]]) -> str:
    """The table as Markdown: one line per (name, budget, method)."""
    wins = verdicts(rows)
    lines = [
        "| curve | labels | method | seeds | test accuracy | test macro F1 | valid accuracy "
        "| valid macro F1 | beats baseline |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        labels = f"all ({WT2_SECTIONS_TRAIN:,})" if r["budget"] is None else f"{r['budget']:,}"
        verdict = wins.get((r["name"], r["budget"]), "") if r["method"] == "ensemble" else ""
        lines.append(
            f"| {r['name']} | {labels} | {r['method']} | {len(r['seeds'])} | "
            f"{_cell(r, 'test_acc')} | {_cell(r, 'test_f1')} | {_cell(r, 'valid_acc')} | "
            f"{_cell(r, 'valid_f1')} | {verdict} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path, total: int = WT2_SECTIONS_TRAIN) -> None:
    """Test accuracy and macro F1 against labelled paragraphs (log scale), one line per
    (curve, method), error bars one sample standard deviation; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    lines: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["method"] == "baseline":
            if r["name"] != rows[0]["name"]:
                continue  # every curve's points share the baseline's subsets
            label = "TF-IDF + logistic regression"
        else:
            label = f"{r['name']}: {r['method']}"
        lines[label].append(r)
    for label, pts in lines.items():
        xs = [total if p["budget"] is None else p["budget"] for p in pts]
        style = {"linestyle": "--", "color": "black"} if "TF-IDF" in label else {}
        for ax, key in zip(axes, ("test_acc", "test_f1"), strict=True):
            ys = [p[key] for p in pts]
            err = [p[f"{key}_std"] for p in pts]
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=label, **style)
    for ax, title in zip(axes, ("test accuracy", "test macro F1"), strict=True):
        ax.set_xscale("log")
        ax.set_xlabel("labelled train paragraphs")
        ax.set_title(f"wt2_sections: {title}")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, nargs="?", default=Path("outputs/curve"))
    parser.add_argument("--plot", type=Path, default=None, help="write the curve as a PNG")
    parser.add_argument("--markdown", type=Path, default=None, help="write the table as .md")
    parser.add_argument("--names", nargs="*", default=None, help="only these curves")
    args = parser.parse_args(argv)
    points = read_points(args.root)
    if args.names:
        points = [p for p in points if p["name"] in args.names]
    if not points:
        raise SystemExit(f"no point.json under {args.root}; run python -m src.benchmarks.curve")
    rows = summarize(points)
    table = markdown(rows)
    print(table, end="")
    if args.markdown:
        atomic_write_text(args.markdown, table)
    if args.plot:
        plot(rows, args.plot)
        print(f"wrote {args.plot}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
