"""The float AWD-LSTM as an ONNX graph (``python -m src.export format=onnx``).

The graph is the model at inference (every dropout is the identity): embedding, the LSTM
layers as ONNX ``LSTM`` operators, the tied decoder and a log-softmax::

    inputs   tokens int64 [T, B];  h<l>, c<l> float32 [1, B, H_l] for every layer l
    outputs  log_probs float32 [T, B, V];  h<l>_out, c<l>_out float32 [1, B, H_l]

T and B are dynamic, so windows of any length and batch run with the state carried from one
call to the next. Exported with ``torch.onnx.export(dynamo=False)``, the TorchScript exporter:
on torch 2.13 the dynamo exporter fixes the time length of the LSTM's output reshape at the
example's (a window of another length fails in ONNX Runtime), the TorchScript one does not.
The file's metadata (``metadata_props``) carries the vocabulary and the data settings, as a
checkpoint does: :func:`read_metadata`. Fake-quantized (QAT) models are refused: their
deployment is the integer model (``format=c``).
"""

from __future__ import annotations

import io
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn

from src.models.awd import AWDLSTM
from src.models.dropout import WeightDrop
from src.utils.io import atomic_write

__all__ = ["FORMAT", "OPSET", "VERSION", "OnnxGraph", "export_onnx", "state_names"]

FORMAT = "awd-lstm-onnx"
VERSION = 1
OPSET = 17


def state_names(num_layers: int) -> list[str]:
    """``h0, c0, h1, c1, ...``: the graph's state inputs (outputs add ``_out``)."""
    return [f"{kind}{layer}" for layer in range(num_layers) for kind in ("h", "c")]


def _quantized(model: nn.Module) -> bool:
    return any(type(m).__module__.startswith("src.quant") for m in model.modules())


def _lstm(layer: nn.Module) -> nn.LSTM:
    """A plain ``nn.LSTM`` with the layer's weights (the raw W_hh of a weight-dropped one)."""
    inner = layer.module if isinstance(layer, WeightDrop) else layer
    params = dict(inner.named_parameters(recurse=False))
    w_hh = params.get("weight_hh_l0_raw", params.get("weight_hh_l0"))
    w_ih = params.get("weight_ih_l0_raw", params.get("weight_ih_l0"))  # [input, hidden] drop
    lstm = nn.LSTM(w_ih.shape[1], w_hh.shape[1])
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(w_ih)
        lstm.weight_hh_l0.copy_(w_hh)
        lstm.bias_ih_l0.copy_(params["bias_ih_l0"])
        lstm.bias_hh_l0.copy_(params["bias_hh_l0"])
    return lstm


class OnnxGraph(nn.Module):
    """The float model at inference with the state as flat inputs and outputs (module doc)."""

    def __init__(self, model: AWDLSTM) -> None:
        super().__init__()
        if _quantized(model):
            raise ValueError(
                "this is a fake-quantized (QAT) model: ONNX export takes float models; deploy a "
                "QAT checkpoint as the integer model with format=c (or format=int8)"
            )
        if model.config.cell == "mlstm":
            raise ValueError(
                f"format=onnx exports LSTM models, this one has cell={model.config.cell} (its "
                "per-step loop would be unrolled to one window length); train it with quant=qat "
                "and export format=c"
            )
        if model.config.cell != "lstm":
            raise ValueError(
                f"format=onnx exports LSTM models, this one has cell={model.config.cell}; no "
                "export (ONNX or integer) is built for it: evaluate it with python -m src.eval"
            )
        kind = getattr(getattr(model, "softmax", None), "kind", "full")
        if kind == "split":
            raise ValueError(
                "format=onnx exports the full softmax (models trained with loss.softmax=full or "
                "chunked); this one has loss.softmax=split, whose clusters the graph lacks"
            )
        self.embedding = nn.Embedding.from_pretrained(model.embedding.weight.detach().clone())
        self.layers = nn.ModuleList(_lstm(layer) for layer in model.layers)
        decoder = model.decoder
        self.decoder = nn.Linear(decoder.in_features, decoder.out_features)
        with torch.no_grad():
            self.decoder.weight.copy_(decoder.weight)
            self.decoder.bias.copy_(decoder.bias)
        if decoder.weight is model.embedding.weight:  # tied: one matrix in the file too
            self.decoder.weight = self.embedding.weight
        self.eval()

    @property
    def state_sizes(self) -> list[int]:
        return [lstm.hidden_size for lstm in self.layers]

    def forward(self, tokens: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        x = self.embedding(tokens)
        new_state: list[Tensor] = []
        for i, lstm in enumerate(self.layers):
            x, (h, c) = lstm(x, (state[2 * i], state[2 * i + 1]))
            new_state += [h, c]
        T, B, E = x.shape
        logits = self.decoder(x.reshape(T * B, E))  # 2-d: one Gemm (transB) on the shared matrix
        return (torch.log_softmax(logits, dim=-1).reshape(T, B, -1), *new_state)


def _onnx() -> ModuleType:
    try:
        import onnx
    except ImportError as exc:
        raise RuntimeError(
            "format=onnx needs the deploy extra: pip install -e '.[deploy]' (onnx, onnxruntime)"
        ) from exc
    return onnx


def _check_with_onnxruntime(graph: OnnxGraph, blob: bytes) -> float | None:
    """Max |log-prob difference| of ONNX Runtime against torch on a random window with a random
    state (None without onnxruntime)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, graph.embedding.num_embeddings, (5, 2), generator=g)
    state = [torch.randn(1, 2, n, generator=g) * 0.5 for n in graph.state_sizes for _ in "hc"]
    session = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    names = ["tokens", *state_names(len(graph.layers))]
    feeds = dict(zip(names, [t.numpy() for t in (tokens, *state)], strict=True))
    got = session.run(None, feeds)
    with torch.no_grad():
        want = graph(tokens, *state)
    return max(float((torch.from_numpy(a) - b).abs().max()) for a, b in zip(got, want, strict=True))


def export_onnx(
    model: AWDLSTM, path: str | os.PathLike[str], meta: dict[str, Any], opset: int = OPSET
) -> dict[str, Any]:
    """Write ``model`` as ONNX to ``path`` atomically, ``meta`` (vocab, data, model, source) in
    its metadata; checked against torch with ONNX Runtime when installed. Returns a report."""
    onnx = _onnx()
    graph = OnnxGraph(model.cpu().float())
    names = state_names(len(graph.layers))
    state = [torch.zeros(1, 1, n) for n in graph.state_sizes for _ in "hc"]
    outputs = ["log_probs", *(f"{n}_out" for n in names)]
    axes = {"tokens": {0: "time", 1: "batch"}, "log_probs": {0: "time", 1: "batch"}}
    axes.update({n: {1: "batch"} for n in names + outputs[1:]})
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            graph,
            (torch.zeros(3, 1, dtype=torch.long), *state),
            buffer,
            dynamo=False,
            input_names=["tokens", *names],
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=opset,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    props = {
        "awd_format": FORMAT,
        "awd_version": str(VERSION),
        "state_sizes": json.dumps(graph.state_sizes),
        **{key: json.dumps(value) for key, value in meta.items()},
    }
    check = lambda blob: _check_with_onnxruntime(graph, blob)  # noqa: E731
    return write_checked(proto, props, path, check, opset)


def write_checked(
    proto: Any,
    props: dict[str, str],
    path: str | os.PathLike[str],
    check: Callable[[bytes], float | None],
    opset: int = OPSET,
) -> dict[str, Any]:
    """Set the metadata ``props``, refuse a graph that ``check`` (max |ONNX Runtime - torch|,
    None without onnxruntime) finds more than 1e-4 off, write the file atomically; a report."""
    onnx = _onnx()
    onnx.helper.set_model_props(proto, props)
    blob = proto.SerializeToString()
    error = check(blob)
    if error is not None and error > 1e-4:
        raise RuntimeError(f"the exported graph differs from the model by {error:.3g}")
    atomic_write(path, lambda fh: fh.write(blob))
    return {"bytes": Path(path).stat().st_size, "opset": opset, "max_abs_diff": error}
