"""The softmax heads (``loss.softmax``): chunked equals full in loss and gradients, the split
softmax is normalized over the vocabulary and its tails are the tied embedding rows."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from src.models import softmax as sm
from src.models.awd import AWDLSTM, AWDLSTMConfig
from src.models.softmax import ChunkedSoftmax, SoftmaxHead, SplitSoftmax, build_softmax

V, E = 300, 12


def tiny_model(**kw: object) -> AWDLSTM:
    torch.manual_seed(0)
    cfg = AWDLSTMConfig(vocab_size=V, emb_size=E, hidden_size=16, num_layers=2, **kw)
    return AWDLSTM(cfg)


def random_split_head(splits: list[int] | None = None, seed: int = 1) -> SplitSoftmax:
    """A split head with non-zero clusters and a shuffled frequency order."""
    g = torch.Generator().manual_seed(seed)
    head = SplitSoftmax(V, E, sm.default_splits(V) if splits is None else splits)
    with torch.no_grad():
        head.tail_vectors.normal_(generator=g)
        head.tail_bias.normal_(generator=g)
    head.order_by_frequency(torch.randint(0, 1000, (V,), generator=g))
    return head


def test_chunked_equals_full_in_loss_and_gradients() -> None:
    model = tiny_model()
    tokens = torch.randint(0, V, (9, 4), generator=torch.Generator().manual_seed(2))
    grads, losses = {}, {}
    for kind in ("full", "chunked"):
        model.softmax = build_softmax(kind, V, E, chunk_size=5)  # 36 tokens: 8 chunks, one short
        model.zero_grad()
        torch.manual_seed(3)  # the same dropout masks
        out = model(tokens[:-1])
        loss = model.softmax.nll(model.decoder, out.output, tokens[1:])
        loss.backward()
        losses[kind] = loss.detach()
        grads[kind] = {n: p.grad.clone() for n, p in model.named_parameters()}
    torch.testing.assert_close(losses["chunked"], losses["full"], rtol=1e-5, atol=1e-5)
    for name, g in grads["full"].items():
        torch.testing.assert_close(grads["chunked"][name], g, rtol=1e-5, atol=1e-5, msg=name)


def test_chunked_target_log_probs_and_sum_match_full() -> None:
    dec = nn.Linear(E, V)
    h, t = torch.randn(7, 3, E), torch.randint(0, V, (7, 3))
    full, chunked = SoftmaxHead(), ChunkedSoftmax(4)
    torch.testing.assert_close(
        chunked.target_log_probs(dec, h, t), full.target_log_probs(dec, h, t)
    )
    torch.testing.assert_close(chunked.nll(dec, h, t, "sum"), full.nll(dec, h, t, "sum"))


def test_chunked_builds_one_chunk_of_logits_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    rows: list[int] = []
    logits = sm._logits

    def spy(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        rows.append(h.size(0))
        return logits(h, w, b)

    monkeypatch.setattr(sm, "_logits", spy)
    dec = nn.Linear(E, V)
    h = torch.randn(50, E, requires_grad=True)
    ChunkedSoftmax(8).nll(dec, h, torch.randint(0, V, (50,))).backward()
    assert max(rows) == 8 and sum(rows) == 2 * 50  # forward, then recomputed in backward


def test_split_log_probs_sum_to_one_over_the_vocabulary() -> None:
    head, dec = random_split_head(), nn.Linear(E, V)
    h = torch.randn(6, 5, E)
    log_p = head.log_probs(dec, h)
    assert log_p.shape == (6, 5, V)
    torch.testing.assert_close(log_p.exp().sum(-1), torch.ones(6, 5))
    t = torch.randint(0, V, (6, 5))
    want = log_p.gather(-1, t.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(head.target_log_probs(dec, h, t), want)
    torch.testing.assert_close(head.nll(dec, h, t), -want.mean())
    torch.testing.assert_close(head.nll(dec, h, t, "sum"), -want.sum())
    # logits are for sampling: their softmax is the same distribution
    torch.testing.assert_close(F.log_softmax(head.logits(dec, h), -1), log_p)


def test_split_tails_are_the_tied_embedding_rows() -> None:
    """A tail word's log p = log p_head(its cluster) + log softmax over its cluster's embedding
    rows; the gradient reaches those embedding rows through the tail."""
    model = tiny_model()
    head = random_split_head()
    model.softmax = head
    assert model.decoder.weight is model.embedding.weight
    s = head.edges
    k = 2  # the second tail: ranks [s_2, s_3)
    words = head.order[s[k] : s[k + 1]]
    target = words[3].view(1)
    h = torch.randn(1, E)
    W, b = model.embedding.weight, model.decoder.bias
    head_rows = torch.cat([W[head.order[: s[1]]], head.tail_vectors])
    head_bias = torch.cat([b[head.order[: s[1]]], head.tail_bias])
    log_cluster = F.log_softmax(h @ head_rows.t() + head_bias, -1)[0, s[1] + k - 1]
    log_within = F.log_softmax(h @ W[words].t() + b[words], -1)[0, 3]
    got = head.target_log_probs(model.decoder, h, target)
    torch.testing.assert_close(got, (log_cluster + log_within).view(1))
    (-got.sum()).backward()
    grad = model.embedding.weight.grad
    assert grad[words].abs().sum(1).gt(0).all()  # every row of the target's cluster
    others = torch.ones(V, dtype=torch.bool)
    others[words] = False
    others[head.order[: s[1]]] = False
    assert grad[others].abs().sum() == 0  # the other tails are not computed for this token
    assert head.tail_vectors.grad[k - 1].abs().sum() > 0


def test_split_head_is_the_most_frequent_words_and_ids_stay() -> None:
    counts = torch.tensor([5, 50, 0, 7, 50, 1, 9, 2, 3, 4])
    head = SplitSoftmax(10, 4, [2, 5])
    head.order_by_frequency(counts)
    assert head.order.tolist() == [1, 4, 6, 3, 0, 9, 8, 7, 5, 2]  # ties: lower id first
    assert head.rank[head.order].tolist() == list(range(10))
    loaded = SplitSoftmax(10, 4, [2, 5])
    loaded.load_state_dict(head.state_dict())  # the order is saved, the inverse rebuilt
    assert torch.equal(loaded.rank, head.rank)
    assert set(head.state_dict()) == {"tail_vectors", "tail_bias", "order"}


def test_split_without_tails_is_the_full_softmax() -> None:
    dec = nn.Linear(E, V)
    h, t = torch.randn(20, E), torch.randint(0, V, (20,))
    split = SplitSoftmax(V, E, [])
    split.order_by_frequency(torch.randperm(V))
    torch.testing.assert_close(split.nll(dec, h, t), SoftmaxHead().nll(dec, h, t))


def test_split_clusters_start_at_zero() -> None:
    head = build_softmax("split", 100_000, E)
    assert head.splits == [2800, 20000, 76000]
    assert head.tail_vectors.shape == (3, E) and not head.tail_vectors.any()
    assert not head.tail_bias.any()


@pytest.mark.parametrize(
    ("vocab", "splits"),
    [
        (267735, [2800, 20000, 76000]),
        (600_000, [4200, 35000, 180000]),
        (10000, [105, 747, 2839]),  # PTB: salesforce's fractions of WikiText-103
        (33278, [348, 2486, 9446]),  # WikiText-2
        (17, [1, 2, 5]),
        (3, [1, 2]),
    ],
)
def test_default_splits(vocab: int, splits: list[int]) -> None:
    assert sm.default_splits(vocab) == splits
    assert sm.check_splits(splits, vocab) == splits


@pytest.mark.parametrize("splits", [[0, 5], [5, 5], [7, 3], [5, 300], [2.5]])
def test_bad_splits_are_refused(splits: list) -> None:
    with pytest.raises(ValueError, match="loss.splits"):
        SplitSoftmax(V, E, splits)


def test_a_full_model_keeps_its_state_dict_keys() -> None:
    model = tiny_model()
    assert isinstance(model.softmax, SoftmaxHead) and model.softmax.kind == "full"
    assert not [k for k in model.state_dict() if "softmax" in k]
    model.softmax = build_softmax("chunked", V, E)
    assert not [k for k in model.state_dict() if "softmax" in k]


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="full, chunked, split"):
        build_softmax("sampled", V, E)
