"""The LightningModule of ``task=classify``: the ULMFiT classifier (src/models/classifier.py).

Automatic optimization (no per-step rate scale, no NT-ASGD): Lightning steps the optimizer and
the schedule of ``src/training/optimizers.py``, the module clips the gradient norm at
``optim.clip``. Loss: cross entropy, nothing else (no AR/TAR: ``loss.*`` is the language
model's). Validation and test: the mean cross entropy over documents, torchmetrics'
``MulticlassAccuracy`` (micro: the fraction of documents right) and macro ``MulticlassF1Score``.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from src.models.awd import AWDLSTMConfig
from src.models.classifier import AWDClassifier
from src.training.optimizers import configure_optimization


class ClassifierModule(L.LightningModule):
    """AWD-LSTM encoder + concat-pooling head, trained with cross entropy.

    Args are plain dicts of the composed groups so a checkpoint rebuilds the module alone:
    ``model`` (:class:`AWDLSTMConfig`, ``vocab_size`` included), ``task`` (the head's
    ``lin_sizes`` and ``ps``), ``data`` (``bptt``: the encoder's chunk length), ``optim``,
    ``scheduler``, ``num_classes``, and ``class_weights`` (the training loss's per-class
    weights, ``task.class_weight=balanced``; validation and test losses stay unweighted). The
    entry point sets ``vocab`` and ``classes``; both travel in checkpoints.
    """

    def __init__(
        self,
        model: dict[str, Any],
        task: dict[str, Any],
        data: dict[str, Any],
        optim: dict[str, Any],
        num_classes: int,
        scheduler: dict[str, Any] | None = None,
        class_weights: list[float] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.register_buffer("class_weights", weights, persistent=False)
        self.model = AWDClassifier(
            AWDLSTMConfig(**model),
            num_classes,
            lin_sizes=task.get("lin_sizes", [50]),
            ps=task.get("ps", [0.4, 0.1]),
            bptt=data.get("bptt", 72),
        )
        self.vocab: list[str] | None = None
        self.classes: list[str] | None = None
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        scores = MetricCollection(
            {
                "acc": MulticlassAccuracy(num_classes, average="micro"),
                "f1": MulticlassF1Score(num_classes, average="macro"),
            }
        )
        self.val_scores = scores.clone(prefix="val/")
        self.test_scores = scores.clone(prefix="test/")

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """Logits ``[B, num_classes]`` of end-padded ``tokens [B, T]``."""
        return self.model(tokens, lengths)

    def configure_optimizers(self) -> Any:
        """Adam or SGD over ``optim.groups`` (``clas_split``: discriminative rates), and the
        configured schedule, per optimizer step."""
        return configure_optimization(
            self.model,
            self.hparams.optim,
            self.hparams.get("scheduler"),
            lambda: self.trainer.estimated_stepping_batches,
        )

    def configure_gradient_clipping(
        self, optimizer: Any, gradient_clip_val: Any = None, gradient_clip_algorithm: Any = None
    ) -> None:
        """Clip the gradient norm at ``optim.clip`` (0: no clipping), as the language model."""
        clip = self.hparams.optim.get("clip", 0.0)
        if clip > 0:
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        tokens, lengths, labels = batch
        logits = self.model(tokens, lengths)
        loss = F.cross_entropy(logits, labels, weight=self.class_weights)
        size = labels.numel()
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=size)
        acc = (logits.argmax(-1) == labels).float().mean()
        self.log("train/acc", acc, on_step=True, on_epoch=True, batch_size=size)
        self.log("lr", self.trainer.optimizers[0].param_groups[-1]["lr"], batch_size=size)
        return loss

    def _eval_step(self, batch: Any, loss: MeanMetric, scores: MetricCollection) -> None:
        tokens, lengths, labels = batch
        logits = self.model(tokens, lengths)
        loss.update(F.cross_entropy(logits, labels), weight=labels.numel())
        scores.update(logits, labels)

    def _log_eval(self, split: str, loss: MeanMetric, scores: MetricCollection) -> None:
        self.log(f"{split}/loss", loss.compute())
        for name, value in scores.compute().items():
            self.log(name, value, prog_bar=name.endswith("acc"))
        loss.reset()
        scores.reset()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, self.val_loss, self.val_scores)

    def on_validation_epoch_end(self) -> None:
        self._log_eval("val", self.val_loss, self.val_scores)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, self.test_loss, self.test_scores)

    def on_test_epoch_end(self) -> None:
        self._log_eval("test", self.test_loss, self.test_scores)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["vocab"] = self.vocab
        checkpoint["classes"] = self.classes

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.vocab = checkpoint.get("vocab")
        self.classes = checkpoint.get("classes")
