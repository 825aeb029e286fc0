"""Train a language model or a classifier: ``python -m src.train [task=lm|classify]
[experiment=...] [group=option] [key=value]``.

Compose the config -> build the task's datamodule and module (src/training/tasks.py), loggers,
callbacks and trainer -> fit -> test the best checkpoint -> write ``results.json`` in the run
folder.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from src.checks import (
    check_config,
    check_train_sizes,
    exit_on_config_error,
    one_line_config_errors,
)
from src.config import register_configs
from src.training.encoder_transfer import read_vocab
from src.training.run_logs import keep_wandb_run_id
from src.training.tasks import TASKS, task_name
from src.utils.io import atomic_write_json, atomic_write_text
from src.utils.provenance import write_provenance
from src.utils.resolvers import register_resolvers

log = logging.getLogger(__name__)
register_configs()
register_resolvers()


def container(node: DictConfig) -> dict[str, Any]:
    """A resolved plain dict (enums as their names) for hparams and constructors."""
    return OmegaConf.to_container(node, resolve=True, enum_to_str=True)  # type: ignore[return-value]


def build_datamodule(cfg: DictConfig, vocab: list[str] | None = None) -> L.LightningDataModule:
    """The task's datamodule; ``vocab`` (a transferred encoder's) is used as is."""
    return TASKS[task_name(cfg)].datamodule(container(cfg.data), cfg.seed, vocab)


def build_module(cfg: DictConfig, datamodule: L.LightningDataModule) -> L.LightningModule:
    """The task's LightningModule, sized by the prepared datamodule (its vocabulary, classes,
    word counts)."""
    return TASKS[task_name(cfg)].module(container(cfg), datamodule)


def instantiate_group(node: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` entry of a group such as ``callbacks`` or ``logger``."""
    if not node:
        return []
    return [instantiate(v) for v in node.values() if isinstance(v, DictConfig) and "_target_" in v]


def finish_wandb() -> None:
    """Close the wandb run so the next job of a multirun starts its own (REFERENCE §7)."""
    try:
        import wandb
    except ImportError:  # pragma: no cover - wandb is a dependency
        return
    if wandb.run is not None:
        wandb.finish()


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run one training job and return its results (also written to ``results.json``)."""
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if rank_zero_only.rank == 0:  # first, so that a run that crashes has it too
        write_provenance(out_dir, cfg.trainer.get("accelerator"))
    atomic_write_text(out_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    if cfg.model.get("compile_cell", False):  # compiled cells: keep inductor's code cache
        os.environ.setdefault(
            "TORCHINDUCTOR_CACHE_DIR", str(Path(cfg.paths.cache_dir) / "inductor")
        )

    task = TASKS[task_name(cfg)]
    transfer = container(cfg.transfer) if cfg.get("transfer") else {}
    vocab = None  # a classifier reads documents with its transferred encoder's vocabulary
    if transfer.get("ckpt_path") and task.reads_checkpoint_vocab:
        vocab = read_vocab(transfer["ckpt_path"])
    datamodule = build_datamodule(cfg, vocab)
    datamodule.prepare_data()
    if hasattr(datamodule, "split_lengths"):  # a corpus: windows too large stop here, exit 2
        check_train_sizes(cfg, datamodule.split_lengths(), len(datamodule.vocab))
    L.seed_everything(cfg.seed, workers=True)  # reading the corpus draws no random numbers
    module = build_module(cfg, datamodule)
    n_params = sum(p.numel() for p in module.model.parameters())
    log.info("model: %s parameters, vocabulary %d", f"{n_params:,}", len(datamodule.vocab))

    callbacks = instantiate_group(cfg.get("callbacks"))
    if transfer.get("ckpt_path"):  # +transfer.ckpt_path=PATH: start from another corpus's model
        callbacks.append(task.transfer(**transfer))
    if not cfg.trainer.get("enable_progress_bar", True):
        # trainer.enable_progress_bar=false means no bar, including the configured rich one
        callbacks = [cb for cb in callbacks if not isinstance(cb, ProgressBar)]
    keep_wandb_run_id(cfg)  # a resumed run continues its wandb run (src/training/run_logs.py)
    loggers = instantiate_group(cfg.get("logger"))
    for lg in loggers:
        lg.log_hyperparams(container(cfg))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        results = collect_results(trainer, module, datamodule, cfg)
    finally:
        finish_wandb()
    if trainer.is_global_zero:
        atomic_write_json(out_dir / "results.json", results)
        log.info("results: %s", results)
    return results


def collect_results(
    trainer: L.Trainer,
    module: L.LightningModule,
    datamodule: L.LightningDataModule,
    cfg: DictConfig,
) -> dict[str, Any]:
    """The task's results: best validation metrics, and the test metrics of the best
    checkpoint (language model: loss, ppl, bpc; classifier: loss, acc, f1)."""
    return TASKS[task_name(cfg)].results(trainer, module, datamodule, bool(cfg.get("test")))


def optimized_value(results: dict[str, Any], metric: str) -> float:
    """The value sweepers optimize: ``results[metric]`` (``optimized_metric`` in the config)."""
    if metric not in results:
        raise KeyError(
            f"optimized_metric={metric!r} is not in the run's results ({sorted(results)}); "
            "test/* metrics need test=true, */bpc needs a character-level corpus"
        )
    return float(results[metric])


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns ``optimized_metric`` (default val/ppl) for sweepers."""
    check_config(cfg)  # bad values: one line each, exit 2, before any data or model
    results = exit_on_config_error(lambda: train(cfg))  # e.g. windows too large for memory
    return optimized_value(results, cfg.optimized_metric)


if __name__ == "__main__":
    with one_line_config_errors():  # Hydra's composition errors too
        main()
