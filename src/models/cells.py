"""The step math of recurrent cells as plain functions (no parameters, no state).

A cell step takes the input projection of one time step (computed for all steps at once by the
runner), the previous state and the recurrent weights, and returns the new state.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def lstm_step(
    gates_x_t: Tensor,
    h: Tensor,
    c: Tensor,
    weight_hh: Tensor,
    bias_hh: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """One LSTM step (Hochreiter & Schmidhuber 1997), PyTorch's gate order i, f, g, o.

        [i, f, g, o] = gates_x_t + W_hh h_{t-1} + b_hh      (gates_x_t = W_ih x_t + b_ih)
        c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)
        h_t = sigmoid(o) * tanh(c_t)

    Shapes: gates_x_t [B, 4H], h and c [B, H], weight_hh [4H, H], bias_hh [4H].
    """
    i, f, g, o = (gates_x_t + F.linear(h, weight_hh, bias_hh)).chunk(4, dim=1)
    c = f.sigmoid() * c + i.sigmoid() * g.tanh()
    h = o.sigmoid() * c.tanh()
    return h, c
