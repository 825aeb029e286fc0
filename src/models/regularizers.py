"""Activation regularizers of AWD-LSTM (Merity et al. 2017, section 4.6); training only."""

from __future__ import annotations

from torch import Tensor


def activation_regularization(dropped_last: Tensor, alpha: float) -> Tensor:
    """AR = alpha * mean(m * h_t ** 2) on the dropped last-layer output [T, B, E]."""
    return alpha * dropped_last.float().pow(2).mean()  # float32 under autocast too


def temporal_activation_regularization(raw_last: Tensor, beta: float) -> Tensor:
    """TAR = beta * mean((h_t - h_{t-1}) ** 2) on the undropped last-layer output [T, B, E].

    Zero for a single step (there is no difference to take), where the mean would be NaN.
    """
    if raw_last.size(0) < 2:
        return raw_last.new_zeros(())
    diff = raw_last[1:].float() - raw_last[:-1].float()  # float32 under autocast too
    return beta * diff.pow(2).mean()
