"""The classifier's encoder and head: padding invariance, the backward direction, pooling."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from src.models.awd import AWDLSTM, AWDLSTMConfig
from src.models.bidirectional import BidirectionalLayer, reverse_within_length
from src.models.classifier import (
    AWDClassifier,
    PoolingLinearClassifier,
    check_head,
    masked_concat_pool,
)
from src.models.recurrent import build_recurrent_layer

V, E, H, PAD = 30, 8, 12, 29


def config(**overrides: object) -> AWDLSTMConfig:
    return AWDLSTMConfig(
        **{"vocab_size": V, "emb_size": E, "hidden_size": H, "num_layers": 2, **overrides}
    )


def padded(docs: list[list[int]], extra: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """tokens [B, T] padded at the end with PAD (``extra`` more columns than needed)."""
    width = max(map(len, docs)) + extra
    tokens = torch.full((len(docs), width), PAD)
    for i, doc in enumerate(docs):
        tokens[i, : len(doc)] = torch.tensor(doc)
    return tokens, torch.tensor([len(d) for d in docs])


def docs(seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, PAD, (n,), generator=g).tolist() for n in (11, 4, 9, 1)]


def test_pooling_ignores_padding() -> None:
    g = torch.Generator().manual_seed(0)
    out = torch.randn(5, 3, 4, generator=g)
    lengths = torch.tensor([5, 2, 3])
    more = torch.cat([out, torch.full((4, 3, 4), 1e6)])  # big values where padding is
    more[2:5, 1] = 1e6
    more[3:5, 2] = -1e6
    pooled = masked_concat_pool(out, lengths)
    assert torch.equal(masked_concat_pool(more, lengths), pooled)
    b = 1  # second document: 2 real steps
    assert torch.equal(pooled[b, :4], out[1, b])
    assert torch.equal(pooled[b, 4:8], out[:2, b].max(0).values)
    assert torch.allclose(pooled[b, 8:], out[:2, b].mean(0))


def test_head_shape_and_blocks() -> None:
    head = PoolingLinearClassifier(E, [50], [0.4, 0.1], 5)
    kinds = [type(m).__name__ for m in head.layers]
    assert kinds == [
        "BatchNorm1d",
        "Dropout",
        "Linear",
        "ReLU",
        "BatchNorm1d",
        "Dropout",
        "Linear",
    ]
    assert all(m.bias is None for m in head.layers if isinstance(m, nn.Linear))
    assert head.layers[0].num_features == 3 * E
    assert head(torch.randn(6, 4, E), torch.tensor([6, 1, 3, 2])).shape == (4, 5)
    with pytest.raises(ValueError, match="one dropout per linear layer"):
        check_head([50], [0.1])


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("bptt", [3, 72])
def test_logits_do_not_depend_on_padding(bidirectional: bool, bptt: int) -> None:
    torch.manual_seed(0)
    model = AWDClassifier(config(bidirectional=bidirectional), 3, bptt=bptt).eval()
    tokens, lengths = padded(docs())
    with torch.no_grad():
        logits = model(tokens, lengths)
        more = model(*padded(docs(), extra=7))
        alone = torch.cat([model(*padded([d])) for d in docs()])  # no padding at all
    assert torch.allclose(more, logits, atol=1e-6)
    assert torch.allclose(alone, logits, atol=1e-5)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_encoder_outputs_at_real_tokens_do_not_depend_on_padding(bidirectional: bool) -> None:
    torch.manual_seed(1)
    model = AWDClassifier(config(bidirectional=bidirectional), 3, bptt=4).eval()
    tokens, lengths = padded(docs())
    with torch.no_grad():
        out = model.encoder(tokens, lengths)
        more = model.encoder(*padded(docs(), extra=9))
    real = ~(torch.arange(out.size(0)).unsqueeze(1) >= lengths.unsqueeze(0))
    assert torch.allclose(more[: out.size(0)][real], out[real], atol=1e-6)


def test_reverse_within_length() -> None:
    x = torch.arange(12).view(4, 3)  # [T=4, B=3]
    lengths = torch.tensor([4, 2, 0])
    got = reverse_within_length(x, lengths)
    assert got[:, 0].tolist() == [9, 6, 3, 0]
    assert got[:, 1].tolist() == [4, 1, 7, 10]  # two real steps flipped, padding in place
    assert got[:, 2].tolist() == [2, 5, 8, 11]
    assert torch.equal(reverse_within_length(got, lengths), x)


def test_backward_direction_reads_the_reversed_sequence() -> None:
    """The backward half of the outputs at step t is the backward runner's output after reading
    the real tokens from the row's end down to t: run that runner on the flipped input."""
    torch.manual_seed(2)

    def build(n_in: int, n_out: int) -> nn.Module:
        return build_recurrent_layer(
            n_in, n_out, weight_drop=0.0, weight_drop_mode="elementwise", recurrent_dropout=0.0
        )

    layer = BidirectionalLayer(5, 6, build).eval()
    x = torch.randn(7, 2, 5)
    lengths = torch.tensor([7, 4])
    y, (h, c) = layer(x, None, lengths)
    assert y.shape == (7, 2, 6) and h.shape == (1, 2, 6) and c.shape == (1, 2, 6)
    for b, n in enumerate(lengths.tolist()):
        row = x[:n, b : b + 1]
        fwd, _ = layer.forward_layer(row)
        bwd, _ = layer.backward_layer(row.flip(0))
        assert torch.allclose(y[:n, b, :3], fwd[:, 0], atol=1e-6)
        assert torch.allclose(y[:n, b, 3:], bwd.flip(0)[:, 0], atol=1e-6)
    # the first step's backward output has read the whole row: changing the last real token
    # moves it; the forward output there is untouched
    x2 = x.clone()
    x2[3, 1] += 1.0
    y2, _ = layer(x2, None, lengths)
    assert not torch.allclose(y2[0, 1, 3:], y[0, 1, 3:])
    assert torch.equal(y2[0, 1, :3], y[0, 1, :3])


def test_bidirectional_layers_split_units_and_drop_both_directions() -> None:
    model = AWDLSTM(config(bidirectional=True, weight_drop=0.5))
    first, last = model.layers
    assert isinstance(first, BidirectionalLayer)
    names = {n for n, _ in model.named_parameters()}
    for direction in ("forward_layer", "backward_layer"):
        assert f"layers.0.{direction}.module.weight_hh_l0_raw" in names  # weight-dropped
    assert first.forward_layer.module.hidden_size == H // 2
    assert last.backward_layer.module.hidden_size == E // 2
    out = model(torch.randint(0, V, (5, 3)))
    assert out.output.shape == (5, 3, E)
    assert [h.shape[-1] for h, _ in out.hidden] == [H, E]


def test_bidirectional_config_is_checked() -> None:
    with pytest.raises(ValueError, match="cell=lstm"):
        config(bidirectional=True, cell="mlstm")
    with pytest.raises(ValueError, match="hidden_size must be even"):
        config(bidirectional=True, hidden_size=13)


def test_gradient_is_truncated_at_chunk_boundaries() -> None:
    """The state is carried across chunks but detached (fastai): the first chunk's tokens get
    gradient only through the pooled outputs of their own chunk."""
    torch.manual_seed(3)
    model = AWDClassifier(config(dropout_emb=0.0), 2, bptt=4).train()
    tokens, lengths = padded([list(range(8))])
    out = model.encoder(tokens, lengths)
    out[-1].sum().backward()  # the last step: second chunk only
    grad = model.embedding.weight.grad
    assert grad[4:8].abs().sum() > 0
    assert grad[:4].abs().sum() == 0
