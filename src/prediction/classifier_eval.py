"""``python -m src.eval`` on a classifier checkpoint: accuracy, macro F1, per-class precision,
recall, F1 and support (torchmetrics), the confusion matrix as numbers and as
``confusion_matrix_<split>.png`` in the checkpoint's run folder, also logged to the run's
offline wandb run when the run has one (``<run dir>/wandb_run_id``; resumed, then closed).

The split is read as training read it: the checkpoint's data settings, its vocabulary and
classes (a file whose labels give other classes is refused).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

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


def evaluate_classifier(
    ckpt_path: Path, split: str, paths: dict[str, str], batch_size: int | None = None
) -> dict[str, Any]:
    """Score a classifier checkpoint on ``split`` (valid or test); write the PNG; the metrics."""
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
    start = time.perf_counter()
    logits, labels = [], []
    with torch.no_grad():
        for batch in loader:
            logits.append(module(batch.tokens, batch.lengths))
            labels.append(batch.labels)
    results = classification_metrics(torch.cat(logits), torch.cat(labels), classes)
    results["seconds"] = time.perf_counter() - start
    run_dir = run_folder(ckpt_path)
    png = run_dir / f"confusion_matrix_{split}.png"
    save_confusion_matrix(results["confusion_matrix"], classes, png, f"{ckpt_path.name}: {split}")
    results["confusion_matrix_png"] = str(png)
    results["wandb"] = log_to_wandb(run_dir, split, results, png)
    return results
