"""Multiplicative LSTM (Krause et al. 2016, "Multiplicative LSTM for sequence modelling").

The mLSTM feeds every gate and the candidate an intermediate state m_t instead of h_{t-1}:

    m_t = (W_mx x_t) * (W_mh h_{t-1})                       (element-wise product)

so each input picks its own recurrent transition W_hm diag(W_mx x_t) W_mh (REFERENCE §4). It is an
LSTM cell whose "previous hidden state" is m_t. Here it is one more recurrent layer of the AWD
model (`model=mlstm`): the embedding and locked dropouts, the tied decoder and AR/TAR are the
model's; weight drop applies to the two recurrent matrices W_mh and W_hm, with the LSTM's modes
(`model.weight_drop_targets=[input, hidden]` adds the two input matrices W_x and W_mx).
The options are those of the reference TensorFlow cell (`tf.nn.rnn_cell.LSTMCell`): forget-gate
bias, peepholes, cell clipping, an output projection with clipping, orthogonal initialization.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Real

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.models.dropout import bernoulli_mask, check_probability
from src.models.recurrent import State, register_layer

Peephole = tuple[Tensor, Tensor, Tensor]  # (w_ic, w_fc, w_oc), each [H]


@dataclass
class MLSTMOptions:
    """Settings of the mLSTM cell (`model.mlstm.*`); TensorFlow `LSTMCell` names in brackets."""

    forget_bias: float = 1.0  # [forget_bias] initial value of the forget gate's bias
    peephole: bool = False  # [use_peepholes] diagonal c -> gate weights w_ic, w_fc, w_oc
    cell_clip: float | None = None  # [cell_clip] clip c_t to [-cell_clip, cell_clip]
    proj_size: int | None = None  # [num_proj] output h_t = W_hr (o_t * tanh c_t), proj_size wide
    proj_clip: float | None = None  # [proj_clip] clip the projected h_t to [-proj_clip, proj_clip]
    orthogonal_init: bool = False  # [initializer] orthogonal W_mh and W_hm (each gate block)

    def __post_init__(self) -> None:
        if not _is_real(self.forget_bias) or not math.isfinite(self.forget_bias):
            raise ValueError(f"mlstm.forget_bias must be a finite number, got {self.forget_bias!r}")
        for name in ("cell_clip", "proj_clip"):
            value = getattr(self, name)
            if value is not None and not (_is_real(value) and value > 0):
                raise ValueError(f"mlstm.{name} must be null or a positive number, got {value!r}")
        size = self.proj_size
        if size is not None and not (isinstance(size, int) and not isinstance(size, bool)):
            raise ValueError(f"mlstm.proj_size must be null or a positive integer, got {size!r}")
        if size is not None and size < 1:
            raise ValueError(f"mlstm.proj_size must be null or a positive integer, got {size!r}")
        if self.proj_clip is not None and size is None:
            raise ValueError("mlstm.proj_clip clips the projection: it needs mlstm.proj_size")


def _is_real(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def mlstm_step(
    gates_x_t: Tensor,
    mx_t: Tensor,
    h: Tensor,
    c: Tensor,
    weight_mh: Tensor,
    weight_hm: Tensor,
    peephole: Peephole | None = None,
    weight_hr: Tensor | None = None,
    *,
    cell_clip: float | None = None,
    proj_clip: float | None = None,
) -> tuple[Tensor, Tensor]:
    """One mLSTM step; gate order i, f, g, o as `lstm_step` and `nn.LSTM`.

        m_t          = (W_mx x_t) * (W_mh h_{t-1})                     mx_t = W_mx x_t
        [i, f, g, o] = W_x x_t + b + W_hm m_t                          gates_x_t = W_x x_t + b
        i, f        += w_ic * c_{t-1}, w_fc * c_{t-1}                   (peephole)
        c_t          = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)
        c_t          = clip(c_t, -cell_clip, cell_clip)                 (cell_clip)
        o           += w_oc * c_t                                       (peephole)
        h_t          = sigmoid(o) * tanh(c_t)
        h_t          = clip(W_hr h_t, -proj_clip, proj_clip)            (projection, proj_clip)

    Shapes: gates_x_t [B, 4H], mx_t [B, H], h [B, P], c [B, H], weight_mh [H, P],
    weight_hm [4H, H], peephole three [H] vectors, weight_hr [P, H]; P = H without a projection.
    Returns (h_t [B, P], c_t [B, H]). Pure: a fake-quantized variant wraps or mirrors it.
    """
    m = mx_t * F.linear(h, weight_mh)
    i, f, g, o = (gates_x_t + F.linear(m, weight_hm)).chunk(4, dim=1)
    if peephole is not None:
        w_ic, w_fc, w_oc = peephole
        i, f = i + w_ic * c, f + w_fc * c
    c = f.sigmoid() * c + i.sigmoid() * g.tanh()
    if cell_clip is not None:
        c = c.clamp(-cell_clip, cell_clip)
    if peephole is not None:
        o = o + w_oc * c
    h = o.sigmoid() * c.tanh()
    if weight_hr is not None:
        h = F.linear(h, weight_hr)
        if proj_clip is not None:
            h = h.clamp(-proj_clip, proj_clip)
    return h, c


@register_layer("mlstm", "loop")
class MLSTMLayer(nn.Module):
    """An mLSTM layer: the input projections for all steps in one GEMM each, then a step loop.

    Parameters (H = hidden_size, the cell's units; P = proj_size, or H without a projection):

    | name            | shape   | role                                               |
    |-----------------|---------|----------------------------------------------------|
    | `weight_ih_l0`  | [4H, I] | W_x: x_t -> gates (nn.LSTM's name and gate order)  |
    | `bias_ih_l0`    | [4H]    | b: the one gate bias (forget block = forget_bias)  |
    | `weight_mx_l0`  | [H, I]  | W_mx: x_t -> m_t                                   |
    | `weight_mh_l0`  | [H, P]  | W_mh: h_{t-1} -> m_t (recurrent, weight-dropped)   |
    | `weight_hm_l0`  | [4H, H] | W_hm: m_t -> gates (recurrent, weight-dropped)     |
    | `weight_?c_l0`  | [H]     | peepholes w_ic, w_fc, w_oc (`peephole=True`)       |
    | `weight_hr_l0`  | [P, H]  | output projection (`proj_size`; nn.LSTM's name)    |

    Matrix names follow the paper (W_<to><from>). The recurrent interface is the LSTM's:
    `layer(x [T, B, I], (h [1, B, P], c [1, B, H]) | None) -> (y [T, B, P], (h, c))`; with a
    projection h and the output are P wide while c keeps H (as `nn.LSTM(proj_size=P)`).

    Init: every weight U(-1/sqrt(H), 1/sqrt(H)) as nn.LSTM; the bias 0 except the forget gate's,
    `forget_bias` (TensorFlow adds forget_bias as a constant; here it is the learned bias's start);
    `orthogonal_init` makes W_mh and each gate's [H, H] block of W_hm (semi-)orthogonal.

    Recurrent dropout: h_{t-1} * mask with one (B, P) mask per call, as the LSTM loop runner.
    """

    recurrent_weight_names = ("weight_mh_l0", "weight_hm_l0")
    input_weight_names = ("weight_ih_l0", "weight_mx_l0")  # x -> gates, x -> m

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        recurrent_dropout: float = 0.0,
        *,
        forget_bias: float = 1.0,
        peephole: bool = False,
        cell_clip: float | None = None,
        proj_size: int | None = None,
        proj_clip: float | None = None,
        orthogonal_init: bool = False,
        cell_fn: Callable[..., tuple[Tensor, Tensor]] = mlstm_step,
    ) -> None:
        super().__init__()
        check_probability(recurrent_dropout, "recurrent_dropout")
        # the config's rules (raises ValueError)
        MLSTMOptions(forget_bias, peephole, cell_clip, proj_size, proj_clip, orthogonal_init)
        self.input_size, self.hidden_size = input_size, hidden_size
        self.output_size = proj_size or hidden_size
        self.recurrent_dropout, self.cell_fn = recurrent_dropout, cell_fn
        self.forget_bias, self.orthogonal_init = forget_bias, orthogonal_init
        self.cell_clip, self.proj_clip, self.peephole = cell_clip, proj_clip, peephole
        H, P = hidden_size, self.output_size
        self.weight_ih_l0 = nn.Parameter(torch.empty(4 * H, input_size))
        self.bias_ih_l0 = nn.Parameter(torch.empty(4 * H))
        self.weight_mx_l0 = nn.Parameter(torch.empty(H, input_size))
        self.weight_mh_l0 = nn.Parameter(torch.empty(H, P))
        self.weight_hm_l0 = nn.Parameter(torch.empty(4 * H, H))
        if peephole:
            self.weight_ic_l0 = nn.Parameter(torch.empty(H))
            self.weight_fc_l0 = nn.Parameter(torch.empty(H))
            self.weight_oc_l0 = nn.Parameter(torch.empty(H))
        projection = nn.Parameter(torch.empty(P, H)) if proj_size else None
        self.register_parameter("weight_hr_l0", projection)
        self.reset_parameters()

    @classmethod
    def state_sizes(
        cls, input_size: int, hidden_size: int, *, proj_size: int | None = None, **options: object
    ) -> tuple[int, int]:
        """Widths of the state pair (h, c): (proj_size or H, H)."""
        return proj_size or hidden_size, hidden_size

    def reset_parameters(self) -> None:
        """U(-1/sqrt(H), 1/sqrt(H)) weights, zero bias with `forget_bias` on f, optional orthogonal.

        Parameters are found by name with a `_raw` suffix allowed, so this also works on a layer
        that WeightDrop has wrapped.
        """
        bound, H = self.hidden_size**-0.5, self.hidden_size
        params = {n.removesuffix("_raw"): p for n, p in self.named_parameters(recurse=False)}
        with torch.no_grad():
            for p in params.values():
                nn.init.uniform_(p, -bound, bound)
            params["bias_ih_l0"].zero_()
            params["bias_ih_l0"][H : 2 * H].fill_(self.forget_bias)
            if self.orthogonal_init:
                nn.init.orthogonal_(params["weight_mh_l0"])
                for block in params["weight_hm_l0"].split(H):
                    nn.init.orthogonal_(block)

    def project_inputs(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """[T, B, I] -> (W_x x_t + b [T, B, 4H], W_mx x_t [T, B, H]) for every step at once."""
        return F.linear(x, self.weight_ih_l0, self.bias_ih_l0), F.linear(x, self.weight_mx_l0)

    def recurrent_weights(self) -> tuple[Tensor | Peephole | None, ...]:
        """The step's weights, read once per call (WeightDrop sets W_mh and W_hm before it)."""
        peephole = (
            (self.weight_ic_l0, self.weight_fc_l0, self.weight_oc_l0) if self.peephole else None
        )
        return self.weight_mh_l0, self.weight_hm_l0, peephole, self.weight_hr_l0

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        if state is None:
            h = x.new_zeros(x.size(1), self.output_size)
            c = x.new_zeros(x.size(1), self.hidden_size)
        else:
            h, c = state[0][0], state[1][0]
            if h.size(-1) != self.output_size or c.size(-1) != self.hidden_size:
                want = f"(h [1, B, {self.output_size}], c [1, B, {self.hidden_size}])"
                got = f"h {tuple(state[0].shape)}, c {tuple(state[1].shape)}"
                raise ValueError(f"mLSTM state must be {want}, got {got}")
        gates_x, mx = self.project_inputs(x)
        weights = self.recurrent_weights()
        mask = None
        if self.training and self.recurrent_dropout > 0:
            mask = bernoulli_mask(h, h.shape, self.recurrent_dropout)
        clips = {"cell_clip": self.cell_clip, "proj_clip": self.proj_clip}
        outputs = []
        for gates_x_t, mx_t in zip(gates_x.unbind(0), mx.unbind(0), strict=True):
            h, c = self.cell_fn(
                gates_x_t, mx_t, h if mask is None else h * mask, c, *weights, **clips
            )
            outputs.append(h)
        return torch.stack(outputs), (h.unsqueeze(0), c.unsqueeze(0))

    def extra_repr(self) -> str:
        options = [f"{self.input_size}, {self.hidden_size}"]
        if self.output_size != self.hidden_size:
            options.append(f"proj_size={self.output_size}")
        options += [
            f"forget_bias={self.forget_bias}",
            f"recurrent_dropout={self.recurrent_dropout}",
        ]
        for name in ("peephole", "cell_clip", "proj_clip", "orthogonal_init"):
            if getattr(self, name):
                options.append(f"{name}={getattr(self, name)}")
        return ", ".join(options)
