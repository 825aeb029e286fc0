"""Single-layer recurrent runners that share one interface, and `build_recurrent_layer`.

Every runner is called as

    layer(x: [T, B, I], state: (s1 [1, B, n1], s2 [1, B, n2]) | None) -> (y [T, B, H], (s1, s2))

The state is always a pair of `[1, B, *]` tensors, so the training loop, checkpoints and
evaluation carry, detach and reset it without knowing the cell; what the pair holds is the
cell's: LSTM and mLSTM (h, c); GRU (h, an empty [1, B, 0]); QRNN (c, the carried x_{t-1}).
A layer class says its widths (n1, n2) with the classmethod
`state_sizes(input_size, hidden_size, **options)` (:func:`state_sizes` looks it up by cell).

Parameters are named as a single-layer torch module (`weight_ih_l0`, `weight_hh_l0`,
`bias_ih_l0`, `bias_hh_l0`), so one state dict loads into every runner of a cell. A layer class
is registered under its cell and runner names (`LAYERS[(cell, runner)]`, e.g. `("lstm",
"cudnn")`) and built as `cls(input_size, hidden_size, recurrent_dropout=..., **options)`; its
class attributes `recurrent_weight_names` and `input_weight_names` list the weights that weight
drop applies to for the targets `hidden` and `input` (`model.weight_drop_targets`).
Cells defined elsewhere in `src.models` (the mLSTM, GRU, QRNN) register themselves when their
module is imported; `PLUGIN_MODULES` lists those modules. Layers registered by higher packages (the
fake-quantized `(cell, "qat")` layers of `src.quant.qat`) are not built here:
`src.quant.qat.prepare` swaps them into a built float model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.models.cells import lstm_step
from src.models.dropout import WeightDrop, bernoulli_mask, check_probability, check_weight_drop_mode

State = tuple[Tensor, Tensor]  # each [1, B, *]: (h, c) for the LSTM; see the module doc

LAYERS: dict[tuple[str, str], type[nn.Module]] = {}

# Modules that register further cells/runners on import (kept out of this file's imports so
# recurrent.py does not depend on them).
PLUGIN_MODULES: tuple[str, ...] = ("src.models.mlstm", "src.models.gru", "src.models.qrnn")

#: `model.weight_drop_targets` entries: which matrices of a layer DropConnect masks.
WEIGHT_DROP_TARGETS = ("input", "hidden")


def register_layer(cell: str, runner: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: make a recurrent layer buildable as `cell=cell, runner=runner`."""

    def register(cls: type[nn.Module]) -> type[nn.Module]:
        if runner == "auto" or (cell, runner) in LAYERS:
            raise ValueError(f"layer {(cell, runner)!r} is reserved or already registered")
        LAYERS[(cell, runner)] = cls
        return cls

    return register


def register_runner(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Register an LSTM runner (shorthand for `register_layer("lstm", name)`)."""
    return register_layer("lstm", name)


def load_plugins() -> None:
    """Import the modules that register extra cells and runners (missing ones are skipped)."""
    import importlib

    for name in PLUGIN_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise


def refuse_recurrent_dropout(recurrent_dropout: float, cell: str) -> None:
    """A fused (cuDNN/ATen) runner runs every step inside one call and never exposes h_{t-1},
    so it cannot drop it: refuse ``recurrent_dropout > 0``, pointing to the loop runner."""
    if recurrent_dropout > 0:
        raise ValueError(
            f"the cudnn runner cannot apply recurrent_dropout: the fused {cell} kernel never "
            "exposes h_{t-1} between steps; use runner='loop' (or 'auto')"
        )


@register_runner("cudnn")
class CuDNNLSTMLayer(nn.LSTM):
    """A single-layer `nn.LSTM`: cuDNN on GPU, the fused ATen kernel on CPU.

    The fused kernels run all time steps inside one call and never expose h_{t-1}, so they cannot
    apply recurrent dropout to it (use the loop runner for that).
    """

    recurrent_weight_names = ("weight_hh_l0",)
    input_weight_names = ("weight_ih_l0",)

    def __init__(self, input_size: int, hidden_size: int, *, recurrent_dropout: float = 0.0):
        refuse_recurrent_dropout(recurrent_dropout, "LSTM")
        super().__init__(input_size, hidden_size, num_layers=1)

    @classmethod
    def state_sizes(cls, input_size: int, hidden_size: int, **options: object) -> tuple[int, int]:
        """Widths of the state pair (h, c)."""
        return hidden_size, hidden_size


@register_runner("loop")
class LoopLSTMLayer(nn.Module):
    """An LSTM layer as a Python loop over time steps, with a replaceable cell.

    The input projection W_ih x_t + b_ih is one GEMM for all steps; each step then calls
    `cell_fn(gates_x_t, h_{t-1}, c_{t-1}, *recurrent_weights())`. Variants change the cell by
    passing `cell_fn` or overriding `project_inputs` / `recurrent_weights`; the loop stays here.

    Recurrent dropout (Gal & Ghahramani 2016; Keras' `recurrent_dropout`): h_{t-1} * m with one
    (B, H) mask m per forward call, fixed over time, scaled 1 / (1 - p); training only. The state
    handed to the next call is the undropped h_T.
    """

    recurrent_weight_names = ("weight_hh_l0",)
    input_weight_names = ("weight_ih_l0",)

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        recurrent_dropout: float = 0.0,
        cell_fn: Callable[..., tuple[Tensor, Tensor]] = lstm_step,
    ) -> None:
        super().__init__()
        check_probability(recurrent_dropout, "recurrent_dropout")
        self.input_size, self.hidden_size = input_size, hidden_size
        self.recurrent_dropout, self.cell_fn = recurrent_dropout, cell_fn
        self.weight_ih_l0 = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.weight_hh_l0 = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        self.bias_ih_l0 = nn.Parameter(torch.empty(4 * hidden_size))
        self.bias_hh_l0 = nn.Parameter(torch.empty(4 * hidden_size))
        self.reset_parameters()

    @classmethod
    def state_sizes(cls, input_size: int, hidden_size: int, **options: object) -> tuple[int, int]:
        """Widths of the state pair (h, c)."""
        return hidden_size, hidden_size

    def reset_parameters(self) -> None:
        """nn.LSTM's init: every weight and bias U(-1/sqrt(H), 1/sqrt(H))."""
        bound = self.hidden_size**-0.5
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def project_inputs(self, x: Tensor) -> Tensor:
        """[T, B, I] -> [T, B, 4H]: W_ih x_t + b_ih for every step in one GEMM."""
        return F.linear(x, self.weight_ih_l0, self.bias_ih_l0)

    def recurrent_weights(self) -> tuple[Tensor | None, ...]:
        """The weights the cell needs, read once per call (WeightDrop sets `weight_hh_l0`)."""
        return self.weight_hh_l0, self.bias_hh_l0

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        if state is None:
            h = c = x.new_zeros(x.size(1), self.hidden_size)
        else:
            h, c = state[0][0], state[1][0]
        gates_x = self.project_inputs(x)
        weights = self.recurrent_weights()
        mask = None
        if self.training and self.recurrent_dropout > 0:
            mask = bernoulli_mask(h, h.shape, self.recurrent_dropout)
        outputs = []
        for gates_x_t in gates_x.unbind(0):
            h, c = self.cell_fn(gates_x_t, h if mask is None else h * mask, c, *weights)
            outputs.append(h)
        return torch.stack(outputs), (h.unsqueeze(0), c.unsqueeze(0))

    def extra_repr(self) -> str:
        cell = getattr(self.cell_fn, "__name__", repr(self.cell_fn))
        return (
            f"{self.input_size}, {self.hidden_size}, cell_fn={cell}, "
            f"recurrent_dropout={self.recurrent_dropout}"
        )


def resolve_runner(cell: str, runner: str, recurrent_dropout: float) -> str:
    """`auto` -> the fastest runner that supports the request.

    Recurrent dropout needs a per-step runner; otherwise the fused cuDNN/ATen kernel if the cell
    has one. A cell with neither (the QRNN's `scan`) runs its one registered float runner.
    """
    if runner != "auto":
        return runner
    if recurrent_dropout == 0 and (cell, "cudnn") in LAYERS:
        return "cudnn"
    if (cell, "loop") in LAYERS:
        return "loop"
    own = sorted(r for c, r in LAYERS if c == cell and r != "qat")
    return own[0] if own else "loop"


def state_sizes(cell: str, input_size: int, hidden_size: int, **options: object) -> tuple[int, int]:
    """Widths (n1, n2) of a `cell` layer's state pair, from its layer class's `state_sizes`.

    Every runner of a cell holds the same state, so any registered runner answers.
    """
    if cell != "lstm":
        load_plugins()
    classes = [cls for (c, _), cls in LAYERS.items() if c == cell]
    if not classes:
        raise ValueError(f"no layer for cell={cell!r}")
    sizes = getattr(classes[0], "state_sizes", None)  # a layer without it: the LSTM's (h, c)
    return sizes(input_size, hidden_size, **options) if sizes else (hidden_size, hidden_size)


def check_weight_drop_targets(targets: Sequence[str]) -> None:
    """Raise ValueError unless `targets` is a non-empty list of distinct WEIGHT_DROP_TARGETS."""
    ok = (
        not isinstance(targets, str)
        and isinstance(targets, Sequence)
        and len(targets) > 0
        and all(t in WEIGHT_DROP_TARGETS for t in targets)
        and len(set(targets)) == len(targets)
    )
    if not ok:
        raise ValueError(
            "weight_drop_targets must be a non-empty list of distinct entries of "
            f"{', '.join(WEIGHT_DROP_TARGETS)} (e.g. [hidden] or [input,hidden]), got {targets!r}"
        )


def weight_drop_names(cls: type[nn.Module], targets: Sequence[str]) -> list[str]:
    """The parameter names of layer class `cls` that weight drop masks for `targets`.

    `hidden` -> `cls.recurrent_weight_names`, `input` -> `cls.input_weight_names`, in that order,
    each name once (the QRNN's gate projection is both).
    """
    names: list[str] = []
    if "hidden" in targets:
        names += getattr(cls, "recurrent_weight_names", ("weight_hh_l0",))
    if "input" in targets:
        names += getattr(cls, "input_weight_names", ("weight_ih_l0",))
    return list(dict.fromkeys(names))


_COMPILED_CELLS: dict[Callable, Callable] = {}


def compiled_cell(cell_fn: Callable[..., tuple[Tensor, Tensor]]) -> Callable:
    """`torch.compile(cell_fn)`, one compiled function per cell per process.

    The loop runners call the cell once per time step; eager, its element-wise gate math is
    about ten kernel launches per step, which bounds a GPU's speed. Compiled, inductor fuses it
    into one or two kernels around the recurrent GEMM. Shapes are static (a batch size compiles
    once: train, eval and test batch sizes each once); inductor caches the generated code on
    disk (`TORCHINDUCTOR_CACHE_DIR`, set by `src.train` under `paths.cache_dir`), so a second
    run skips most of the compile. The fake-quantized cells compile too: their per-call qparams
    and clip bounds are 0-d tensors (`CallQuantizer`), so a training run traces a handful of
    graphs (first step / later steps, train / eval), not one per call. Tests and CPU runs keep
    the eager cell (the default).
    """
    if cell_fn not in _COMPILED_CELLS:
        _raise_recompile_limit(CELL_RECOMPILE_LIMIT)
        _COMPILED_CELLS[cell_fn] = torch.compile(cell_fn, dynamic=False, fullgraph=True)
    return _COMPILED_CELLS[cell_fn]


#: Graphs one compiled cell may hold. A run needs one per layer shape x batch size (train,
#: eval, test) x first / later step x train / eval (x quantization on / off for QAT with a
#: delay): a few dozen at most, past dynamo's default of 8.
CELL_RECOMPILE_LIMIT = 64


def _raise_recompile_limit(limit: int) -> None:
    import torch._dynamo.config as dynamo_config

    name = "recompile_limit" if hasattr(dynamo_config, "recompile_limit") else "cache_size_limit"
    setattr(dynamo_config, name, max(getattr(dynamo_config, name), limit))


def build_recurrent_layer(
    input_size: int,
    hidden_size: int,
    *,
    weight_drop: float,
    weight_drop_mode: str,
    recurrent_dropout: float,
    runner: str = "auto",
    cell: str = "lstm",
    compile_cell: bool = False,
    weight_drop_targets: Sequence[str] = ("hidden",),
    **options: object,
) -> nn.Module:
    """One recurrent layer, its recurrent weights wrapped in WeightDrop when weight_drop > 0.

    `weight_drop_targets` picks the matrices (:func:`weight_drop_names`), each with its own mask.
    `options` are the cell's own settings, passed to its constructor.
    `compile_cell` compiles the per-step cell of a loop or fake-quantized runner
    (:func:`compiled_cell`).
    """
    check_probability(weight_drop, "weight_drop")
    check_weight_drop_mode(weight_drop_mode)
    check_probability(recurrent_dropout, "recurrent_dropout")
    check_weight_drop_targets(weight_drop_targets)
    if cell != "lstm":
        load_plugins()
    runner = resolve_runner(cell, runner, recurrent_dropout)
    if (cell, runner) not in LAYERS:
        known = sorted({f"{c}/{r}" for c, r in LAYERS})
        raise ValueError(f"no layer for cell={cell!r} runner={runner!r}; known: {known}")
    cls = LAYERS[(cell, runner)]
    layer = cls(input_size, hidden_size, recurrent_dropout=recurrent_dropout, **options)
    if compile_cell and hasattr(layer, "cell_fn"):  # the fused cuDNN runner has nothing to
        layer.cell_fn = compiled_cell(layer.cell_fn)  # compile; loop and qat cells do
    if weight_drop > 0:
        names = weight_drop_names(cls, weight_drop_targets)
        layer = WeightDrop(layer, names, weight_drop, weight_drop_mode)
    return layer
