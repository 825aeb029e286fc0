"""The softmax head: how the decoder's output becomes a distribution over the vocabulary.

``loss.softmax`` picks one. Every head reads the decoder's weight W [V, E] (the embedding matrix
when tied) and bias b [V]; h [N, E] is the last layer's output, one row per token, t [N] the
targets. All three give normalized log-probabilities, so a perplexity is a true perplexity.

* ``full``: log p(w | h) = z_w - log sum_v exp(z_v), z = W h + b; the [N, V] logits of every
  token at once (``decoder(h)``, so a fake-quantized decoder works too).
* ``chunked``: the same loss over chunks of ``chunk_size`` tokens. The forward keeps each
  token's log-normalizer lse_i only; the backward recomputes a chunk's logits and uses
  d nll_i / d z_i = softmax(z_i) - onehot(t_i), so dL/dh = G W, dL/dW = G^T h, dL/db = sum_i G_i
  (G: the chunk's [n, V] gradient, scaled by each token's incoming gradient). At most one
  chunk's logits exist at a time, forward or backward.
* ``split``: the tied split softmax of salesforce's ``SplitCrossEntropyLoss`` (Grave et al.'s
  adaptive softmax without projections). Words are ranked by training-set frequency
  (``order``: rank -> word id; the ids themselves are unchanged). With splits
  0 = s_0 < s_1 < ... < s_K < s_{K+1} = V, the head is the words of rank [0, s_1) plus one
  cluster token per tail k = 1..K (``tail_vectors`` c_k, ``tail_bias`` d_k: zero-initialized
  parameters); tail k is a softmax over the words of rank [s_k, s_{k+1}), on the same tied
  rows W_w, b_w::

      log p(w) = log softmax([W_head h + b_head ; C h + d])_w                 (rank w < s_1)
      log p(w) = log softmax([...])_{cluster k} + log softmax(W_k h + b_k)_w  (w in tail k)

  The loss (``nll``, ``target_log_probs``) is :mod:`src.models.split_nll`: the head rows by id,
  a tail only for the tokens whose target falls in it, never the whole matrix in rank order, the
  training gradients computed with the loss. Per-token losses with gradients (dynamic evaluation)
  and everything under autocast take the ranked autograd path (its GEMMs in the autocast
  dtype); ``log_probs`` (the full distribution: evaluation, sampling) ranks the whole matrix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.models.split_nll import Targets, cluster_lists, split_forward, split_nll_sum

KINDS = ("full", "chunked", "split")

#: salesforce's splits (``main.py``): V > 500k and V > 75k
SPLITS_HUGE = (4200, 35000, 180000)
SPLITS_LARGE = (2800, 20000, 76000)
HUGE_VOCAB, LARGE_VOCAB = 500_000, 75_000
#: V <= 75k (where salesforce used a plain softmax): the V > 75k splits as fractions of
#: WikiText-103's 267,735 types, so every tail is exercised on a small vocabulary too.
SPLIT_FRACTIONS = tuple(s / 267735 for s in SPLITS_LARGE)


def default_splits(vocab_size: int) -> list[int]:
    """salesforce's splits for V > 75k; below, [0.0105, 0.0747, 0.2839] * V (rounded, each at
    least one rank after the previous one, all below V)."""
    if vocab_size > HUGE_VOCAB:
        return list(SPLITS_HUGE)
    if vocab_size > LARGE_VOCAB:
        return list(SPLITS_LARGE)
    splits: list[int] = []
    for fraction in SPLIT_FRACTIONS:
        s = max(round(fraction * vocab_size), splits[-1] + 1 if splits else 1)
        if s < vocab_size:
            splits.append(s)
    return splits


def check_splits(splits: Sequence[int], vocab_size: int) -> list[int]:
    """``splits`` as a list, or a ValueError: strictly increasing integers in [1, V)."""
    out = list(splits)
    ok = all(isinstance(s, int) and not isinstance(s, bool) for s in out)
    if not ok or any(b <= a for a, b in zip([0, *out], [*out, vocab_size], strict=True)):
        raise ValueError(
            f"loss.splits must be strictly increasing frequency ranks in [1, {vocab_size}) "
            f"(the vocabulary size), got {list(splits)!r}"
        )
    return out


class SoftmaxHead(nn.Module):
    """The full softmax; subclasses change how the same decoder rows are normalized.

    Every method takes the decoder module and the output [..., E] (targets [...]).
    """

    kind = "full"
    #: whether the head needs the training-set word counts (:meth:`order_by_frequency`)
    uses_frequencies = False

    def logits(self, decoder: nn.Module, output: Tensor) -> Tensor:
        """Scores [..., V] whose softmax is the model's distribution (sampling, argmax)."""
        return decoder(output)

    def log_probs(self, decoder: nn.Module, output: Tensor) -> Tensor:
        """Normalized log p(w | h) [..., V] (float32): exp sums to 1 over the vocabulary."""
        return F.log_softmax(self.logits(decoder, output).float(), dim=-1)

    def target_log_probs(self, decoder: nn.Module, output: Tensor, targets: Tensor) -> Tensor:
        """log p(target | h) [...] (float32)."""
        logits = self.logits(decoder, output).float()
        return F.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)

    def nll(
        self, decoder: nn.Module, output: Tensor, targets: Tensor, reduction: str = "mean"
    ) -> Tensor:
        """Cross entropy -log p(target | h): ``mean`` or ``sum`` over tokens, or ``none``."""
        logits = self.logits(decoder, output)
        logits = logits.reshape(-1, logits.size(-1)).float()
        return F.cross_entropy(logits, targets.reshape(-1), reduction=reduction)

    def order_by_frequency(self, counts: Tensor) -> None:
        """Use the training-set word counts [V] (only the split head does)."""

    def extra_repr(self) -> str:
        return f"kind={self.kind}"


FullSoftmax = SoftmaxHead


def _reduce(nll: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return nll.mean()
    if reduction == "sum":
        return nll.sum()
    if reduction == "none":
        return nll
    raise ValueError(f"reduction must be mean, sum or none, got {reduction!r}")


def _logits(h: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """z = h W^T + b for one chunk [n, V]."""
    return h @ weight.t() if bias is None else torch.addmm(bias, h, weight.t())


class _ChunkedNLL(torch.autograd.Function):
    """Per-token cross entropy [N] of logits h W^T + b, built ``chunk`` tokens at a time."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, h: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, chunk: int
    ) -> Tensor:
        lse = h.new_empty(h.size(0))
        nll = h.new_empty(h.size(0))
        with torch.autocast(h.device.type, enabled=False):
            for s in range(0, h.size(0), chunk):
                z = _logits(h[s : s + chunk], weight, bias)
                target = z.gather(1, targets[s : s + chunk].unsqueeze(1)).squeeze(1)
                m = z.amax(dim=1, keepdim=True)
                lse[s : s + chunk] = z.sub_(m).exp_().sum(1).log_() + m.squeeze(1)
                nll[s : s + chunk] = lse[s : s + chunk] - target
        ctx.save_for_backward(h, weight, bias, targets, lse)
        ctx.chunk = chunk
        return nll

    @staticmethod
    def backward(ctx: Any, grad_nll: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        h, weight, bias, targets, lse = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = h.new_empty(h.shape) if need_h else None
        grad_w = torch.zeros_like(weight) if need_w else None
        grad_b = torch.zeros_like(bias) if need_b and bias is not None else None
        grad_nll = grad_nll.reshape(-1)
        with torch.autocast(h.device.type, enabled=False):
            for s in range(0, h.size(0), ctx.chunk):
                hc, tc = h[s : s + ctx.chunk], targets[s : s + ctx.chunk]
                g = _logits(hc, weight, bias).sub_(lse[s : s + ctx.chunk, None]).exp_()  # softmax
                g[torch.arange(tc.numel(), device=g.device), tc] -= 1.0
                g.mul_(grad_nll[s : s + ctx.chunk, None])
                if grad_h is not None:
                    torch.mm(g, weight, out=grad_h[s : s + ctx.chunk])
                if grad_w is not None:
                    grad_w.addmm_(g.t(), hc)
                if grad_b is not None:
                    grad_b.add_(g.sum(0))
        return grad_h, grad_w, grad_b, None, None


def chunked_nll(
    h: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, chunk: int
) -> Tensor:
    """-log softmax(h W^T + b)[t] per token [N], in float32, ``chunk`` tokens at a time."""
    bias = bias.float() if bias is not None else None
    return _ChunkedNLL.apply(h.float(), weight.float(), bias, targets, chunk)


class ChunkedSoftmax(SoftmaxHead):
    """The full softmax's loss, never holding more than ``chunk_size`` tokens' logits."""

    kind = "chunked"

    def __init__(self, chunk_size: int = 128) -> None:
        super().__init__()
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"loss.chunk_size must be a positive integer, got {chunk_size!r}")
        self.chunk_size = chunk_size

    def target_log_probs(self, decoder: nn.Module, output: Tensor, targets: Tensor) -> Tensor:
        return -self.nll(decoder, output, targets, "none").view(targets.shape)

    def nll(
        self, decoder: nn.Module, output: Tensor, targets: Tensor, reduction: str = "mean"
    ) -> Tensor:
        h = output.reshape(-1, output.size(-1))
        nll = chunked_nll(h, decoder.weight, decoder.bias, targets.reshape(-1), self.chunk_size)
        return _reduce(nll, reduction)

    def extra_repr(self) -> str:
        return f"kind=chunked, chunk_size={self.chunk_size}"


class SplitSoftmax(SoftmaxHead):
    """salesforce's tied split softmax over frequency-ranked words (module docstring)."""

    kind = "split"
    uses_frequencies = True

    def __init__(self, vocab_size: int, in_features: int, splits: Sequence[int]) -> None:
        super().__init__()
        self.splits = check_splits(splits, vocab_size)
        self.edges = [0, *self.splits, vocab_size]
        k = len(self.splits)
        self.tail_vectors = nn.Parameter(torch.zeros(k, in_features))
        self.tail_bias = nn.Parameter(torch.zeros(k))
        self.register_buffer("order", torch.arange(vocab_size))  # rank -> word id
        self.register_buffer("rank", torch.arange(vocab_size), persistent=False)  # id -> rank
        # each cluster's ids sorted, and id -> position in its cluster (split_nll.cluster_lists)
        self.register_buffer("members", torch.arange(vocab_size), persistent=False)
        self.register_buffer("slot", torch.arange(vocab_size), persistent=False)

    def order_by_frequency(self, counts: Tensor) -> None:
        """Rank the words by count, most frequent first (ties: lower id first)."""
        if counts.numel() != self.order.numel():
            raise ValueError(f"{counts.numel()} word counts for a {self.order.numel()}-word head")
        order = torch.sort(counts.reshape(-1), descending=True, stable=True).indices
        self.order.copy_(order)
        self._update_rank()

    def _update_rank(self) -> None:
        self.rank[self.order] = torch.arange(self.order.numel(), device=self.order.device)
        members, slot = cluster_lists(self.order, self.edges)
        self.members.copy_(members)
        self.slot.copy_(slot)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._update_rank()

    def _clusters(self, decoder: nn.Module) -> tuple[Tensor, Tensor, list[tuple[Tensor, Tensor]]]:
        """(head weight [s_1 + K, E], head bias, [(W_k, b_k) of every tail]) in rank order."""
        weight = decoder.weight.index_select(0, self.order)
        bias = decoder.bias
        if bias is None:
            bias = weight.new_zeros(weight.size(0))
        else:
            bias = bias.index_select(0, self.order)
        sizes = [b - a for a, b in zip(self.edges[:-1], self.edges[1:], strict=True)]
        weights, biases = weight.split(sizes), bias.split(sizes)
        head_w = torch.cat([weights[0], self.tail_vectors.to(weight.dtype)])
        head_b = torch.cat([biases[0], self.tail_bias.to(bias.dtype)])
        return head_w, head_b, list(zip(weights[1:], biases[1:], strict=True))

    def target_log_probs(self, decoder: nn.Module, output: Tensor, targets: Tensor) -> Tensor:
        return -self.nll(decoder, output, targets, "none").view(targets.shape)

    def _ranked_target_log_probs(
        self, decoder: nn.Module, output: Tensor, targets: Tensor
    ) -> Tensor:
        """log p(target) [N] through the whole matrix in rank order, by autograd (the path
        before :mod:`src.models.split_nll`; under autocast, its GEMMs in the autocast dtype)."""
        h = output.reshape(-1, output.size(-1))
        rank = self.rank[targets.reshape(-1)]
        head_w, head_b, tails = self._clusters(decoder)
        head = F.log_softmax(torch.addmm(head_b, h, head_w.t()).float(), dim=-1)
        s1 = self.splits[0] if self.splits else head.size(1)
        cluster = torch.bucketize(rank, rank.new_tensor(self.splits), right=True)  # 0: head
        index = torch.where(cluster == 0, rank, s1 + cluster - 1)
        log_p = head.gather(1, index.unsqueeze(1)).squeeze(1)
        for k, (w, b) in enumerate(tails, start=1):
            rows = (cluster == k).nonzero().squeeze(1)
            if rows.numel() == 0:
                continue
            tail = F.log_softmax(torch.addmm(b, h[rows], w.t()).float(), dim=-1)
            within = (rank[rows] - self.edges[k]).unsqueeze(1)
            log_p = log_p.index_add(0, rows, tail.gather(1, within).squeeze(1))
        return log_p

    def log_probs(self, decoder: nn.Module, output: Tensor) -> Tensor:
        h = output.reshape(-1, output.size(-1))
        head_w, head_b, tails = self._clusters(decoder)
        head = F.log_softmax(torch.addmm(head_b, h, head_w.t()).float(), dim=-1)
        s1 = self.splits[0] if self.splits else head.size(1)
        parts = [head[:, :s1]]
        for k, (w, b) in enumerate(tails, start=1):
            tail = F.log_softmax(torch.addmm(b, h, w.t()).float(), dim=-1)
            parts.append(head[:, s1 + k - 1 : s1 + k] + tail)
        ranked = torch.cat(parts, dim=1)  # [N, V], column r = the word of rank r
        return ranked.index_select(1, self.rank).view(*output.shape[:-1], -1)

    def logits(self, decoder: nn.Module, output: Tensor) -> Tensor:
        return self.log_probs(decoder, output)

    def nll(
        self, decoder: nn.Module, output: Tensor, targets: Tensor, reduction: str = "mean"
    ) -> Tensor:
        """Training (``mean``/``sum``): :func:`split_nll_sum`; without gradients:
        :func:`split_forward`; per-token with gradients or under autocast: the ranked path."""
        h, t = output.reshape(-1, output.size(-1)), targets.reshape(-1)
        inputs = (h, decoder.weight, decoder.bias, self.tail_vectors, self.tail_bias)
        cluster = torch.bucketize(self.rank[t], t.new_tensor(self.splits), right=True)  # 0: head
        ranks = Targets(cluster, self.slot[t], self.members, self.edges)
        if torch.is_autocast_enabled(output.device.type):
            return _reduce(-self._ranked_target_log_probs(decoder, output, targets), reduction)
        if not (torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs)):
            with torch.no_grad():
                f32 = (t if t is None else t.float() for t in inputs)
                return _reduce(split_forward(*f32, ranks), reduction)  # type: ignore[arg-type]
        if reduction in ("mean", "sum"):
            scale = 1.0 / max(t.numel(), 1) if reduction == "mean" else 1.0
            return split_nll_sum(*inputs, ranks, scale=scale)
        return _reduce(-self._ranked_target_log_probs(decoder, output, targets), reduction)

    def extra_repr(self) -> str:
        return f"kind=split, splits={self.splits}, vocab_size={self.edges[-1]}"


def build_softmax(
    kind: str,
    vocab_size: int,
    in_features: int,
    *,
    chunk_size: int = 128,
    splits: Sequence[int] | None = None,
) -> SoftmaxHead:
    """The head of ``loss.softmax`` (``splits`` None: :func:`default_splits`)."""
    if kind == "full":
        return SoftmaxHead()
    if kind == "chunked":
        return ChunkedSoftmax(chunk_size)
    if kind == "split":
        chosen = default_splits(vocab_size) if splits is None else splits
        return SplitSoftmax(vocab_size, in_features, chosen)
    raise ValueError(f"loss.softmax must be one of {', '.join(KINDS)}, got {kind!r}")
