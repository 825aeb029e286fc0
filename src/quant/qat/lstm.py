"""Quantization-aware LSTM layer: the loop runner with every engine tensor fake-quantized.

Registered as ``("lstm", "qat")``; ``build_recurrent_layer`` picks it whenever ``quant.enabled``.
It subclasses :class:`LoopLSTMLayer`, so the time loop, recurrent dropout and the state handling
are the float runner's, and it keeps the float parameter names (``weight_ih_l0``,
``weight_hh_l0`` / ``weight_hh_l0_raw`` under WeightDrop, ``bias_ih_l0``, ``bias_hh_l0``): a float
checkpoint loads into it (the quantizers only add buffers, see :func:`align_quantizer_state`).

Each forward call fake-quantizes exactly the tensors :mod:`src.quant.integer.engine` holds (hats are
fake-quantized values, ``Q_s`` rounds to the grid of scale ``s`` and saturates)::

    W_ih_hat, W_hh_hat = per-row int8 of W_ih, of W_hh after DropConnect  (once per call)
    a_x   = Q_{2^-12}(W_ih_hat x_t + b_ih + b_hh)               int32 acc -> int16 at 2^-12
    a_h   = Q_{2^-12}(W_hh_hat h_{t-1})                          int32 acc -> int16 at 2^-12
    z     = Q_{2^-12}(a_x + a_h)                                 saturating int16 add
    i, f, o = Q_{2^-15}(sigmoid(z_i, z_f, z_o)),  g = Q_{2^-15}(tanh(z_g))   lookup tables
    c_t   = Q_{2^-k}(f c_{t-1} + i g)                            int16, power-of-two scale
    h_t   = Q_{s_h, z_h}(o Q_{2^-15}(tanh(c_t)))                 int8 affine

The layer's input x_t is not quantized here: it already is, by its producer (the model's input
quantizer for layer 1, the previous layer's h quantizer above it), so the integer engine feeds
each layer the int8 codes of the one below. h_{t-1} is h_t of the previous step, on the same grid.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.models.recurrent import LoopLSTMLayer, State, register_layer
from src.quant.config import QuantConfig

from .fake_quant import FakeQuantize, FixedScaleFakeQuantize, PowerOfTwoFakeQuantize
from .precision import float32_recurrence, mixed_linear
from .quantizers import (
    activation_quantizer,
    cell_quantizer,
    gate_output_quantizer,
    preactivation_quantizer,
    weight_quantizer,
)

__all__ = [
    "CallQuantizer",
    "QATLSTMLayer",
    "StepQuantizers",
    "fake_quant_lstm_step",
    "fixed_scale",
]

ObservedQuantizer = FakeQuantize | PowerOfTwoFakeQuantize


class CallQuantizer:
    """An observed quantizer with its qparams held fixed for one forward call.

    Every time step of the call is quantized with the ``(scale, zero_point)`` the observer holds
    when the call starts (as the integer engine uses one scale), and, in training with the
    observer on, the running min and max of the float inputs are folded into the EMA range once
    after the loop (:meth:`observe`): one range update per batch, as in Jacob et al. An observer
    that has seen no data yet cannot give qparams: in training the call runs this tensor in
    float and its range initializes the observer; in evaluation that is an error.

    The qparams and the running range are 0-d tensors on the model's device, so a step neither
    syncs with the host nor changes a Python constant from call to call: a compiled cell
    (``model.compile_cell``) is traced once, not once per call or per step.
    """

    def __init__(self, quantizer: nn.Module) -> None:
        self.quantizer = quantizer
        self.qparams: tuple[Tensor, Tensor] | None = None  # (scale float32, zero point int32)
        self.recording = False
        self.lo: Tensor | None = None  # running min / max of what the call quantized
        self.hi: Tensor | None = None
        if not isinstance(quantizer, ObservedQuantizer):
            return  # nn.Identity: this tensor stays float
        self.qmin, self.qmax = quantizer.qmin, quantizer.qmax
        self.recording = quantizer.training and quantizer.observer_enabled
        if self.recording:
            self.lo = torch.full_like(quantizer.observer.min_val, float("inf"))
            self.hi = torch.full_like(quantizer.observer.max_val, float("-inf"))
        if quantizer.fake_quant_enabled:
            if bool(quantizer.observer.initialized):
                self.qparams = quantizer.calculate_qparams()
            elif not self.recording:
                raise RuntimeError(
                    f"{type(quantizer).__name__} used before observing data: train or "
                    "calibrate the model before evaluating it with fake quantization (or keep "
                    "its observer on until it has seen a batch)"
                )

    def __call__(self, x: Tensor, record: bool = True) -> Tensor:
        if self.recording and record:
            lo, hi = torch.aminmax(x.detach().to(torch.float32))
            self.lo, self.hi = torch.minimum(self.lo, lo), torch.maximum(self.hi, hi)
        if self.qparams is None:
            return x
        scale, zero_point = self.qparams
        return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, self.qmin, self.qmax)

    def observe(self) -> None:
        """Update the observer with the min and max of everything recorded in the call."""
        if self.recording and bool(self.lo <= self.hi):
            self.quantizer.observer(torch.stack([self.lo, self.hi]))
        if self.recording:
            self.lo = torch.full_like(self.lo, float("inf"))
            self.hi = torch.full_like(self.hi, float("-inf"))


def fixed_scale(quantizer: nn.Module) -> Callable[[Tensor], Tensor]:
    """A fixed-scale quantizer as a function with Python-number qparams (or the identity)."""
    if not isinstance(quantizer, FixedScaleFakeQuantize) or not quantizer.fake_quant_enabled:
        return _identity
    scale, zero_point = float(quantizer.scale), int(quantizer.zero_point)
    qmin, qmax = quantizer.qmin, quantizer.qmax
    return lambda x: torch.fake_quantize_per_tensor_affine(x, scale, zero_point, qmin, qmax)


def _identity(x: Tensor) -> Tensor:
    return x


class StepQuantizers(NamedTuple):
    """The fake quantizers one cell step applies (fixed for the call)."""

    preactivation: Callable[[Tensor], Tensor]  # int16 at 2^-12, saturating
    gate: Callable[[Tensor], Tensor]  # int16 at 2^-15 (sigmoid / tanh outputs)
    cell: Callable[[Tensor], Tensor]  # int16 at 2^-k
    hidden: Callable[[Tensor], Tensor]  # int8 affine


def fake_quant_lstm_step(
    gates_x_t: Tensor, h: Tensor, c: Tensor, weight_hh: Tensor, q: StepQuantizers
) -> tuple[Tensor, Tensor]:
    """One fake-quantized LSTM step (gate order i, f, g, o), the integer engine's equations.

        a_h = Q12(W_hh_hat h_{t-1});  z = Q12(a_x + a_h)     (a_x = gates_x_t, already Q12)
        i, f, o = Q15(sigmoid(.)),  g = Q15(tanh(z_g))
        c_t = Qc(f c_{t-1} + i g);  h_t = Qh(o Q15(tanh(c_t)))

    ``weight_hh`` is already fake-quantized (once per call). Shapes: gates_x_t [B, 4H], h and c
    [B, H]. Straight-through gradients (zero where a quantizer saturates).
    """
    hidden = h.size(1)
    z = q.preactivation(gates_x_t + q.preactivation(F.linear(h, weight_hh)))
    i, f, _, o = q.gate(torch.sigmoid(z)).chunk(4, dim=1)
    g = q.gate(torch.tanh(z[:, 2 * hidden : 3 * hidden]))
    c = q.cell(f * c + i * g)
    h = q.hidden(o * q.gate(torch.tanh(c)))
    return h, c


@register_layer("lstm", "qat")
class QATLSTMLayer(LoopLSTMLayer):
    """LSTM layer with fake-quantized weights, gates, cell state and hidden state (module doc).

    Quantizers (``nn.Identity`` for tensors left out of ``quant.tensors``): ``weight_ih_quant``,
    ``weight_hh_quant`` (int8 per row), ``preactivation_quant`` (int16 2^-12), ``gate_quant``
    (int16 2^-15), ``cell_quant`` (int16 power of two, EMA), ``hidden_quant`` (int8, EMA).
    """

    recurrent_weight_names = ("weight_hh_l0",)

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        recurrent_dropout: float = 0.0,
        *,
        quant: QuantConfig,
    ) -> None:
        super().__init__(input_size, hidden_size, recurrent_dropout, cell_fn=fake_quant_lstm_step)
        self.weight_ih_quant = weight_quantizer(quant)
        self.weight_hh_quant = weight_quantizer(quant)
        self.preactivation_quant = preactivation_quantizer(quant)
        self.gate_quant = gate_output_quantizer(quant)
        self.cell_quant = cell_quantizer(quant)
        self.hidden_quant = activation_quantizer(quant, "hidden")
        self._step_quantizers: StepQuantizers | None = None  # set during a forward call only
        self._amp: torch.dtype | None = None  # the autocast dtype of the input GEMM (forward)

    def project_inputs(self, x: Tensor) -> Tensor:
        """``a_x = Q12(x W_ih_hat^T + b_ih + b_hh)`` for all steps in one GEMM (both biases here,
        as the engine folds them into one int32 bias); the GEMM in the autocast dtype, if any."""
        weight = self.weight_ih_quant(self.weight_ih_l0)
        bias = self.bias_ih_l0 + self.bias_hh_l0
        return self.preactivation_quant(mixed_linear(x, weight, bias, self._amp))

    def recurrent_weights(self) -> tuple[Tensor, StepQuantizers]:
        """``W_hh_hat`` (fake-quantized once per call, after DropConnect) and the quantizers."""
        if self._step_quantizers is None:
            raise RuntimeError("recurrent_weights() is only available inside forward()")
        return self.weight_hh_quant(self.weight_hh_l0), self._step_quantizers

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        cell, hidden = CallQuantizer(self.cell_quant), CallQuantizer(self.hidden_quant)
        if state is not None:  # a carried state is already on the grid unless the scale moved
            state = (hidden(state[0], record=False), cell(state[1], record=False))
        self._step_quantizers = StepQuantizers(
            fixed_scale(self.preactivation_quant), fixed_scale(self.gate_quant), cell, hidden
        )
        try:  # the steps in float32 under autocast (src/quant/qat/precision.py)
            with float32_recurrence(x.device.type) as self._amp:
                y, state = super().forward(x, state)
        finally:
            self._step_quantizers, self._amp = None, None
        cell.observe()
        hidden.observe()
        return y, state
