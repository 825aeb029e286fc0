"""Small trained QAT models for the layer and engine tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from src.models.awd import AWDLSTM, AWDLSTMConfig
from src.quant.config import QuantConfig
from src.quant.qat import prepare

V, E, H = 40, 12, 20


def toy_tokens(length: int, batch: int, seed: int) -> torch.Tensor:
    """Token windows with some structure (a noisy counter), so the model learns something."""
    g = torch.Generator().manual_seed(seed)
    shape = (length, batch)
    start = torch.randint(0, V, (1, batch), generator=g)
    steps = torch.arange(length).unsqueeze(1)
    noise = (torch.rand(shape, generator=g) < 0.2) * torch.randint(0, V, shape, generator=g)
    return (start + steps + noise) % V


def trained_qat_model(
    seed: int = 0,
    steps: int = 40,
    num_layers: int = 2,
    weight_bits: int = 8,
    **config: object,
) -> AWDLSTM:
    """An AWDLSTM trained for ``steps`` SGD steps with fake quantization on, then in eval mode.

    One intra-op thread: these tensors are tiny, and on a busy 2-core machine thread hand-offs
    make each op hundreds of times slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(seed, steps, num_layers, weight_bits, **config)
    finally:
        torch.set_num_threads(threads)


def _train(seed: int, steps: int, num_layers: int, weight_bits: int, **config: object) -> AWDLSTM:
    torch.manual_seed(seed)
    quant = QuantConfig(enabled=True, weight_bits=weight_bits, ema_momentum=0.1)
    cfg = AWDLSTMConfig(vocab_size=V, emb_size=E, hidden_size=H, num_layers=num_layers, **config)
    model = prepare(AWDLSTM(cfg), quant)
    opt = torch.optim.SGD(model.parameters(), lr=2.0)
    hidden = None
    for step in range(steps):
        tokens = toy_tokens(11, 6, seed=1000 * seed + step)
        out = model(tokens[:-1], hidden)
        hidden = [(h.detach(), c.detach()) for h, c in out.hidden]
        logits = model.decoder(out.output)
        loss = F.cross_entropy(logits.reshape(-1, V), tokens[1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        opt.step()
    return model.eval()
