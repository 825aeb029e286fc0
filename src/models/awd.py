"""AWD-LSTM language model (Merity, Keskar & Socher 2017, "Regularizing and Optimizing LSTM
Language Models"): embedding -> dropouts -> stack of single-layer LSTMs -> tied decoder. The
layers may be another registered cell (`cell`: mLSTM, GRU, QRNN; `src.models.recurrent`).

The model returns the last layer's dropped output; `model.decoder(output)` gives the logits and
`model.softmax` (a `src.models.softmax` head: full by default, chunked or split as the training
side builds it from `loss.softmax`) turns the output into the loss or normalized log-probabilities.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import torch.nn.functional as F
from torch import Tensor, nn

from src.models.bidirectional import BidirectionalLayer
from src.models.dropout import (
    LockedDropout,
    check_probability,
    check_weight_drop_mode,
    embedding_dropout,
)
from src.models.mlstm import MLSTMOptions
from src.models.qrnn import QRNNOptions
from src.models.recurrent import (
    State,
    build_recurrent_layer,
    check_weight_drop_targets,
    state_sizes,
)
from src.models.softmax import SoftmaxHead


@dataclass
class AWDLSTMConfig:
    """Defaults are salesforce's PTB settings; salesforce flag names in brackets."""

    vocab_size: int = 10000  # [ntokens]
    emb_size: int = 400  # [emsize]
    hidden_size: int = 1150  # [nhid]; the last layer outputs emb_size when tied
    num_layers: int = 3  # [nlayers]
    dropout_emb: float = 0.1  # [dropoute] drop word types of the embedding matrix
    dropout_input: float = 0.4  # [dropouti] locked dropout on the embedding output
    dropout_hidden: float = 0.25  # [dropouth] locked dropout between layers
    dropout_output: float = 0.4  # [dropout] locked dropout on the last layer's output
    weight_drop: float = 0.5  # [wdrop] DropConnect on each W_hh, one mask per forward
    weight_drop_mode: str = "elementwise"  # elementwise | row (4H, 1) | column (1, H)
    # which matrices weight drop masks, each its own mask: [hidden] (salesforce, fastai) or
    # [input, hidden] (also W_ih: the TensorFlow cell's whole-kernel drop); recurrent.py
    weight_drop_targets: list[str] = field(default_factory=lambda: ["hidden"])
    recurrent_dropout: float = 0.0  # Gal & Ghahramani dropout on h_{t-1} (loop runner)
    tie_weights: bool = True  # [tied] decoder weight is the embedding matrix
    cell: str = "lstm"  # lstm | mlstm (Krause et al. 2016) | gru | qrnn; see recurrent.LAYERS
    runner: str = "auto"  # auto | cudnn | loop (see recurrent.resolve_runner); quant=qat: auto
    compile_cell: bool = False  # torch.compile the per-step cell (loop and qat runners; GPU)
    init_range: float = 0.1  # embedding and decoder weights U(-r, r)
    mlstm: MLSTMOptions = field(default_factory=MLSTMOptions)  # cell options when cell: mlstm
    qrnn: QRNNOptions = field(default_factory=QRNNOptions)  # cell options when cell: qrnn
    # each layer runs both directions, half the units each (classifier encoders only: the LM
    # objective refuses it); src/models/bidirectional.py
    bidirectional: bool = False

    def __post_init__(self) -> None:
        for name in ("vocab_size", "emb_size", "hidden_size", "num_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in (
            "dropout_emb",
            "dropout_input",
            "dropout_hidden",
            "dropout_output",
            "weight_drop",
            "recurrent_dropout",
        ):
            check_probability(getattr(self, name), name)
        check_weight_drop_mode(self.weight_drop_mode)
        if not isinstance(self.weight_drop_targets, str):  # a ListConfig or tuple: a list
            self.weight_drop_targets = list(self.weight_drop_targets)
        check_weight_drop_targets(self.weight_drop_targets)
        if not self.init_range > 0:
            raise ValueError(f"init_range must be positive, got {self.init_range!r}")
        if not isinstance(self.mlstm, MLSTMOptions):  # a plain dict: hparams, checkpoints
            self.mlstm = MLSTMOptions(**self.mlstm)
        if not isinstance(self.qrnn, QRNNOptions):
            self.qrnn = QRNNOptions(**self.qrnn)
        if self.qrnn != QRNNOptions() and self.cell != "qrnn":
            raise ValueError("qrnn options (window, zoneout) need cell=qrnn (or model=qrnn)")
        if self.mlstm.proj_size is not None and self.cell != "mlstm":
            raise ValueError(
                "mlstm.proj_size needs cell=mlstm (the LSTM runners have no projection)"
            )
        if self.bidirectional and self.cell != "lstm":
            raise ValueError(
                f"bidirectional=true is built for cell=lstm only, not cell={self.cell!r}"
            )
        if self.bidirectional:
            for name in ("hidden_size", "emb_size") if self.tie_weights else ("hidden_size",):
                if getattr(self, name) % 2:
                    raise ValueError(
                        f"{name} must be even with bidirectional=true (half the units per "
                        f"direction), got {getattr(self, name)}"
                    )


class LMOutput(NamedTuple):
    output: Tensor  # [T, B, E] last layer's output after `dropout_output`; decoder input
    hidden: list[State]  # new state pair of every layer (LSTM: (h, c) [1, B, H_l])
    raw_outputs: list[Tensor]  # every layer's output before its dropout (raw_outputs[-1]: TAR)
    dropped_outputs: list[Tensor]  # every layer's output after its dropout (dropped[-1]: AR)


class AWDLSTM(nn.Module):
    """AWD-LSTM: embedding dropout, locked dropouts, weight-dropped LSTMs, tied decoder."""

    def __init__(self, config: AWDLSTMConfig) -> None:
        """Float layers only; quantization-aware training transforms the built model
        (`src.quant.qat.prepare`)."""
        super().__init__()
        self.config = c = config
        sizes = self.layer_sizes()
        if c.tie_weights and sizes[-1][1] != c.emb_size:
            raise ValueError(
                f"tie_weights needs the last layer to output emb_size={c.emb_size} (the decoder "
                f"weight is the embedding matrix), but it outputs {sizes[-1][1]}"
            )
        self.embedding = nn.Embedding(c.vocab_size, c.emb_size)
        self.input_dropout = LockedDropout(c.dropout_input)
        self.layers = nn.ModuleList(
            self.build_layer(input_size, cell_size, output_size, index)
            for index, (input_size, cell_size, output_size) in enumerate(self.layer_specs())
        )
        self.hidden_dropout = LockedDropout(c.dropout_hidden)
        self.output_dropout = LockedDropout(c.dropout_output)
        self.decoder = nn.Linear(sizes[-1][1], c.vocab_size)
        if c.tie_weights:
            # Inan et al. 2017; Press & Wolf 2017: one Parameter for both
            self.decoder.weight = self.embedding.weight
        # how the decoder rows are normalized; no parameters unless split (model_factory swaps it)
        self.softmax: SoftmaxHead = SoftmaxHead()
        self.init_weights()

    def layer_specs(self) -> list[tuple[int, int, int]]:
        """(input, cell, output) size of every layer.

        Without a projection the cell size is the output size and the last layer outputs
        emb_size when tied (salesforce). With `mlstm.proj_size` P every cell keeps hidden_size
        H and projects to P, the last one to emb_size when tied: the projection is what lets a
        wide last layer share the embedding matrix.
        """
        c = self.config
        proj = c.mlstm.proj_size if c.cell == "mlstm" else None
        specs = []
        for layer in range(c.num_layers):
            last = layer == c.num_layers - 1
            input_size = c.emb_size if layer == 0 else specs[-1][2]
            if proj is None:
                cell = c.emb_size if last and c.tie_weights else c.hidden_size
                specs.append((input_size, cell, cell))
            else:
                specs.append(
                    (input_size, c.hidden_size, c.emb_size if last and c.tie_weights else proj)
                )
        return specs

    def build_layer(
        self, input_size: int, cell_size: int, output_size: int, index: int = 0
    ) -> nn.Module:
        """Layer `index` of the stack; with `bidirectional` two runners of cell_size // 2 units
        (src/models/bidirectional.py)."""
        c = self.config

        def build(n_in: int, n_cell: int) -> nn.Module:
            return build_recurrent_layer(
                n_in,
                n_cell,
                weight_drop=c.weight_drop,
                weight_drop_mode=c.weight_drop_mode,
                recurrent_dropout=c.recurrent_dropout,
                runner=c.runner,
                compile_cell=c.compile_cell,
                cell=c.cell,
                weight_drop_targets=c.weight_drop_targets,
                **self.cell_options(cell_size, output_size, index),
            )

        if c.bidirectional:
            return BidirectionalLayer(input_size, cell_size, build)
        return build(input_size, cell_size)

    def layer_sizes(self) -> list[tuple[int, int]]:
        """(input, output) size of every layer; the last outputs emb_size when tied."""
        return [(i, o) for i, _, o in self.layer_specs()]

    def cell_options(self, cell_size: int, output_size: int, index: int = 0) -> dict:
        """Layer `index`'s cell constructor options (mLSTM: MLSTMOptions with this layer's
        projection; QRNN: its window, the first layer's wider, and zoneout)."""
        if self.config.cell == "qrnn":
            return self.config.qrnn.layer_options(index)
        if self.config.cell != "mlstm":
            return {}
        options = asdict(self.config.mlstm)
        options["proj_size"] = output_size if output_size != cell_size else None
        return options

    def init_weights(self) -> None:
        """Embedding (and untied decoder) U(-r, r), decoder bias 0; LSTMs keep nn.LSTM's init."""
        r = self.config.init_range
        nn.init.uniform_(self.embedding.weight, -r, r)
        if not self.config.tie_weights:
            nn.init.uniform_(self.decoder.weight, -r, r)
        nn.init.zeros_(self.decoder.bias)

    def init_hidden(self, batch_size: int) -> list[State]:
        """Every layer's zero state pair on the model's device; the widths are the layer's
        (`state_sizes`: LSTM (h [1, B, out_l], c [1, B, cell_l]), GRU (h, [1, B, 0]), QRNN
        (c, the carried x_{t-1}))."""
        w, c = self.embedding.weight, self.config
        hidden = []
        for index, (input_size, cell, out) in enumerate(self.layer_specs()):
            options = self.cell_options(cell, out, index)
            n1, n2 = state_sizes(c.cell, input_size, cell, **options)
            hidden.append((w.new_zeros(1, batch_size, n1), w.new_zeros(1, batch_size, n2)))
        return hidden

    def num_parameters(self) -> int:
        """Number of parameters, the tied embedding/decoder matrix counted once."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, tokens: Tensor, hidden: list[State] | None = None) -> LMOutput:
        """tokens [T, B] -> LMOutput; `hidden` None starts every layer from zeros."""
        c = self.config
        weight = embedding_dropout(self.embedding.weight, c.dropout_emb, self.training)
        x = self.input_dropout(F.embedding(tokens, weight))
        if hidden is None:
            hidden = [None] * len(self.layers)
        new_hidden, raw_outputs, dropped_outputs = [], [], []
        for i, (layer, state) in enumerate(zip(self.layers, hidden, strict=True)):
            x, state = layer(x, state)
            new_hidden.append(state)
            raw_outputs.append(x)
            x = self.hidden_dropout(x) if i < len(self.layers) - 1 else self.output_dropout(x)
            dropped_outputs.append(x)
        return LMOutput(x, new_hidden, raw_outputs, dropped_outputs)
