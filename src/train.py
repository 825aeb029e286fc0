"""Train a language model: ``python -m src.train [experiment=...] [group=option] [key=value]``.

Compose the config -> build the datamodule, module, loggers, callbacks and trainer -> fit ->
test the best checkpoint -> write ``results.json`` in the run folder.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from src.checks import check_config, one_line_config_errors
from src.config import register_configs
from src.data.datamodule import LMDataModule
from src.training.module import LMModule
from src.training.run_logs import keep_wandb_run_id
from src.training.transfer import Transfer
from src.utils.io import atomic_write_json, atomic_write_text
from src.utils.provenance import write_provenance
from src.utils.resolvers import register_resolvers

log = logging.getLogger(__name__)
register_configs()
register_resolvers()


def container(node: DictConfig) -> dict[str, Any]:
    """A resolved plain dict (enums as their names) for hparams and constructors."""
    return OmegaConf.to_container(node, resolve=True, enum_to_str=True)  # type: ignore[return-value]


def build_datamodule(cfg: DictConfig) -> LMDataModule:
    return LMDataModule(**container(cfg.data), seed=cfg.seed)


def build_module(cfg: DictConfig, vocab: list[str]) -> LMModule:
    model_cfg = container(cfg.model)
    model_cfg["vocab_size"] = len(vocab)
    module = LMModule(
        model=model_cfg,
        optim=container(cfg.optim),
        loss=container(cfg.loss),
        data=container(cfg.data),
        quant=container(cfg.quant),
        scheduler=container(cfg.scheduler),
    )
    module.vocab = vocab
    return module


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
    L.seed_everything(cfg.seed, workers=True)
    if cfg.model.get("compile_cell", False):  # compiled cells: keep inductor's code cache
        os.environ.setdefault(
            "TORCHINDUCTOR_CACHE_DIR", str(Path(cfg.paths.cache_dir) / "inductor")
        )

    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    module = build_module(cfg, datamodule.vocab.itos)
    n_params = sum(p.numel() for p in module.model.parameters())
    log.info("model: %s parameters, vocabulary %d", f"{n_params:,}", len(datamodule.vocab))

    callbacks = instantiate_group(cfg.get("callbacks"))
    transfer = container(cfg.transfer) if cfg.get("transfer") else {}
    if transfer.get("ckpt_path"):  # +transfer.ckpt_path=PATH: start from another corpus's model
        callbacks.append(Transfer(**transfer))
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
    trainer: L.Trainer, module: LMModule, datamodule: LMDataModule, cfg: DictConfig
) -> dict[str, Any]:
    """Best validation loss, and the test metrics of the best checkpoint."""
    results: dict[str, Any] = {"n_parameters": sum(p.numel() for p in module.parameters())}
    ckpt_cb = trainer.checkpoint_callback
    best = getattr(ckpt_cb, "best_model_path", "") if ckpt_cb else ""
    if ckpt_cb is not None and ckpt_cb.best_model_score is not None:
        val_loss = float(ckpt_cb.best_model_score)
    else:
        val_loss = float(trainer.callback_metrics.get("val/loss", float("nan")))
    results["val/loss"] = val_loss
    results["val/ppl"] = math.exp(min(val_loss, 700.0))
    if datamodule.char_level:
        results["val/bpc"] = val_loss / math.log(2)
    results["best_checkpoint"] = best or None
    if cfg.get("test"):
        metrics = trainer.test(module, datamodule=datamodule, ckpt_path=best or None)[0]
        for key in ("test/loss", "test/ppl", "test/bpc"):
            if key in metrics:
                results[key] = float(metrics[key])
    return results


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
    return optimized_value(train(cfg), cfg.optimized_metric)


if __name__ == "__main__":
    with one_line_config_errors():  # Hydra's composition errors too
        main()
