"""Speed benchmark: ``python -m src.bench [shape=tiny|ptb|wt2] [device=cpu|cuda] [variants=[...]]``.

Times one full training step (forward, AR/TAR, backward, clip, optimizer step) and one evaluation
step of each model variant beside a raw ``torch.nn.LSTM`` stack of the same shapes without dropout
(the reference), in the same process, after warm-up. Rounds interleave the variants and the median
is reported, because shared machines are noisy. Prints a table, then one JSON object of every
figure as the last line.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import hydra
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from src.models.awd import AWDLSTM, AWDLSTMConfig
from src.quant.config import QuantConfig
from src.training.loss import lm_loss

SHAPES: dict[str, dict[str, int]] = {
    # the CPU shape and the AWD-LSTM's PTB / WikiText-2 shapes (REFERENCE §1, §2)
    "tiny": {"vocab": 10000, "emb": 200, "hidden": 256, "layers": 2, "batch": 20, "bptt": 35},
    "ptb": {"vocab": 10000, "emb": 400, "hidden": 1150, "layers": 3, "batch": 20, "bptt": 70},
    "wt2": {"vocab": 33278, "emb": 400, "hidden": 1150, "layers": 3, "batch": 80, "bptt": 70},
}

# Variants: model options on top of the salesforce PTB dropouts (all on).
VARIANTS: dict[str, dict[str, Any]] = {
    "awd_lstm": {"model": {}, "quant": {}},
    "awd_lstm_qat": {"model": {}, "quant": {"enabled": True}},
    "mlstm": {"model": {"cell": "mlstm"}, "quant": {}},
    "mlstm_qat": {"model": {"cell": "mlstm"}, "quant": {"enabled": True}},
}


class RawLSTMStack(nn.Module):
    """The reference: embedding -> nn.LSTM layers (AWD sizes) -> tied decoder; no dropout."""

    def __init__(self, vocab: int, emb: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, emb)
        sizes = [
            (emb if i == 0 else hidden, emb if i == layers - 1 else hidden) for i in range(layers)
        ]
        self.rnns = nn.ModuleList(nn.LSTM(i, o) for i, o in sizes)
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


def raw_steps(shape: dict[str, int], device: torch.device, dtype: torch.dtype):
    model = RawLSTMStack(shape["vocab"], shape["emb"], shape["hidden"], shape["layers"])
    model = model.to(device=device, dtype=dtype)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    x, y = random_batch(shape, shape["batch"], device)
    xe, ye = random_batch(shape, 10, device)

    def train() -> None:
        model.train()
        logits = model(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        opt.step()

    @torch.no_grad()
    def evaluate() -> None:
        model.eval()
        model(xe)

    return train, evaluate


def model_steps(
    shape: dict[str, int], variant: dict[str, Any], device: torch.device, dtype: torch.dtype
):
    cfg = AWDLSTMConfig(
        vocab_size=shape["vocab"],
        emb_size=shape["emb"],
        hidden_size=shape["hidden"],
        num_layers=shape["layers"],
        **variant["model"],
    )
    model = AWDLSTM(cfg, quant=QuantConfig(**variant["quant"])).to(device=device, dtype=dtype)
    opt = torch.optim.SGD(model.parameters(), lr=1.0, weight_decay=1.2e-6)
    x, y = random_batch(shape, shape["batch"], device)
    xe, _ = random_batch(shape, 10, device)
    hidden = [None]

    def train() -> None:
        model.train()
        terms = lm_loss(model, x, y, hidden[0], alpha=2.0, beta=1.0)
        hidden[0] = [(h.detach(), c.detach()) for h, c in terms.out.hidden]
        opt.zero_grad(set_to_none=True)
        terms.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        opt.step()

    @torch.no_grad()
    def evaluate() -> None:
        model.eval()
        out = model(xe)
        model.decoder(out.output)

    return train, evaluate


def random_batch(shape: dict[str, int], batch: int, device: torch.device) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(shape["vocab"], (shape["bptt"], batch), generator=g)
    y = torch.randint(shape["vocab"], (shape["bptt"], batch), generator=g)
    return x.to(device), y.to(device)


def run(cfg: DictConfig) -> dict[str, Any]:
    torch.manual_seed(cfg.seed)
    device = torch.device(cfg.device)
    dtype = {"float32": torch.float32, "float64": torch.float64}[cfg.dtype]
    shape = {**SHAPES[cfg.shape], **OmegaConf.to_container(cfg.shape_overrides)}
    builders: dict[str, Any] = {"raw_lstm": raw_steps(shape, device, dtype)}
    skipped: dict[str, str] = {}
    for name in cfg.variants:
        if name not in VARIANTS:
            raise ValueError(f"unknown variant {name!r}; choose from {sorted(VARIANTS)}")
        try:
            builders[name] = model_steps(shape, VARIANTS[name], device, dtype)
        except (ValueError, NotImplementedError) as exc:  # a variant not available in this build
            skipped[name] = str(exc)
    train_tokens = shape["batch"] * shape["bptt"]
    eval_tokens = 10 * shape["bptt"]
    samples: dict[str, dict[str, list[float]]] = {n: {"train": [], "eval": []} for n in builders}
    for train, evaluate in builders.values():  # warm-up (allocator, lazy init, observers)
        for _ in range(cfg.warmup):
            train()
            evaluate()
    for _ in range(cfg.rounds):
        for name, (train, evaluate) in builders.items():
            samples[name]["train"].append(tokens_per_second(train, train_tokens, cfg.steps, device))
            samples[name]["eval"].append(
                tokens_per_second(evaluate, eval_tokens, cfg.steps, device)
            )
    timed = {
        n: Timed(statistics.median(s["train"]), statistics.median(s["eval"]))
        for n, s in samples.items()
    }
    ref = timed["raw_lstm"]
    figures: dict[str, Any] = {
        "device": describe(device),
        "shape": cfg.shape,
        **{"shape_" + k: v for k, v in shape.items()},
        "dtype": cfg.dtype,
        "threads": torch.get_num_threads(),
        "skipped": skipped,
    }
    for name, t in timed.items():
        figures[f"{name}/train_tokens_per_s"] = round(t.train_tps, 1)
        figures[f"{name}/eval_tokens_per_s"] = round(t.eval_tps, 1)
        figures[f"{name}/train_ratio"] = round(t.train_tps / ref.train_tps, 3)
        figures[f"{name}/eval_ratio"] = round(t.eval_tps / ref.eval_tps, 3)
    print_table(timed, ref, figures)
    return figures


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def print_table(timed: dict[str, Timed], ref: Timed, figures: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"tokens/s on {figures['device']}, shape {figures['shape']} "
        f"({figures['dtype']}); ratio = variant / raw nn.LSTM stack"
    )
    for col in ("variant", "train tok/s", "train ratio", "eval tok/s", "eval ratio"):
        table.add_column(col, justify="right" if col != "variant" else "left")
    for name, t in timed.items():
        table.add_row(
            name,
            f"{t.train_tps:,.0f}",
            f"{t.train_tps / ref.train_tps:.2f}x",
            f"{t.eval_tps:,.0f}",
            f"{t.eval_tps / ref.eval_tps:.2f}x",
        )
    Console().print(table)
    for name, why in figures["skipped"].items():
        print(f"skipped {name}: {why}")


@hydra.main(version_base="1.3", config_path="../conf", config_name="bench")
def main(cfg: DictConfig) -> None:
    figures = run(cfg)
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
