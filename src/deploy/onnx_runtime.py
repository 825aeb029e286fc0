"""Score an exported ONNX model with ONNX Runtime (``python -m src.eval engine=onnxruntime``).

:class:`OnnxLM` holds the session and the file's metadata (vocabulary, data settings), and
scores windows with the state carried, like the PyTorch model. Needs the ``deploy`` extra.
"""

from __future__ import annotations

import json
import os
from types import ModuleType
from typing import Any

import numpy as np

from .onnx_export import FORMAT, VERSION, state_names

__all__ = ["OnnxLM", "open_session"]


def _ort() -> ModuleType:
    try:
        import onnxruntime
    except ImportError as exc:
        raise RuntimeError(
            "engine=onnxruntime needs the deploy extra: pip install -e '.[deploy]'"
        ) from exc
    return onnxruntime


def open_session(
    path: str | os.PathLike[str], threads: int, fmt: str = FORMAT, version: int = VERSION
) -> tuple[Any, dict[str, str]]:
    """(ONNX Runtime session on the CPU with ``threads`` intra-op threads, the file's metadata),
    after checking that ``src.export`` wrote the file in format ``fmt``, version ``version``."""
    ort = _ort()
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, int(threads))
    options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own error types
        raise ValueError(f"{path} is not a readable ONNX model: {exc}") from exc
    props = dict(session.get_modelmeta().custom_metadata_map)
    if props.get("awd_format") != fmt:
        raise ValueError(f"{path} is not a file of python -m src.export format=onnx ({fmt})")
    if props.get("awd_version") != str(version):
        raise ValueError(
            f"{path} has format version {props.get('awd_version')}, this code reads "
            f"{version}: export the checkpoint again with python -m src.export format=onnx"
        )
    return session, props


class OnnxLM:
    """An exported model in ONNX Runtime on the CPU (``threads`` intra-op threads)."""

    def __init__(self, path: str | os.PathLike[str], threads: int = 1) -> None:
        self.session, props = open_session(path, threads)
        self.meta: dict[str, Any] = {
            key: json.loads(props[key]) for key in ("vocab", "data", "model") if key in props
        }
        self.state_sizes: list[int] = json.loads(props["state_sizes"])
        self.names = state_names(len(self.state_sizes))

    def init_state(self, batch: int) -> list[np.ndarray]:
        """Zero h and c of every layer, float32 [1, B, H_l]."""
        return [np.zeros((1, batch, n), np.float32) for n in self.state_sizes for _ in "hc"]

    def log_probs(
        self, tokens: np.ndarray, state: list[np.ndarray] | None = None
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """tokens int [T, B] -> (log-probabilities float32 [T, B, V], the new state)."""
        if state is None:
            state = self.init_state(tokens.shape[1])
        feeds = {"tokens": np.ascontiguousarray(tokens, dtype=np.int64)}
        feeds.update(zip(self.names, state, strict=True))
        log_probs, *new_state = self.session.run(None, feeds)
        return log_probs, new_state

    def score(
        self, inputs: np.ndarray, targets: np.ndarray, state: list[np.ndarray] | None = None
    ) -> tuple[float, list[np.ndarray]]:
        """Summed NLL (float64) of ``targets`` [T, B] after ``inputs`` [T, B], and the state."""
        log_probs, state = self.log_probs(inputs, state)
        picked = np.take_along_axis(log_probs, targets[..., None].astype(np.int64), axis=-1)
        return -float(picked.astype(np.float64).sum()), state
