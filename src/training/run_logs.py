"""A resumed run keeps its whole history: one ``csv/metrics.csv`` and one wandb run.

Resuming (``ckpt_path=<run dir>/checkpoints/last.ckpt hydra.run.dir=<run dir>``) restores the
weights, optimizer, data position and random generators exactly; this module makes the *records*
of the run survive the resume too. Lightning provides the rest: the step counter the loggers use
(``_batches_that_stepped``) travels in the checkpoint, ``WandbLogger`` passes ``resume="allow"``
and an ``id`` to ``wandb.init`` (offline too: each part is an ``offline-run-*-<id>`` folder, and
``wandb sync`` uploads the parts of one id as one run, in order of start time), and
``CSVLogger`` can flush after every row (``flush_logs_every_n_steps``).

Written here, because Lightning (2.6) lacks it:

* :class:`RunCSVLogger`: ``CSVLogger`` with a fixed version *deletes* ``metrics.csv`` when it
  starts, and its versioning (``version_0/``, ``version_1/``...) would split the history in
  overlapping parts that every reader would have to merge. This logger keeps one file: on resume
  it keeps the rows logged up to the checkpoint's step and drops the later ones (those steps are
  trained again), so each step appears once; a fresh run in a used folder moves the old file
  aside instead of deleting it. Rewrites are atomic (temp file + rename).
* :class:`RunLogs` (callback): tells the CSV logger the checkpoint's step, flushes it when a
  checkpoint is written, and carries the running epoch aggregates (``on_epoch=True`` metrics
  such as ``train/loss_epoch``) through a mid-epoch checkpoint: Lightning 2 no longer saves its
  result collection, so a run resumed mid-epoch would average only the batches after the resume.
* :func:`keep_wandb_run_id`: the wandb id lives in ``<run dir>/wandb_run_id``, so a resumed run
  (or a resumed multirun job, in its own folder) continues the same wandb run.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import secrets
import string
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, open_dict, read_write

from src.utils.io import atomic_write_text

log = logging.getLogger(__name__)

WANDB_ID_FILE = "wandb_run_id"


def checkpoint_log_step(checkpoint: dict[str, Any]) -> int | None:
    """The logger step (the CSV's ``step`` column) of the batch a checkpoint was written after.

    Lightning logs with ``fit_loop.epoch_loop._batches_that_stepped``, saved in the checkpoint.
    The rows of that step (the batch's own row, and at an epoch's end the validation and epoch
    rows) are logged just *after* the checkpoint is written and are not logged again by the
    resumed run, which starts at the next step: they are kept, later rows dropped. ``None`` if
    the checkpoint has no loop state (not written by a fit)."""
    try:
        loop = checkpoint["loops"]["fit_loop"]["epoch_loop.state_dict"]
        return int(loop["_batches_that_stepped"])
    except (KeyError, TypeError):
        return None


class ContinuingWriter(ExperimentWriter):
    """Lightning's CSV writer, continuing an existing ``metrics.csv`` instead of deleting it.

    Whether the file is continued (:meth:`keep_until`) or replaced (:meth:`start_fresh`) is
    decided before the first row is written; a writer that is told nothing starts fresh at its
    first save (what Lightning does, except that the old file is kept, renamed)."""

    def __init__(self, log_dir: str) -> None:
        self._decided = False
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        """Lightning deletes ``metrics.csv`` here; the decision waits for the checkpoint."""

    def _read(self) -> tuple[list[str], list[dict[str, str]]]:
        if not os.path.isfile(self.metrics_file_path):
            return [], []
        with open(self.metrics_file_path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            return list(reader.fieldnames or []), list(reader)

    def _write(self, keys: list[str], rows: list[dict[str, Any]]) -> None:
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.metrics_file_path, buffer.getvalue())

    def keep_until(self, step: int) -> tuple[int, int]:
        """Keep the rows logged at steps ``<= step``, drop the rest; the header becomes the
        columns those rows use. Returns (rows kept, rows dropped)."""
        _, rows = self._read()
        kept = [r for r in rows if r.get("step") not in (None, "") and float(r["step"]) <= step]
        keys = sorted({k for r in kept for k, v in r.items() if k is not None and v != ""})
        if kept:
            self._write(keys, [{k: r.get(k, "") for k in keys} for r in kept])
        elif rows:
            os.remove(self.metrics_file_path)
        self.metrics_keys = keys
        self._decided = True
        return len(kept), len(rows) - len(kept)

    def start_fresh(self) -> Path | None:
        """A new run in this folder: move an existing ``metrics.csv`` aside (returned)."""
        self._decided = True
        self.metrics_keys = []
        if not os.path.isfile(self.metrics_file_path):
            return None
        k = 1
        while (aside := Path(self.log_dir) / f"metrics.replaced-{k}.csv").exists():
            k += 1
        os.replace(self.metrics_file_path, aside)
        log.warning("a new run in %s: the previous metrics.csv is kept as %s", self.log_dir, aside)
        return aside

    def save(self) -> None:
        if self.metrics and not self._decided:
            self.start_fresh()
        super().save()

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        """New columns: rewrite the file under the new header atomically (Lightning rewrites
        it in place, so a kill during the rewrite would truncate the history)."""
        _, rows = self._read()
        self._write(fieldnames, rows)


class RunCSVLogger(CSVLogger):
    """``CSVLogger`` whose ``metrics.csv`` survives a resume (see :class:`ContinuingWriter`).

    Flushes after every logged row by default, so the rows up to a checkpoint are on disk
    when a run is killed (Lightning's default buffers 100 steps)."""

    def __init__(
        self,
        save_dir: str | os.PathLike[str],
        name: str | None = "lightning_logs",
        version: int | str | None = None,
        prefix: str = "",
        flush_logs_every_n_steps: int = 1,
    ) -> None:
        super().__init__(save_dir, name, version, prefix, flush_logs_every_n_steps)

    @property
    def experiment(self) -> ContinuingWriter:  # type: ignore[override]
        if self._experiment is None and rank_zero_only.rank == 0:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = ContinuingWriter(log_dir=self.log_dir)
        return super().experiment  # type: ignore[return-value]

    @rank_zero_only
    def keep_until(self, step: int) -> None:
        kept, dropped = self.experiment.keep_until(step)
        log.info(
            "resumed: %s keeps %d rows up to step %d, drops %d logged after the checkpoint",
            self.experiment.metrics_file_path,
            kept,
            step,
            dropped,
        )


class RunLogs(Callback):
    """Keeps a run's records whole across a resume (module docstring): CSV rows up to the
    checkpoint's step, flushed at every checkpoint, and the epoch aggregates of a mid-epoch
    checkpoint.

    The aggregates are Lightning's ``_ResultMetric`` states (``value`` and, for means,
    ``cumulated_batch_size``) of the training results; they are added back to the resumed
    epoch's metrics once those exist again, in the same order of additions as an
    uninterrupted run (so the epoch mean is bit-identical). Under DDP the checkpoint holds rank
    0's share, which every rank adds back: exact for rank 0's own metrics, approximate for
    ``sync_dist`` means of unequal shards."""

    def __init__(self) -> None:
        self._pending: dict[str, dict[str, Any]] = {}
        self._pending_epoch: int | None = None

    @staticmethod
    def _train_results(trainer: L.Trainer) -> Any:
        return getattr(getattr(trainer.fit_loop, "epoch_loop", None), "_results", None)

    def state_dict(self) -> dict[str, Any]:
        trainer = getattr(self, "_trainer", None)
        results = self._train_results(trainer) if trainer is not None else None
        if trainer is not None:
            self._add_back_pending(trainer)
        aggregates: dict[str, dict[str, Any]] = dict(self._pending)  # not logged again yet
        for key, metric in (results or {}).items():
            meta = getattr(metric, "meta", None)
            if not getattr(metric, "is_tensor", False) or not getattr(meta, "on_epoch", False):
                continue
            state = {"reduce": meta.reduce_fx.__name__, "value": metric.value.detach().cpu()}
            if meta.is_mean_reduction:
                state["count"] = metric.cumulated_batch_size.detach().cpu()
            aggregates[key] = state
        epoch = trainer.current_epoch if trainer is not None else None
        return {"epoch": epoch, "aggregates": aggregates}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        trainer = getattr(self, "_trainer", None)
        if trainer is not None and trainer.state.fn != "fit":
            return
        self._pending = dict(state_dict.get("aggregates", {}))
        self._pending_epoch = state_dict.get("epoch")

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        for logger in trainer.loggers:  # every row logged so far is on disk with the checkpoint
            if isinstance(logger, CSVLogger):
                logger.save()

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        step = checkpoint_log_step(checkpoint)
        if step is None or trainer.state.fn != "fit":  # testing the best checkpoint: no resume
            return
        for logger in trainer.loggers:
            if isinstance(logger, RunCSVLogger):
                logger.keep_until(step)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        self._add_back_pending(trainer)

    def _add_back_pending(self, trainer: L.Trainer) -> None:
        """Add the checkpoint's aggregates to the resumed epoch's metrics that exist by now."""
        if not self._pending:
            return
        if trainer.current_epoch != self._pending_epoch:  # checkpoint was at an epoch's end
            self._pending = {}
            return
        results = self._train_results(trainer) or {}
        for key in [k for k in self._pending if k in results]:
            self._add_back(results[key], self._pending.pop(key))

    @staticmethod
    def _add_back(metric: Any, state: dict[str, Any]) -> None:
        value = state["value"].to(metric.value.device, metric.value.dtype)
        reduce = state["reduce"]
        if reduce == "mean":
            count = state["count"].to(metric.cumulated_batch_size.device)
            metric.value = value + metric.value
            metric.cumulated_batch_size = count + metric.cumulated_batch_size
        elif reduce == "sum":
            metric.value = value + metric.value
        elif reduce in ("max", "min"):
            metric.value = getattr(torch, reduce)(value, metric.value)


def wandb_run_id(run_dir: str | os.PathLike[str], resume: bool) -> str:
    """The wandb run id of a run folder, kept in ``<run dir>/wandb_run_id``: the stored one when
    resuming, a new one (stored) for a new run."""
    path = Path(run_dir) / WANDB_ID_FILE
    if resume and path.is_file():
        run_id = path.read_text(encoding="utf-8").strip()
        if run_id:
            return run_id
    # wandb's own ids look the same; its generator is not public API (wandb.util lost it)
    run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
    atomic_write_text(path, run_id + "\n")
    return run_id


def keep_wandb_run_id(cfg: DictConfig) -> str | None:
    """Set ``id`` of every ``WandbLogger`` of ``cfg.logger`` to the run folder's wandb id, so a
    resumed run (``ckpt_path`` set) continues its wandb run. An explicit ``logger.*.id`` wins.
    Rank 0 only (the other ranks of a DDP job do not log to wandb). Returns the id."""
    nodes = [
        node
        for node in (cfg.get("logger") or {}).values()
        if isinstance(node, DictConfig) and str(node.get("_target_", "")).endswith("WandbLogger")
    ]
    nodes = [node for node in nodes if not node.get("id") and not node.get("version")]
    if not nodes or rank_zero_only.rank != 0:
        return None
    run_id = wandb_run_id(cfg.paths.output_dir, resume=bool(cfg.get("ckpt_path")))
    for node in nodes:
        with read_write(node), open_dict(node):
            node.id = run_id
    return run_id
