"""Timed training and evaluation steps: the model variants and the raw ``nn.LSTM`` reference.

Shapes and variants of the benchmark, the reference stack of the same shape without dropout, and
one step of each (forward, AR/TAR, backward, clip, optimizer step; or an evaluation step),
synchronized on the device so wall time measures the step.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.models.awd import AWDLSTM, AWDLSTMConfig
from src.quant.config import QuantConfig
from src.quant.qat import prepare
from src.training.loss import lm_loss

SHAPES: dict[str, dict[str, int]] = {
    # the CPU shape and the AWD-LSTM's PTB / WikiText-2 shapes (REFERENCE §1, §2)
    "tiny": {"vocab": 10000, "emb": 200, "hidden": 256, "layers": 2, "batch": 20, "bptt": 35},
    "ptb": {"vocab": 10000, "emb": 400, "hidden": 1150, "layers": 3, "batch": 20, "bptt": 70},
    "wt2": {"vocab": 33278, "emb": 400, "hidden": 1150, "layers": 3, "batch": 80, "bptt": 70},
}

# Variants: model options on top of the salesforce PTB dropouts (all on). A variant's ratio is
# against its ``reference`` raw stack (default ``raw_lstm``): the GRU against a raw ``nn.GRU``
# stack; the QRNN, which torch has no layer of, against the raw ``nn.LSTM`` stack as the others.
VARIANTS: dict[str, dict[str, Any]] = {
    "awd_lstm": {"model": {}, "quant": {}},
    "awd_lstm_qat": {"model": {}, "quant": {"enabled": True}},
    "mlstm": {"model": {"cell": "mlstm"}, "quant": {}},
    "mlstm_qat": {"model": {"cell": "mlstm"}, "quant": {"enabled": True}},
    "gru": {"model": {"cell": "gru"}, "quant": {}, "reference": "raw_gru"},
    "qrnn": {"model": {"cell": "qrnn"}, "quant": {}},
}

#: reference rows: the torch layer each raw stack is made of
REFERENCES: dict[str, type[nn.RNNBase]] = {"raw_lstm": nn.LSTM, "raw_gru": nn.GRU}


#: the suffix of a variant's float32 twin row under ``amp`` (the reference of its speed-up)
FP32_TWIN = "_fp32"
#: issue 23's target for ``<variant>/amp_train_speedup`` (QAT under bf16-mixed, on AMX CPUs)
AMP_TARGETS: dict[str, float] = {"awd_lstm_qat": 1.2, "mlstm_qat": 1.2}


def reference_of(name: str) -> str:
    """The raw row a benchmark row's ratio is taken against (``raw_lstm`` unless its variant
    names another; a float32 twin row, its variant's)."""
    return VARIANTS.get(name.removesuffix(FP32_TWIN), {}).get("reference", "raw_lstm")


#: ``amp`` option -> autocast dtype (variants and a second raw row run in it; the reference
#: raw row stays in ``dtype``).
AMP_DTYPES: dict[str | None, torch.dtype | None] = {
    None: None,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def shape_config(shape: dict[str, int], **model: Any) -> AWDLSTMConfig:
    """The AWD-LSTM config of a bench shape (salesforce dropouts), with ``model`` options."""
    return AWDLSTMConfig(
        vocab_size=shape["vocab"],
        emb_size=shape["emb"],
        hidden_size=shape["hidden"],
        num_layers=shape["layers"],
        **model,
    )


class RawLSTMStack(nn.Module):
    """The reference: embedding -> ``rnn`` (nn.LSTM, or nn.GRU) layers (AWD sizes) -> tied
    decoder; no dropout."""

    def __init__(
        self, vocab: int, emb: int, hidden: int, layers: int, rnn: type[nn.RNNBase] = nn.LSTM
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, emb)
        sizes = [
            (emb if i == 0 else hidden, emb if i == layers - 1 else hidden) for i in range(layers)
        ]
        self.rnns = nn.ModuleList(rnn(i, o) for i, o in sizes)
        self.decoder = nn.Linear(emb, vocab)
        self.decoder.weight = self.embedding.weight

    def forward(self, tokens: Tensor) -> Tensor:
        x = self.embedding(tokens)
        for rnn in self.rnns:
            x, _ = rnn(x)
        return self.decoder(x)


@dataclass
class Timed:
    train_tps: float
    eval_tps: float


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def tokens_per_second(
    step: Callable[[], None], tokens: int, steps: int, device: torch.device
) -> float:
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return tokens * steps / (time.perf_counter() - start)


def autocast(device: torch.device, amp: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Mixed precision for a step (``amp`` = bfloat16 / float16), or nothing."""
    if amp is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=amp)


def raw_steps(
    shape: dict[str, int],
    device: torch.device,
    dtype: torch.dtype,
    amp: torch.dtype | None = None,
    rnn: type[nn.RNNBase] = nn.LSTM,
):
    model = RawLSTMStack(shape["vocab"], shape["emb"], shape["hidden"], shape["layers"], rnn)
    model = model.to(device=device, dtype=dtype)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    x, y = random_batch(shape, shape["batch"], device)
    xe, ye = random_batch(shape, 10, device)

    def train() -> None:
        model.train()
        with autocast(device, amp):
            logits = model(x)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), y.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        opt.step()

    @torch.no_grad()
    def evaluate() -> None:
        model.eval()
        with autocast(device, amp):
            model(xe)

    return train, evaluate


def model_steps(
    shape: dict[str, int],
    variant: dict[str, Any],
    device: torch.device,
    dtype: torch.dtype,
    amp: torch.dtype | None = None,
    compile_cell: bool = False,
):
    cfg = shape_config(shape, compile_cell=compile_cell, **variant["model"])
    model = prepare(AWDLSTM(cfg), QuantConfig(**variant["quant"])).to(device=device, dtype=dtype)
    opt = torch.optim.SGD(model.parameters(), lr=1.0, weight_decay=1.2e-6)
    x, y = random_batch(shape, shape["batch"], device)
    xe, _ = random_batch(shape, 10, device)
    hidden = [None]

    def train() -> None:
        model.train()
        with autocast(device, amp):
            terms = lm_loss(model, x, y, hidden[0], alpha=2.0, beta=1.0)
        hidden[0] = [(h.detach(), c.detach()) for h, c in terms.out.hidden]
        opt.zero_grad(set_to_none=True)
        terms.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        opt.step()

    @torch.no_grad()
    def evaluate() -> None:
        model.eval()
        with autocast(device, amp):
            out = model(xe)
            model.decoder(out.output)

    return train, evaluate


def random_batch(shape: dict[str, int], batch: int, device: torch.device) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(shape["vocab"], (shape["bptt"], batch), generator=g)
    y = torch.randint(shape["vocab"], (shape["bptt"], batch), generator=g)
    return x.to(device), y.to(device)
