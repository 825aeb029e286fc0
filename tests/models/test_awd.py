"""AWDLSTM: config validation, shapes, tying, init, parameter counts, dropout order, state."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from src.models.awd import AWDLSTM, AWDLSTMConfig
from src.models.dropout import WeightDrop
from src.models.recurrent import CuDNNLSTMLayer, LoopLSTMLayer

V, E, H, L, T, B = 50, 8, 16, 3, 7, 4
NO_DROPOUT = dict(
    dropout_emb=0.0, dropout_input=0.0, dropout_hidden=0.0, dropout_output=0.0, weight_drop=0.0
)


def tiny(**overrides) -> AWDLSTMConfig:
    return AWDLSTMConfig(**{"vocab_size": V, "emb_size": E, "hidden_size": H, **overrides})


def tokens(seed: int = 0) -> torch.Tensor:
    return torch.randint(0, V, (T, B), generator=torch.Generator().manual_seed(seed))


def test_config_defaults_are_salesforce_ptb() -> None:
    c = AWDLSTMConfig()
    assert (c.vocab_size, c.emb_size, c.hidden_size, c.num_layers) == (10000, 400, 1150, 3)
    assert (c.dropout_emb, c.dropout_input, c.dropout_hidden, c.dropout_output) == (
        0.1,
        0.4,
        0.25,
        0.4,
    )
    assert (c.weight_drop, c.weight_drop_mode, c.recurrent_dropout) == (0.5, "elementwise", 0.0)
    assert (c.tie_weights, c.runner, c.init_range) == (True, "auto", 0.1)


@pytest.mark.parametrize(
    "field", ["dropout_emb", "dropout_input", "dropout_hidden", "dropout_output", "weight_drop"]
)
def test_config_rejects_bad_dropouts(field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field} must"):
        tiny(**{field: 1.0})


def test_config_rejects_bad_sizes_and_modes() -> None:
    with pytest.raises(ValueError, match="^num_layers must"):
        tiny(num_layers=0)
    with pytest.raises(ValueError, match="^recurrent_dropout must"):
        tiny(recurrent_dropout=-0.1)
    with pytest.raises(ValueError, match="elementwise"):
        tiny(weight_drop_mode="gates")
    with pytest.raises(ValueError, match="^init_range must"):
        tiny(init_range=0.0)
    with pytest.raises(ValueError, match="no layer for cell"):
        AWDLSTM(tiny(runner="fused"))


def test_tying_needs_the_last_layer_to_output_emb_size() -> None:
    class Projected(AWDLSTM):
        def layer_sizes(self):
            return [(E, H)] * self.config.num_layers  # last layer outputs H != E

    with pytest.raises(ValueError, match="tie_weights"):
        Projected(tiny())
    Projected(tiny(tie_weights=False))


@pytest.mark.parametrize("num_layers", [1, 3])
def test_forward_shapes(num_layers: int) -> None:
    model = AWDLSTM(tiny(num_layers=num_layers))
    out = model(tokens())
    sizes = [H] * (num_layers - 1) + [E]
    assert out.output.shape == (T, B, E)
    assert model.decoder(out.output).shape == (T, B, V)
    assert [h.shape for h, _ in out.hidden] == [(1, B, s) for s in sizes]
    assert [c.shape for _, c in out.hidden] == [(1, B, s) for s in sizes]
    assert [r.shape for r in out.raw_outputs] == [(T, B, s) for s in sizes]
    assert [d.shape for d in out.dropped_outputs] == [(T, B, s) for s in sizes]
    assert out.output is out.dropped_outputs[-1]


def test_layers_follow_the_config() -> None:
    model = AWDLSTM(tiny(weight_drop_mode="row"))
    assert model.layer_sizes() == [(E, H), (H, H), (H, E)]
    for layer in model.layers:
        assert isinstance(layer, WeightDrop) and type(layer.module) is CuDNNLSTMLayer
        assert layer.mode == "row" and layer.p == 0.5
    model = AWDLSTM(tiny(recurrent_dropout=0.2, weight_drop=0.0))
    assert all(type(layer) is LoopLSTMLayer for layer in model.layers)
    model = AWDLSTM(tiny(tie_weights=False))
    assert model.layer_sizes()[-1] == (H, H) and model.decoder.in_features == H


def test_decoder_is_tied_to_the_embedding() -> None:
    model = AWDLSTM(tiny())
    assert model.decoder.weight is model.embedding.weight
    model(tokens()).output.sum().backward()
    assert model.embedding.weight.grad is not None
    untied = AWDLSTM(tiny(tie_weights=False))
    assert untied.decoder.weight is not untied.embedding.weight


def test_init_ranges() -> None:
    torch.manual_seed(0)
    model = AWDLSTM(tiny(init_range=0.05, vocab_size=2000, tie_weights=False))
    for weight in (model.embedding.weight, model.decoder.weight):
        assert weight.abs().max() <= 0.05 and weight.abs().max() > 0.049
    assert (model.decoder.bias == 0).all()
    for layer, (_, hidden) in zip(model.layers, model.layer_sizes(), strict=True):
        bound = 1 / math.sqrt(hidden)
        assert all(p.abs().max() <= bound for p in layer.parameters())


def test_parameter_counts_match_the_paper() -> None:
    """REFERENCE §1: 24.2M on PTB, 33.6M on WikiText-2 (tied matrix counted once)."""
    # embedding V*E + decoder bias V + per layer 4H_l * (I_l + H_l + 2)
    layers = 4 * 1150 * (400 + 1150 + 2) + 4 * 1150 * (1150 + 1150 + 2) + 4 * 400 * (1150 + 400 + 2)
    for vocab, exact, paper in ((10000, 24_221_600, 24.2e6), (33278, 33_556_078, 33.6e6)):
        count = AWDLSTM(AWDLSTMConfig(vocab_size=vocab)).num_parameters()
        assert count == exact == vocab * 400 + vocab + layers
        assert abs(count - paper) < 0.1e6


def test_eval_is_deterministic_and_drops_nothing() -> None:
    model = AWDLSTM(tiny()).eval()
    out = model(tokens())
    torch.testing.assert_close(model(tokens()).output, out.output, rtol=0, atol=0)
    for raw, dropped in zip(out.raw_outputs, out.dropped_outputs, strict=True):
        assert dropped is raw
    model.train()
    torch.manual_seed(0)
    first = model(tokens()).output
    assert not torch.equal(first, model(tokens()).output)


def test_init_hidden_is_zeros_on_the_model_dtype() -> None:
    model = AWDLSTM(tiny()).double().eval()
    hidden = model.init_hidden(B)
    assert all(h.dtype == torch.float64 and not h.any() and not c.any() for h, c in hidden)
    torch.testing.assert_close(model(tokens(), hidden).output, model(tokens()).output)


@pytest.mark.parametrize("runner", ["cudnn", "loop"])
def test_state_carries_across_windows(runner: str) -> None:
    model = AWDLSTM(tiny(runner=runner)).double().eval()
    x = tokens()
    whole = model(x)
    first = model(x[:3])
    rest = model(x[3:], first.hidden)
    torch.testing.assert_close(torch.cat([first.output, rest.output]), whole.output)
    for (h1, c1), (h2, c2) in zip(rest.hidden, whole.hidden, strict=True):
        torch.testing.assert_close(h1, h2)
        torch.testing.assert_close(c1, c2)


def first_layer_input(model: AWDLSTM) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    model.layers[0].register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    return seen


def test_embedding_dropout_drops_word_types() -> None:
    torch.manual_seed(1)
    model = AWDLSTM(tiny(**{**NO_DROPOUT, "dropout_emb": 0.5}))
    seen = first_layer_input(model)
    x = torch.arange(10).repeat(T, 1)  # every word in every time step
    model(x)
    emb = seen[0]
    for word in range(10):
        zero = (emb[x == word] == 0).all(dim=-1)
        assert zero.all() or not zero.any(), "a word type is dropped everywhere or nowhere"
    assert (emb == 0).all(dim=-1).any()


def test_input_dropout_is_locked_over_time() -> None:
    torch.manual_seed(2)
    model = AWDLSTM(tiny(**{**NO_DROPOUT, "dropout_input": 0.5}))
    seen = first_layer_input(model)
    x = tokens()
    model(x)
    zero = seen[0] == 0
    assert (zero == zero[:1]).all() and zero.any()


def test_hidden_and_output_dropout_positions() -> None:
    torch.manual_seed(3)
    model = AWDLSTM(tiny(**{**NO_DROPOUT, "dropout_hidden": 0.5}))
    out = model(tokens())
    for raw, dropped in zip(out.raw_outputs[:-1], out.dropped_outputs[:-1], strict=True):
        zero = dropped == 0
        assert zero.any() and (zero == zero[:1]).all()
        torch.testing.assert_close(dropped[~zero], raw[~zero] * 2)
    torch.testing.assert_close(out.output, out.raw_outputs[-1])

    model = AWDLSTM(tiny(**{**NO_DROPOUT, "dropout_output": 0.5}))
    out = model(tokens())
    for raw, dropped in zip(out.raw_outputs[:-1], out.dropped_outputs[:-1], strict=True):
        torch.testing.assert_close(dropped, raw)
    zero = out.output == 0
    assert zero.any() and (zero == zero[:1]).all()


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(4)
    model = AWDLSTM(tiny(recurrent_dropout=0.2))
    out = model(tokens())
    model.decoder(out.output).logsumexp(-1).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []
    assert "layers.0.module.weight_hh_l0_raw" in dict(model.named_parameters())


def test_config_round_trips_through_asdict() -> None:
    config = tiny(weight_drop_mode="column")
    assert AWDLSTMConfig(**dataclasses.asdict(config)) == config
    assert isinstance(AWDLSTM(config).decoder, nn.Linear)
