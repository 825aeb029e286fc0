"""Trained models as document scorers: classifiers (a checkpoint, or an ONNX file of
``src.export``) give class probabilities, language models a summed NLL per document.

Each model reads the documents with its own tokenizer (the checkpoint's ``data.tokenizer``;
``word`` when an old checkpoint has none) and vocabulary (unknown words -> ``<unk>``), cuts them
as it was trained (``data.max_len``, ``data.truncate``; reversed after the cut for a backward
model, ``data.reverse``), and runs them in batches of similar
length (``src.data.doc_batches.sorted_batches``), padded at the end.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from src.data.corpus import EOS, UNK
from src.data.doc_batches import collate, sorted_batches
from src.data.documents import PAD, EncodedSplit, tokenize_text
from src.training.checkpoint import is_classifier, load_classifier, load_module, read_checkpoint

from .inputs import InputError

Progress = Callable[[int], Any]  # called with the number of documents just done


def _plain(value: Any) -> Any:
    return getattr(value, "value", value)


def tokenizer_for(name: str) -> Callable[[str], list[str]]:
    """The document tokenizer ``name`` (``tokenize_text``'s rules for ``data.tokenizer``)."""
    return lambda text: tokenize_text(text, tokenizer=name)


class TextModel:
    """What every model shares: where it came from, its vocabulary and how it reads text."""

    def __init__(self, source: str, vocab: Sequence[str], data: dict[str, Any]) -> None:
        self.source = source
        self.vocab = list(vocab)
        self.stoi = {token: i for i, token in enumerate(self.vocab)}
        self.tokenizer = str(_plain(data.get("tokenizer", "word")))
        self.max_len = int(data.get("max_len", 0)) or None
        self.tail = str(_plain(data.get("truncate", "head"))) == "tail"
        self.reverse = bool(data.get("reverse", False))  # a backward model reads right to left
        self.tokenize = tokenizer_for(self.tokenizer)

    def ids(self, tokens: list[str], where: str) -> np.ndarray:
        """int64 ids of ``tokens`` (unknown -> ``<unk>``; refused when the vocabulary lacks it)."""
        unk = self.stoi.get(UNK)
        if unk is None:
            unknown = [t for t in tokens if t not in self.stoi]
            if unknown:
                raise InputError(
                    f"{where}: {unknown[0]!r} is not in the vocabulary of {self.source}, which "
                    "has no <unk>; remove the word or use a model trained with <unk>"
                )
        return np.fromiter((self.stoi.get(t, unk) for t in tokens), np.int64, len(tokens))  # type: ignore[arg-type]

    def cut(self, ids: np.ndarray) -> np.ndarray:
        """The ids as the model was trained to read them: cut to ``data.max_len`` (the first or
        last tokens), then reversed for a backward model (``data.reverse``)."""
        if self.max_len is not None and len(ids) > self.max_len:
            ids = ids[-self.max_len :] if self.tail else ids[: self.max_len]
        return np.ascontiguousarray(ids[::-1]) if self.reverse else ids


def encode(docs: list[np.ndarray]) -> EncodedSplit:
    lengths = np.fromiter(map(len, docs), np.int64, len(docs))
    return EncodedSplit(docs, lengths, np.zeros(len(docs), np.int64))


class Classifier(Protocol):
    source: str
    classes: list[str]

    def probs(
        self, tokens: list[list[str]], where: list[str], batch_size: int, done: Progress
    ) -> np.ndarray: ...


class BatchedClassifier(TextModel):
    """Probabilities [N, C] of tokenized documents, batch by batch through :meth:`batch_probs`."""

    classes: list[str]

    def batch_probs(self, tokens: torch.Tensor, lengths: torch.Tensor) -> np.ndarray:
        raise NotImplementedError

    def probs(
        self, tokens: list[list[str]], where: list[str], batch_size: int, done: Progress
    ) -> np.ndarray:
        split = encode([self.cut(self.ids(t, w)) for t, w in zip(tokens, where, strict=True)])
        out = np.zeros((len(tokens), len(self.classes)), np.float64)
        for index in sorted_batches(split.lengths, batch_size):
            batch = collate(split, index, self.stoi[PAD])
            out[index] = self.batch_probs(batch.tokens, batch.lengths)
            done(len(index))
        return out


class TorchClassifier(BatchedClassifier):
    """A ``task=classify`` checkpoint in eval mode."""

    def __init__(self, path: Path) -> None:
        self.module, _ = load_classifier(path)
        super().__init__(str(path), self.module.vocab or [], dict(self.module.hparams.data))
        self.classes = list(self.module.classes or [])

    @torch.no_grad()
    def batch_probs(self, tokens: torch.Tensor, lengths: torch.Tensor) -> np.ndarray:
        return torch.softmax(self.module(tokens, lengths).double(), dim=-1).numpy()


class OnnxClassifierModel(BatchedClassifier):
    """A classifier exported by ``python -m src.export format=onnx``, in ONNX Runtime."""

    def __init__(self, path: Path) -> None:
        from src.deploy.onnx_classifier import OnnxClassifier

        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist; write it with src.export format=onnx")
        self.session = OnnxClassifier(path, threads=torch.get_num_threads())
        meta = self.session.meta
        super().__init__(str(path), meta.get("vocab") or [], meta.get("data") or {})
        self.classes = list(meta.get("classes") or [])

    def batch_probs(self, tokens: torch.Tensor, lengths: torch.Tensor) -> np.ndarray:
        return self.session.probs(tokens.numpy(), lengths.numpy()).astype(np.float64)


class LanguageModel(TextModel):
    """A ``task=lm`` checkpoint: each document's NLL after a line start (``<eos>``)."""

    def __init__(self, path: Path) -> None:
        self.module, _ = load_module(path)
        data = dict(self.module.hparams.data)
        data.pop("max_len", None)  # a language model reads whole documents
        super().__init__(str(path), self.module.vocab or [], data)
        if EOS not in self.stoi:
            raise ValueError(f"{path}: the vocabulary has no {EOS}, which starts each document")

    @torch.no_grad()
    def nll(
        self, tokens: list[list[str]], where: list[str], batch_size: int, done: Progress
    ) -> np.ndarray:
        """Summed -log p (nats, float64) of every document's tokens, each from a zero state."""
        start = np.array([self.stoi[EOS]], np.int64)
        docs = [
            np.concatenate([start, self.cut(self.ids(t, w))])
            for t, w in zip(tokens, where, strict=True)
        ]
        split, model = encode(docs), self.module.model
        out = np.zeros(len(docs), np.float64)
        for index in sorted_batches(split.lengths, batch_size):
            batch = collate(split, index, 0)
            steps = batch.tokens.t()  # [T, B]
            output = model(steps[:-1], None).output
            log_p = model.softmax.target_log_probs(model.decoder, output, steps[1:])
            real = torch.arange(steps.size(0) - 1).unsqueeze(1) < (batch.lengths - 1)
            out[index] = -(log_p.double() * real).sum(0).numpy()
            done(len(index))
        return out


def load_models(paths: Sequence[str], engine: str) -> tuple[list[Classifier], LanguageModel | None]:
    """Classifiers (one or more, the same classes) or one language model, from ``paths``."""
    files = [Path(p).expanduser() for p in paths]
    if engine == "onnxruntime":
        return [OnnxClassifierModel(f) for f in files], None
    kinds = [is_classifier(read_checkpoint(f)) for f in files]
    if not any(kinds):
        if len(files) > 1:
            raise ValueError("ckpt_path: a list is for classifiers (an ensemble); give one LM")
        return [], LanguageModel(files[0])
    if not all(kinds):
        raise ValueError("ckpt_path mixes classifiers and language models; give one kind")
    return [TorchClassifier(f) for f in files], None


def check_same_classes(models: Sequence[Classifier]) -> list[str]:
    """The ensemble's classes: every model must have the same names in the same order."""
    classes = models[0].classes
    for model in models[1:]:
        if model.classes != classes:
            raise ValueError(
                f"ensemble of classifiers with different classes: {models[0].source} has "
                f"({', '.join(classes)}), {model.source} has ({', '.join(model.classes)}); "
                "average only models trained on the same labels"
            )
    return list(classes)


def perplexity(nll: float, tokens: int) -> float:
    """exp(mean NLL), capped so that a hopeless model reports a huge number, not inf."""
    return math.exp(min(nll / max(tokens, 1), 700.0))
