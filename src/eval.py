"""Evaluate a checkpoint: ``python -m src.eval ckpt_path=PATH [split=valid|test] [engine=int8]``.

Rebuilds the model and the corpus settings stored in the checkpoint, refuses a corpus whose
vocabulary differs from the one the model was trained on, and prints the split's loss and
perplexity; the last line of output is one JSON object of the metrics (also written to a file).

``engine=float`` runs the Lightning model as trained (float, or fake-quantized for a QAT
checkpoint). ``engine=int8`` runs the integer-only engine (``src.quant.integer``, on CPU) on
a QAT checkpoint, converted on the fly, or on a file written by ``python -m src.export``.
``engine=onnxruntime`` scores an ``.onnx`` file of ``python -m src.export format=onnx`` with ONNX
Runtime (``src.deploy``, the ``deploy`` extra), on the CPU with torch's thread count.

A classifier checkpoint (``task=classify``) prints its accuracy, macro F1, per-class precision,
recall, F1 and support, and writes ``confusion_matrix_<split>.png`` in its run folder
(:mod:`src.prediction.classifier_eval`).

``pointer.enabled=true`` adds the continuous cache pointer, ``dynamic.enabled=true`` dynamic
evaluation (``src.evaluation.cli_options``); each reports its perplexity beside the plain one.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, ListConfig

from src.checks import check_config, check_eval_data, one_line_config_errors
from src.config import register_configs
from src.data.datamodule import LMDataModule
from src.deploy.onnx_runtime import OnnxLM
from src.evaluation.cli_options import describe, pick_device, run_extras
from src.prediction.classifier_eval import evaluate_classifier
from src.quant.integer import convert as qconvert
from src.quant.integer import export as qexport
from src.quant.integer.lm import IntegerLM
from src.training.checkpoint import is_classifier, load_module
from src.training.tasks import lm_datamodule
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
    datamodule = lm_datamodule(data, seed, None)  # a corpus, or a CSV folder's texts
    check_eval_data(datamodule, cfg.split.value, cfg.accelerator)  # read; too large: exit 2
    return datamodule


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


def _eval_float(cfg: DictConfig, ckpt_path: Path) -> tuple[float, int, float, bool]:
    """The Lightning model (float or fake-quantized): (loss, tokens, seconds, char_level)."""
    if qexport.is_export(_peek(ckpt_path)):
        raise ValueError(f"{ckpt_path} is an exported integer model: evaluate it with engine=int8")
    module, _ = load_module(ckpt_path)
    datamodule = build_eval_datamodule(cfg, module.hparams.data, seed=0)
    datamodule.prepare_data()
    check_vocabulary(module.vocab, datamodule.vocab.itos, str(ckpt_path))
    trainer = L.Trainer(
        accelerator=cfg.accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    start = time.perf_counter()
    if cfg.split.value == "valid":
        metrics = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
        prefix = "val"
    else:
        metrics = trainer.test(module, datamodule=datamodule, verbose=False)[0]
        prefix = "test"
    seconds = time.perf_counter() - start
    loader = datamodule.val_dataloader() if prefix == "val" else datamodule.test_dataloader()
    tokens = sum(window[1].numel() for window in loader)
    return float(metrics[f"{prefix}/loss"]), tokens, seconds, datamodule.char_level


def load_integer_model(path: Path) -> tuple[IntegerLM, dict[str, Any]]:
    """An exported integer model, or the integer model converted from a QAT checkpoint."""
    payload = _peek(path)
    if qexport.is_export(payload):
        return qexport.from_payload(payload), payload.get("meta", {})
    module, _ = load_module(path)
    lm, _ = qconvert.convert(module.model)
    meta = {"vocab": module.vocab, "data": dict(module.hparams.data)}
    return qexport.expand_tables(lm), meta


def _eval_int8(cfg: DictConfig, path: Path) -> tuple[float, int, float, bool]:
    """The integer engine on CPU, window by window: (loss, tokens, seconds, char_level)."""
    lm, meta = load_integer_model(path)
    datamodule = build_eval_datamodule(cfg, meta["data"], seed=0)
    datamodule.prepare_data()
    check_vocabulary(meta.get("vocab"), datamodule.vocab.itos, str(path))
    valid = cfg.split.value == "valid"
    loader = datamodule.val_dataloader() if valid else datamodule.test_dataloader()
    nll, tokens, state = 0.0, 0, None
    start = time.perf_counter()
    for inputs, targets, _ in loader:
        window_nll, state = lm.score(inputs, targets, state)
        nll += float(window_nll)
        tokens += targets.numel()
    seconds = time.perf_counter() - start
    return nll / tokens, tokens, seconds, datamodule.char_level


def _eval_onnx(cfg: DictConfig, path: Path) -> tuple[float, int, float, bool]:
    """ONNX Runtime on an exported float model, window by window: as :func:`_eval_int8`."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist; write it with python -m src.export format=onnx"
        )
    lm = OnnxLM(path, threads=torch.get_num_threads())
    datamodule = build_eval_datamodule(cfg, lm.meta["data"], seed=0)
    datamodule.prepare_data()
    check_vocabulary(lm.meta.get("vocab"), datamodule.vocab.itos, str(path))
    valid = cfg.split.value == "valid"
    loader = datamodule.val_dataloader() if valid else datamodule.test_dataloader()
    nll, tokens, state = 0.0, 0, None
    start = time.perf_counter()
    for inputs, targets, _ in loader:
        window_nll, state = lm.score(inputs.numpy(), targets.numpy(), state)
        nll += window_nll
        tokens += targets.numel()
    seconds = time.perf_counter() - start
    return nll / tokens, tokens, seconds, datamodule.char_level


def _eval_extras(cfg: DictConfig, ckpt_path: Path) -> dict[str, Any]:
    """Cache pointer / dynamic evaluation (``pointer.*``, ``dynamic.*``) on the float model."""
    if not (cfg.pointer.enabled or cfg.dynamic.enabled):
        return {}
    if cfg.engine.value != "float":
        raise ValueError("pointer.enabled / dynamic.enabled need engine=float")
    module, _ = load_module(ckpt_path)
    datamodule = build_eval_datamodule(cfg, module.hparams.data, seed=0)
    datamodule.prepare_data()
    device = pick_device(cfg.accelerator)
    return run_extras(
        module.model, datamodule, cfg.split.value, cfg.pointer, cfg.dynamic, device=device
    )


def _peek(path: Path) -> object:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist; pass ckpt_path=<run dir>/checkpoints/best.ckpt or an "
            "exported integer model"
        )
    return torch.load(path, map_location="cpu", weights_only=False)


def _evaluate_classifier(cfg: DictConfig, ckpt_paths: list[Path]) -> dict[str, Any]:
    """A ``task=classify`` checkpoint (or an ensemble of them): accuracy, F1, per class,
    confusion matrix (PNG)."""
    if cfg.pointer.enabled or cfg.dynamic.enabled:
        raise ValueError(f"{ckpt_paths[0]} is a classifier: pointer and dynamic are for LMs")
    paths = {"data_dir": str(cfg.paths.data_dir), "cache_dir": str(cfg.paths.cache_dir)}
    results = evaluate_classifier(ckpt_paths, cfg.split.value, paths, cfg.batch_size)
    named = [str(p) for p in ckpt_paths] if len(ckpt_paths) > 1 else str(ckpt_paths[0])
    return {"split": cfg.split.value, "engine": "float", "ckpt_path": named, **results}


def checkpoint_list(value: Any) -> list[Path]:
    """``ckpt_path`` as paths: one file, or a list (an ensemble of classifiers)."""
    if isinstance(value, (list, ListConfig)):
        return [Path(str(v)) for v in value]
    return [Path(str(value))]


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    ckpt_paths = checkpoint_list(cfg.ckpt_path)
    engine = cfg.engine.value
    if len(ckpt_paths) > 1:
        if engine != "float" or not all(is_classifier_file(p) for p in ckpt_paths):
            raise ValueError(
                "ckpt_path: a list is an ensemble of classifier checkpoints (engine=float); "
                "evaluate a language model or an exported file on its own"
            )
        results = _evaluate_classifier(cfg, ckpt_paths)
        _write_results(cfg, ckpt_paths[0], results)
        return results
    ckpt_path = ckpt_paths[0]
    if engine == "float" and is_classifier_file(ckpt_path):
        results = _evaluate_classifier(cfg, [ckpt_path])
        _write_results(cfg, ckpt_path, results)
        return results
    run = {"int8": _eval_int8, "onnxruntime": _eval_onnx}.get(engine, _eval_float)
    loss, tokens, seconds, char_level = run(cfg, ckpt_path)
    results: dict[str, Any] = {
        "split": cfg.split.value,
        "engine": engine,
        "loss": loss,
        "ppl": math.exp(min(loss, 700.0)),
        "ckpt_path": str(ckpt_path),
        "seconds": seconds,
    }
    if tokens:
        results["tokens_per_sec"] = tokens / max(seconds, 1e-9)
    if char_level:
        results["bpc"] = loss / math.log(2)
    results.update(_eval_extras(cfg, ckpt_path))
    _write_results(cfg, ckpt_path, results)
    return results


def _write_results(cfg: DictConfig, ckpt_path: Path, results: dict[str, Any]) -> None:
    """``<checkpoint>.eval-<split>-<engine>.json`` beside ``ckpt_path`` (an ensemble, whose
    ``results["ckpt_path"]`` lists its members: ``ensemble-<n>.eval-...`` beside the first),
    or ``out``."""
    members = results["ckpt_path"]
    stem = f"ensemble-{len(members)}" if isinstance(members, list) else ckpt_path.stem
    name = f"{stem}.eval-{cfg.split.value}-{results['engine']}.json"
    out = Path(cfg.out) if cfg.out else ckpt_path.with_name(name)
    atomic_write_json(out, results)
    log.info("wrote %s", out)


def is_classifier_file(path: Path) -> bool:
    """A ``task=classify`` checkpoint (an exported, missing or unreadable file is not: the
    language-model path reports those as before)."""
    try:
        payload = _peek(path)
    except Exception:  # noqa: BLE001 - reported where the file is read for real
        return False
    return isinstance(payload, dict) and is_classifier(payload)


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    check_config(cfg)  # bad values: one line each, exit 2, before the checkpoint is read
    results = evaluate(cfg)
    if "acc" in results:  # a classifier
        print(f"{results['split']}: loss {results['loss']:.4f}  accuracy {results['acc']:.4f}  "
              f"macro F1 {results['f1']:.4f}  ({results['confusion_matrix_png']})")  # fmt: skip
    else:
        print(f"{results['split']}: loss {results['loss']:.4f}  perplexity {results['ppl']:.2f}")
    if extras := describe(results):
        print(extras)
    print(json.dumps(results), flush=True)


if __name__ == "__main__":
    with one_line_config_errors():  # Hydra's composition errors too
        main()
