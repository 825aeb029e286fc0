"""``loss.softmax=chunked|split`` through the real entry points on the tiny corpus: training,
the head in checkpoints, optimizer groups and clipping, resume, evaluation (plain, pointer,
dynamic), generation, transfer, and the paths that refuse a split head."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from src.data.bptt import WindowIterable
from src.evaluation.pointer import evaluate_pointer
from src.evaluation.scoring import evaluate_plain
from src.models.awd import AWDLSTM, AWDLSTMConfig
from src.models.softmax import SplitSoftmax, build_softmax
from src.training import softmax_advice
from src.training.param_groups import parameter_groups
from src.training.transfer import keep_own_head
from tests.conftest import CONF_DIR
from tests.fixtures.legacy import make_legacy

Run = Callable[..., dict[str, Any]]


def ckpt_state(results: dict[str, Any]) -> dict[str, Any]:
    return torch.load(results["best_checkpoint"], map_location="cpu", weights_only=False)


def test_chunked_trains_as_full(run_tiny: Run) -> None:
    """The same run with the chunked loss (chunks of 5 tokens): the same numbers, up to float
    summation order, and the same checkpoint keys."""
    full = run_tiny(out="full")
    chunked = run_tiny("loss.softmax=chunked", "loss.chunk_size=5", out="chunked")
    for key in ("val/loss", "test/loss"):
        assert math.isclose(chunked[key], full[key], rel_tol=1e-4), key
    assert set(ckpt_state(chunked)["state_dict"]) == set(ckpt_state(full)["state_dict"])


def test_split_trains_evaluates_and_resumes(
    run_tiny: Run, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger=softmax_advice.__name__):
        results = run_tiny("loss.softmax=split", "trainer.max_epochs=1", out="split")
    advice = [r.getMessage() for r in caplog.records if r.name == softmax_advice.__name__]
    assert len(advice) == 1 and "loss.splits=[5]" in advice[0]  # the small-V default: one line
    assert math.isfinite(results["val/loss"]) and math.isfinite(results["test/loss"])
    ckpt = ckpt_state(results)
    state = ckpt["state_dict"]
    assert ckpt["hyper_parameters"]["loss"]["softmax"] == "split"
    assert state["model.softmax.tail_vectors"].shape == (3, 8)  # 17 words: splits [1, 2, 5]
    assert state["model.softmax.tail_vectors"].abs().sum() > 0  # trained from zero
    # the head is the most frequent training word (<eos>: one per line)
    vocab = ckpt["vocab"]
    lines = (tmp_path / "corpora" / "tiny" / "train.txt").read_text().splitlines()
    words = " ".join(lines).split()
    counts = [len(lines) if w == "<eos>" else words.count(w) for w in vocab]
    order = state["model.softmax.order"].tolist()
    assert [counts[i] for i in order] == sorted(counts, reverse=True)

    # src.eval: a normalized perplexity, the one training reported
    data, cache = tmp_path / "corpora", tmp_path / "cache"
    got = make_legacy.evaluate(Path(results["best_checkpoint"]), data, cache, "valid", "float")
    assert math.isclose(got, results["val/loss"], rel_tol=1e-5)

    # resume from last.ckpt: the head's parameters and order come back, training goes on
    last = Path(results["best_checkpoint"]).with_name("last.ckpt")
    resumed = run_tiny(
        "loss.softmax=split", "trainer.max_epochs=2", f"ckpt_path={last}", out="resumed"
    )
    assert math.isfinite(resumed["val/loss"])
    after = ckpt_state(resumed)["state_dict"]
    assert torch.equal(after["model.softmax.order"], state["model.softmax.order"])


def test_split_head_is_in_the_optimizer_groups_and_clipping() -> None:
    from src.training.module import LMModule

    module = LMModule(
        model={"vocab_size": 50, "emb_size": 8, "hidden_size": 12, "num_layers": 2},
        optim={"lr": 1.0, "clip": 0.25, "weight_decay": 0.0, "name": "sgd"},
        loss={"alpha": 2.0, "beta": 1.0, "softmax": "split", "splits": [5, 20]},
        data={},
    )
    head = module.model.softmax
    assert isinstance(head, SplitSoftmax) and head.splits == [5, 20]
    ids = {id(head.tail_vectors), id(head.tail_bias)}
    single = parameter_groups(module.model, "single", 1.0)
    assert ids <= {id(p) for p in single[0]["params"]}
    split = parameter_groups(module.model, "lm_split", 1.0, 2.6)
    embedding = {id(p) for p in split[-1]["params"]}  # with the embedding and decoder
    assert ids <= embedding and id(module.model.embedding.weight) in embedding
    assert ids <= {id(p) for p in module.model.parameters()}  # what training_step clips
    assert {"model.softmax.tail_vectors", "model.softmax.order"} <= set(module.state_dict())


def test_qat_refuses_a_split_or_chunked_head() -> None:
    from src.training.model_factory import build_model

    model = {"vocab_size": 50, "emb_size": 8, "hidden_size": 12, "num_layers": 2}
    for kind in ("split", "chunked"):
        with pytest.raises(ValueError, match="loss.softmax=full"):
            build_model(model, {"enabled": True}, {"softmax": kind})


def split_model() -> AWDLSTM:
    torch.manual_seed(0)
    model = AWDLSTM(AWDLSTMConfig(vocab_size=30, emb_size=8, hidden_size=12, num_layers=2))
    model.softmax = build_softmax("split", 30, 8, splits=[3, 10])
    with torch.no_grad():
        model.softmax.tail_vectors.normal_()
    model.softmax.order_by_frequency(torch.randperm(30))
    return model.eval()


def test_pointer_and_plain_scores_use_the_split_head() -> None:
    model = split_model()
    streams = torch.randint(0, 30, (2, 41)).numpy()
    plain = evaluate_plain(model, WindowIterable(streams, 10))
    scored = evaluate_pointer(model, WindowIterable(streams, 10), window=20, theta=1.0, lam=0.1)
    assert scored.plain.nll == pytest.approx(plain.nll)
    inputs, targets = (torch.as_tensor(streams[:, s]).t() for s in (slice(0, -1), slice(1, None)))
    with torch.no_grad():  # the normalized distribution over the whole vocabulary, gathered
        log_p = model.softmax.log_probs(model.decoder, model(inputs).output)
        want = -log_p.gather(-1, targets.unsqueeze(-1)).sum()
    got = evaluate_plain(model, [(inputs, targets, 1.0)]).nll
    assert got == pytest.approx(float(want), rel=1e-5)


def test_generate_samples_from_the_split_distribution() -> None:
    from src.generate import sample

    ids = sample(split_model(), [0, 1], 15, 1.0, seed=3)
    assert len(ids) == 15 and all(0 <= i < 30 for i in ids)
    assert sample(split_model(), [0, 1], 15, 1.0, seed=3) == ids


def test_onnx_and_int8_refuse_a_split_model() -> None:
    from src.deploy.onnx_export import OnnxGraph
    from src.quant.integer.convert import convert

    with pytest.raises(ValueError, match="loss.softmax=split"):
        OnnxGraph(split_model())
    with pytest.raises(ValueError, match="loss.softmax=split"):
        convert(split_model())


def test_transfer_keeps_the_runs_own_head() -> None:
    old = {"model.embedding.weight": torch.zeros(3), "model.softmax.order": torch.arange(4)}
    own = {"model.softmax.order": torch.tensor([9, 8]), "model.softmax.tail_bias": torch.ones(2)}
    keep_own_head(old, own)
    assert set(old) == {"model.embedding.weight", "model.softmax.order", "model.softmax.tail_bias"}
    assert old["model.softmax.order"].tolist() == [9, 8]


def test_conf_loss_group_names_the_options() -> None:
    text = (CONF_DIR / "loss" / "awd.yaml").read_text()
    for key in ("softmax: full", "chunk_size:", "splits: null"):
        assert key in text


@pytest.mark.parametrize(
    ("loss", "vocab", "says"),
    [
        ({"softmax": "split", "splits": None}, 10_000, "loss.splits=[2839]"),
        ({"softmax": "split", "splits": None}, 33_278, "[348, 2486, 9446]"),
        ({"softmax": "split", "splits": [2839]}, 10_000, None),  # chosen by hand: silent
        ({"softmax": "split", "splits": None}, 267_735, None),  # the authors' own splits
        ({"softmax": "full", "splits": None}, 10_000, None),
    ],
)
def test_split_softmax_advice(loss: dict[str, Any], vocab: int, says: str | None) -> None:
    line = softmax_advice.split_softmax_advice(loss, vocab)
    assert (line is None) if says is None else (says in line and "1,748" in line)
