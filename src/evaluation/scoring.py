"""Token-weighted scoring of an :class:`AWDLSTM` over ordered BPTT windows (the plain model)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from src.data.bptt import Window
from src.models.awd import AWDLSTM


@dataclass
class Score:
    """Summed negative log-likelihood (nats) over ``tokens`` predicted tokens."""

    nll: float = 0.0
    tokens: int = 0

    def add(self, log_probs: Tensor) -> None:
        """Add the log-probabilities of the targets of one window (any shape)."""
        self.nll -= float(log_probs.double().sum())
        self.tokens += log_probs.numel()

    @property
    def loss(self) -> float:
        return self.nll / max(self.tokens, 1)

    @property
    def ppl(self) -> float:
        return math.exp(min(self.loss, 700.0))


def target_log_probs(model: AWDLSTM, output: Tensor, targets: Tensor) -> Tensor:
    """log p_model(target) [T, B] from the model's last-layer output [T, B, E], normalized by the
    model's softmax head (full, chunked or split: ``src.models.softmax``)."""
    return model.softmax.target_log_probs(model.decoder, output, targets)


def detach(hidden: list[tuple[Tensor, Tensor]]) -> list[tuple[Tensor, Tensor]]:
    return [(h.detach(), c.detach()) for h, c in hidden]


@torch.no_grad()
def evaluate_plain(model: AWDLSTM, windows: Iterable[Window]) -> Score:
    """The plain model's score, hidden state carried across windows (what src.eval reports)."""
    model.eval()
    device = next(model.parameters()).device
    score, hidden = Score(), None
    for inputs, targets, _ in windows:
        inputs, targets = inputs.to(device), targets.to(device)
        out = model(inputs, hidden)
        hidden = out.hidden
        score.add(target_log_probs(model, out.output, targets))
    return score
