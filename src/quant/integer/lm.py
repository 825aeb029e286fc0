"""The integer language model: embedding -> integer LSTM layers (:mod:`.engine`) -> the int8
decoder's int32 logits, dequantized only for the loss's log-softmax (REFERENCE §5)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.quant.scheme import GATE_EXPONENT, OUTPUT_EXPONENT

from . import kernel, scoring
from .engine import IntegerEmbedding, IntegerLSTMLayer, IntState
from .fixed_point import int_matmul

__all__ = ["IntegerDecoder", "IntegerLM"]


class IntegerDecoder(nn.Module):
    """int8 per-row decoder: int32 logits ``sum_k W[v,k] q_h[k] + bias[v]``, at ``s_h s_w[v]``.

    bias[v] = round(b[v] / (s_h s_w[v])) - z_h sum_k W[v, k]
    logit[v] = s_h s_w[v] * acc[v]     (:meth:`dequantize`, the model's only float step)
    """

    weight: Tensor
    bias: Tensor
    scale: Tensor

    def __init__(self, weight: Tensor, bias: Tensor, scale: Tensor) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.register_buffer("scale", scale)

    def forward(self, h: Tensor) -> Tensor:
        """int8 [N, E] -> int32 logits [N, V]."""
        return int_matmul(h, self.weight.t()).add_(self.bias)  # in place: one [N, V] buffer

    def dequantize(self, acc: Tensor) -> Tensor:
        """int32 logits -> float32 logits (after the network; feeds the log-softmax)."""
        return acc.to(torch.float32).mul_(self.scale)


class IntegerLM(nn.Module):
    """The integer AWD-LSTM: embedding -> integer LSTM layers -> int32 logits.

    Dropouts are the identity at inference and vanish. ``spec`` holds the Python-number
    settings (sizes, exponents, zero points, scalar multipliers) that rebuild it
    (:func:`src.quant.integer.export.load`).
    """

    def __init__(
        self,
        embedding: IntegerEmbedding,
        layers: list[IntegerLSTMLayer],
        decoder: IntegerDecoder,
    ) -> None:
        super().__init__()
        self.embedding = embedding
        self.layers = nn.ModuleList(layers)
        self.decoder = decoder

    def init_state(self, batch_size: int) -> list[IntState]:
        return [layer.init_state(batch_size) for layer in self.layers]

    def forward(
        self, tokens: Tensor, state: list[IntState] | None = None
    ) -> tuple[Tensor, list[IntState]]:
        """tokens [T, B] -> (last layer's h int8 [T, B, E], new state); integers only."""
        if state is None:
            state = self.init_state(tokens.size(1))
        x = self.embedding(tokens)
        new_state = []
        for layer, layer_state in zip(self.layers, state, strict=True):
            x, layer_state = layer(x, layer_state)
            new_state.append(layer_state)
        return x, new_state

    def logits_int32(
        self, tokens: Tensor, state: list[IntState] | None = None
    ) -> tuple[Tensor, list[IntState]]:
        """tokens [T, B] -> (int32 logits [T, B, V], new state); integers only."""
        h, state = self(tokens, state)
        T, B, E = h.shape
        return self.decoder(h.reshape(T * B, E)).view(T, B, -1), state

    @torch.no_grad()
    def score(
        self, tokens: Tensor, targets: Tensor, state: list[IntState] | None = None
    ) -> tuple[Tensor, list[IntState]]:
        """Summed NLL (float64 0-d) of ``targets`` [T, B] and the new state.

        The int32 logits are dequantized and log-softmaxed: the only float arithmetic. On the
        CPU a few rows at a time (:mod:`.scoring`: the same float32 loss, bit for bit).
        """
        h, state = self(tokens, state)
        h = h.reshape(-1, h.size(-1))
        if scoring.usable(h) and not kernel.dispatch_mode_active():  # same numbers, row blocks
            return scoring.blocked_nll(self.decoder, h, targets).to(torch.float64), state
        logits = self.decoder.dequantize(self.decoder(h))
        nll = F.cross_entropy(logits, targets.reshape(-1), reduction="sum")
        return nll.to(torch.float64), state

    def describe(self) -> dict[str, Any]:
        """Sizes and exponents, for logs."""
        return {
            "vocab_size": self.embedding.weight.shape[0],
            "emb_size": self.embedding.weight.shape[1],
            "layers": [
                {
                    "input": layer.input_size,
                    "hidden": layer.hidden_size,
                    "cell_exponent": -layer.cell_exponent,
                }
                for layer in self.layers
            ],
            "gate_exponent": GATE_EXPONENT,
            "activation_exponent": OUTPUT_EXPONENT,
        }
