"""Sample text from a trained model:
``python -m src.generate ckpt_path=PATH [tokens=N] [temperature=T] [seed=S] [prompt="..."]``.

Starts from the end of a line (``<eos>``) or from ``prompt``, then draws ``tokens`` tokens one
at a time from softmax(logits / temperature) with a generator seeded by ``seed``: the same
checkpoint, seed and options print the same text. Word-level text is joined by spaces with
``<eos>`` as a newline; character-level text is joined without spaces (``_`` is the space of
the pre-spaced PTB-char files).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import hydra
import torch
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig

from src.checks import check_config, one_line_config_errors
from src.data.corpus import EOS, UNK
from src.models.awd import AWDLSTM
from src.training.checkpoint import load_module

log = logging.getLogger(__name__)


@dataclass
class GenerateConfig:
    task_name: str = "generate"
    ckpt_path: str = MISSING
    tokens: int = 100  # how many tokens to sample
    temperature: float = 1.0  # < 1 sharper, > 1 flatter; 0 takes the most likely token
    seed: int = 141
    prompt: str | None = None  # text to continue (tokenized like the training corpus)


ConfigStore.instance().store(name="generate_schema", node=GenerateConfig)


def prompt_ids(prompt: str | None, itos: list[str], char_level: bool, spaced: bool) -> list[int]:
    """Token ids to feed before sampling: the prompt's, else ``<eos>`` (a line start)."""
    stoi = {tok: i for i, tok in enumerate(itos)}
    if not prompt:
        return [stoi.get(EOS, 0)]
    # Character level: one token per character (PTB-char writes its spaces as "_").
    tokens = ["_" if c == " " and spaced else c for c in prompt] if char_level else prompt.split()
    unknown = [t for t in tokens if t not in stoi]
    if unknown and UNK not in stoi:
        raise ValueError(f"prompt tokens not in the vocabulary: {unknown[:10]}")
    return [stoi.get(t, stoi.get(UNK, 0)) for t in tokens]


@torch.no_grad()
def sample(model: AWDLSTM, start: list[int], n: int, temperature: float, seed: int) -> list[int]:
    """``n`` token ids drawn after feeding ``start`` (eval mode, one generator, so reproducible)."""
    if n < 0:
        raise ValueError(f"tokens must be >= 0, got {n}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    model.eval()
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    inputs = torch.tensor(start, dtype=torch.long, device=device).unsqueeze(1)  # [T, 1]
    hidden, out_ids = None, []
    for _ in range(n):
        out = model(inputs, hidden)
        hidden = out.hidden
        logits = model.softmax.logits(model.decoder, out.output[-1, 0]).float()
        if temperature == 0:
            next_id = int(logits.argmax())
        else:
            probs = torch.softmax(logits / temperature, dim=-1)
            next_id = int(torch.multinomial(probs, 1, generator=gen))
        out_ids.append(next_id)
        inputs = torch.tensor([[next_id]], device=device)
    return out_ids


def detokenize(tokens: list[str], char_level: bool, spaced: bool) -> str:
    """Word level: spaces between words, ``<eos>`` -> newline. Character level: no separator,
    ``<eos>`` -> newline, and ``_`` -> space for the pre-spaced (word-tokenized) PTB-char."""
    if char_level:
        return "".join("\n" if t == EOS else (" " if t == "_" and spaced else t) for t in tokens)
    text = " ".join("\n" if t == EOS else t for t in tokens)
    return text.replace(" \n ", "\n").replace(" \n", "\n").replace("\n ", "\n")


def generate(cfg: DictConfig) -> str:
    """Load ``cfg.ckpt_path`` and return the prompt (if any) followed by the sampled text."""
    module, _ = load_module(Path(cfg.ckpt_path))
    if module.vocab is None:
        raise ValueError(f"{cfg.ckpt_path} stores no vocabulary; it was not written by src.train")
    data = module.hparams.data
    char_level = bool(data.get("char_level", False))
    spaced = data.get("tokenizer", "word") == "word"  # PTB-char: symbols separated by spaces
    start = prompt_ids(cfg.prompt, module.vocab, char_level, spaced)
    ids = sample(module.model, start, int(cfg.tokens), float(cfg.temperature), int(cfg.seed))
    text = detokenize([module.vocab[i] for i in ids], char_level, spaced)
    if cfg.prompt:
        sep = "" if char_level or text.startswith("\n") else " "
        text = f"{cfg.prompt}{sep}{text}"
    return text


@hydra.main(version_base="1.3", config_path="../conf", config_name="generate")
def main(cfg: DictConfig) -> None:
    check_config(cfg)  # bad values: one line each, exit 2, before the checkpoint is read
    print(generate(cfg), flush=True)


if __name__ == "__main__":
    with one_line_config_errors():  # Hydra's composition errors too
        main()
