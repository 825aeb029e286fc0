"""Integer-arithmetic-only AWD-LSTM (Jacob et al. 2018; TFLite's integer LSTM, REFERENCE §5).

Every tensor inside the network is an integer: int8 weights, activations and hidden state, int32
accumulators and biases, int16 gate pre-activations (2^-12), gate outputs (2^-15) and cell state
(2^-k); rescaling is by fixed-point multipliers (``M ~= M0 2^(shift-31)``, rounding doubling high
multiply then rounding right shift: :func:`multiply_by_quantized_multiplier`) and by shifts;
sigmoid and tanh are int16 lookup tables. The one float step is after the network: the int32
logits are dequantized for the log-softmax of the loss (:meth:`.lm.IntegerLM.score`). This
module holds the layers; :mod:`.lm` the decoder and the whole model.

Notation: ``q_*`` integer codes, ``s_*`` real scales, ``z_*`` zero points, real = s (q - z).
``MBQM(acc, M)`` = round(acc M); ``sat_b`` saturates to b bits; ``RDP(x, n)`` = round(x / 2^n).
The modules are built from a trained QAT model by :func:`src.quant.integer.convert.convert`, which
derives every integer constant here from the fake-quantized model's scales.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from src.quant.scheme import GATE_EXPONENT

from . import kernel, kernel_lstm
from .fixed_point import INT32_MAX, INT32_MIN, clamp_to_int16, int_matmul, saturate
from .lut import Int16LUT

__all__ = [
    "IntegerEmbedding",
    "IntegerLSTMLayer",
    "IntegerRecurrentLayer",
    "IntState",
    "Requantizer",
    "cell_update",
    "round_shift",
]

IntState = tuple[Tensor, Tensor]  # (h int8 [B, H], c int16 [B, H])


def _i32(x: Tensor) -> Tensor:
    return x.to(torch.int32)


def round_shift(x: Tensor, exponent: int) -> Tensor:
    """gemmlowp ``RoundingDivideByPOT`` by a constant ``e``: ``round(x / 2^e)``, ties away from 0.

    Closed form (same results as :func:`~src.quant.integer.fixed_point.rounding_divide_by_pot`)::

        RDP(x, e) = (x + 2^(e-1) - [x < 0]) >> e,   e >= 1;   RDP(x, 0) = x

    with ``>>`` the flooring arithmetic shift. ``x`` keeps its dtype: the caller guarantees
    ``|x| + 2^(e-1)`` fits it.
    """
    if exponent == 0:
        return x
    if not 0 < exponent <= 31:
        raise ValueError(f"exponent must be in [0, 31], got {exponent}")
    nudge = (1 << (exponent - 1)) - (x < 0).to(x.dtype)
    return torch.bitwise_right_shift(x + nudge, exponent)


class Requantizer(nn.Module):
    """``round(acc M)`` with ``M = M0 2^(shift - 31)`` per channel (or per tensor), TFLite's
    ``MultiplyByQuantizedMultiplier`` with its constants precomputed once, in int64::

        y   = sat32(acc 2^left)                  left = max(shift, 0)   (skipped when all 0)
        y   = SRDHM(y, M0) = (y M0 + 2^30) >> 31
        out = RDP(y, right) = (y + 2^(right-1) - [y < 0]) >> right,   right = max(-shift, 0)

    ``SRDHM``: gemmlowp's saturating rounding doubling high multiply, round(y M0 / 2^31) with
    ties toward +infinity; with ``M0`` in ``[0, 2^31)`` its one saturating case (both operands
    -2^31) cannot occur and the nudged truncating division equals the flooring shift above.
    ``RDP``: rounding divide by a power of two, ties away from zero (nothing added where
    ``right = 0``). Bit-identical to :func:`.fixed_point.multiply_by_quantized_multiplier`
    (tests/quant/test_engine.py); returns int64 for the caller's saturation.

    ``forward(acc, index)``: with ``index`` (e.g. token ids) the per-row constants are gathered
    by it and broadcast over the last dim of ``acc`` (the embedding's per-word multipliers).
    """

    m0: Tensor
    left: Tensor
    right: Tensor
    nudge: Tensor
    negative: Tensor

    def __init__(self, multiplier: Tensor | int, shift: Tensor | int) -> None:
        super().__init__()
        m0 = torch.as_tensor(multiplier).to(torch.int64)
        shift = torch.as_tensor(shift).to(torch.int64)
        if bool((m0 < 0).any()) or bool((m0 >= 2**31).any()):
            raise ValueError("M0 must be in [0, 2^31)")
        right = (-shift).clamp(min=0)
        if bool((right > 31).any()) or bool((shift > 30).any()):
            raise ValueError("shift must be in [-31, 30]")
        self.has_left = bool((shift > 0).any())
        ones = torch.ones_like(right)
        for name, t in [
            ("m0", m0),
            ("left", shift.clamp(min=0)),
            ("right", right),
            ("nudge", torch.where(right > 0, torch.bitwise_left_shift(ones, right - 1), 0)),
            ("negative", (right > 0).to(torch.int64)),
        ]:
            self.register_buffer(name, t, persistent=False)

    def forward(self, acc: Tensor, index: Tensor | None = None) -> Tensor:
        m0, left, right, nudge, negative = self.m0, self.left, self.right, self.nudge, self.negative
        if index is not None:
            m0, left, right, nudge, negative = (
                t[index].unsqueeze(-1) for t in (m0, left, right, nudge, negative)
            )
        y = acc.to(torch.int64)
        if self.has_left:
            y = torch.bitwise_left_shift(y, left).clamp(INT32_MIN, INT32_MAX)
        y = torch.bitwise_right_shift(y * m0 + (1 << 30), 31)
        return torch.bitwise_right_shift(y + nudge - (y < 0).to(torch.int64) * negative, right)


def cell_update(f: Tensor, c: Tensor, i: Tensor, g: Tensor, cell_exponent: int) -> Tensor:
    """``c_t = f c_{t-1} + i g`` on int16 codes -> int16 at ``2^-k`` (``k = cell_exponent``).

    ``f, i, g`` are int16 at 2^-15, ``c`` int16 at 2^-k. The products are exact in int32
    (``|f c|, |i g| < 2^30``): ``f c`` at 2^-(15+k), ``i g`` at 2^-30. Both move to the common
    exponent ``a = min(15 + k, 30)`` (an exact no-op for one of them), are added (``< 2^31``) and
    rounded once to 2^-k::

        c_t = sat16(RDP(RDP(f c, 15 + k - a) + RDP(i g, 30 - a), a - k)),   0 <= k <= 30

    so for ``k <= 15`` (cell range >= 1) ``f c`` is exact and ``i g`` is rounded first by
    ``15 - k`` bits (an error of at most 2^-16 of a final step). Rounding: half away from zero.
    Every shift is at most 15 bits, so the int32 sums with their rounding nudges cannot overflow.
    """
    if not 0 <= cell_exponent <= 30:
        raise ValueError(f"cell exponent k must be in [0, 30], got {cell_exponent}")
    a = min(15 + cell_exponent, 30)
    fc = round_shift(_i32(f) * _i32(c), 15 + cell_exponent - a)
    ig = round_shift(_i32(i) * _i32(g), 30 - a)
    return clamp_to_int16(round_shift(fc + ig, a - cell_exponent))


class IntegerEmbedding(nn.Module):
    """int8 per-row embedding whose rows are requantized to layer 1's int8 input scale.

        q_x = sat_b(MBQM(q_e[v], M_v) + z_x),   M_v = s_e[v] / s_x   (one multiplier per word)

    Buffers: ``weight`` int8 [V, E], ``multiplier`` / ``shift`` int32 [V]. The input dropout
    between the embedding and layer 1 is the identity at inference.
    """

    weight: Tensor
    multiplier: Tensor
    shift: Tensor

    def __init__(
        self, weight: Tensor, multiplier: Tensor, shift: Tensor, zero_point: int, bits: int
    ) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("multiplier", multiplier)
        self.register_buffer("shift", shift)
        self.zero_point, self.bits = int(zero_point), int(bits)
        self.requantize = Requantizer(multiplier, shift)

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens [T, B] -> int8 codes [T, B, E] at layer 1's input scale: rows of the table
        of every word's codes, built once (the ops themselves under a dispatch mode)."""
        if kernel.dispatch_mode_active():
            return self.codes(tokens)
        key = tuple((t.data_ptr(), t._version) for t in (self.weight, self.multiplier, self.shift))
        table = self.__dict__.get("_table")
        if table is None or table[0] != key:
            words = torch.arange(self.weight.size(0), device=self.weight.device)
            table = self.__dict__["_table"] = (key, self.codes(words))
        return table[1][tokens]

    def codes(self, tokens: Tensor) -> Tensor:
        """The requantization itself: ``sat_b(MBQM(q_e[v], M_v) + z_x)`` per token."""
        rows = self.requantize(self.weight[tokens], index=tokens)
        return saturate(rows + self.zero_point, self.bits)


class IntegerRecurrentLayer(nn.Module):
    """What the integer LSTM and mLSTM layers share: a window runs in the fused C kernel
    (:mod:`src.quant.integer.kernel`, bit-identical) when it can, else in the torch loop.

    Subclasses define ``init_state(batch)`` and ``forward_steps(x, state)`` (``project_inputs``
    then ``step`` per time step), and ``kernel_usable`` / ``kernel_forward`` when the kernel has
    their recurrence.
    """

    def kernel_usable(self, x: Tensor, h: Tensor, c: Tensor) -> bool:
        """Whether this window may run in the C kernel (a layer without one: never)."""
        return False

    def kernel_forward(
        self, x: Tensor, h: Tensor, c: Tensor, kernel: object | None = None
    ) -> tuple[Tensor, IntState]:
        raise NotImplementedError(f"{type(self).__name__} has no C kernel")

    def forward(self, x: Tensor, state: IntState | None = None) -> tuple[Tensor, IntState]:
        """x int8 [T, B, I] -> (h int8 [T, B, out], (h_T, c_T)).

        On CPU the window runs in the fused C kernel when it is available; otherwise, and
        under a ``TorchDispatchMode``, the torch loop (:meth:`forward_steps`).
        """
        h, c = state if state is not None else self.init_state(x.size(1))
        if self.kernel_usable(x, h, c):
            return self.kernel_forward(x, h, c)
        return self.forward_steps(x, (h, c))


class IntegerLSTMLayer(IntegerRecurrentLayer):
    """One integer LSTM layer (TFLite's 8x8->16 integer LSTM, gate order i, f, g, o).

    Per channel j of the 4H gate rows, with accumulators in int32::

        a_x[j] = sat16(MBQM(sum_k W_ih[j,k] q_x[k] + bias_x[j], M_x[j])),  M_x = s_x s_ih / 2^-12
            bias_x[j] = round((b_ih + b_hh)[j] / (s_x s_ih[j])) - z_x sum_k W_ih[j, k]
        a_h[j] = sat16(MBQM(sum_k W_hh[j,k] q_h[k] + bias_h[j], M_h[j])),  M_h = s_h s_hh / 2^-12
            bias_h[j] = -z_h sum_k W_hh[j, k]
        z = sat16(a_x + a_h)                                        int16 at 2^-12
        i, f, o = sigmoid_lut(z),  g = tanh_lut(z_g)                int16 at 2^-15
        c_t = cell_update(f, c_{t-1}, i, g, k)                      int16 at 2^-k
        h_t = sat_b(MBQM(o * tanh_lut_k(c_t), M_o) + z_h),  M_o = 2^-30 / s_h   (o tanh at 2^-30)

    ``a_x`` is computed for all steps of the window in one int8 GEMM (``torch._int_mm``).
    """

    def __init__(
        self,
        *,
        weight_ih: Tensor,
        bias_x: Tensor,
        multiplier_x: Tensor,
        shift_x: Tensor,
        weight_hh: Tensor,
        bias_h: Tensor,
        multiplier_h: Tensor,
        shift_h: Tensor,
        cell_exponent: int,
        output_multiplier: int,
        output_shift: int,
        hidden_zero_point: int,
        bits: int,
        sigmoid: Int16LUT,
        tanh: Int16LUT,
        tanh_cell: Int16LUT,
    ) -> None:
        super().__init__()
        for name, t in [
            ("weight_ih", weight_ih),
            ("bias_x", bias_x),
            ("multiplier_x", multiplier_x),
            ("shift_x", shift_x),
            ("weight_hh", weight_hh),
            ("bias_h", bias_h),
            ("multiplier_h", multiplier_h),
            ("shift_h", shift_h),
        ]:
            self.register_buffer(name, t)
        if sigmoid.input_exponent != GATE_EXPONENT or tanh.input_exponent != GATE_EXPONENT:
            raise ValueError("gate tables must take int16 at 2^-12")
        if tanh_cell.input_exponent != -cell_exponent:
            raise ValueError(f"cell tanh table must take 2^-{cell_exponent}")
        self.sigmoid, self.tanh, self.tanh_cell = sigmoid, tanh, tanh_cell
        self.cell_exponent = int(cell_exponent)
        self.output_multiplier, self.output_shift = int(output_multiplier), int(output_shift)
        self.hidden_zero_point, self.bits = int(hidden_zero_point), int(bits)
        self.input_size, self.hidden_size = weight_ih.shape[1], weight_hh.shape[1]
        self.requantize_x = Requantizer(multiplier_x, shift_x)
        self.requantize_h = Requantizer(multiplier_h, shift_h)
        self.requantize_out = Requantizer(output_multiplier, output_shift)

    def init_state(self, batch_size: int) -> IntState:
        """Zero state: h = z_h (real 0, exactly), c = 0."""
        h = torch.full(
            (batch_size, self.hidden_size),
            self.hidden_zero_point,
            dtype=torch.int8,
            device=self.weight_hh.device,
        )
        return h, torch.zeros_like(h, dtype=torch.int16)

    def project_inputs(self, x: Tensor) -> Tensor:
        """int8 [T, B, I] -> a_x int16 [T, B, 4H] (one GEMM for the window)."""
        T, B, _ = x.shape
        acc = int_matmul(x.reshape(T * B, self.input_size), self.weight_ih.t()) + self.bias_x
        a_x = clamp_to_int16(self.requantize_x(acc))
        return a_x.view(T, B, -1)

    def step(self, a_x: Tensor, h: Tensor, c: Tensor) -> IntState:
        """One time step: a_x int16 [B, 4H], h int8 [B, H], c int16 [B, H] -> (h_t, c_t)."""
        H = self.hidden_size
        acc = int_matmul(h, self.weight_hh.t()) + self.bias_h
        a_h = self.requantize_h(acc).clamp(-32768, 32767)  # sat16, kept in int64
        z = (a_h + a_x).clamp(-32768, 32767).to(torch.int16)
        i, f, _, o = self.sigmoid(z).chunk(4, dim=1)
        g = self.tanh(z[:, 2 * H : 3 * H])
        c = cell_update(f, c, i, g, self.cell_exponent)
        o_tanh_c = _i32(o) * _i32(self.tanh_cell(c))  # at 2^-30
        h = saturate(self.requantize_out(o_tanh_c) + self.hidden_zero_point, self.bits)
        return h, c

    def forward_steps(self, x: Tensor, state: IntState) -> tuple[Tensor, IntState]:
        """The reference path: :meth:`project_inputs`, then :meth:`step` per time step."""
        h, c = state
        outputs = []
        for a_x in self.project_inputs(x).unbind(0):
            h, c = self.step(a_x, h, c)
            outputs.append(h)
        return torch.stack(outputs), (h, c)

    def kernel_usable(self, x: Tensor, h: Tensor, c: Tensor) -> bool:
        """The C kernel has this class's own step math only: a subclass that overrides it
        keeps the torch path; then :func:`.kernel_lstm.usable` checks the operands."""
        cls = type(self)
        own = (
            cls.step is IntegerLSTMLayer.step
            and cls.project_inputs is IntegerLSTMLayer.project_inputs
        )
        return own and kernel_lstm.usable(self, x, h, c)

    def kernel_forward(
        self, x: Tensor, h: Tensor, c: Tensor, kernel: object | None = None
    ) -> tuple[Tensor, IntState]:
        """This window in the C kernel (``kernel``: a loaded library, default the native one)."""
        return kernel_lstm.layer_forward(self, x, h, c, kernel=kernel)
