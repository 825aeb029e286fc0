"""Figures of a run or sweep (matplotlib, Agg backend): one function per PNG.

* ``validation.png``: validation perplexity (bits per character for character-level corpora)
  against training step and against wall time, every job on the same axes;
* ``lr_phase.png``: learning rate and training loss against step, the SGD -> averaged-SGD
  switch of NT-ASGD marked on both;
* ``final.png``: final validation and test perplexity (or bpc) of every variant, best on top.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from src.analysis.runs import Job, read_metrics, series  # noqa: E402

COLORS = plt.get_cmap("tab10").colors
DPI = 120
LONG_LABEL = 40  # characters; longer variant labels are replaced by job numbers in legends
OPTIMIZER_NAMES = {"sgd": "SGD", "adam": "Adam"}


def color(i: int) -> tuple[float, float, float]:
    return COLORS[i % len(COLORS)]


def curve_labels(jobs: list[Job], labels: list[str]) -> list[str]:
    """Legend names: the variant labels, or ``job N`` when any is too long for a legend (an
    Optuna trial's six sampled values); ``final.png`` then spells each job's values out."""
    if max((len(label) for label in labels), default=0) <= LONG_LABEL:
        return labels
    return [f"job {job.name}" for job in jobs]


def bar_label(job: Job, label: str, long: bool) -> str:
    """A y tick label of ``final.png``: long labels wrapped and prefixed by the job number."""
    if not long:
        return label
    return textwrap.fill(f"job {job.name}: {label}", width=LONG_LABEL + 8)


def val_metric(jobs: list[Job]) -> tuple[str, str, bool]:
    """(column, axis label, log scale): bpc when every job is character-level, else ppl."""
    if jobs and all(j.char_level for j in jobs):
        return "val/bpc", "validation bits per character", False
    return "val/ppl", "validation perplexity (log scale)", True


def asgd_switch_step(rows: list[dict[str, float]]) -> float | None:
    """First training step logged with ``optim/asgd`` = 1 (None if the run never switched)."""
    for step, flag in zip(*series(rows, "optim/asgd"), strict=True):
        if flag >= 0.5:
            return step
    return None


def _legend(fig: Figure, ax: Axes, n: int) -> None:
    """Legend inside the axes for a few jobs, below the figure for many."""
    if n <= 4:
        ax.legend(fontsize=9, framealpha=0.9)
    else:
        handles, labels = ax.get_legend_handles_labels()
        fig.legend(
            handles,
            labels,
            loc="lower center",
            ncol=min(3, n),
            fontsize=9,
            frameon=False,
            bbox_to_anchor=(0.5, 0.0),
        )


def _bottom_margin(n: int) -> float:
    return 0.12 if n <= 4 else 0.12 + 0.045 * ((n + 2) // 3)


def _readable_log_axis(ax: Axes, values: list[float]) -> None:
    """Log y axis labelled with plain numbers, with labelled in-between ticks when the data
    span a decade or two (a short log axis otherwise shows one label or none)."""
    ax.set_yscale("log")
    plain = ticker.FuncFormatter(lambda v, _: f"{v:,.6g}")
    ax.yaxis.set_major_formatter(plain)
    positive = [v for v in values if v > 0]
    if not positive:
        return
    ratio = max(positive) / min(positive)
    if ratio < 10:
        subs: tuple[float, ...] = (1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0)
    else:
        subs = (1.5, 2.0, 3.0, 5.0) if ratio < 100 else ()
    if subs:
        ax.yaxis.set_minor_locator(ticker.LogLocator(subs=subs))
        ax.yaxis.set_minor_formatter(plain)
        ax.tick_params(axis="y", which="minor", labelsize=8)


def _time_axis(seconds: list[float], scale_max: float) -> tuple[list[float], str]:
    if scale_max > 2 * 3600:
        return [s / 3600 for s in seconds], "wall time (hours)"
    if scale_max > 180:
        return [s / 60 for s in seconds], "wall time (minutes)"
    return seconds, "wall time (seconds)"


def plot_validation(jobs: list[Job], labels: list[str], out: Path, title: str) -> Path | None:
    """Validation metric vs step (left) and vs wall time (right), one line per job."""
    metric, ylabel, log = val_metric(jobs)
    labels = curve_labels(jobs, labels)
    data = [(i, read_metrics(j.metrics_csv)) for i, j in enumerate(jobs)]
    data = [(i, rows) for i, rows in data if series(rows, metric)[0]]
    if not data:
        return None
    fig, (ax_step, ax_time) = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    t_max = max((max(series(rows, "time/elapsed_s")[1], default=0.0) for _, rows in data))
    all_values = [v for _, rows in data for v in series(rows, metric)[1]]
    for i, rows in data:
        steps, values = series(rows, metric)
        style = {"color": color(i), "marker": "o", "markersize": 4, "linewidth": 1.6}
        ax_step.plot(steps, values, label=labels[i], **style)
        times, tvalues = series(rows, metric, x="time/elapsed_s")
        if times:
            xs, _ = _time_axis(times, t_max)
            ax_time.plot(xs, tvalues, label=labels[i], **style)
    ax_step.set_xlabel("training step")
    ax_step.set_ylabel(ylabel)
    ax_step.set_title("against training steps", fontsize=11)
    _, time_label = _time_axis([], t_max)
    ax_time.set_xlabel(time_label)
    ax_time.set_title("against wall time (validation included)", fontsize=11)
    if t_max == 0:
        ax_time.text(
            0.5,
            0.5,
            "no time/elapsed_s logged",
            ha="center",
            va="center",
            transform=ax_time.transAxes,
            color="gray",
        )
    for ax in (ax_step, ax_time):
        if log:
            _readable_log_axis(ax, all_values)
        ax.grid(True, which="major", alpha=0.35)
        ax.grid(True, which="minor", alpha=0.12)
    fig.suptitle(title, fontsize=13)
    _legend(fig, ax_step, len(data))
    fig.tight_layout(rect=(0, _bottom_margin(len(data)) - 0.1 if len(data) > 4 else 0, 1, 1))
    return _save(fig, out / "validation.png")


def _phases(job: Job, rows: list[dict[str, float]]) -> list[tuple[str, float, float]]:
    """(name, first step, last step) of each optimizer phase of a job."""
    steps = series(rows, "lr")[0]
    first, last = steps[0], steps[-1]
    optimizer = str(job.config.get("optim", {}).get("name", "sgd"))
    if optimizer != "sgd":
        return [(OPTIMIZER_NAMES.get(optimizer, optimizer), first, last)]
    switch = asgd_switch_step(rows)
    if switch is None:
        return [("SGD", first, last)]
    return [("SGD", first, switch), ("averaged SGD", switch, last)]


def plot_lr_phase(jobs: list[Job], labels: list[str], out: Path, title: str) -> Path | None:
    """Learning rate (top), optimizer phase per job (middle: one lane each, the SGD -> averaged
    SGD switch of NT-ASGD where the colour starts) and training loss (bottom) against step;
    dashed vertical lines mark each job's switch on the curves."""
    data = [(i, read_metrics(j.metrics_csv)) for i, j in enumerate(jobs)]
    data = [(i, rows) for i, rows in data if series(rows, "lr")[0]]
    if not data:
        return None
    n = len(data)
    fig, (ax_lr, ax_phase, ax_loss) = plt.subplots(
        3,
        1,
        figsize=(11, 7.5 + 0.35 * n),
        sharex=True,
        gridspec_kw={"height_ratios": [3, 0.5 + 0.45 * n, 3]},
    )
    lrs: list[float] = []
    for lane, (i, rows) in enumerate(data):
        steps, lr = series(rows, "lr")
        lrs.extend(lr)
        ax_lr.step(
            steps, lr, where="post", color=color(i), linewidth=2.0, label=labels[i], alpha=0.85
        )
        loss_steps, loss = series(rows, "train/loss_step")
        ax_loss.plot(loss_steps, loss, color=color(i), linewidth=1.2, alpha=0.9)
        y = n - 1 - lane
        phases = _phases(jobs[i], rows)
        for name, lo, hi in phases:
            averaged = name == "averaged SGD"
            ax_phase.barh(
                y,
                hi - lo,
                left=lo,
                height=0.7,
                color=color(i),
                alpha=0.85 if averaged else 0.3,
                edgecolor=color(i),
            )
            if averaged:
                for ax in (ax_lr, ax_loss):
                    ax.axvline(lo, color=color(i), linestyle="--", linewidth=1.3, alpha=0.8)
        # The lane's caption sits inside it (long variant names as tick labels would squeeze
        # every panel): "<variant>: SGD -> averaged SGD at step N" / ": SGD, no switch" / ": Adam".
        if len(phases) == 2:
            summary = f"SGD → averaged SGD at step {phases[1][1]:,.0f}"
        else:
            summary = phases[0][0] + (", no switch" if phases[0][0] == "SGD" else "")
        ax_phase.text(
            phases[0][1],
            y,
            f" {labels[i]}: {summary}",
            ha="left",
            va="center",
            fontsize=9,
            bbox={"facecolor": "white", "alpha": 0.75, "edgecolor": "none", "pad": 1.5},
        )
    ax_phase.set_yticks([])
    ax_phase.set_ylim(-0.6, n - 0.4)
    ax_phase.set_title("optimizer phase (dashed lines: switch to averaged SGD)", fontsize=11)
    if lrs and min(lrs) > 0 and max(lrs) / min(lrs) > 20:
        ax_lr.set_yscale("log")
        ax_lr.set_ylabel("learning rate (log scale)")
    else:
        ax_lr.set_ylabel("learning rate")
    ax_lr.set_title("learning rate", fontsize=11)
    ax_loss.set_ylabel("training loss (nats)")
    ax_loss.set_xlabel("training step")
    ax_loss.set_title("training loss (cross entropy, without AR/TAR)", fontsize=11)
    for ax in (ax_lr, ax_loss):
        ax.grid(True, alpha=0.35)
    ax_phase.grid(True, axis="x", alpha=0.35)
    ax_lr.legend(fontsize=9, framealpha=0.9, loc="best")
    fig.suptitle(title, fontsize=13)
    fig.tight_layout()
    return _save(fig, out / "lr_phase.png")


def plot_final(jobs: list[Job], labels: list[str], out: Path, title: str) -> Path | None:
    """Horizontal bars of the final validation and test metric per variant, best on top."""
    char = bool(jobs) and all(j.char_level for j in jobs)
    unit = "bpc" if char else "ppl"
    long = curve_labels(jobs, labels) != labels
    labels = [bar_label(j, label, long) for j, label in zip(jobs, labels, strict=True)]
    items = [
        (labels[i], j.results.get(f"val/{unit}"), j.results.get(f"test/{unit}"), i)
        for i, j in enumerate(jobs)
        if j.results and j.results.get(f"val/{unit}") is not None
    ]
    if not items:
        return None
    items.sort(key=lambda t: t[1], reverse=True)  # barh draws bottom-up: best ends on top
    missing = [labels[i] for i, j in enumerate(jobs) if not (j.results or {}).get(f"val/{unit}")]
    n = len(items) + len(missing)
    lines = max(label.count("\n") + 1 for label in labels)
    fig, ax = plt.subplots(figsize=(10 + 2 * long, 1.6 + (0.75 + 0.2 * (lines - 1)) * n))
    height = 0.38
    ys = list(range(len(missing), n))  # jobs without results at the bottom, as text
    top = max(max(v, t or 0.0) for _, v, t, _ in items)
    for y in range(len(missing)):
        ax.text(
            top * 0.01,
            y,
            "no results (failed, or still running)",
            va="center",
            fontsize=9,
            color="gray",
            style="italic",
        )
    for y, (_, val, test, i) in zip(ys, items, strict=True):
        ax.barh(y + height / 2, val, height, color=color(i), alpha=0.95)
        ax.text(val + top * 0.01, y + height / 2, f"val {val:,.2f}", va="center", fontsize=9)
        if test is not None:
            ax.barh(y - height / 2, test, height, color=color(i), alpha=0.45, hatch="//")
            ax.text(test + top * 0.01, y - height / 2, f"test {test:,.2f}", va="center", fontsize=9)
    ax.set_yticks(range(n))
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_yticklabels([*missing, *(label for label, *_ in items)], fontsize=10)
    ax.set_xlim(0, top * 1.2)
    what = "bits per character" if char else "perplexity"
    ax.set_xlabel(f"final {what} (lower is better; solid: validation, hatched: test)")
    ax.grid(True, axis="x", alpha=0.35)
    ax.set_title(title, fontsize=13)
    fig.tight_layout()
    return _save(fig, out / "final.png")


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
