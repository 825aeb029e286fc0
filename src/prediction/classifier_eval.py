"""``python -m src.eval`` on a classifier checkpoint: accuracy, macro F1, per-class precision,
recall, F1 and support (torchmetrics), the confusion matrix as numbers and as
``confusion_matrix_<split>.png`` in the checkpoint's run folder, also logged to the run's
offline wandb run when the run has one (``<run dir>/wandb_run_id``; resumed, then closed).

The split is read as training read it: the checkpoint's data settings, its vocabulary and
classes (a file whose labels give other classes is refused). A list of checkpoints is scored
as their ensemble: the mean of their class probabilities (ULMFiT's forward + backward pair),
each model reading the documents its own way.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from src.data.labelled import ClassifyDataModule
from src.training.checkpoint import load_classifier
from src.training.run_logs import WANDB_ID_FILE
from src.utils.io import atomic_path

log = logging.getLogger(__name__)


def classification_metrics(logits: Tensor, labels: Tensor, classes: list[str]) -> dict[str, Any]:
    """Loss (mean cross entropy), accuracy (micro), macro F1, per-class precision, recall, F1
    and support, and the confusion matrix (rows: true class, columns: predicted)."""
    n = len(classes)
    per_class = {
        name: metric(logits, labels).tolist()
        for name, metric in (
            ("precision", MulticlassPrecision(n, average=None)),
            ("recall", MulticlassRecall(n, average=None)),
            ("f1", MulticlassF1Score(n, average=None)),
        )
    }
    support = torch.bincount(labels, minlength=n).tolist()
    return {
        "documents": int(labels.numel()),
        "loss": float(F.cross_entropy(logits.float(), labels)),
        "acc": float(MulticlassAccuracy(n, average="micro")(logits, labels)),
        "f1": float(MulticlassF1Score(n, average="macro")(logits, labels)),
        "per_class": {
            c: {**{k: float(v[i]) for k, v in per_class.items()}, "support": int(support[i])}
            for i, c in enumerate(classes)
        },
        "confusion_matrix": MulticlassConfusionMatrix(n)(logits, labels).tolist(),
    }


def save_confusion_matrix(
    matrix: list[list[int]], classes: list[str], path: Path, title: str
) -> None:
    """The matrix as a PNG (counts in the cells), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = 1.5 + 0.6 * len(classes)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    top = max((max(row) for row in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            color = "white" if count > top / 2 else "black"
            ax.text(j, i, str(count), ha="center", va="center", color=color)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def run_folder(ckpt_path: Path) -> Path:
    """``<run dir>`` of ``<run dir>/checkpoints/x.ckpt``, else the checkpoint's folder."""
    parent = ckpt_path.resolve().parent
    return parent.parent if parent.name == "checkpoints" else parent


def log_to_wandb(run_dir: Path, split: str, results: dict[str, Any], png: Path) -> str:
    """Add the metrics and the image to the run's offline wandb run; what was done, in words."""
    id_file = run_dir / WANDB_ID_FILE
    if not id_file.is_file() or not (run_dir / "wandb").is_dir():
        return "skipped: the run did not log to wandb"
    try:
        import wandb
        from omegaconf import OmegaConf

        config = run_dir / "config.yaml"
        saved = OmegaConf.load(config) if config.is_file() else OmegaConf.create()
        project = OmegaConf.select(saved, "logger.wandb.project", default="awd-lstm-lab")
        run = wandb.init(
            project=project,
            id=id_file.read_text().strip(),
            resume="allow",
            dir=str(run_dir),
            mode="offline",
        )
        scalars = {f"eval/{split}/{k}": results[k] for k in ("loss", "acc", "f1")}
        run.log({**scalars, f"eval/{split}/confusion_matrix": wandb.Image(str(png))})
        run.finish()
    except Exception as exc:  # noqa: BLE001 - the metrics stand without wandb
        log.warning("wandb logging skipped: %s", exc)
        return f"skipped: {type(exc).__name__}: {exc}"
    return f"logged to offline run {id_file.read_text().strip()}"


def split_logits(
    ckpt_path: Path, split: str, paths: dict[str, str], batch_size: int | None = None
) -> tuple[Tensor, Tensor, np.ndarray, list[str]]:
    """A classifier's logits [N, C] and the labels [N] of ``split`` (valid or test), in its
    evaluation order (longest first), with each row's document index and the class names.

    The split is read with the checkpoint's own data settings (tokenizer, cut, direction)."""
    module, _ = load_classifier(ckpt_path)
    data = {**dict(module.hparams.data), **paths}
    if batch_size is not None:
        data["eval_batch_size" if split == "valid" else "test_batch_size"] = int(batch_size)
    datamodule = ClassifyDataModule(**data, seed=0, vocab=module.vocab)
    datamodule.prepare_data()
    classes = list(module.classes or [])
    if datamodule.classes != classes:
        raise ValueError(
            f"the data gives the classes ({', '.join(datamodule.classes)}), the checkpoint "
            f"{ckpt_path} was trained on ({', '.join(classes)}); evaluate it on its own data"
        )
    loader = datamodule.val_dataloader() if split == "valid" else datamodule.test_dataloader()
    order = np.concatenate(loader.dataset.batches())  # the loader's documents, batch by batch
    logits, labels = [], []
    with torch.no_grad():
        for batch in loader:
            logits.append(module(batch.tokens, batch.lengths))
            labels.append(batch.labels)
    return torch.cat(logits), torch.cat(labels), order, classes


def ensemble_logits(
    ckpt_paths: list[Path], split: str, paths: dict[str, str], batch_size: int | None = None
) -> tuple[Tensor, Tensor, list[str]]:
    """log of the mean class probabilities of several classifiers (ULMFiT's forward +
    backward ensemble), in document order, with the labels; the classes must agree."""
    total, labels, classes = None, None, None
    for path in ckpt_paths:
        logits, row_labels, order, names = split_logits(path, split, paths, batch_size)
        probs = torch.zeros(logits.shape, dtype=torch.float64)
        probs[torch.from_numpy(order)] = torch.softmax(logits.double(), dim=-1)
        if total is None:
            total, classes = probs, names
            labels = torch.zeros(len(order), dtype=torch.int64)
            labels[torch.from_numpy(order)] = row_labels
        elif names != classes:
            raise ValueError(
                f"ensemble of classifiers with different classes: {ckpt_paths[0]} has "
                f"({', '.join(classes or [])}), {path} has ({', '.join(names)}); average only "
                "models trained on the same labels"
            )
        else:
            total += probs
    assert total is not None and labels is not None and classes is not None
    return torch.log(total / len(ckpt_paths)).float(), labels, classes


def evaluate_classifier(
    ckpt_path: Path | list[Path],
    split: str,
    paths: dict[str, str],
    batch_size: int | None = None,
) -> dict[str, Any]:
    """Score a classifier checkpoint on ``split`` (valid or test), or the ensemble of a list of
    them (probabilities averaged); write the confusion-matrix PNG; the metrics."""
    start = time.perf_counter()
    if isinstance(ckpt_path, list) and len(ckpt_path) > 1:
        logits, labels, classes = ensemble_logits(ckpt_path, split, paths, batch_size)
        first, title = ckpt_path[0], f"ensemble of {len(ckpt_path)}: {split}"
        png_name = f"confusion_matrix_{split}_ensemble.png"
    else:
        first = ckpt_path[0] if isinstance(ckpt_path, list) else ckpt_path
        logits, labels, _, classes = split_logits(first, split, paths, batch_size)
        title, png_name = f"{first.name}: {split}", f"confusion_matrix_{split}.png"
    results = classification_metrics(logits, labels, classes)
    results["seconds"] = time.perf_counter() - start
    run_dir = run_folder(first)
    png = run_dir / png_name
    save_confusion_matrix(results["confusion_matrix"], classes, png, title)
    results["confusion_matrix_png"] = str(png)
    if isinstance(ckpt_path, list) and len(ckpt_path) > 1:
        results["wandb"] = "skipped: an ensemble has no run of its own"
    else:
        results["wandb"] = log_to_wandb(run_dir, split, results, png)
    return results
