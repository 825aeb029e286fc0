"""Evaluate a checkpoint: ``python -m src.eval ckpt_path=PATH [split=valid|test]``.

Rebuilds the model and the corpus settings stored in the checkpoint, refuses a corpus whose
vocabulary differs from the one the model was trained on, and prints the split's loss and
perplexity; the last line of output is one JSON object of the metrics (also written to a file).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from omegaconf import DictConfig

from src.config import register_configs
from src.data.datamodule import LMDataModule
from src.training.checkpoint import load_module
from src.utils.io import atomic_write_json

log = logging.getLogger(__name__)
register_configs()


def build_eval_datamodule(cfg: DictConfig, data: dict[str, Any], seed: int) -> LMDataModule:
    """The training run's data settings, with this machine's paths and the requested batch."""
    data = dict(data)
    data["data_dir"] = str(cfg.paths.data_dir)
    data["cache_dir"] = str(cfg.paths.cache_dir)
    if cfg.batch_size is not None:
        key = "eval_batch_size" if cfg.split.value == "valid" else "test_batch_size"
        data[key] = int(cfg.batch_size)
    return LMDataModule(**data, seed=seed)


def check_vocabulary(
    checkpoint_vocab: list[str] | None, corpus_vocab: list[str], where: str
) -> None:
    """Refuse to score a corpus with a model trained on another vocabulary."""
    if checkpoint_vocab is None:
        raise ValueError(f"{where} stores no vocabulary; it was not written by src.train.")
    if list(checkpoint_vocab) != list(corpus_vocab):
        raise ValueError(
            f"vocabulary mismatch: the checkpoint {where} was trained on {len(checkpoint_vocab)} "
            f"word types, the corpus gives {len(corpus_vocab)} (or the same count in another "
            "order). Evaluate it on the corpus it was trained on (check paths.data_dir)."
        )


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    ckpt_path = Path(cfg.ckpt_path)
    module, _ = load_module(ckpt_path)
    datamodule = build_eval_datamodule(cfg, module.hparams.data, seed=0)
    datamodule.prepare_data()
    check_vocabulary(module.vocab, datamodule.vocab.itos, str(ckpt_path))
    if cfg.engine.value != "float":
        raise NotImplementedError(f"engine={cfg.engine.value} is not available yet")

    trainer = L.Trainer(
        accelerator=cfg.accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    if cfg.split.value == "valid":
        metrics = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
        prefix = "val"
    else:
        metrics = trainer.test(module, datamodule=datamodule, verbose=False)[0]
        prefix = "test"
    loss = float(metrics[f"{prefix}/loss"])
    results: dict[str, Any] = {
        "split": cfg.split.value,
        "engine": cfg.engine.value,
        "loss": loss,
        "ppl": math.exp(min(loss, 700.0)),
        "ckpt_path": str(ckpt_path),
    }
    if datamodule.char_level:
        results["bpc"] = loss / math.log(2)
    out = Path(cfg.out) if cfg.out else ckpt_path.with_name(
        f"{ckpt_path.stem}.eval-{cfg.split.value}-{cfg.engine.value}.json"
    )
    atomic_write_json(out, results)
    log.info("wrote %s", out)
    return results


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    results = evaluate(cfg)
    print(f"{results['split']}: loss {results['loss']:.4f}  perplexity {results['ppl']:.2f}")
    print(json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
