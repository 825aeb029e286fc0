"""Quantization-aware mLSTM layer: the mLSTM loop with every engine tensor fake-quantized.

Registered as ``("mlstm", "qat")``. It subclasses :class:`~src.models.mlstm.MLSTMLayer` (same
parameter names, time loop, recurrent dropout and state handling), so a float mLSTM checkpoint
loads into it. Each call fake-quantizes what the integer ``IntegerMLSTMLayer``
holds (hats are fake-quantized values; ``Q_s`` rounds to the grid of scale ``s`` and saturates)::

    W_x, W_mx, W_mh, W_hm, W_hr hat = per-row int8 (W_mh, W_hm after DropConnect)  once per call
    w_ic, w_fc, w_oc hat            = int16 symmetric, one scale per vector         (peephole)
    a_x  = Q_{2^-12}(W_x_hat x_t + b)                       gate input path, all steps at once
    u_t  = Q_{2^-ku}(W_mx_hat x_t)                          factor 1 of m_t, int16, power of two
    v_t  = Q_{2^-kv}(W_mh_hat h_{t-1})                      factor 2 of m_t, int16, power of two
    m_t  = Q_{s_m, z_m}(u_t v_t)                            int8 affine (feeds an int8 GEMM)
    z    = Q_{2^-12}(a_x + Q_{2^-12}(W_hm_hat m_t))
    z_i, z_f += Q_{2^-12}(w_ic c_{t-1}), Q_{2^-12}(w_fc c_{t-1})                    (peephole)
    i, f = Q_{2^-15}(sigmoid(z_i, z_f)),  g = Q_{2^-15}(tanh(z_g))
    c_t  = clip(Q_{2^-k}(f c_{t-1} + i g))                  clip bound on the grid (cell_clip)
    z_o += Q_{2^-12}(w_oc c_t);  o = Q_{2^-15}(sigmoid(z_o))
    h_t  = Q_{s_h, z_h}(o Q_{2^-15}(tanh(c_t)))                                 (no projection)
    h_t  = clip(Q_{s_h, z_h}(W_hr_hat Q_{s_r, z_r}(o Q_{2^-15}(tanh(c_t)))))    (projection)

Which ``quant.tensors`` entry switches what: ``weights`` every matrix and the peepholes,
``gates`` the fixed int16 grids and the two int16 factors u, v, ``hidden`` m_t, h_t and the
projection's input, ``cell`` c_t. Like the LSTM, x_t is already on its producer's grid.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.models.mlstm import MLSTMLayer, Peephole
from src.models.recurrent import State, register_layer
from src.quant.config import QuantConfig

from .fake_quant import PowerOfTwoFakeQuantize, WeightFakeQuantize
from .lstm import CallQuantizer, fixed_scale
from .precision import float32_recurrence, mixed_linear
from .quantizers import (
    activation_quantizer,
    cell_quantizer,
    gate_output_quantizer,
    preactivation_quantizer,
    weight_quantizer,
)

__all__ = [
    "MLSTMStepQuantizers",
    "QATMLSTMLayer",
    "clip_codes",
    "fake_quant_mlstm_step",
    "grid_bounds",
]

PEEPHOLE_BITS = 16  # TFLite's integer LSTM keeps the cell-to-gate weights in int16


class MLSTMStepQuantizers(NamedTuple):
    """The fake quantizers and clip bounds one mLSTM step applies (fixed for the call)."""

    preactivation: Callable[[Tensor], Tensor]  # int16 at 2^-12
    gate: Callable[[Tensor], Tensor]  # int16 at 2^-15
    factor_h: Callable[[Tensor], Tensor]  # v_t = W_mh h_{t-1}: int16, power-of-two scale
    product: Callable[[Tensor], Tensor]  # m_t: int8 affine
    cell: Callable[[Tensor], Tensor]  # c_t: int16, power-of-two scale
    cell_output: Callable[[Tensor], Tensor]  # o tanh(c_t) before the projection: int8 affine
    hidden: Callable[[Tensor], Tensor]  # h_t: int8 affine
    cell_bounds: tuple[float, float] | tuple[Tensor, Tensor] | None  # c_t clip, on the grid
    proj_bounds: tuple[float, float] | tuple[Tensor, Tensor] | None  # projected h_t clip


def clip_codes(clip: float, scale: float, zero_point: int, qmin: int, qmax: int) -> tuple[int, int]:
    """The codes ``[z + round(-clip / s), z + round(clip / s)]`` inside ``[qmin, qmax]``: the
    bounds the integer engine clamps a clipped tensor's codes to."""
    lo = max(qmin, zero_point + round(-clip / scale))
    hi = min(qmax, zero_point + round(clip / scale))
    return lo, hi


def grid_bounds(
    clip: float | None, quantizer: CallQuantizer
) -> tuple[float, float] | tuple[Tensor, Tensor] | None:
    """``[-clip, clip]`` moved onto the quantizer's grid (the integer engine clamps codes).

    With qparams ``(s, z)`` these are the real values of :func:`clip_codes` (the same float64
    arithmetic and half-to-even rounding), as 0-d tensors so that a compiled cell does not see
    a new Python constant every call; clamping a fake-quantized tensor to them gives what the
    engine computes. Float (no qparams): the clip.
    """
    if clip is None:
        return None
    if quantizer.qparams is None:
        return (-clip, clip)
    scale, zero_point = (t.to(torch.float64) for t in quantizer.qparams)
    qmin, qmax = quantizer.qmin, quantizer.qmax
    lo = (zero_point + torch.round(-clip / scale)).clamp(qmin, qmax)
    hi = (zero_point + torch.round(clip / scale)).clamp(qmin, qmax)
    return ((lo - zero_point) * scale).float(), ((hi - zero_point) * scale).float()


def _clamp(x: Tensor, bounds: tuple[float, float] | tuple[Tensor, Tensor] | None) -> Tensor:
    return x if bounds is None else x.clamp(bounds[0], bounds[1])


def fake_quant_mlstm_step(
    gates_x_t: Tensor,
    mx_t: Tensor,
    h: Tensor,
    c: Tensor,
    weight_mh: Tensor,
    weight_hm: Tensor,
    peephole: Peephole | None,
    weight_hr: Tensor | None,
    q: MLSTMStepQuantizers,
    *,
    cell_clip: float | None = None,
    proj_clip: float | None = None,
) -> tuple[Tensor, Tensor]:
    """One fake-quantized mLSTM step, the integer engine's equations (module docstring).

    ``gates_x_t`` (a_x) and ``mx_t`` (u_t) come already quantized; the weights are already
    fake-quantized (once per call). ``cell_clip`` / ``proj_clip`` are the float options; the
    bounds actually applied are ``q.cell_bounds`` / ``q.proj_bounds`` (on the grid).
    Straight-through gradients (zero where a quantizer saturates).
    """
    hidden = c.size(1)
    m = q.product(mx_t * q.factor_h(F.linear(h, weight_mh)))
    z = q.preactivation(gates_x_t + q.preactivation(F.linear(m, weight_hm)))
    if peephole is not None:
        w_ic, w_fc, w_oc = peephole
        peep = q.preactivation(torch.cat([w_ic * c, w_fc * c], dim=1))
        z = torch.cat([q.preactivation(z[:, : 2 * hidden] + peep), z[:, 2 * hidden :]], dim=1)
    i, f, g, o = z.chunk(4, dim=1)
    i, f = q.gate(torch.sigmoid(i)), q.gate(torch.sigmoid(f))
    g = q.gate(torch.tanh(g))
    c = _clamp(q.cell(f * c + i * g), q.cell_bounds)
    if peephole is not None:
        o = q.preactivation(o + q.preactivation(w_oc * c))
    h = q.gate(torch.sigmoid(o)) * q.gate(torch.tanh(c))
    if weight_hr is None:
        return q.hidden(h), c
    h = q.hidden(F.linear(q.cell_output(h), weight_hr))
    return _clamp(h, q.proj_bounds), c


def peephole_quantizer(quant: QuantConfig | None) -> nn.Module:
    """Peephole vectors: int16 symmetric, one scale per vector (applied to ``w[None]``)."""
    if quant is None or not quant.quantizes("weights"):
        return nn.Identity()
    return WeightFakeQuantize(bits=PEEPHOLE_BITS, axis=0)


@register_layer("mlstm", "qat")
class QATMLSTMLayer(MLSTMLayer):
    """mLSTM layer with fake-quantized weights, factors, m_t, gates, cell and hidden state.

    Quantizers (``nn.Identity`` for tensors left out of ``quant.tensors``): ``weight_ih_quant``,
    ``weight_mx_quant``, ``weight_mh_quant``, ``weight_hm_quant``, ``weight_hr_quant``
    (projection), ``peephole_quant``; ``preactivation_quant``, ``gate_quant``,
    ``factor_x_quant``, ``factor_h_quant``; ``product_quant`` (m_t), ``cell_quant``,
    ``cell_output_quant`` (projection input), ``hidden_quant``.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        recurrent_dropout: float = 0.0,
        *,
        quant: QuantConfig,
        **options: object,
    ) -> None:
        super().__init__(
            input_size, hidden_size, recurrent_dropout, cell_fn=fake_quant_mlstm_step, **options
        )
        gates = quant.quantizes("gates")
        self.weight_ih_quant = weight_quantizer(quant)
        self.weight_mx_quant = weight_quantizer(quant)
        self.weight_mh_quant = weight_quantizer(quant)
        self.weight_hm_quant = weight_quantizer(quant)
        self.weight_hr_quant = weight_quantizer(quant) if self.weight_hr_l0 is not None else None
        self.peephole_quant = peephole_quantizer(quant) if self.peephole else None
        self.preactivation_quant = preactivation_quantizer(quant)
        self.gate_quant = gate_output_quantizer(quant)
        # the two factors of m_t: int16 at a power-of-two scale (cell_quantizer's kind)
        self.factor_x_quant = _power_of_two_quantizer(quant) if gates else nn.Identity()
        self.factor_h_quant = _power_of_two_quantizer(quant) if gates else nn.Identity()
        self.product_quant = activation_quantizer(quant, "hidden")
        self.cell_quant = cell_quantizer(quant)
        self.cell_output_quant = (
            activation_quantizer(quant, "hidden") if self.weight_hr_l0 is not None else None
        )
        self.hidden_quant = activation_quantizer(quant, "hidden")
        self._step_quantizers: MLSTMStepQuantizers | None = None  # inside forward only
        self._amp: torch.dtype | None = None  # the autocast dtype of the input GEMMs (forward)

    def project_inputs(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(a_x, u) = (Q12(W_x_hat x + b), Q_u(W_mx_hat x))`` for all steps, one GEMM each
        (in the autocast dtype, if any)."""
        weight_ih = self.weight_ih_quant(self.weight_ih_l0)
        gates = mixed_linear(x, weight_ih, self.bias_ih_l0, self._amp)
        factor = mixed_linear(x, self.weight_mx_quant(self.weight_mx_l0), None, self._amp)
        return self.preactivation_quant(gates), self.factor_x_quant(factor)

    def recurrent_weights(self) -> tuple[object, ...]:
        """Fake-quantized W_mh, W_hm (after DropConnect), peepholes, W_hr; the quantizers."""
        if self._step_quantizers is None:
            raise RuntimeError("recurrent_weights() is only available inside forward()")
        weight_mh, weight_hm, peephole, weight_hr = super().recurrent_weights()
        if peephole is not None:
            peephole = tuple(self.peephole_quant(w.unsqueeze(0)).squeeze(0) for w in peephole)
        if weight_hr is not None:
            weight_hr = self.weight_hr_quant(weight_hr)
        return (
            self.weight_mh_quant(weight_mh),
            self.weight_hm_quant(weight_hm),
            peephole,
            weight_hr,
            self._step_quantizers,
        )

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        factor_h, product = CallQuantizer(self.factor_h_quant), CallQuantizer(self.product_quant)
        cell, hidden = CallQuantizer(self.cell_quant), CallQuantizer(self.hidden_quant)
        projection_input = self.cell_output_quant
        cell_output = CallQuantizer(nn.Identity() if projection_input is None else projection_input)
        if state is not None:  # a carried state is already on the grid unless the scale moved
            state = (hidden(state[0], record=False), cell(state[1], record=False))
        self._step_quantizers = MLSTMStepQuantizers(
            fixed_scale(self.preactivation_quant),
            fixed_scale(self.gate_quant),
            factor_h,
            product,
            cell,
            cell_output,
            hidden,
            grid_bounds(self.cell_clip, cell),
            grid_bounds(self.proj_clip, hidden),
        )
        try:  # the steps in float32 under autocast (src/quant/qat/precision.py)
            with float32_recurrence(x.device.type) as self._amp:
                y, state = super().forward(x, state)
        finally:
            self._step_quantizers, self._amp = None, None
        for quantizer in (factor_h, product, cell, cell_output, hidden):
            quantizer.observe()
        return y, state


def _power_of_two_quantizer(quant: QuantConfig) -> nn.Module:
    """int16 at a power-of-two scale from an EMA range (as the cell state)."""
    return PowerOfTwoFakeQuantize(bits=16, momentum=quant.ema_momentum)
