"""`prepare`: the QAT transform of a built float model."""

from __future__ import annotations

import copy
import logging

import pytest
import torch

from src.models.awd import AWDLSTM, AWDLSTMConfig
from src.quant.config import QuantConfig
from src.quant.qat import is_prepared, prepare
from src.quant.qat.fake_quant import enable_fake_quant
from src.quant.qat.prepare import QuantizeInput

V = 20
QAT = QuantConfig(enabled=True)


def float_model(**kw: object) -> AWDLSTM:
    torch.manual_seed(0)
    return AWDLSTM(AWDLSTMConfig(vocab_size=V, emb_size=8, hidden_size=10, num_layers=2, **kw))


def test_prepare_draws_no_random_numbers_and_keeps_parameter_names() -> None:
    model = float_model()
    names = [n for n, _ in model.named_parameters()]
    rng = torch.get_rng_state()
    prepare(model, QAT)
    assert torch.equal(rng, torch.get_rng_state())
    assert [n for n, _ in model.named_parameters()] == names
    assert is_prepared(model) and not is_prepared(float_model())


def test_prepared_model_with_quantization_off_is_the_float_model() -> None:
    tokens = torch.randint(0, V, (6, 3))
    reference = float_model().eval()
    model = prepare(float_model(), QAT).eval()
    enable_fake_quant(model, False)
    torch.testing.assert_close(model(tokens).output, reference(tokens).output)


def test_deepcopy_keeps_the_input_hook_on_the_copys_quantizers() -> None:
    model = prepare(float_model(), QAT).train()
    tokens = torch.randint(0, V, (6, 3))
    model(tokens)
    clone = copy.deepcopy(model)
    (hook,) = clone.input_dropout._forward_pre_hooks.values()
    assert isinstance(hook, QuantizeInput)
    assert hook.input_quant is clone.input_quant and hook.input_quant is not model.input_quant
    model.eval(), clone.eval()
    assert torch.equal(model(tokens).output, clone(tokens).output)


def test_a_float_state_dict_loads_with_fresh_quantizers() -> None:
    source = float_model()
    model = prepare(float_model(dropout_emb=0.2), QAT)
    model.load_state_dict(source.state_dict())  # strict: the pre-hook fills the quantizers
    for name, p in source.named_parameters():
        assert torch.equal(p, dict(model.named_parameters())[name])


def test_prepare_logs_what_it_swapped(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="src.quant.qat.prepare"):
        prepare(float_model(), QAT)
    text = caplog.text
    assert "layers.0: CuDNNLSTMLayer -> QATLSTMLayer" in text
    assert "decoder: Linear -> QuantLinear" in text and "layer-1 input" in text
