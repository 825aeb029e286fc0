"""Dynamic evaluation: each segment is scored before the SGD step that learns from it."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from src.data.bptt import WindowIterable
from src.evaluation.dynamic import dynamic_evaluate
from src.evaluation.scoring import evaluate_plain
from src.models.awd import AWDLSTM, AWDLSTMConfig


@pytest.fixture()
def model() -> AWDLSTM:
    torch.manual_seed(0)
    return AWDLSTM(AWDLSTMConfig(vocab_size=13, emb_size=6, hidden_size=10, num_layers=2))


def streams(length: int = 60) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 13, size=(2, length))


def test_lr_zero_is_plain_evaluation(model: AWDLSTM) -> None:
    before = copy.deepcopy(model.state_dict())
    plain = evaluate_plain(model, WindowIterable(streams(), 5))
    dyn = dynamic_evaluate(model, WindowIterable(streams(), 5), lr=0.0)
    assert dyn.tokens == plain.tokens
    assert dyn.loss == pytest.approx(plain.loss, rel=1e-6)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k])


def test_scores_first_then_adapts_in_place(model: AWDLSTM) -> None:
    first = WindowIterable(streams()[:, :6], 5)  # one window of 5 targets per stream
    plain = evaluate_plain(copy.deepcopy(model), first)
    before = model.embedding.weight.detach().clone()
    dyn = dynamic_evaluate(model, first, lr=1.0)
    assert dyn.loss == pytest.approx(plain.loss, rel=1e-6)  # scored with the trained weights
    assert not torch.equal(model.embedding.weight, before)  # then stepped; nothing restored


def test_full_decay_returns_to_the_trained_weights(model: AWDLSTM) -> None:
    plain = evaluate_plain(copy.deepcopy(model), WindowIterable(streams(), 5))
    dyn = dynamic_evaluate(model, WindowIterable(streams(), 5), lr=1.0, decay=1.0)
    assert dyn.loss == pytest.approx(plain.loss, rel=1e-5)


def test_adapts_to_repeated_text(model: AWDLSTM) -> None:
    """A phrase repeated over and over: the adapted model predicts it better as it reads."""
    phrase = np.array([3, 1, 4, 1, 5, 9, 2, 6])
    text = np.tile(phrase, 30)[None, :]
    plain = evaluate_plain(copy.deepcopy(model), WindowIterable(text, 8))
    dyn = dynamic_evaluate(model, WindowIterable(text, 8), lr=3.0, clip=5.0)
    assert dyn.loss < plain.loss - 0.4


def test_bad_options_are_refused(model: AWDLSTM) -> None:
    with pytest.raises(ValueError, match="decay"):
        dynamic_evaluate(model, WindowIterable(streams(), 5), lr=1.0, decay=2.0)
