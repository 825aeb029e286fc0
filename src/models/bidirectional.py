"""A bidirectional recurrent layer for the classifier's encoder (``model.bidirectional=true``).

Two single-layer runners, one per direction, each with half the layer's units (fastai's
``AWD_LSTM(bidir=True)``: ``hidden // 2`` per direction, the outputs concatenated, so the layer
keeps its width and the stack its sizes). Each direction is built by
``build_recurrent_layer``, so weight drop applies to *both* recurrent matrices (fastai drops only
the forward one, ``weight_hh_l0``, not ``weight_hh_l0_reverse``).

Documents are padded at the END. The forward direction needs nothing: its outputs at real
positions never see the padding. The backward direction sees each row reversed *within its
length* (the real tokens flipped, the padding left at the end), runs, and its outputs are flipped
back the same way, so they too never see the padding.

State: ``(h, c)`` stay ``[1, B, H]``, the two directions' states concatenated along the last
dimension (forward half first). The forward direction starts from the given state's first half.
The backward direction always starts from zeros: a call covers one chunk of a document
(:class:`src.models.classifier.SentenceEncoder`), and a backward pass over a chunk starts at the
chunk's last real token, whose right context is the *next* chunk, not yet read. fastai carries
the backward state from the previous chunk, i.e. from text to the chunk's *left*, which mixes
the two directions; we reset it (the returned backward half is never read back; it is there so the
state has the usual shape).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

State = tuple[Tensor, Tensor]


def reverse_within_length(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Flip each column of ``x`` [T, B, *] over its first ``lengths[b]`` steps; the steps after
    (padding) stay in place. Its own inverse. ``lengths`` None: flip the whole sequence."""
    if lengths is None:
        return x.flip(0)
    steps = torch.arange(x.size(0), device=x.device).unsqueeze(1)  # [T, 1]
    lengths = lengths.to(x.device).unsqueeze(0)  # [1, B]
    index = torch.where(steps < lengths, lengths - 1 - steps, steps)  # [T, B]
    index = index.view(*index.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(0, index)


class BidirectionalLayer(nn.Module):
    """Forward and backward runners of ``hidden_size // 2`` units each, outputs concatenated.

    ``build(input_size, hidden_size)`` builds one direction (the same factory as a
    unidirectional layer: cell, runner, weight drop). Called as
    ``layer(x [T, B, I], state | None, lengths [B] | None) -> (y [T, B, H], (h, c))``.
    """

    def __init__(
        self, input_size: int, hidden_size: int, build: Callable[[int, int], nn.Module]
    ) -> None:
        super().__init__()
        if hidden_size % 2:
            raise ValueError(
                f"a bidirectional layer splits its {hidden_size} units between two directions: "
                "the size must be even"
            )
        self.input_size, self.hidden_size = input_size, hidden_size
        self.forward_layer = build(input_size, hidden_size // 2)
        self.backward_layer = build(input_size, hidden_size // 2)

    def forward(
        self, x: Tensor, state: State | None = None, lengths: Tensor | None = None
    ) -> tuple[Tensor, State]:
        half = self.hidden_size // 2
        fwd_state = None if state is None else (state[0][..., :half], state[1][..., :half])
        y_fwd, (h_fwd, c_fwd) = self.forward_layer(x, fwd_state)
        y_bwd, (h_bwd, c_bwd) = self.backward_layer(reverse_within_length(x, lengths), None)
        y = torch.cat([y_fwd, reverse_within_length(y_bwd, lengths)], dim=-1)
        return y, (torch.cat([h_fwd, h_bwd], dim=-1), torch.cat([c_fwd, c_bwd], dim=-1))

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size} ({self.hidden_size // 2} per direction)"
