"""``task=classify`` with ``+transfer.ckpt_path``: a language model's encoder in the classifier.

ULMFiT's third stage (Howard & Ruder 2018, sec. 3.3). The checkpoint's embedding and recurrent
layers are copied into the classifier's encoder; its decoder is dropped; the head starts fresh.
The classifier's vocabulary is the checkpoint's (``src.train`` reads it before building the
datamodule) plus ``<pad>`` when the language model had none, so the embedding is matched word
by word as in the language-model transfer (``match_vocab``: the new ``<pad>`` row starts at the
mean row; padding never reaches an output, so its value does not matter).

Sizes: ``cell``, ``emb_size``, ``hidden_size``, ``num_layers`` and ``tie_weights`` must equal the
checkpoint's. A bidirectional classifier from a (necessarily unidirectional) language model:
each of its layers has two directions of half the units, so no recurrent weight has the shape
of the checkpoint's; only the embedding transfers (``emb_size`` must match) and the layers
start fresh. The log names what came from the checkpoint.

Gradual unfreezing (``transfer.gradual_unfreeze=true``) walks ``optim.groups=clas_split``: the
head the first epoch, then one more group each epoch (the top layer first, the embedding last).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
from torch import Tensor

from src.training.checkpoint import read_checkpoint
from src.training.transfer import Transfer, check_sizes, match_vocab

log = logging.getLogger(__name__)

#: where the language model's modules live in the classifier module's state dict
ENCODER = "model.encoder."


def read_vocab(path: str) -> list[str]:
    """The vocabulary saved in a language-model checkpoint (key ``vocab``)."""
    vocab = read_checkpoint(Path(path)).get("vocab")
    if not vocab:
        raise ValueError(f"{path} holds no vocabulary (key 'vocab'): not written by src.train")
    return list(vocab)


def encoder_state(
    state: dict[str, Tensor],
    target: dict[str, Tensor],
    old_vocab: list[str],
    new_vocab: list[str],
    embedding_only: bool,
) -> tuple[dict[str, Tensor], int]:
    """The checkpoint's ``model.embedding`` / ``model.layers`` tensors under the classifier's
    names (``model.encoder.*``), the embedding rows matched to ``new_vocab``; returns them and
    the number of shared words. Raises when a tensor's shape differs or one is missing."""
    out: dict[str, Tensor] = {}
    shared = 0
    for key, value in state.items():
        name = key.removeprefix("model.")
        wanted = name == "embedding.weight" or (not embedding_only and name.startswith("layers."))
        if not key.startswith("model.") or not wanted or ENCODER + name not in target:
            continue  # the decoder, quantizer state, or a layer of another shape
        if name == "embedding.weight":
            value, shared = match_vocab(value, old_vocab, new_vocab)
        if value.shape != target[ENCODER + name].shape:
            raise ValueError(
                f"{name}: the checkpoint's tensor is {tuple(value.shape)}, the classifier's "
                f"{tuple(target[ENCODER + name].shape)}"
            )
        out[ENCODER + name] = value
    expected = [
        k
        for k in target
        if k == ENCODER + "embedding.weight"
        or (not embedding_only and k.startswith(ENCODER + "layers."))
    ]
    missing = [k for k in expected if k not in out]
    if missing:
        raise ValueError(f"the checkpoint lacks {len(missing)} encoder tensors: {missing[:3]}")
    return out, shared


class EncoderTransfer(Transfer):
    """Load a language model's encoder into the classifier (module docstring)."""

    grouping = "clas_split"

    def load(self, pl_module: L.LightningModule) -> None:
        ckpt = self.read(pl_module)
        source: dict[str, Any] = ckpt["hyper_parameters"]["model"]
        target: dict[str, Any] = pl_module.hparams["model"]
        embedding_only = bool(target.get("bidirectional")) and not source.get("bidirectional")
        if embedding_only:
            check_sizes(
                {k: source.get(k) for k in ("cell", "emb_size")},
                {k: target.get(k) for k in ("cell", "emb_size")},
                self.ckpt_path,
            )
        else:
            check_sizes(source, target, self.ckpt_path)
        old_vocab, new_vocab = ckpt.get("vocab"), pl_module.vocab
        if old_vocab is None or new_vocab is None:
            raise ValueError(f"{self.ckpt_path} holds no vocabulary to match words with")
        state, shared = encoder_state(
            ckpt["state_dict"],
            pl_module.state_dict(),
            list(old_vocab),
            list(new_vocab),
            embedding_only,
        )
        pl_module.load_state_dict(state, strict=False)
        what = "the embedding only (bidirectional layers from a unidirectional model)"
        if not embedding_only:
            what = f"the embedding and the {target.get('num_layers')} recurrent layers"
        log.info(
            "transfer from %s: %s, %d tensors (%s); %d of the %d words were in its %d-word "
            "vocabulary; the head starts fresh",
            self.ckpt_path,
            what,
            len(state),
            ", ".join(sorted(k.removeprefix(ENCODER) for k in state)),
            shared,
            len(new_vocab),
            len(old_vocab),
        )
