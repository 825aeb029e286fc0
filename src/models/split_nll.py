"""The split softmax's cross entropy without ranking the whole tied matrix.

With W [V, E], b [V] the decoder (ids in any order) and the edges 0 = s_0 < s_1 < ... <
s_{K+1} = V of the frequency ranks, cluster k holds the words of rank [s_k, s_{k+1}); ``members``
[V] lists each cluster's ids, sorted by id (a softmax does not depend on the order of its words,
and ids in increasing order make the gathers and writes of W's rows nearly sequential), and
``slot`` is the position of a target in its cluster's list. The head is the rows of cluster 0
plus the cluster rows C, d; tail k the rows W_k of cluster k. Per token i in cluster k_i:

    nll_i = -log softmax(z_head,i)[c_i] - [k_i > 0] log softmax(z_k,i)[slot_i]

(c_i = slot_i in the head, else s_1 + k_i - 1). Only the head rows and, per tail, only the tokens
whose target falls in it are computed, as ``nn.AdaptiveLogSoftmaxWithLoss`` does.

For training, :func:`split_nll_sum` returns L = scale * sum_i nll_i and computes its gradients in
the forward (the backward only multiplies them by the incoming scalar), from
d nll / d z = softmax(z) - onehot = P (per softmax):

    dL/dW_k = scale P_k^T h_k,  dL/db_k = scale sum_i P_k,i,  dL/dh_i = scale (p_i W_k - W_{t_i})

A tail's rows are gathered ``BLOCK`` ranks at a time, once, and its logits are token-major
(h_k W_j^T: [n, block], the faster GEMM orientation for a few hundred tokens). Its softmax is
accumulated online over the blocks (running max m_i, sum s_i = sum_j exp(z_ij - m_i), and
a_i = sum_j exp(z_ij - m_i) W_j for p_i W_k = a_i / s_i; each rescaled by exp(m_old - m_new) when
the max grows), its exp-logits kept; a second pass turns them into P_k block by block. Every row
of dL/dW is written exactly once (the clusters partition the ids): one [V, E] tensor, with no
zero fill, no ranked copy of W and no scatter-add; at most one tail's logits exist at a time.
Scattered rows move through :func:`copy_rows` (16-byte elements).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

#: ranks per gathered block of a tail's rows (16384 x E floats: 25 MiB at E = 400): fewer
#: blocks cost fewer thread-pool round trips, smaller ones less memory
BLOCK = 16384


class Grads(NamedTuple):
    """The gradients of scale * sum_i nll_i (None where not asked for)."""

    h: Tensor | None
    weight: Tensor | None
    bias: Tensor | None
    vectors: Tensor | None
    vector_bias: Tensor | None


class Targets(NamedTuple):
    """Where the targets fall: ``cluster`` and ``slot`` [N] per token (0: the head), and the
    clusters' ``members`` [V] and rank ``edges`` [0, *splits, V] (:func:`cluster_lists`)."""

    cluster: Tensor
    slot: Tensor
    members: Tensor
    edges: list[int]


def cluster_lists(order: Tensor, edges: list[int]) -> tuple[Tensor, Tensor]:
    """(members [V]: every cluster's ids sorted, clusters in rank order; slot [V]: id -> its
    position in its cluster's list) from ``order`` (rank -> id)."""
    bounds = list(zip(edges[:-1], edges[1:], strict=True))
    members = torch.cat([order[a:b].sort().values for a, b in bounds])
    slot = torch.empty_like(order)
    for a, b in bounds:
        slot[members[a:b]] = torch.arange(b - a, device=order.device)
    return members, slot


def _blocks(within: Tensor, size: int) -> list[tuple[int, Tensor, Tensor]]:
    """Per block of ``BLOCK`` ranks of a tail: (its start, the rows of the tokens whose target is
    in it, relative to the start; those tokens' columns)."""
    columns = within.argsort()
    sorted_within = within.index_select(0, columns)
    starts = list(range(0, size, BLOCK))
    cuts = torch.searchsorted(sorted_within, sorted_within.new_tensor([*starts, size])).tolist()
    return [
        (a, sorted_within[lo:hi] - a, columns[lo:hi])
        for a, lo, hi in zip(starts, cuts[:-1], cuts[1:], strict=True)
    ]


def copy_rows(dst: Tensor, index: Tensor, src: Tensor) -> Tensor:
    """``dst.index_copy_(0, index, src)`` for 2-D float32 tensors, bit for bit, through the widest
    element (complex128, float64) that tiles the rows: ATen copies an element at a time, so 16-byte
    elements move the bytes about three times faster."""
    for wide, floats in ((torch.complex128, 4), (torch.float64, 2)):
        if all(
            t.dtype == torch.float32
            and t.stride(1) == 1
            and t.size(1) % floats == 0
            and t.stride(0) % floats == 0
            and t.storage_offset() % floats == 0
            and t.data_ptr() % (4 * floats) == 0
            for t in (dst, src)
        ):
            dst.view(wide).index_copy_(0, index, src.view(wide))
            return dst
    return dst.index_copy_(0, index, src)


def _rounded(n: int) -> int:
    """n rounded up to a multiple of 4: a stored block of exp-logits moves as 16-byte elements."""
    return -(-n // 4) * 4


def _exp_store(
    width: int, size: int, grads: Grads | None, like: Tensor
) -> tuple[Tensor | None, bool]:
    """Where a tail's exp-logits wait for the second pass, as raw [n', block] blocks (n' =
    ``width``: the token count rounded up to 4): None without gradients; the first n' columns of
    their own rows of dL/dW when n' <= E (the rows are written in the second pass anyway, so the
    wait costs no memory); else a flat tensor of n' * size floats."""
    if grads is None:
        return None, False
    if grads.weight is not None and width <= grads.weight.size(1):
        return grads.weight[:, :width], True
    return like.new_empty(width * size), False


def _block(flat: Tensor, start: int, nb: int, width: int) -> Tensor:
    """The [n', nb] exp-logits of the block of ranks [start, start + nb) in a flat store."""
    return flat[width * start : width * (start + nb)].view(width, nb)


def _tail(
    hk: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    ids: Tensor,
    within: Tensor,
    grads: Grads | None,
    scale: float,
    rows_buffer: Tensor,
) -> tuple[Tensor, Tensor | None]:
    """One tail's (nll [n], dL/dh_k [n, E] or None); with ``grads``, its rows of dL/dW and dL/db
    written there (``rows_buffer`` [BLOCK, E]: the gathered rows, then their gradients).

    Logits are token-major, z_j = h_k W_j^T + b_j [n, block]. Block j keeps e_j = exp(z_j - m_j)
    (its own max), its sums s_j and, for dL/dh, a_j = e_j W_j; they are combined with the weights
    exp(m_j - m) afterwards."""
    n, size = hk.size(0), ids.numel()
    blocks = _blocks(within, size)
    target_ids = ids.index_select(0, within)
    target = (hk * weight.index_select(0, target_ids)).sum(1)  # z_t = h . W_t + b_t
    tail_bias = None if bias is None else bias.index_select(0, ids)
    want_h = grads is not None and grads.h is not None
    width = _rounded(n)
    store, in_rows = _exp_store(width, size, grads, hk)
    scratch = hk.new_empty(width * min(BLOCK, size))  # one block's [n', block], flat
    maxes, sums, accs = [], [], []
    for a, _, _ in blocks:
        block = ids[a : a + BLOCK]
        nb = block.numel()
        w = torch.index_select(weight, 0, block, out=rows_buffer[:nb])
        if store is None or in_rows:
            raw = scratch[: width * nb].view(width, nb)
        else:
            raw = _block(store, a, nb, width)
        z = raw[:n]
        if tail_bias is None:
            torch.mm(hk, w.t(), out=z)
        else:
            torch.addmm(tail_bias[a : a + nb], hk, w.t(), out=z)
        maxes.append(z.amax(1))
        e = z.sub_(maxes[-1].unsqueeze(1)).exp_()
        sums.append(e.sum(1))
        if want_h:
            accs.append(e @ w)
        if in_rows and store is not None:
            copy_rows(store, block, raw.view(nb, width))  # the block's bytes, in its own rows
    m = torch.stack(maxes).amax(0)
    weights = (torch.stack(maxes) - m).exp_()  # [blocks, n]
    s = (weights * torch.stack(sums)).sum(0)
    if bias is not None:
        target += bias.index_select(0, target_ids)
    nll = m + s.log() - target
    if grads is None or store is None:
        return nll, None
    norm = weights.div_(s).mul_(scale)  # p = e_j norm_j, times the scale
    minus = hk.new_full((within.numel(),), -scale)
    for j, (a, rows, columns) in enumerate(blocks):
        block = ids[a : a + BLOCK]
        nb = block.numel()
        if in_rows:
            raw = torch.index_select(store, 0, block, out=scratch[: width * nb].view(nb, width))
            p = raw.view(width, nb)[:n]
        else:
            p = _block(store, a, nb, width)[:n]
        p.mul_(norm[j].unsqueeze(1))  # the block's softmax, then its gradient
        p.index_put_((columns, rows), minus[: rows.numel()], accumulate=True)
        if grads.bias is not None:
            grads.bias.index_copy_(0, block, p.sum(0))
        if grads.weight is not None:
            grad_rows = torch.mm(p.t(), hk, out=rows_buffer[:nb])
            copy_rows(grads.weight, block, grad_rows)
    if not want_h:
        return nll, None
    acc = (torch.stack(accs) * norm.unsqueeze(2)).sum(0)  # scale p_i W_k
    return nll, acc.sub_(weight.index_select(0, target_ids), alpha=scale)


def split_forward(
    h: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    vectors: Tensor,
    vector_bias: Tensor,
    targets: Targets,
    grads: Grads | None = None,
    scale: float = 1.0,
) -> Tensor:
    """nll [N] per token; with ``grads`` (empty tensors where wanted), the gradients of
    scale * sum nll filled in. The largest tail goes first, while the fewest rows of dL/dW are
    written."""
    cluster, slot, members, edges = targets
    nll = h.new_zeros(h.size(0))
    rows_buffer = weight.new_empty(min(BLOCK, weight.size(0)), weight.size(1))
    if grads is not None and grads.h is not None:
        grads.h.zero_()
    for k in range(len(edges) - 2, 0, -1):
        rows = (cluster == k).nonzero().squeeze(1)
        ids = members[edges[k] : edges[k + 1]]
        if rows.numel() == 0:
            for grad in (grads.weight, grads.bias) if grads is not None else ():
                if grad is not None:
                    grad.index_fill_(0, ids, 0.0)
            continue
        hk, within = h.index_select(0, rows), slot.index_select(0, rows)
        tail_nll, grad_hk = _tail(hk, weight, bias, ids, within, grads, scale, rows_buffer)
        nll.index_add_(0, rows, tail_nll)
        if grad_hk is not None and grads is not None and grads.h is not None:
            grads.h.index_add_(0, rows, grad_hk)
    s1 = edges[1]
    head_ids = members[:s1]
    head_w = torch.cat([weight.index_select(0, head_ids), vectors])
    words_b = vector_bias.new_zeros(s1) if bias is None else bias.index_select(0, head_ids)
    column = torch.where(cluster == 0, slot, s1 + cluster - 1)
    log_p = torch.log_softmax(torch.addmm(torch.cat([words_b, vector_bias]), h, head_w.t()), 1)
    nll.sub_(log_p.gather(1, column.unsqueeze(1)).squeeze(1))
    if grads is not None:
        p = log_p.exp_()
        p[torch.arange(p.size(0), device=p.device), column] -= 1.0
        p.mul_(scale)
        if grads.h is not None:
            grads.h.addmm_(p, head_w)
        grad_head_w, grad_head_b = p.t() @ h, p.sum(0)
        if grads.weight is not None:
            copy_rows(grads.weight, head_ids, grad_head_w[:s1])
        if grads.bias is not None:
            grads.bias.index_copy_(0, head_ids, grad_head_b[:s1])
        if grads.vectors is not None:
            grads.vectors.copy_(grad_head_w[s1:])
        if grads.vector_bias is not None:
            grads.vector_bias.copy_(grad_head_b[s1:])
    return nll


class _SplitNLLSum(torch.autograd.Function):
    """scale * sum_i nll_i, its gradients computed in the forward (module docstring)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        h: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        vectors: Tensor,
        vector_bias: Tensor,
        targets: Targets,
        scale: float,
    ) -> Tensor:
        wanted = ctx.needs_input_grad[:5]
        inputs = (h, weight, bias, vectors, vector_bias)
        pairs = zip(inputs, wanted, strict=True)
        grads = Grads(*(t.new_empty(t.shape) if w else None for t, w in pairs))
        nll = split_forward(h, weight, bias, vectors, vector_bias, targets, grads, scale)
        ctx.grads = grads
        return nll.sum().mul_(scale)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        if ctx.grads is None:
            raise RuntimeError("the split softmax's loss does not support a second backward")
        grads, ctx.grads = ctx.grads, None  # freed with the graph; scaled in place
        if not torch.equal(grad, torch.ones_like(grad)):
            grads = Grads(*(None if t is None else t.mul_(grad) for t in grads))
        return (*grads, None, None)


def split_nll_sum(
    h: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    vectors: Tensor,
    vector_bias: Tensor,
    targets: Targets,
    scale: float = 1.0,
) -> Tensor:
    """scale * sum of -log p(target) (float32, a scalar), differentiable in h, W, b, C and d."""
    f32 = [t if t is None else t.float() for t in (h, weight, bias, vectors, vector_bias)]
    return _SplitNLLSum.apply(*f32, targets._replace(edges=list(targets.edges)), scale)
