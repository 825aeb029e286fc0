"""The float model in ONNX (``python -m src.export format=onnx``) scored by ONNX Runtime
(``python -m src.eval engine=onnxruntime``); skipped without the ``deploy`` extra."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from src.training.checkpoint import load_module
from tests.conftest import CONF_DIR, write_tiny_corpus
from tests.deploy.runtime_helpers import export_cli

onnx = pytest.importorskip("onnx", reason="the deploy extra (onnx, onnxruntime) is not installed")
pytest.importorskip("onnxruntime", reason="the deploy extra is not installed")

LEGACY = Path(__file__).resolve().parents[1] / "fixtures" / "legacy"


def torch_log_probs(model: torch.nn.Module, windows: list[torch.Tensor]) -> list[np.ndarray]:
    """The PyTorch model's log-probabilities, window after window with the state carried."""
    out, hidden = [], None
    with torch.no_grad():
        for tokens in windows:
            result = model(tokens, hidden)
            hidden = result.hidden
            out.append(F.log_softmax(model.decoder(result.output), dim=-1).numpy())
    return out


def onnx_log_probs(path: Path, windows: list[torch.Tensor]) -> list[np.ndarray]:
    from src.deploy.onnx_runtime import OnnxLM

    lm, state, out = OnnxLM(path), None, []
    for tokens in windows:
        log_probs, state = lm.log_probs(tokens.numpy(), state)
        out.append(log_probs)
    return out


def max_difference(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))


def test_onnx_export_and_onnxruntime_eval(tmp_path: Path) -> None:
    """The exported graph carries the vocabulary and data settings; ONNX Runtime's perplexity
    equals the PyTorch evaluation's, and its log-probabilities the model's, window after
    window with the state carried (windows of several lengths and batch sizes)."""
    from src.eval import evaluate

    write_tiny_corpus(tmp_path / "corpora")
    ckpt, out = LEGACY / "lstm_float.ckpt", tmp_path / "m.onnx"
    report = export_cli(f"ckpt_path={ckpt}", "format=onnx", f"out={out}")
    assert report["bytes"] == out.stat().st_size and report["max_abs_diff"] < 1e-5
    props = {p.key: p.value for p in onnx.load(out).metadata_props}
    module, _ = load_module(ckpt)
    assert json.loads(props["vocab"]) == module.vocab
    assert json.loads(props["data"])["corpus"] == "tiny"
    results = {}
    for engine, path in (("float", ckpt), ("onnxruntime", out)):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(
                "eval",
                overrides=[
                    f"ckpt_path={path}",
                    f"engine={engine}",
                    "accelerator=cpu",
                    f"paths.data_dir={tmp_path / 'corpora'}",
                    f"paths.cache_dir={tmp_path / 'cache'}",
                    f"out={tmp_path / engine}.json",
                ],
            )
        results[engine] = evaluate(cfg)
    assert results["onnxruntime"]["engine"] == "onnxruntime"
    assert math.isclose(results["onnxruntime"]["loss"], results["float"]["loss"], rel_tol=1e-5)
    g = torch.Generator().manual_seed(0)
    windows = [torch.randint(0, len(module.vocab), (t, 3), generator=g) for t in (7, 1, 12, 5)]
    model = module.model.eval()
    assert max_difference(onnx_log_probs(out, windows), torch_log_probs(model, windows)) < 1e-4


def test_qat_and_mlstm_checkpoints_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="quant=qat.*format=c"):
        export_cli(f"ckpt_path={LEGACY / 'lstm_qat.ckpt'}", "format=onnx", f"out={tmp_path}/q.onnx")
    with pytest.raises(ValueError, match="cell=mlstm"):
        export_cli(
            f"ckpt_path={LEGACY / 'mlstm_float.ckpt'}", "format=onnx", f"out={tmp_path}/m.onnx"
        )
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_a_file_of_another_kind_is_refused(tmp_path: Path) -> None:
    from src.deploy.onnx_runtime import OnnxLM

    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a readable ONNX model"):
        OnnxLM(bad)
    h = onnx.helper
    x, y = (h.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [1]) for n in "xy")
    graph = h.make_graph([h.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), bad)
    with pytest.raises(ValueError, match="format=onnx"):
        OnnxLM(bad)
