"""The AWD-LSTM dropouts (Merity et al. 2017, section 4; REFERENCE §1).

Every mask is Bernoulli(1 - p) scaled by 1 / (1 - p), so the expectation of each output equals its
input; every dropout is the identity in eval mode.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from numbers import Real
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

WEIGHT_DROP_MODES = ("elementwise", "row", "column")

# cuDNN wants all weights of an RNN in one buffer; a dropped weight is a fresh tensor every call,
# so cuDNN compacts them on each call and says so, once per call.
_CUDNN_CHUNK_WARNING = "RNN module weights are not part of single contiguous chunk of memory"


def check_probability(p: float, name: str) -> None:
    """Raise ValueError unless the dropout probability `p` (called `name`) is in [0, 1)."""
    if not (isinstance(p, Real) and not isinstance(p, bool) and 0.0 <= p < 1.0):
        raise ValueError(f"{name} must be a probability in [0, 1), got {p!r}")


def check_weight_drop_mode(mode: str) -> None:
    """Raise ValueError unless `mode` is one of WEIGHT_DROP_MODES."""
    if mode not in WEIGHT_DROP_MODES:
        raise ValueError(f"weight drop mode must be one of {WEIGHT_DROP_MODES}, got {mode!r}")


def bernoulli_mask(like: Tensor, shape: Sequence[int], p: float) -> Tensor:
    """Mask of `shape` with entries 1 / (1 - p) with probability 1 - p, else 0.

    Drawn as `uniform[0, 1) < 1 - p` rather than `bernoulli_`: the same distribution, and on
    the CPU about 3x faster (ATen's vectorized uniform against a per-element Bernoulli draw,
    3.1 ms -> 1.0 ms for a 1024 x 256 weight-drop mask), which the training step notices.
    """
    keep = 1 - p
    uniform = torch.rand(shape, dtype=like.dtype, device=like.device)
    return (uniform < keep).to(like.dtype).div_(keep)


def embedding_dropout(weight: Tensor, p: float, training: bool) -> Tensor:
    """Drop whole rows (word types) of an embedding matrix [V, E] with one (V, 1) mask.

    A dropped word is all zeros wherever it occurs in the batch (salesforce `dropoute`).
    """
    if not training or p == 0:
        return weight
    return weight * bernoulli_mask(weight, (weight.size(0), 1), p)


class EmbeddingDropout(nn.Module):
    """An embedding whose word types are dropped (one (V, 1) mask per forward call)."""

    def __init__(self, embedding: nn.Embedding, p: float) -> None:
        super().__init__()
        check_probability(p, "p")
        self.embedding, self.p = embedding, p

    def forward(self, tokens: Tensor) -> Tensor:
        weight = embedding_dropout(self.embedding.weight, self.p, self.training)
        e = self.embedding
        return F.embedding(
            tokens, weight, e.padding_idx, e.max_norm, e.norm_type, e.scale_grad_by_freq, e.sparse
        )

    def extra_repr(self) -> str:
        return f"p={self.p}"


class LockedDropout(nn.Module):
    """Variational dropout for (T, B, *) inputs: one (1, B, *) mask shared by all time steps."""

    def __init__(self, p: float) -> None:
        super().__init__()
        check_probability(p, "p")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        return x * bernoulli_mask(x, (1, *x.shape[1:]), self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def _skip_flatten() -> None:
    """Stands in for `nn.RNNBase.flatten_parameters` of a weight-dropped RNN.

    nn.RNNBase re-flattens whenever a weight attribute changes, i.e. every call here; on GPU that
    would `set_` the fresh, non-leaf dropped weight into a new cuDNN buffer. The dropped weight can
    never live in that buffer, so cuDNN compacts per call anyway. Module-level so the RNN pickles.
    """


class WeightDrop(nn.Module):
    """DropConnect (Wan et al. 2013) on named weights of any module, one mask per forward call.

    Each weight `<name>` becomes the parameter `<name>_raw` of the wrapped module; before every
    forward the module attribute `<name>` is set to the dropped tensor W = W_raw * M / (1 - p)
    (the raw weight itself in eval, unscaled), so the gradient reaches W_raw. Outside a forward the
    attribute is None, so the module can be deep-copied, pickled and moved between forwards.

    Masks M, with `W` of shape (out, in) (for W_hh of an LSTM: (4H, H)):
      - elementwise: (out, in), every connection dropped on its own (AWD-LSTM `wdrop`);
      - row: (out, 1), a gate unit loses its whole recurrent input (salesforce `variational=True`);
      - column: (1, in), a hidden unit's recurrent output is cut from every gate (Gal & Ghahramani).
    The mask is shared by all time steps and batch elements of the call.
    """

    def __init__(
        self,
        module: nn.Module,
        weight_names: Sequence[str],
        p: float,
        mode: str = "elementwise",
    ) -> None:
        super().__init__()
        check_probability(p, "p")
        check_weight_drop_mode(mode)
        if isinstance(weight_names, str):
            weight_names = [weight_names]
        self.module, self.weight_names, self.p, self.mode = module, list(weight_names), p, mode
        for name in self.weight_names:
            weight = dict(module.named_parameters(recurse=False)).get(name)
            if not isinstance(weight, nn.Parameter):
                raise ValueError(f"{type(module).__name__} has no parameter {name!r}")
            if mode != "elementwise" and weight.dim() != 2:
                raise ValueError(f"{mode!r} weight drop needs a matrix, {name} has {weight.dim()}d")
            delattr(module, name)
            module.register_parameter(f"{name}_raw", weight)  # same object: inits stay valid
            setattr(module, name, None)  # nn.RNNBase.__setattr__ also updates _flat_weights
        if isinstance(module, nn.RNNBase):
            module.flatten_parameters = _skip_flatten

    def _dropped(self, raw: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return raw.view_as(raw)  # a plain tensor: setattr of a Parameter would register it
        shapes = {"elementwise": raw.shape, "row": (raw.size(0), 1), "column": (1, raw.size(1))}
        shape = shapes[self.mode]
        return raw * bernoulli_mask(raw, shape, self.p)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        for name in self.weight_names:
            setattr(self.module, name, self._dropped(getattr(self.module, f"{name}_raw")))
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", _CUDNN_CHUNK_WARNING, UserWarning)
                return self.module(*args, **kwargs)
        finally:
            for name in self.weight_names:
                setattr(self.module, name, None)

    def extra_repr(self) -> str:
        return f"weight_names={self.weight_names}, p={self.p}, mode={self.mode!r}"
