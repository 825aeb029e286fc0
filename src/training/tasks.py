"""What ``src.train`` trains, by ``task.name``: one row of :data:`TASKS` per task.

A row builds the datamodule (from the ``data`` group, the seed, and a vocabulary to use as is,
or None to build one), the LightningModule (from the whole resolved config and the prepared
datamodule), names the callback of ``+transfer.ckpt_path``, and collects ``results.json``.

* ``lm``: a language model (:class:`LMDataModule`, :class:`LMModule`, :class:`Transfer`).
* ``classify``: a text classifier on labelled documents (``ClassifyDataModule`` of
  ``src/data``, :class:`ClassifierModule`, :class:`EncoderTransfer`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import lightning as L
import torch

from src.training.classify_module import ClassifierModule
from src.training.encoder_transfer import EncoderTransfer
from src.training.module import LMModule
from src.training.transfer import Transfer

LM_BIDIRECTIONAL = (
    "model.bidirectional=true with task=lm: the language-model objective cannot train a "
    "bidirectional encoder (its backward direction would see the targets); use task=classify"
)
QUANT_CLASSIFY = "quant=qat with task=classify: quantization-aware training is for task=lm only"


class Task(NamedTuple):
    datamodule: Callable[[dict[str, Any], int, list[str] | None], L.LightningDataModule]
    module: Callable[[dict[str, Any], Any], L.LightningModule]
    transfer: type[Transfer]
    results: Callable[[L.Trainer, L.LightningModule, Any, bool], dict[str, Any]]
    #: with ``+transfer.ckpt_path``, read the documents with the checkpoint's vocabulary (a
    #: classifier's encoder); a language model builds its own and matches rows (``Transfer``)
    reads_checkpoint_vocab: bool = False


def task_name(cfg: Any) -> str:
    """``task.name`` of a config (``lm`` when the config has no task group)."""
    name = (cfg.get("task") or {}).get("name", "lm")
    return str(getattr(name, "value", name))  # a DictConfig holds the TaskName enum


# ---------------------------------------------------------------------------------------- lm


def lm_datamodule(data: dict[str, Any], seed: int, vocab: list[str] | None) -> Any:
    """A corpus folder (``LMDataModule``) or, with ``data=csv``, the texts of a CSV folder
    (``CSVLMDataModule``: ULMFiT's language-model fine-tuning on the target documents)."""
    from src.data.csv_lm import CSVLMDataModule
    from src.data.datamodule import LMDataModule

    if vocab is not None:
        raise ValueError("task=lm builds its vocabulary from the corpus")
    source = CSVLMDataModule if data.get("format") == "csv" else LMDataModule
    return source(**data, seed=seed)


def lm_module(cfg: dict[str, Any], datamodule: Any) -> LMModule:
    """The language model for the datamodule's vocabulary; a split softmax
    (``loss.softmax=split``) ranks its words by their training-set counts, most frequent
    first."""
    if cfg["model"].get("bidirectional"):
        raise ValueError(LM_BIDIRECTIONAL)
    vocab = datamodule.vocab.itos
    module = LMModule(
        model={**cfg["model"], "vocab_size": len(vocab)},
        optim=cfg["optim"],
        loss=cfg["loss"],
        data=cfg["data"],
        quant=cfg["quant"],
        scheduler=cfg["scheduler"],
    )
    module.vocab = vocab
    head = module.model.softmax
    if cfg["loss"].get("softmax") == "split" and head.uses_frequencies:
        head.order_by_frequency(torch.from_numpy(datamodule.train_counts()))
    return module


def lm_results(
    trainer: L.Trainer, module: L.LightningModule, datamodule: Any, test: bool
) -> dict[str, Any]:
    """Best validation loss (perplexity, bits per character), and the test metrics of the best
    checkpoint."""
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
    if test:
        metrics = trainer.test(module, datamodule=datamodule, ckpt_path=best or None)[0]
        for key in ("test/loss", "test/ppl", "test/bpc"):
            if key in metrics:
                results[key] = float(metrics[key])
    return results


# ---------------------------------------------------------------------------------- classify


def classify_datamodule(data: dict[str, Any], seed: int, vocab: list[str] | None) -> Any:
    from src.data.labelled import ClassifyDataModule

    return ClassifyDataModule(**data, seed=seed, vocab=vocab)


def classify_module(cfg: dict[str, Any], datamodule: Any) -> ClassifierModule:
    if (cfg.get("quant") or {}).get("enabled"):
        raise ValueError(QUANT_CLASSIFY)
    vocab = datamodule.vocab.itos
    module = ClassifierModule(
        model={**cfg["model"], "vocab_size": len(vocab)},
        task=cfg["task"],
        data=cfg["data"],
        optim=cfg["optim"],
        num_classes=datamodule.num_classes,
        scheduler=cfg["scheduler"],
        class_weights=balanced_weights(datamodule) if _balanced(cfg["task"]) else None,
    )
    module.vocab, module.classes = vocab, list(datamodule.classes)
    return module


def _balanced(task: dict[str, Any]) -> bool:
    value = task.get("class_weight", "none")
    return str(getattr(value, "value", value)) == "balanced"


def balanced_weights(datamodule: Any) -> list[float]:
    """scikit-learn's ``class_weight="balanced"`` over the labelled train documents (the
    subset): class c weighs n / (C * n_c); a class without documents weighs 0."""
    counts = list(datamodule.class_counts("train").values())
    n, c = sum(counts), len(counts)
    return [n / (c * k) if k else 0.0 for k in counts]


CLASSIFY_KEYS = ("loss", "acc", "f1")


def classify_results(
    trainer: L.Trainer, module: L.LightningModule, datamodule: Any, test: bool
) -> dict[str, Any]:
    """Validation and test loss, accuracy and macro F1, all of the best checkpoint (the one
    with the best ``val/acc``), and the majority-class baseline on the test split (train's
    most common class for every document)."""
    results: dict[str, Any] = {"n_parameters": sum(p.numel() for p in module.parameters())}
    ckpt_cb = trainer.checkpoint_callback
    best = (getattr(ckpt_cb, "best_model_path", "") if ckpt_cb else "") or None
    splits = [("val", trainer.validate)] + ([("test", trainer.test)] if test else [])
    for split, run in splits:
        metrics = run(module, datamodule=datamodule, ckpt_path=best)[0]
        for key in CLASSIFY_KEYS:
            results[f"{split}/{key}"] = float(metrics[f"{split}/{key}"])
    results["best_checkpoint"] = best
    if test:
        train_counts, test_counts = (counts(datamodule, s) for s in ("train", "test"))
        results["test/majority_acc"], results["test/majority_f1"] = majority_baseline(
            train_counts, test_counts
        )
    return results


def counts(datamodule: Any, split: str) -> list[int]:
    """Documents per class (in ``datamodule.classes`` order) of a split."""
    found = datamodule.class_counts(split)
    if isinstance(found, dict):
        return [int(found.get(name, 0)) for name in datamodule.classes]
    return [int(n) for n in found]


def majority_baseline(train_counts: list[int], test_counts: list[int]) -> tuple[float, float]:
    """Accuracy and macro F1 on the test split of always answering train's most common class:
    that class has recall 1 and precision n_m / N, every other class F1 0."""
    majority = max(range(len(train_counts)), key=train_counts.__getitem__)
    total = sum(test_counts)
    precision = test_counts[majority] / total if total else 0.0
    f1 = 2 * precision / (precision + 1.0) if precision else 0.0
    return precision, f1 / len(test_counts)


TASKS: dict[str, Task] = {
    "lm": Task(lm_datamodule, lm_module, Transfer, lm_results),
    "classify": Task(classify_datamodule, classify_module, EncoderTransfer, classify_results, True),
}
