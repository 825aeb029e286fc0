"""Continuous cache pointer (Grave, Joulin & Usunier 2016, "Improving Neural Language Models
with a Continuous Cache"; REFERENCE §3).

At position t the cache holds, for each of the last ``window`` positions j < t of the same
stream, the pair (h_j, w_{j+1}): the last layer's raw output there and the word that came next.
The prediction mixes the model with a distribution over those remembered words::

    p_cache(w) = sum_j softmax_j(theta * h_j . h_t) [w_{j+1} = w]
    p(w)       = lambda * p_cache(w) + (1 - lambda) * p_model(w)

At the first position of a stream the cache is empty and p = p_model. Unlike salesforce's
``pointer.py``, which waits until ``window`` positions are stored, every position uses the
history it has (up to ``window``). Only p(target) is needed for perplexity, so nothing of
vocabulary size is built: p_cache(target) sums the attention of the positions whose next word
is the target. The model is untouched (no training); streams are independent.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from src.data.bptt import Window
from src.evaluation.scoring import Score, target_log_probs
from src.models.awd import AWDLSTM


@dataclass
class Cache:
    """The last positions of every stream: outputs ``hidden`` [L, B, H] and the words that
    followed them ``next_words`` [L, B] (L <= window)."""

    hidden: Tensor
    next_words: Tensor

    @classmethod
    def empty(cls, batch_size: int, size: int, device: torch.device | None = None) -> Cache:
        return cls(
            torch.zeros(0, batch_size, size, device=device),
            torch.zeros(0, batch_size, dtype=torch.long, device=device),
        )


def check_options(window: int, theta: float, lam: float) -> None:
    if not isinstance(window, int) or window < 1:
        raise ValueError(f"pointer window must be a positive integer, got {window!r}")
    if not theta >= 0:
        raise ValueError(f"pointer theta must be >= 0, got {theta!r}")
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"pointer lambda must be in [0, 1], got {lam!r}")


def mix_with_cache(
    model_log_probs: Tensor,
    hidden: Tensor,
    targets: Tensor,
    cache: Cache,
    *,
    window: int,
    theta: float,
    lam: float,
) -> tuple[Tensor, Cache]:
    """log p(target) of one window under the cache mixture, and the cache for the next window.

    model_log_probs: log p_model(target) [T, B]; hidden: last-layer raw output [T, B, H];
    targets: [T, B]; cache: the previous windows' positions (their ``hidden`` and next words).
    """
    check_options(window, theta, lam)
    T = targets.size(0)
    L = cache.hidden.size(0)
    keys = torch.cat([cache.hidden.to(hidden.dtype), hidden], dim=0)  # [L + T, B, H]
    words = torch.cat([cache.next_words, targets], dim=0)  # [L + T, B]
    scores = theta * torch.einsum("tbh,jbh->tbj", hidden, keys)  # [T, B, L + T]
    # Position t of this window is position g = L + t of the history; keys j in [g - window, g).
    g = torch.arange(T, device=hidden.device).unsqueeze(1) + L  # [T, 1]
    j = torch.arange(L + T, device=hidden.device).unsqueeze(0)  # [1, L + T]
    valid = ((j < g) & (j >= g - window)).unsqueeze(1)  # [T, 1, L + T]
    has_history = valid.any(-1)  # [T, 1]
    neg_inf = torch.tensor(float("-inf"), device=hidden.device, dtype=scores.dtype)
    # Rows with no valid key get a dummy uniform softmax; their result is replaced below.
    scores = torch.where(valid | ~has_history.unsqueeze(-1), scores, neg_inf)
    log_attn = torch.log_softmax(scores, dim=-1)
    hit = valid & (words.t().unsqueeze(0) == targets.unsqueeze(-1))  # [T, B, L + T]
    log_cache = torch.logsumexp(torch.where(hit, log_attn, neg_inf), dim=-1)  # [T, B]
    log_model = model_log_probs.to(scores.dtype)
    mixed = torch.logaddexp(
        log_cache + (math.log(lam) if lam > 0 else float("-inf")),
        log_model + (math.log1p(-lam) if lam < 1 else float("-inf")),
    )
    out = torch.where(has_history, mixed, log_model)
    new_cache = Cache(keys[-window:].detach(), words[-window:].detach())
    return out, new_cache


@dataclass
class PointerScore:
    """The plain model's score and the cache mixture's score over the same positions."""

    plain: Score
    pointer: Score


@torch.no_grad()
def evaluate_pointer(
    model: AWDLSTM, windows: Iterable[Window], *, window: int, theta: float, lam: float
) -> PointerScore:
    """Score ``windows`` (ordered, hidden state carried) with and without the cache pointer."""
    check_options(window, theta, lam)
    model.eval()
    device = next(model.parameters()).device
    plain, pointer = Score(), Score()
    hidden, cache = None, None
    for inputs, targets, _ in windows:
        inputs, targets = inputs.to(device), targets.to(device)
        out = model(inputs, hidden)
        hidden = out.hidden
        log_model = target_log_probs(model, out.output, targets)
        h_last = out.raw_outputs[-1].float()
        if cache is None:
            cache = Cache.empty(targets.size(1), h_last.size(-1), device)
        log_p, cache = mix_with_cache(
            log_model, h_last, targets, cache, window=window, theta=theta, lam=lam
        )
        plain.add(log_model)
        pointer.add(log_p)
    return PointerScore(plain, pointer)
