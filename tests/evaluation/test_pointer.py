"""The continuous cache pointer on hand-made tensors, against a loop over the formula."""

from __future__ import annotations

import math

import pytest
import torch

from src.data.bptt import WindowIterable
from src.evaluation.pointer import Cache, evaluate_pointer, mix_with_cache
from src.evaluation.scoring import evaluate_plain
from src.models.awd import AWDLSTM, AWDLSTMConfig


def reference(log_pm, h, targets, window, theta, lam):
    """p = lam * p_cache + (1 - lam) * p_model, p_cache = softmax(theta * h_j . h_t) over the
    last `window` positions j < t, summed where the word after j is the target."""
    T, B, _ = h.shape
    out = torch.empty(T, B, dtype=torch.float64)
    for b in range(B):
        for t in range(T):
            js = list(range(max(0, t - window), t))
            p_model = math.exp(log_pm[t, b])
            if not js:
                out[t, b] = math.log(p_model)
                continue
            scores = torch.tensor([theta * float(h[j, b] @ h[t, b]) for j in js])
            attn = torch.softmax(scores.double(), 0)
            p_cache = sum(
                float(a) for a, j in zip(attn, js, strict=True) if targets[j, b] == targets[t, b]
            )
            out[t, b] = math.log(lam * p_cache + (1 - lam) * p_model)
    return out


def test_hand_computed_example() -> None:
    """H = 1: outputs 1, 2, 3; words 5, 7, 5. At t = 2 the keys score 3 and 6, and only j = 0
    (followed by 5) matches the target 5."""
    h = torch.tensor([[[1.0]], [[2.0]], [[3.0]]])
    targets = torch.tensor([[5], [7], [5]])
    log_pm = torch.full((3, 1), math.log(0.1))
    out, _ = mix_with_cache(log_pm, h, targets, Cache.empty(1, 1), window=10, theta=1.0, lam=0.5)
    p_cache_2 = math.exp(3) / (math.exp(3) + math.exp(6))
    assert out[0, 0].item() == pytest.approx(math.log(0.1))  # empty cache: the model alone
    assert out[1, 0].item() == pytest.approx(math.log(0.5 * 0.1))  # key 0 is followed by 5, not 7
    assert out[2, 0].item() == pytest.approx(math.log(0.5 * p_cache_2 + 0.5 * 0.1))


@pytest.mark.parametrize(
    ("window", "theta", "lam"), [(3, 1.0, 0.3), (100, 0.5, 0.1), (1, 2.0, 0.9)]
)
def test_matches_the_formula(window: int, theta: float, lam: float) -> None:
    g = torch.Generator().manual_seed(0)
    T, B, H, V = 12, 3, 4, 5
    h = torch.randn(T, B, H, generator=g)
    targets = torch.randint(0, V, (T, B), generator=g)
    log_pm = torch.log_softmax(torch.randn(T, B, V, generator=g), -1)
    log_pm = log_pm.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    out, cache = mix_with_cache(
        log_pm, h, targets, Cache.empty(B, H), window=window, theta=theta, lam=lam
    )
    torch.testing.assert_close(out.double(), reference(log_pm, h, targets, window, theta, lam))
    assert cache.hidden.shape == (min(window, T), B, H)


def test_cache_carries_across_windows() -> None:
    """Scoring in chunks with the returned cache equals scoring the whole sequence at once."""
    g = torch.Generator().manual_seed(1)
    T, B, H = 20, 2, 3
    h = torch.randn(T, B, H, generator=g)
    targets = torch.randint(0, 4, (T, B), generator=g)
    log_pm = torch.full((T, B), math.log(0.25))
    kw = {"window": 6, "theta": 1.5, "lam": 0.4}
    whole, _ = mix_with_cache(log_pm, h, targets, Cache.empty(B, H), **kw)
    cache, parts = Cache.empty(B, H), []
    for lo in range(0, T, 7):
        out, cache = mix_with_cache(
            log_pm[lo : lo + 7], h[lo : lo + 7], targets[lo : lo + 7], cache, **kw
        )
        parts.append(out)
    torch.testing.assert_close(torch.cat(parts), whole)


def test_lambda_zero_is_the_model() -> None:
    h = torch.randn(5, 2, 3)
    targets = torch.randint(0, 3, (5, 2))
    log_pm = torch.log(torch.rand(5, 2))
    out, _ = mix_with_cache(log_pm, h, targets, Cache.empty(2, 3), window=4, theta=1.0, lam=0.0)
    torch.testing.assert_close(out, log_pm)


@pytest.mark.parametrize("bad", [{"window": 0}, {"theta": -1.0}, {"lam": 1.5}])
def test_bad_options_are_refused(bad: dict) -> None:
    kw = {"window": 3, "theta": 1.0, "lam": 0.1, **bad}
    with pytest.raises(ValueError, match="pointer"):
        mix_with_cache(
            torch.zeros(2, 1),
            torch.zeros(2, 1, 2),
            torch.zeros(2, 1).long(),
            Cache.empty(1, 2),
            **kw,
        )


def test_evaluate_pointer_reports_the_plain_model_too() -> None:
    torch.manual_seed(0)
    model = AWDLSTM(AWDLSTMConfig(vocab_size=11, emb_size=6, hidden_size=8, num_layers=2))
    streams = torch.randint(0, 11, (2, 40)).numpy()
    scored = evaluate_pointer(model, WindowIterable(streams, 7), window=10, theta=1.0, lam=0.2)
    plain = evaluate_plain(model, WindowIterable(streams, 7))
    assert scored.plain.tokens == scored.pointer.tokens == 2 * 39
    assert scored.plain.loss == pytest.approx(plain.loss, rel=1e-6)
    assert scored.pointer.loss != pytest.approx(plain.loss)
