"""The split softmax's loss (``src.models.split_nll``) against the ranked computation it replaced:
the whole tied matrix gathered into rank order, head and tails through autograd. Same loss and
gradients (1e-6) for the same weights, with and without bias, empty tails, several blocks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.models import split_nll
from src.models.softmax import SplitSoftmax

V, E = 300, 12


def ranked_nll(head: SplitSoftmax, dec: nn.Linear, h: Tensor, t: Tensor) -> Tensor:
    """Per-token nll as before: W and b in rank order, log softmax of the head (+ the tail)."""
    weight = dec.weight.index_select(0, head.order)
    bias = torch.zeros(V) if dec.bias is None else dec.bias.index_select(0, head.order)
    edges, s1 = head.edges, head.edges[1]
    head_w = torch.cat([weight[:s1], head.tail_vectors])
    head_b = torch.cat([bias[:s1], head.tail_bias])
    log_head = F.log_softmax(h @ head_w.t() + head_b, dim=-1)
    rank = head.rank[t]
    nll = []
    for i, r in enumerate(rank.tolist()):
        k = sum(r >= s for s in edges[1:-1])
        if k == 0:
            nll.append(-log_head[i, r])
            continue
        a, b = edges[k], edges[k + 1]
        log_tail = F.log_softmax(h[i] @ weight[a:b].t() + bias[a:b], dim=-1)
        nll.append(-log_head[i, s1 + k - 1] - log_tail[r - a])
    return torch.stack(nll)


def close(got: Tensor, want: Tensor, name: str = "") -> None:
    """Equal to 1e-6 of the tensor's scale (float32 spacing is 1e-6 at |x| ~ 10)."""
    got, want = got.detach(), want.detach()
    atol = 1e-6 * max(1.0, float(want.abs().max())) if want.numel() else 1e-6
    torch.testing.assert_close(got, want, rtol=1e-6, atol=atol, msg=lambda m: f"{name}: {m}")


def make(splits: list[int], bias: bool = True, seed: int = 0) -> tuple[SplitSoftmax, nn.Linear]:
    g = torch.Generator().manual_seed(seed)
    head = SplitSoftmax(V, E, splits)
    dec = nn.Linear(E, V, bias=bias)
    with torch.no_grad():
        for p in (*head.parameters(), *dec.parameters()):
            p.normal_(generator=g)
    head.order_by_frequency(torch.randint(0, 1000, (V,), generator=g))
    return head, dec


def grads(*modules: nn.Module, h: Tensor) -> dict[str, Tensor]:
    out = {"h": h.grad.clone()}
    for m in modules:
        out |= {f"{type(m).__name__}.{n}": p.grad.clone() for n, p in m.named_parameters()}
        m.zero_grad(set_to_none=True)
    h.grad = None
    return out


CASES = [
    pytest.param([3, 31, 85], True, None, id="three-tails"),
    pytest.param([3, 31, 85], False, None, id="no-bias"),
    pytest.param([10, 50, 200], True, 50, id="empty-tails"),  # targets in the first tail at most
    pytest.param([], True, None, id="no-tails"),
    pytest.param([100], True, None, id="one-tail"),
]


# tokens <= E once rounded up to 4: a tail's exp-logits wait in dL/dW's own rows
@pytest.mark.parametrize("tokens", [8, 11, 40])
@pytest.mark.parametrize("block", [16384, 7])
@pytest.mark.parametrize(("splits", "bias", "top"), CASES)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_loss_and_gradients_match_the_ranked_computation(
    splits: list[int],
    bias: bool,
    top: int | None,
    block: int,
    tokens: int,
    reduction: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(split_nll, "BLOCK", block)  # 7: every tail in several blocks
    head, dec = make(splits, bias)
    g = torch.Generator().manual_seed(5)
    h = torch.randn(tokens, E, generator=g, requires_grad=True)
    t = head.order[torch.randint(0, top or V, (tokens,), generator=g)]
    want_nll = ranked_nll(head, dec, h, t)
    want = want_nll.mean() if reduction == "mean" else want_nll.sum()
    (2.5 * want).backward()  # an incoming gradient other than 1
    expected = grads(head, dec, h=h)
    got = head.nll(dec, h, t, reduction)
    (2.5 * got).backward()
    close(got, want, "loss")
    actual = grads(head, dec, h=h)
    for name, grad in actual.items():
        close(grad, expected[name], name)
    if top is not None:  # the tails without a target: exactly no gradient on their rows
        unused = head.order[splits[1] :]
        assert not actual["Linear.weight"][unused].any()
        assert not actual["Linear.bias"][unused].any()


def test_target_log_probs_without_and_with_gradients_match() -> None:
    head, dec = make([3, 31, 85], seed=1)
    h = torch.randn(6, 5, E, requires_grad=True)
    t = torch.randint(0, V, (6, 5))
    want = -ranked_nll(head, dec, h.reshape(-1, E), t.reshape(-1)).view(6, 5)
    with torch.no_grad():
        close(head.target_log_probs(dec, h, t), want)
    got = head.target_log_probs(dec, h, t)  # per token, with gradients (dynamic evaluation)
    close(got, want)
    got.sum().backward()
    assert h.grad is not None and h.grad.abs().sum() > 0


def test_a_second_backward_is_refused() -> None:
    head, dec = make([3, 31, 85])
    h = torch.randn(10, E, requires_grad=True)
    loss = head.nll(dec, h, torch.randint(0, V, (10,)))
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="second backward"):
        loss.backward()


def test_autocast_keeps_the_ranked_path() -> None:
    head, dec = make([3, 31, 85])
    h, t = torch.randn(10, E), torch.randint(0, V, (10,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = head.nll(dec, h, t)
        want = -head._ranked_target_log_probs(dec, h, t).mean()
    assert torch.equal(got, want)


def test_cluster_lists_are_rebuilt_when_a_checkpoint_loads() -> None:
    head, dec = make([3, 31, 85], seed=2)
    state = head.state_dict()
    assert set(state) == {"tail_vectors", "tail_bias", "order"}  # the saved keys do not change
    loaded = SplitSoftmax(V, E, [3, 31, 85])
    loaded.load_state_dict(state)
    for k, (a, b) in enumerate(zip(head.edges[:-1], head.edges[1:], strict=True)):
        members = loaded.members[a:b]
        assert torch.equal(members, head.order[a:b].sort().values), k  # sorted ids of cluster k
        assert torch.equal(loaded.slot[members], torch.arange(b - a))
    h, t = torch.randn(8, E), torch.randint(0, V, (8,))
    assert torch.equal(loaded.nll(dec, h, t), head.nll(dec, h, t))


@pytest.mark.parametrize("width", [12, 10, 7])  # 16-byte, 8-byte and 4-byte elements
@pytest.mark.parametrize("narrow", [False, True])
def test_copy_rows_is_index_copy_bit_for_bit(width: int, narrow: bool) -> None:
    g = torch.Generator().manual_seed(3)
    dst = torch.randn(50, 16, generator=g)
    rest = dst[:, width:].clone()
    target = dst[:, :width] if narrow else dst[:, :width].contiguous()
    index = torch.randperm(50, generator=g)[:20]
    src = torch.randn(20, width, generator=g)
    want = target.clone().index_copy_(0, index, src)
    got = split_nll.copy_rows(target, index, src)
    assert got is target and torch.equal(got, want)
    if narrow:
        assert torch.equal(dst[:, width:], rest)  # the rest of each row is untouched
