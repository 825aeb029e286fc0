"""Windows too large for this machine, refused before any allocation, with the estimate.

A window of B streams x T steps is N = B*T tokens (T = min(bptt, tokens per stream - 1)).
A lower bound of what one step allocates, in float32 (4 bytes; 2 under 16-bit precision):

    training:   4 N (2 W + 4 sum_l H_l + E)   (logits and their gradient; per layer the
                                               gates and state of every step, 4 H_l at least;
                                               the embeddings)
    evaluation: 4 N W                          (the logits; nothing is kept for a backward)

W is the logit width held at once: V for ``loss.softmax=full``, ``chunk_size * V / N`` for
``chunked`` and 0 for ``split`` (its head is sized from the corpus). When the bound exceeds the
memory available (the GPU's free memory when the run uses CUDA, else MemAvailable of
/proc/meminfo) the run stops with one line naming the key to lower: it would fail anyway.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError
from .hydra_errors import exit_with, raise_errors

if TYPE_CHECKING:
    from src.data.datamodule import LMDataModule

GB = 1e9


@dataclass(frozen=True)
class Window:
    """One split's window: the config keys of its batch and length, and their values."""

    what: str  # "training" or "evaluation"
    batch_key: str
    batch: int
    bptt_key: str | None  # None: not a key of this entry point (src.eval reads the checkpoint's)
    bptt: int
    tokens: int  # tokens in the split


def available_bytes(cuda: bool) -> tuple[int, str]:
    """(bytes, where): the GPU's free memory, or the host's available memory."""
    if cuda:
        import torch

        if torch.cuda.is_available():
            return int(torch.cuda.mem_get_info()[0]), "free on the GPU"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "available on this machine"
    except OSError:
        pass
    pages = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return int(pages), "available on this machine"


def step_bytes(
    window: Window, steps: int, vocab: int, model: dict[str, Any], loss: dict, size: int = 4
) -> int:
    """The lower bound above for ``window`` cut to ``steps`` steps (``size``: bytes per value,
    2 under 16-bit mixed precision)."""
    n = window.batch * steps
    softmax = loss.get("softmax", "full")
    width = {"full": vocab, "chunked": vocab * min(n, int(loss.get("chunk_size", 128))) / n}
    logits = width.get(softmax, 0.0)
    if window.what != "training":
        return int(size * n * logits)
    layers = int(model.get("num_layers", 1))
    hidden, emb = int(model.get("hidden_size", 0)), int(model.get("emb_size", 0))
    widths = (layers - 1) * hidden + emb
    return int(size * n * (2 * logits + 4 * widths + emb))


def window_error(
    window: Window,
    vocab: int,
    model: dict[str, Any],
    loss: dict,
    world: int,
    cuda: bool,
    size: int = 4,
) -> ConfigError | None:
    """The one line for a window that cannot be cut or cannot fit, else None."""
    per_stream = window.tokens // window.batch
    if per_stream < 2:
        most = window.tokens // 2
        message = (
            f"is too large: the split has {window.tokens:,} tokens, fewer than 2 per stream; "
            f"use at most {most:,}"
        )
        return ConfigError(window.batch_key, window.batch, message=message)
    steps = min(window.bptt, per_stream - 1)
    per_rank = Window(window.what, window.batch_key, max(1, window.batch // world), None, 0, 0)
    need = step_bytes(per_rank, steps, vocab, model, loss, size)
    have, where = available_bytes(cuda)
    if need <= have:
        return None
    by_bptt = window.bptt_key is not None and steps >= per_rank.batch
    key, value = (window.bptt_key, window.bptt) if by_bptt else (window.batch_key, window.batch)
    others = [k for k in (window.bptt_key, window.batch_key) if k and k != key]
    message = (
        f"one {window.what} window of {per_rank.batch:,} streams x {steps:,} steps "
        f"(vocabulary {vocab:,}) needs at least {need / GB:.1f} GB, more than the "
        f"{have / GB:.1f} GB {where}; lower {key}" + (f" (or {others[0]})" if others else "")
    )
    return ConfigError(str(key), value, message=message)


def train_windows(data: dict[str, Any], lengths: dict[str, int]) -> list[Window]:
    """The training, validation and test windows of a ``src.train`` config."""
    keys = {
        "train": ("training", "data.batch_size"),
        "valid": ("evaluation", "data.eval_batch_size"),
        "test": ("evaluation", "data.test_batch_size"),
    }
    bptt = int(data["bptt"])
    return [
        Window(what, key, int(data[key[5:]]), "data.bptt", bptt, lengths[split])
        for split, (what, key) in keys.items()
    ]


def world_size(trainer: dict[str, Any]) -> int:
    """Processes a run is split over (devices x nodes); ``auto``/-1 count the visible GPUs."""
    devices = trainer.get("devices", 1)
    if isinstance(devices, list):
        count = len(devices)
    elif isinstance(devices, str) and devices.strip() not in ("auto", "-1"):
        parts = [p for p in devices.split(",") if p.strip()]
        count = len(parts) if "," in devices else int(devices)
    elif isinstance(devices, int) and devices > 0:
        count = devices
    else:
        import torch

        count = max(1, torch.cuda.device_count())
    return max(1, count) * max(1, int(trainer.get("num_nodes", 1) or 1))


def uses_cuda(accelerator: Any) -> bool:
    return accelerator in ("gpu", "cuda", "auto")


def size_errors(
    windows: list[Window],
    vocab: int,
    model: dict,
    loss: dict,
    world: int,
    cuda: bool,
    size: int = 4,
) -> list[ConfigError]:
    """The first window that cannot be cut or cannot fit (one line), else nothing."""
    for window in windows:
        error = window_error(window, vocab, model, loss, world, cuda, size)
        if error is not None:
            return [error]
    return []


def check_train_sizes(cfg: DictConfig, lengths: dict[str, int], vocab: int) -> None:
    """For ``src.train`` once the corpus is read (``lengths``: tokens per split): a window that
    cannot be cut or cannot fit raises its :class:`ConfigError` (the CLI: one line, exit 2)."""
    data = _plain(cfg)
    if not isinstance(data.get("data"), dict) or "bptt" not in data["data"]:
        return
    trainer = data.get("trainer") or {}
    windows = train_windows(data["data"], lengths)
    world, cuda = world_size(trainer), uses_cuda(trainer.get("accelerator"))
    model, loss = data.get("model") or {}, data.get("loss") or {}
    size = 2 if "16" in str(trainer.get("precision")) else 4  # 16-mixed, bf16-mixed, bf16-true
    # raised, not exited: src.train's CLI turns it into the line; train(cfg) raises
    raise_errors(size_errors(windows, vocab, model, loss, world, cuda, size))


def check_eval_data(datamodule: LMDataModule, split: str, accelerator: Any) -> None:
    """For ``src.eval``: the corpus folder under ``paths.data_dir``, then (the corpus read) the
    ``split`` window, set by ``batch_size``; a problem ends the run with one line, exit 2.
    The estimate is the window's full logits, which the int8 engine, ONNX and the cache
    pointer compute (a chunked or split model's float evaluation holds fewer)."""
    from .machine import corpus_errors

    values = {"corpus": datamodule.corpus, "data_dir": datamodule.data_dir}
    if getattr(datamodule, "path", None) is not None:  # a CSV folder's texts (task=lm data=csv):
        values["format"] = "csv"  # its data module reads and checks the files
    exit_with(corpus_errors({**values, "download": datamodule.download}, "paths.data_dir"))
    datamodule.prepare_data()
    batch = datamodule.eval_batch_size if split == "valid" else datamodule.test_batch_size
    tokens, vocab = datamodule.split_lengths()[split], len(datamodule.vocab)
    window = Window("evaluation", "batch_size", batch, None, datamodule.bptt, tokens)
    exit_with(size_errors([window], vocab, {}, {}, 1, uses_cuda(accelerator)))


def _plain(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)  # type: ignore[return-value]
