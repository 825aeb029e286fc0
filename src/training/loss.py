"""The AWD-LSTM training objective: cross entropy + AR + TAR (Merity et al. 2017, section 4.6)."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

from src.models.awd import AWDLSTM, LMOutput
from src.models.regularizers import (
    activation_regularization,
    temporal_activation_regularization,
)


class LossTerms(NamedTuple):
    loss: Tensor  # what is backpropagated: nll + ar + tar
    nll: Tensor  # mean cross entropy per token
    ar: Tensor
    tar: Tensor
    out: LMOutput


def lm_loss(
    model: AWDLSTM, inputs: Tensor, targets: Tensor, hidden: list | None, alpha: float, beta: float
) -> LossTerms:
    """Forward one window and return the objective and its parts.

    nll = mean_i -log p(t_i | h_i) under ``model.softmax`` (full, chunked or split);
    AR = alpha * mean(dropped_last ** 2); TAR = beta * mean((raw_t - raw_{t-1}) ** 2).
    """
    out = model(inputs, hidden)
    nll = model.softmax.nll(model.decoder, out.output, targets)  # loss.softmax's cross entropy
    ar = activation_regularization(out.dropped_outputs[-1], alpha)
    tar = temporal_activation_regularization(out.raw_outputs[-1], beta)
    return LossTerms(nll + ar + tar, nll, ar, tar, out)
