"""The GRU (Cho et al. 2014) as a recurrent layer of the AWD model (`model.cell=gru`).

Two runners behind the recurrent interface of `src.models.recurrent`, with `torch.nn.GRU`'s
single-layer parameter names and gate order (r, z, n), so one state dict loads into both:

| name           | shape   | role                              |
|----------------|---------|-----------------------------------|
| `weight_ih_l0` | [3H, I] | W_i{r,z,n}: x_t -> gates          |
| `weight_hh_l0` | [3H, H] | W_h{r,z,n}: h_{t-1} -> gates      |
| `bias_ih_l0`   | [3H]    | b_i{r,z,n}                        |
| `bias_hh_l0`   | [3H]    | b_h{r,z,n} (inside r * (...) for n) |

* `cudnn`: a single-layer `nn.GRU` (cuDNN on GPU, the fused ATen kernel on CPU);
* `loop`: the input projection in one GEMM, then `gru_step` per time step; the runner for
  recurrent dropout.

A GRU has one state vector; the state pair of the interface is `(h [1, B, H], [1, B, 0])`: the
second tensor is empty (zero width), so the training loop, checkpoints and evaluation carry,
detach and reset it like the LSTM's c without knowing the cell. Weight drop (DropConnect) applies
to `weight_hh_l0` (and `weight_ih_l0` with `model.weight_drop_targets=[input, hidden]`) in both
runners, as for the LSTM.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.models.dropout import bernoulli_mask, check_probability
from src.models.recurrent import State, refuse_recurrent_dropout, register_layer


def gru_step(
    gates_x_t: Tensor,
    h: Tensor,
    weight_hh: Tensor,
    bias_hh: Tensor | None,
    recurrent_mask: Tensor | None = None,
) -> Tensor:
    """One GRU step in `torch.nn.GRU`'s convention (gate order r, z, n).

        [x_r, x_z, x_n] = gates_x_t                  (= W_ih x_t + b_ih)
        [h_r, h_z, h_n] = W_hh (h_{t-1} * m) + b_hh    (m: recurrent dropout mask, else 1)
        r = sigmoid(x_r + h_r),  z = sigmoid(x_z + h_z)
        n = tanh(x_n + r * h_n)
        h_t = (1 - z) * n + z * h_{t-1}

    The mask drops h_{t-1} where it enters the recurrent product only; the carried z * h_{t-1}
    is the undropped state (as the LSTM loop runner leaves c_{t-1} alone, and Keras' GRU).
    Shapes: gates_x_t [B, 3H], h [B, H], weight_hh [3H, H], bias_hh [3H], mask [B, H].
    """
    h_in = h if recurrent_mask is None else h * recurrent_mask
    x_r, x_z, x_n = gates_x_t.chunk(3, dim=1)
    h_r, h_z, h_n = F.linear(h_in, weight_hh, bias_hh).chunk(3, dim=1)
    r = (x_r + h_r).sigmoid()
    z = (x_z + h_z).sigmoid()
    n = (x_n + r * h_n).tanh()
    return n + z * (h - n)  # = (1 - z) * n + z * h


def _gru_state_sizes(input_size: int, hidden_size: int, **options: object) -> tuple[int, int]:
    return hidden_size, 0


@register_layer("gru", "cudnn")
class CuDNNGRULayer(nn.GRU):
    """A single-layer `nn.GRU`: cuDNN on GPU, the fused ATen kernel on CPU.

    The fused kernels never expose h_{t-1} between steps: no recurrent dropout (use `loop`).
    """

    recurrent_weight_names = ("weight_hh_l0",)
    input_weight_names = ("weight_ih_l0",)

    def __init__(self, input_size: int, hidden_size: int, *, recurrent_dropout: float = 0.0):
        refuse_recurrent_dropout(recurrent_dropout, "GRU")
        super().__init__(input_size, hidden_size, num_layers=1)

    @classmethod
    def state_sizes(cls, input_size: int, hidden_size: int, **options: object) -> tuple[int, int]:
        """Widths of the state pair: (h, an empty tensor)."""
        return _gru_state_sizes(input_size, hidden_size)

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:  # type: ignore[override]
        y, h = super().forward(x, None if state is None else state[0])
        return y, (h, h.new_zeros(1, x.size(1), 0))


@register_layer("gru", "loop")
class LoopGRULayer(nn.Module):
    """A GRU layer as a Python loop over time steps (`gru_step`), with recurrent dropout.

    W_ih x_t + b_ih is one GEMM for all steps. Recurrent dropout (Gal & Ghahramani 2016): one
    (B, H) mask per forward call, fixed over time, scaled 1 / (1 - p), on h_{t-1} where it
    enters W_hh; training only. The state handed to the next call is the undropped h_T.
    """

    recurrent_weight_names = ("weight_hh_l0",)
    input_weight_names = ("weight_ih_l0",)

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        recurrent_dropout: float = 0.0,
        cell_fn: Callable[..., Tensor] = gru_step,
    ) -> None:
        super().__init__()
        check_probability(recurrent_dropout, "recurrent_dropout")
        self.input_size, self.hidden_size = input_size, hidden_size
        self.recurrent_dropout, self.cell_fn = recurrent_dropout, cell_fn
        self.weight_ih_l0 = nn.Parameter(torch.empty(3 * hidden_size, input_size))
        self.weight_hh_l0 = nn.Parameter(torch.empty(3 * hidden_size, hidden_size))
        self.bias_ih_l0 = nn.Parameter(torch.empty(3 * hidden_size))
        self.bias_hh_l0 = nn.Parameter(torch.empty(3 * hidden_size))
        self.reset_parameters()

    @classmethod
    def state_sizes(cls, input_size: int, hidden_size: int, **options: object) -> tuple[int, int]:
        """Widths of the state pair: (h, an empty tensor)."""
        return _gru_state_sizes(input_size, hidden_size)

    def reset_parameters(self) -> None:
        """nn.GRU's init: every weight and bias U(-1/sqrt(H), 1/sqrt(H))."""
        bound = self.hidden_size**-0.5
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        h = x.new_zeros(x.size(1), self.hidden_size) if state is None else state[0][0]
        gates_x = F.linear(x, self.weight_ih_l0, self.bias_ih_l0)
        weight_hh, bias_hh = self.weight_hh_l0, self.bias_hh_l0  # read once (WeightDrop sets it)
        mask = None
        if self.training and self.recurrent_dropout > 0:
            mask = bernoulli_mask(h, h.shape, self.recurrent_dropout)
        outputs = []
        for gates_x_t in gates_x.unbind(0):
            h = self.cell_fn(gates_x_t, h, weight_hh, bias_hh, mask)
            outputs.append(h)
        return torch.stack(outputs), (h.unsqueeze(0), h.new_zeros(1, x.size(1), 0))

    def extra_repr(self) -> str:
        cell = getattr(self.cell_fn, "__name__", repr(self.cell_fn))
        return (
            f"{self.input_size}, {self.hidden_size}, cell_fn={cell}, "
            f"recurrent_dropout={self.recurrent_dropout}"
        )
