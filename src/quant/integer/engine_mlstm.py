"""Integer-arithmetic-only mLSTM layer (the integer twin of :mod:`src.quant.qat.mlstm`).

It plugs into :class:`~.lm.IntegerLM` beside :class:`IntegerLSTMLayer` (same call:
int8 codes in, int8 codes out, state ``(h int8, c int16)``). Notation as in
:mod:`src.quant.integer.engine` (``MBQM`` = round(acc M) with a fixed-point multiplier, ``sat_b``
saturation, real = s (q - z)). Per step, with int32 accumulators::

    u_t   = sat16(MBQM(W_mx q_x + bias_u, M_u))                 all steps at once, 2^-ku
    v_t   = sat16(MBQM(W_mh q_h + bias_v, M_v))                 M_v = s_h s_mh / 2^-kv
    m_t   = sat_b(MBQM(u_t v_t, M_p) + z_m)                      u v exact in int32 (< 2^30)
    a_x   = sat16(MBQM(W_x q_x + bias_x, M_x))                   all steps at once, 2^-12
    z     = sat16(a_x + sat16(MBQM(W_hm q_m + bias_m, M_m)))    M_m = s_m s_hm / 2^-12
    z_i,f = sat16(z_i,f + sat16(MBQM(w_ic,fc c_{t-1}, M_pc)))   (peephole, w int16)
    i, f  = sigmoid_lut(z_i, z_f),  g = tanh_lut(z_g)
    c_t   = clamp(cell_update(f, c_{t-1}, i, g, k), c_lo, c_hi)  (cell_clip as codes)
    o     = sigmoid_lut(sat16(z_o + sat16(MBQM(w_oc c_t, M_pc))))   (peephole; else z_o)
    r_t   = sat_b(MBQM(o tanh_lut_k(c_t), M_o) + z_o')           o tanh at 2^-30
    h_t   = r_t                                                  (no projection)
    h_t   = clamp(sat_b(MBQM(W_hr r_t + bias_r, M_r) + z_h), h_lo, h_hi)   (projection)

Biases fold the zero points in (``bias = -z sum_k W[j, k]``, plus the real gate bias on the
input path), as in the LSTM. Every constant is derived by :mod:`src.quant.integer.convert_mlstm`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from src.quant.scheme import GATE_EXPONENT

from . import kernel_mlstm
from .engine import IntegerRecurrentLayer, IntState, Requantizer, cell_update
from .fixed_point import clamp_to_int16, int_matmul, saturate
from .lut import Int16LUT

__all__ = ["IntegerMLSTMLayer"]

#: Constructor arguments that are tensors (buffers); the rest are Python ints / pairs / None.
TENSOR_ARGS = (
    "weight_ih",
    "bias_x",
    "multiplier_x",
    "shift_x",
    "weight_mx",
    "bias_u",
    "multiplier_u",
    "shift_u",
    "weight_mh",
    "bias_v",
    "multiplier_v",
    "shift_v",
    "weight_hm",
    "bias_m",
    "multiplier_m",
    "shift_m",
    "peephole",
    "peephole_multiplier",
    "peephole_shift",
    "weight_hr",
    "bias_r",
    "multiplier_r",
    "shift_r",
)
SCALAR_ARGS = (
    "product_multiplier",
    "product_shift",
    "product_zero_point",
    "cell_exponent",
    "cell_bounds",
    "output_multiplier",
    "output_shift",
    "output_zero_point",
    "hidden_zero_point",
    "proj_bounds",
    "bits",
)


def _sat16(x: Tensor) -> Tensor:
    """Saturate to the int16 range, keeping the (wider) dtype."""
    return x.clamp(-32768, 32767)


class IntegerMLSTMLayer(IntegerRecurrentLayer):
    """One integer mLSTM layer (module docstring); optional peepholes and projection.

    Tensor arguments (``TENSOR_ARGS``; the peephole and projection ones may be ``None``):
    int8 weights ``weight_ih`` [4H, I], ``weight_mx`` [H, I], ``weight_mh`` [H, P],
    ``weight_hm`` [4H, H], ``weight_hr`` [P, H]; int16 ``peephole`` [3, H] (w_ic, w_fc, w_oc);
    int32 biases and per-row ``multiplier_*`` / ``shift_*``. Scalars: the m_t, output and hidden
    requantization constants, the cell exponent k, and clip bounds as code pairs.
    """

    def __init__(self, *, sigmoid: Int16LUT, tanh: Int16LUT, tanh_cell: Int16LUT, **args: Any):
        super().__init__()
        missing = sorted(set(TENSOR_ARGS + SCALAR_ARGS) - set(args))
        unknown = sorted(set(args) - set(TENSOR_ARGS + SCALAR_ARGS))
        if missing or unknown:
            raise ValueError(f"IntegerMLSTMLayer: missing {missing}, unknown {unknown}")
        for name in TENSOR_ARGS:
            self.register_buffer(name, args[name])
        if sigmoid.input_exponent != GATE_EXPONENT or tanh.input_exponent != GATE_EXPONENT:
            raise ValueError("gate tables must take int16 at 2^-12")
        if tanh_cell.input_exponent != -int(args["cell_exponent"]):
            raise ValueError(f"cell tanh table must take 2^-{args['cell_exponent']}")
        self.sigmoid, self.tanh, self.tanh_cell = sigmoid, tanh, tanh_cell
        self.scalars = {name: args[name] for name in SCALAR_ARGS}
        self.cell_exponent, self.bits = int(args["cell_exponent"]), int(args["bits"])
        self.hidden_zero_point = int(args["hidden_zero_point"])
        self.output_zero_point = int(args["output_zero_point"])
        self.product_zero_point = int(args["product_zero_point"])
        self.cell_bounds, self.proj_bounds = args["cell_bounds"], args["proj_bounds"]
        self.input_size = self.weight_ih.shape[1]
        self.hidden_size = self.weight_hm.shape[1]
        self.output_size = self.weight_mh.shape[1]
        self.requantize_x = Requantizer(self.multiplier_x, self.shift_x)
        self.requantize_u = Requantizer(self.multiplier_u, self.shift_u)
        self.requantize_v = Requantizer(self.multiplier_v, self.shift_v)
        self.requantize_m = Requantizer(self.multiplier_m, self.shift_m)
        self.requantize_product = Requantizer(args["product_multiplier"], args["product_shift"])
        self.requantize_out = Requantizer(args["output_multiplier"], args["output_shift"])
        self.requantize_peephole = None
        if self.peephole is not None:
            self.requantize_peephole = Requantizer(self.peephole_multiplier, self.peephole_shift)
        self.requantize_r = None
        if self.weight_hr is not None:
            self.requantize_r = Requantizer(self.multiplier_r, self.shift_r)

    def entry(self) -> dict[str, Any]:
        """The constructor arguments minus the shared gate tables (the exported file's entry)."""
        return {
            **{name: getattr(self, name) for name in TENSOR_ARGS},
            **self.scalars,
        }

    def init_state(self, batch_size: int) -> IntState:
        """Zero state: h = z_h (real 0, exactly) [B, P], c = 0 [B, H]."""
        device = self.weight_hm.device
        h = torch.full(
            (batch_size, self.output_size), self.hidden_zero_point, dtype=torch.int8, device=device
        )
        return h, torch.zeros(batch_size, self.hidden_size, dtype=torch.int16, device=device)

    def project_inputs(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """int8 [T, B, I] -> (a_x int16 [T, B, 4H], u int16 [T, B, H]), one GEMM each."""
        T, B, _ = x.shape
        flat = x.reshape(T * B, self.input_size)
        acc_x = int_matmul(flat, self.weight_ih.t()) + self.bias_x
        acc_u = int_matmul(flat, self.weight_mx.t()) + self.bias_u
        a_x = clamp_to_int16(self.requantize_x(acc_x)).view(T, B, -1)
        u = clamp_to_int16(self.requantize_u(acc_u)).view(T, B, -1)
        return a_x, u

    def _peephole(self, index: int, c: Tensor) -> Tensor:
        """``sat16(MBQM(w c, M_pc))`` for peephole ``index`` (0: i, 1: f, 2: o), in int64."""
        product = self.peephole[index].to(torch.int32) * c.to(torch.int32)  # exact, < 2^30
        return _sat16(self.requantize_peephole(product, index=index))

    def step(self, a_x: Tensor, u: Tensor, h: Tensor, c: Tensor) -> IntState:
        """One step: a_x int16 [B, 4H], u int16 [B, H], h int8 [B, P], c int16 [B, H]."""
        v = _sat16(self.requantize_v(int_matmul(h, self.weight_mh.t()) + self.bias_v))
        product = u.to(torch.int64) * v
        m = saturate(self.requantize_product(product) + self.product_zero_point, self.bits)
        a_m = _sat16(self.requantize_m(int_matmul(m, self.weight_hm.t()) + self.bias_m))
        z = _sat16(a_m + a_x)
        z_i, z_f, z_g, z_o = z.chunk(4, dim=1)
        if self.peephole is not None:
            z_i = _sat16(z_i + self._peephole(0, c))
            z_f = _sat16(z_f + self._peephole(1, c))
        i = self.sigmoid(z_i.to(torch.int16))
        f = self.sigmoid(z_f.to(torch.int16))
        g = self.tanh(z_g.to(torch.int16))
        c = cell_update(f, c, i, g, self.cell_exponent)
        if self.cell_bounds is not None:
            c = c.clamp(*self.cell_bounds)
        if self.peephole is not None:
            z_o = _sat16(z_o + self._peephole(2, c))
        o = self.sigmoid(z_o.to(torch.int16))
        o_tanh_c = o.to(torch.int32) * self.tanh_cell(c).to(torch.int32)  # at 2^-30
        r = saturate(self.requantize_out(o_tanh_c) + self.output_zero_point, self.bits)
        if self.weight_hr is None:
            return r, c
        acc = int_matmul(r, self.weight_hr.t()) + self.bias_r
        h = saturate(self.requantize_r(acc) + self.hidden_zero_point, self.bits)
        if self.proj_bounds is not None:
            h = h.clamp(*self.proj_bounds)
        return h, c

    def forward_steps(self, x: Tensor, state: IntState) -> tuple[Tensor, IntState]:
        """The reference path: :meth:`project_inputs`, then :meth:`step` per time step."""
        h, c = state
        a_x, u = self.project_inputs(x)
        outputs = []
        for a_x_t, u_t in zip(a_x.unbind(0), u.unbind(0), strict=True):
            h, c = self.step(a_x_t, u_t, h, c)
            outputs.append(h)
        return torch.stack(outputs), (h, c)

    def kernel_usable(self, x: Tensor, h: Tensor, c: Tensor) -> bool:
        """As :meth:`IntegerLSTMLayer.kernel_usable`: this class's own step math, then the
        operands (:func:`.kernel_mlstm.usable`)."""
        cls = type(self)
        own = (
            cls.step is IntegerMLSTMLayer.step
            and cls.project_inputs is IntegerMLSTMLayer.project_inputs
            and cls._peephole is IntegerMLSTMLayer._peephole
        )
        return own and kernel_mlstm.usable(self, x, h, c)

    def kernel_forward(
        self, x: Tensor, h: Tensor, c: Tensor, kernel: object | None = None
    ) -> tuple[Tensor, IntState]:
        """This window in the C kernel (``kernel``: a loaded library, default the native one)."""
        return kernel_mlstm.layer_forward(self, x, h, c, kernel=kernel)
