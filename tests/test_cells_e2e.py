"""End-to-end runs of the GRU and QRNN cells and of `model.weight_drop_targets=[input, hidden]`
on the tiny corpus: training, the checkpoint evaluated back, the authors' QRNN experiment, and
the exports that take (or refuse) these models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import compose_train
from tests.quant.test_qat_e2e import evaluate_in_process


@pytest.mark.parametrize(
    "overrides",
    [
        ["model.cell=gru"],
        [
            "model.cell=gru",
            "model.recurrent_dropout=0.2",
            "model.weight_drop_targets=[input,hidden]",
        ],
        ["model.cell=qrnn"],
        ["model=qrnn", "model.qrnn.zoneout=0.1", "model.weight_drop_targets=[input,hidden]"],
    ],
    ids=["gru", "gru-loop-input-drop", "qrnn", "qrnn-zoneout"],
)
def test_cell_trains_and_its_checkpoint_evaluates_back(
    run_tiny, overrides: list[str], tiny_data_dir: Path, tmp_path: Path
) -> None:
    results = run_tiny(*overrides, "model.emb_size=8", "model.hidden_size=12", "model.num_layers=2")
    assert torch.isfinite(torch.tensor(results["val/loss"])) and results["test/ppl"] > 1
    ckpt = torch.load(results["best_checkpoint"], weights_only=False)
    cell = ckpt["hyper_parameters"]["model"]["cell"]
    assert cell == overrides[0].split("=")[1]
    hidden = ckpt["train_hidden"]["hidden"]  # the carried state pairs, saved as tensors
    if cell == "gru":
        assert all(second.shape[-1] == 0 for _, second in hidden)
    else:
        assert hidden[0][1].shape[-1] == 8 and hidden[1][1].shape[-1] == 0  # layer 1: x_{t-1}
    evaluated = evaluate_in_process(Path(results["best_checkpoint"]), tiny_data_dir, tmp_path)
    assert evaluated["loss"] == pytest.approx(results["val/loss"], rel=1e-5)


def test_ptb_qrnn_experiment_has_the_authors_settings(tmp_path: Path) -> None:
    cfg = compose_train(["experiment=ptb_qrnn"], tmp_path, tmp_path, tmp_path)
    m = cfg.model
    assert (m.cell, m.emb_size, m.hidden_size, m.num_layers) == ("qrnn", 400, 1550, 4)
    assert (m.weight_drop, m.dropout_hidden, m.dropout_input, m.dropout_output) == (
        0.1,
        0.3,
        0.4,
        0.4,
    )
    assert (m.qrnn.first_window, m.qrnn.window, m.qrnn.zoneout) == (2, 1, 0.0)
    assert (cfg.seed, cfg.data.batch_size, cfg.data.bptt, cfg.trainer.max_epochs) == (
        9001,
        20,
        70,
        550,
    )
    assert (cfg.optim.lr, cfg.optim.clip, cfg.optim.nonmono, cfg.optim.nt_asgd) == (
        30.0,
        0.2,
        5,
        True,
    )


def test_qat_with_input_weight_drop_converts_to_the_integer_model(run_tiny) -> None:
    """W_ih under weight drop is `weight_ih_l0_raw`: conversion reads the raw weight."""
    from src.quant.integer import convert as qconvert
    from src.training.checkpoint import load_module

    results = run_tiny(
        "quant=qat",
        "model.weight_drop_targets=[input,hidden]",
        "trainer.max_epochs=1",
        "test=false",
    )
    module, _ = load_module(Path(results["best_checkpoint"]))
    assert "model.layers.0.module.weight_ih_l0_raw" in module.state_dict()
    lm, _ = qconvert.convert(module.model)
    raw = module.model.layers[0].module.weight_ih_l0_raw
    assert lm.layers[0].weight_ih.shape == raw.shape


def test_exports_refuse_gru_and_qrnn_with_a_clear_message() -> None:
    from src.deploy.onnx_export import OnnxGraph
    from src.models.awd import AWDLSTM, AWDLSTMConfig
    from src.quant.integer import convert as qconvert

    for cell in ("gru", "qrnn"):
        model = AWDLSTM(AWDLSTMConfig(vocab_size=20, emb_size=6, hidden_size=8, cell=cell))
        with pytest.raises(ValueError, match=f"cell={cell}; no export"):
            OnnxGraph(model)
        with pytest.raises(ValueError, match=f"lstm and mlstm models; this one has cell={cell}"):
            qconvert.convert(model)


def test_onnx_graph_of_an_input_weight_dropped_lstm_equals_the_model() -> None:
    from src.deploy.onnx_export import OnnxGraph
    from src.models.awd import AWDLSTM, AWDLSTMConfig

    torch.manual_seed(0)
    config = AWDLSTMConfig(
        vocab_size=20, emb_size=6, hidden_size=8, weight_drop_targets=["input", "hidden"]
    )
    model = AWDLSTM(config).eval()
    graph = OnnxGraph(model)
    tokens = torch.randint(20, (5, 2))
    state = [t for h, c in model.init_hidden(2) for t in (h, c)]
    log_probs = graph(tokens, *state)[0]
    expected = torch.log_softmax(model.decoder(model(tokens).output), dim=-1)
    torch.testing.assert_close(log_probs, expected)
