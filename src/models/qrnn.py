"""The quasi-recurrent network (Bradbury et al. 2016, "Quasi-Recurrent Neural Networks") as a
recurrent layer of the AWD model (`model.cell=qrnn`), in the authors' AWD settings (REFERENCE §9).

A QRNN layer has no hidden-to-hidden matrix. One linear map of a window of inputs gives all gates
for every step at once; only the element-wise fo-pooling is sequential:

    s_t       = [x_t, x_{t-1}]   (window 2; window 1: s_t = x_t)
    Z, F, O   = chunk_3(W s_t + b)            W = `weight_ih_l0` [3H, window * I], b [3H]
    z, f, o   = tanh(Z), sigmoid(F), sigmoid(O)
    c_t       = f_t * z_t + (1 - f_t) * c_{t-1}    (the authors' ForgetMult)
    h_t       = o_t * c_t

x_{t-1} of a window's first step is the last x of the previous window (their `save_prev_x`): it
is the second tensor of the layer's state pair `(c [1, B, H], prev_x [1, B, (window - 1) * I])`,
so wherever the training loop or evaluation resets the state (None, or `init_hidden`'s zeros) the
carried x is reset with it (their `reset()`), and it is detached with the state.

Zoneout on f (`zoneout` p): training multiplies f by a Bernoulli(1 - p) mask (new per element and
step, no rescaling), evaluation by (1 - p). A zoned-out f = 0 keeps c_{t-1}.

The fo-pooling is a first-order linear recurrence c_t = a_t c_{t-1} + b_t with a_t = 1 - f_t,
b_t = f_t z_t, computed by :func:`forget_mult` as a log-depth associative scan (no Python loop
over time). :func:`forget_mult_loop` is the step-by-step reference the tests compare against.

Weight drop (DropConnect) applies to the whole gate projection `weight_ih_l0` (the authors wrap
`rnn.linear`): the QRNN's only matrix is both its "hidden" and its "input" target, dropped once.
There is no recurrent dropout: no h_{t-1} enters a product (zoneout is the QRNN's own).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from src.models.recurrent import State, register_layer


@dataclass
class QRNNOptions:
    """Settings of the QRNN layers (`model.qrnn.*`); the defaults are the authors' AWD-QRNN."""

    first_window: int = 2  # window of the first layer: input [x_t, x_{t-1}]
    window: int = 1  # window of the other layers
    zoneout: float = 0.0  # zoneout probability on the forget gate (0: off, the authors' AWD)

    def __post_init__(self) -> None:
        for name in ("first_window", "window"):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value in (1, 2)):
                raise ValueError(f"qrnn.{name} must be one of 1, 2, got {value!r}")
        p = self.zoneout
        if not (isinstance(p, Real) and not isinstance(p, bool) and 0.0 <= p < 1.0):
            raise ValueError(f"qrnn.zoneout must be a probability in [0, 1), got {p!r}")

    def layer_options(self, index: int) -> dict[str, object]:
        """Constructor options of layer `index` (0 = the first, fed by the embedding)."""
        return {"window": self.first_window if index == 0 else self.window, "zoneout": self.zoneout}


def linear_scan(a: Tensor, b: Tensor, reverse: bool = False) -> Tensor:
    """All x_t of x_t = a_t * x_{t-1} + b_t (x_{-1} = 0) over dim 0; `reverse`: x_t = a_t *
    x_{t+1} + b_t from the end (x_T = 0).

    Hillis-Steele inclusive scan: the pairs (a_t, b_t) compose associatively, "(a1, b1) then
    (a2, b2)" = (a1 a2, a2 b1 + b2), so after the level with shift s every position holds the
    composition of the 2s pairs ending at it. ceil(log2 T) levels of whole-tensor multiply-adds
    (O(T log T) work, log T dependent steps instead of T), written into two ping-pong buffers;
    no division, so a product of a's that underflows is harmless. Reads but never writes `a`, `b`.
    """
    steps, shift = b.size(0), 1
    out_b = torch.empty_like(b)
    out_a = torch.empty_like(a) if steps > 2 else a
    fresh = True  # the first level writes new buffers; later ones reuse the previous level's
    while shift < steps:
        more = 2 * shift < steps  # the last level needs no new a
        head, tail = (slice(0, shift), slice(shift, None))
        lo, hi = (slice(0, -shift), slice(shift, None))
        if reverse:  # combine t with t + shift; the last `shift` steps are done
            head, tail = slice(steps - shift, None), slice(0, steps - shift)
            lo, hi = hi, lo
        out_b[head] = b[head]
        torch.addcmul(b[tail], a[tail], b[lo], out=out_b[tail])
        if more:
            out_a[head] = a[head]
            torch.mul(a[tail], a[lo], out=out_a[tail])
        if fresh:
            b, out_b = out_b, torch.empty_like(b)
            if more:
                a, out_a = out_a, torch.empty_like(a)
            fresh = False
        else:
            b, out_b = out_b, b
            if more:
                a, out_a = out_a, a
        shift *= 2
    return b


class _ForgetMult(torch.autograd.Function):
    """fo-pooling with a hand-written backward: itself a linear recurrence, run backwards.

    With g_t = dL/dc_t in total: g_t = dL/dc_t (direct) + (1 - f_{t+1}) g_{t+1}, then
    dL/dz_t = g_t f_t, dL/df_t = g_t (z_t - c_{t-1}), dL/dc_0 = g_0 (1 - f_0). One reverse scan
    instead of autograd through every level (which would also keep every level's buffers).
    """

    @staticmethod
    def forward(ctx: Any, f: Tensor, z: Tensor, c0: Tensor) -> Tensor:
        b = f * z
        b[0].addcmul_(1 - f[0], c0)  # c_0 folded into the first pair
        c = linear_scan(1 - f, b)
        ctx.save_for_backward(f, z, c0, c)
        return c

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        f, z, c0, c = ctx.saved_tensors
        a_next = torch.empty_like(f)  # a_{t+1} = 1 - f_{t+1}; nothing after the last step
        torch.sub(1, f[1:], out=a_next[:-1])
        a_next[-1] = 0
        g = linear_scan(a_next, grad_c.contiguous(), reverse=True)
        c_prev = torch.cat([c0.unsqueeze(0), c[:-1]])
        return g * (z - c_prev), g * f, g[0] * (1 - f[0])


def forget_mult(f: Tensor, z: Tensor, c0: Tensor | None = None) -> Tensor:
    """fo-pooling c_t = f_t * z_t + (1 - f_t) * c_{t-1} for all t: [T, B, H] -> [T, B, H].

    A first-order linear recurrence c_t = a_t c_{t-1} + b_t with (a_t, b_t) = (1 - f_t,
    f_t z_t) and c_0 folded into b_0, computed by :func:`linear_scan` (no Python loop over
    time); the backward pass is one reverse scan (`_ForgetMult`). Equal to
    :func:`forget_mult_loop` up to float rounding. `c0` [B, H] or None (zeros).
    """
    c0 = z.new_zeros(z.shape[1:]) if c0 is None else c0.to(z.dtype)
    return _ForgetMult.apply(f, z, c0)


def forget_mult_loop(f: Tensor, z: Tensor, c0: Tensor | None = None) -> Tensor:
    """The reference: c_t = f_t * z_t + (1 - f_t) * c_{t-1}, one Python step per t (tests)."""
    c = torch.zeros_like(z[0]) if c0 is None else c0
    out = []
    for f_t, z_t in zip(f.unbind(0), z.unbind(0), strict=True):
        c = f_t * z_t + (1 - f_t) * c
        out.append(c)
    return torch.stack(out)


@register_layer("qrnn", "scan")
class QRNNLayer(nn.Module):
    """A QRNN layer with fo-pooling and an output gate (module doc for the equations).

    Parameters: `weight_ih_l0` [3H, window * I] and `bias_ih_l0` [3H] (gate blocks Z, F, O),
    initialized as the authors' `nn.Linear` (U(-1/sqrt(fan_in), 1/sqrt(fan_in))).
    State: `(c [1, B, H], prev_x [1, B, (window - 1) * I])`.
    """

    recurrent_weight_names = ("weight_ih_l0",)  # the whole gate projection (authors' wdrop)
    input_weight_names = ("weight_ih_l0",)  # the same matrix: dropped once, one mask

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        recurrent_dropout: float = 0.0,
        *,
        window: int = 1,
        zoneout: float = 0.0,
    ) -> None:
        super().__init__()
        if recurrent_dropout > 0:
            raise ValueError(
                "the QRNN has no recurrent dropout (no h_{t-1} enters a product); use "
                "model.qrnn.zoneout for its forget-gate zoneout"
            )
        QRNNOptions(window, window, zoneout)  # the config's rules (raises ValueError)
        self.input_size, self.hidden_size = input_size, hidden_size
        self.window, self.zoneout = window, zoneout
        self.weight_ih_l0 = nn.Parameter(torch.empty(3 * hidden_size, window * input_size))
        self.bias_ih_l0 = nn.Parameter(torch.empty(3 * hidden_size))
        self.reset_parameters()

    @classmethod
    def state_sizes(
        cls, input_size: int, hidden_size: int, *, window: int = 1, **options: object
    ) -> tuple[int, int]:
        """Widths of the state pair: (c, the carried x_{t-1} of a window-2 layer)."""
        return hidden_size, (window - 1) * input_size

    def reset_parameters(self) -> None:
        """nn.Linear's init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for the weight and the bias."""
        params = {n.removesuffix("_raw"): p for n, p in self.named_parameters(recurse=False)}
        bound = 1 / math.sqrt(self.window * self.input_size)
        for p in params.values():
            nn.init.uniform_(p, -bound, bound)

    def windowed(self, x: Tensor, prev_x: Tensor | None) -> Tensor:
        """[T, B, I] -> [T, B, window * I]: s_t = [x_t, x_{t-1}] (x_{-1} = prev_x or zeros)."""
        if self.window == 1:
            return x
        first = x.new_zeros(1, *x.shape[1:]) if prev_x is None else prev_x
        return torch.cat([x, torch.cat([first, x[:-1]])], dim=2)

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        c0 = prev_x = None
        if state is not None:
            c0, prev_x = state[0][0], state[1]
            want = self.state_sizes(self.input_size, self.hidden_size, window=self.window)
            if (c0.size(-1), prev_x.size(-1)) != want:
                raise ValueError(
                    f"QRNN state must be (c [1, B, {want[0]}], prev_x [1, B, {want[1]}]), got "
                    f"c {tuple(state[0].shape)}, prev_x {tuple(prev_x.shape)}"
                )
        gates = F.linear(self.windowed(x, prev_x), self.weight_ih_l0, self.bias_ih_l0)
        z, f, o = gates.chunk(3, dim=2)
        z, f, o = z.tanh(), f.sigmoid(), o.sigmoid()
        if self.zoneout > 0:
            if self.training:
                keep = torch.rand(f.shape, dtype=f.dtype, device=f.device) >= self.zoneout
                f = f * keep.to(f.dtype)
            else:
                f = f * (1 - self.zoneout)
        c = forget_mult(f, z, c0)
        new_prev = x[-1:] if self.window == 2 else x.new_zeros(1, x.size(1), 0)
        return o * c, (c[-1:], new_prev)

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, window={self.window}, zoneout={self.zoneout}"
        )
