"""The ULMFiT classifier as an ONNX graph (``python -m src.export format=onnx`` on a
``task=classify`` checkpoint) and its ONNX Runtime session (``python -m src.predict
engine=onnxruntime``).

The graph is the classifier at inference (every dropout the identity)::

    inputs   tokens int64 [B, T] (padded at the end), lengths int64 [B]
    outputs  probs float32 [B, C] = softmax(head(pool(encoder(tokens))))

B and T are dynamic. The encoder runs each whole row at once from a zero state: in eval mode
that equals the trained encoder's chunks of ``bptt`` tokens with the state carried (the detach
between chunks changes gradients, not values). Concat pooling masks the padding, so a row's
probabilities do not depend on its batch. LSTM classifiers only (a bidirectional one restarts
its backward direction at every chunk, which one ONNX ``LSTM`` over the row does not).
The metadata carries what prediction needs: vocabulary, classes, data settings (tokenizer,
``max_len``, ``truncate``, ``reverse``) and model sizes.
"""

from __future__ import annotations

import copy
import io
import json
import os
import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from src.models.classifier import AWDClassifier

from .onnx_export import OPSET, _lstm, _onnx, _quantized, write_checked
from .onnx_runtime import open_session

__all__ = ["CLASSIFIER_FORMAT", "ClassifierGraph", "OnnxClassifier", "export_classifier_onnx"]

CLASSIFIER_FORMAT = "awd-classifier-onnx"
CLASSIFIER_VERSION = 1


class ClassifierGraph(nn.Module):
    """The classifier at inference: tokens [B, T] and lengths [B] -> probabilities [B, C]."""

    def __init__(self, model: AWDClassifier) -> None:
        super().__init__()
        config = model.config
        if _quantized(model) or config.cell != "lstm" or config.bidirectional:
            raise ValueError(
                f"format=onnx exports unidirectional LSTM classifiers; this one has "
                f"cell={config.cell}, bidirectional={config.bidirectional}: predict with its "
                "checkpoint (python -m src.predict ckpt_path=...)"
            )
        self.embedding = nn.Embedding.from_pretrained(model.embedding.weight.detach().clone())
        self.layers = nn.ModuleList(_lstm(layer) for layer in model.layers)
        self.head = copy.deepcopy(model.head)
        self.eval()

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        x = self.embedding(tokens.t())  # [T, B, E]
        for lstm in self.layers:
            x, _ = lstm(x)
        return torch.softmax(self.head(x, lengths), dim=-1)


def _agreement(graph: ClassifierGraph, blob: bytes) -> float | None:
    """Max |probability difference| of ONNX Runtime against torch on a random padded batch."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, graph.embedding.num_embeddings, (3, 7), generator=g)
    lengths = torch.tensor([7, 4, 1])
    session = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"tokens": tokens.numpy(), "lengths": lengths.numpy()})
    with torch.no_grad():
        want = graph(tokens, lengths)
    return float((torch.from_numpy(got) - want).abs().max())


def export_classifier_onnx(
    model: AWDClassifier, path: str | os.PathLike[str], meta: dict[str, Any], opset: int = OPSET
) -> dict[str, Any]:
    """Write the classifier as ONNX to ``path`` atomically, ``meta`` (vocab, classes, data,
    model, source) in its metadata; checked against torch with ONNX Runtime. Returns a report."""
    onnx = _onnx()
    graph = ClassifierGraph(copy.deepcopy(model).cpu().float().eval())
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            graph,
            (torch.zeros(2, 5, dtype=torch.long), torch.tensor([5, 3])),
            buffer,
            dynamo=False,
            input_names=["tokens", "lengths"],
            output_names=["probs"],
            dynamic_axes={"tokens": {0: "batch", 1: "time"}, "lengths": {0: "batch"},
                          "probs": {0: "batch"}},
            opset_version=opset,
        )  # fmt: skip
    proto = onnx.load_from_string(buffer.getvalue())
    props = {"awd_format": CLASSIFIER_FORMAT, "awd_version": str(CLASSIFIER_VERSION)}
    props.update({key: json.dumps(value) for key, value in meta.items()})
    return write_checked(proto, props, path, lambda blob: _agreement(graph, blob), opset)


class OnnxClassifier:
    """An exported classifier in ONNX Runtime on the CPU; ``meta`` holds its vocabulary,
    classes and data settings."""

    def __init__(self, path: str | os.PathLike[str], threads: int = 1) -> None:
        self.session, props = open_session(path, threads, CLASSIFIER_FORMAT, CLASSIFIER_VERSION)
        self.meta: dict[str, Any] = {
            key: json.loads(value) for key, value in props.items() if not key.startswith("awd_")
        }

    def probs(self, tokens: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Class probabilities float32 [B, C] of end-padded ``tokens [B, T]``."""
        feeds = {
            "tokens": np.ascontiguousarray(tokens, dtype=np.int64),
            "lengths": np.ascontiguousarray(lengths, dtype=np.int64),
        }
        return self.session.run(None, feeds)[0]
