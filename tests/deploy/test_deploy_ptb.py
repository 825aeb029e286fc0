"""Real-PTB acceptance checks of the deployment paths (slow: the real corpus):

* the C runtime scores the PTB test set at batch 1 to the perplexity of ``src.eval engine=int8``
  within 1e-5 relative, for an LSTM and an mLSTM QAT model (smoke-sized models trained for a
  few dozen steps here, so the check takes seconds; the ptb_tiny figures are in the README);
* ONNX Runtime's log-probabilities on 2,000 PTB tokens are within 1e-4 of the PyTorch model's,
  windows scored one after another with the state carried.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from src.config import DataConfig
from src.data.datamodule import LMDataModule
from src.models.awd import AWDLSTM, AWDLSTMConfig
from src.quant.config import QuantConfig
from src.quant.integer import convert as qconvert
from src.quant.integer import export as qexport
from src.quant.integer import runtime_export
from src.quant.qat import prepare
from tests.conftest import CONF_DIR
from tests.deploy.runtime_helpers import last_json, needs_cc, run

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Small models at batch 1: on a busy 2-core machine a second thread slows them 50x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ptb(corpora_dir: Path, cache_dir: Path) -> tuple[LMDataModule, dict[str, Any]]:
    """PTB with the smoke experiment's data settings (batch 1 on the test split)."""
    data = dataclasses.asdict(
        DataConfig(batch_size=10, bptt=20, download=False, data_dir="", cache_dir="")
    )
    data.update(tokenizer="word", data_dir=str(corpora_dir), cache_dir=str(cache_dir))
    datamodule = LMDataModule(**data, seed=0)
    datamodule.prepare_data()
    datamodule.setup()
    return datamodule, data


def train_briefly(model: AWDLSTM, datamodule: LMDataModule, steps: int) -> AWDLSTM:
    """``steps`` SGD steps on PTB training windows (train mode: the observers calibrate)."""
    opt = torch.optim.SGD(model.parameters(), lr=20.0)
    hidden = None
    for step, (inputs, targets, _) in enumerate(datamodule.train_dataloader()):
        if step == steps:
            break
        out = model(inputs, hidden)
        hidden = [(h.detach(), c.detach()) for h, c in out.hidden]
        logits = model.decoder(out.output)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        opt.step()
    return model.eval()


def small_model(vocab_size: int, quant: bool, **config: Any) -> AWDLSTM:
    torch.manual_seed(0)
    cfg = AWDLSTMConfig(vocab_size=vocab_size, emb_size=16, hidden_size=32, num_layers=2, **config)
    model = AWDLSTM(cfg)
    return prepare(model, QuantConfig(enabled=True)) if quant else model


def evaluate(path: Path, tmp_path: Path, *overrides: str) -> dict[str, Any]:
    from src.eval import evaluate as run_eval

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "eval",
            overrides=[f"ckpt_path={path}", "split=test", f"out={tmp_path / 'e.json'}", *overrides],
        )
    return run_eval(cfg)


@needs_cc
@pytest.mark.parametrize(
    "config",
    [{}, {"cell": "mlstm", "mlstm": {"peephole": True, "proj_size": 24}}],
    ids=["lstm", "mlstm"],
)
def test_c_runtime_matches_engine_int8_on_ptb_test(
    config: dict, ptb: tuple, corpora_dir: Path, tmp_path: Path
) -> None:
    datamodule, data = ptb
    model = train_briefly(small_model(datamodule.vocab_size, True, **config), datamodule, 40)
    lm, scales = qconvert.convert(model)
    meta = {"vocab": datamodule.vocab.itos, "data": data}
    exported = tmp_path / "m.int8.pt"
    qexport.save(exported, qexport.to_payload(lm, "interpolated", scales, meta))
    runtime_export.write_runtime(tmp_path / "c", qexport.expand_tables(lm), meta, "interpolated")
    binary = runtime_export.build(tmp_path / "c")
    got = last_json(
        run(binary, tmp_path / "c" / "model.bin", "score", corpora_dir / "ptb" / "test.txt").stdout
    )
    want = evaluate(
        exported,
        tmp_path,
        "engine=int8",
        "batch_size=1",
        f"paths.data_dir={corpora_dir}",
        f"paths.cache_dir={data['cache_dir']}",
    )
    assert got["tokens"] == 82430 - 1  # the PTB test split at batch 1: every token predicted
    assert math.isclose(got["ppl"], want["ppl"], rel_tol=1e-5), (got, want)
    assert 50 < got["ppl"] < 5000  # a trained model, not a uniform one


def test_onnxruntime_matches_pytorch_on_2000_ptb_tokens(ptb: tuple, tmp_path: Path) -> None:
    pytest.importorskip("onnx", reason="the deploy extra is not installed")
    pytest.importorskip("onnxruntime", reason="the deploy extra is not installed")
    from src.deploy.onnx_export import export_onnx
    from src.deploy.onnx_runtime import OnnxLM

    datamodule, data = ptb
    model = train_briefly(small_model(datamodule.vocab_size, False), datamodule, 40)
    path = tmp_path / "m.onnx"
    export_onnx(model, path, {"vocab": datamodule.vocab.itos, "data": data})
    session, state, hidden, tokens, worst = OnnxLM(path), None, None, 0, 0.0
    with torch.no_grad():
        for inputs, _, _ in datamodule.test_dataloader():  # windows of bptt=20, batch 1
            log_probs, state = session.log_probs(inputs.numpy(), state)
            out = model(inputs, hidden)
            hidden = out.hidden
            want = F.log_softmax(model.decoder(out.output), dim=-1)
            worst = max(worst, float((torch.from_numpy(log_probs) - want).abs().max()))
            tokens += inputs.numel()
            if tokens >= 2000:
                break
    assert tokens >= 2000 and worst < 1e-4, worst
