"""Transfer to a new corpus (ULMFiT's second stage) and gradual unfreezing, as a callback.

``+transfer.ckpt_path=PATH`` starts a run from a language model trained on another corpus.
Every recurrent weight is copied. The embedding rows (and decoder bias) are matched by word, as
fastai's ``match_embeds`` does: a word in both vocabularies keeps its row, a word new to the
target corpus gets the mean row of the pretrained matrix (the mean bias). The run's vocabulary,
saved in its checkpoints, is the target corpus's; so is the softmax head (``loss.softmax``;
a split head ranks the target corpus's words and its clusters start at zero). A float
checkpoint transfers into a ``quant=qat`` model (its quantizers start fresh).

``transfer.gradual_unfreeze=true`` (with ``optim.groups=lm_split``): epoch 1 trains only the
last parameter group (embedding and decoder), each following epoch unfreezes the next group
down (Howard & Ruder 2018, sec. 3.2). Frozen parameters get no gradient, hence no update and no
weight decay.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from src.training.checkpoint import read_checkpoint
from src.training.model_factory import adapt_checkpoint_state
from src.training.param_groups import set_trainable

log = logging.getLogger(__name__)

#: Rows indexed by word: the embedding (and the decoder, tied or not) and the decoder bias.
VOCAB_KEYS = ("model.embedding.weight", "model.decoder.weight", "model.decoder.bias")
#: The softmax head's state (split: cluster vectors and the word order by frequency).
HEAD_PREFIX = "model.softmax."
#: The model sizes a transferred checkpoint must share with the configured model.
SIZE_KEYS = ("cell", "emb_size", "hidden_size", "num_layers", "tie_weights")


def match_vocab(tensor: Tensor, old_vocab: list[str], new_vocab: list[str]) -> tuple[Tensor, int]:
    """Rows of ``tensor`` (indexed by ``old_vocab``) for ``new_vocab``: a shared word keeps its
    row, a new word gets the mean row. Returns the rows and the number of shared words."""
    index = {word: i for i, word in enumerate(old_vocab)}
    mean = tensor.float().mean(0).to(tensor.dtype)
    rows = mean.expand(len(new_vocab), *tensor.shape[1:]).clone()
    shared = [(i, index[w]) for i, w in enumerate(new_vocab) if w in index]
    if shared:
        new_idx, old_idx = (torch.tensor(ix) for ix in zip(*shared, strict=True))
        rows[new_idx] = tensor[old_idx]
    return rows, len(shared)


def keep_own_head(state: dict[str, Any], own: dict[str, Any]) -> None:
    """The softmax head's entries (``model.softmax.*``) become this run's own, in place: a split
    head's frequency order is the target corpus's, so its clusters start fresh (zero)."""
    for key in [k for k in state if k.startswith(HEAD_PREFIX)]:
        del state[key]
    state.update({k: v for k, v in own.items() if k.startswith(HEAD_PREFIX)})


def check_sizes(pretrained: dict[str, Any], configured: dict[str, Any], path: Path) -> None:
    """Refuse a checkpoint whose layer sizes differ from the configured model's."""
    differ = [k for k in SIZE_KEYS if pretrained.get(k) != configured.get(k)]
    if differ:
        theirs = ", ".join(f"{k}={pretrained.get(k)!r}" for k in SIZE_KEYS)
        ours = ", ".join(f"{k}={configured.get(k)!r}" for k in SIZE_KEYS)
        raise ValueError(
            f"{path} does not fit the configured model: the checkpoint has {theirs}; this run's "
            f"model has {ours}. Set model.* to the checkpoint's sizes (or its experiment)."
        )


def checkpoint_tokenizer(ckpt: dict[str, Any]) -> str:
    """The ``data.tokenizer`` a checkpoint was trained with (``word`` when it records none)."""
    data = (ckpt.get("hyper_parameters") or {}).get("data") or {}
    name = data.get("tokenizer") or "word"
    return str(getattr(name, "value", name))


def check_tokenizer(ckpt: dict[str, Any], configured: str, path: Path) -> None:
    """Refuse a checkpoint whose tokenizer differs from the run's: its words would not be the
    words this run reads, so the matched embedding rows would mean other things."""
    theirs = checkpoint_tokenizer(ckpt)
    if theirs != configured:
        raise ValueError(
            f"data.tokenizer={configured} but the transferred checkpoint {path} was trained "
            f"with data.tokenizer={theirs}; set data.tokenizer={theirs}"
        )


def checkpoint_reverse(ckpt: dict[str, Any]) -> bool:
    """Whether a checkpoint read its text backwards (``data.reverse``; false when unrecorded)."""
    data = (ckpt.get("hyper_parameters") or {}).get("data") or {}
    return bool(data.get("reverse", False))


def check_direction(ckpt: dict[str, Any], configured: bool, path: Path) -> None:
    """Refuse a backward checkpoint in a forward run and the reverse: its layers learned to
    read the other way, so fine-tuning would start from a model of the wrong text."""
    theirs = checkpoint_reverse(ckpt)
    if theirs != bool(configured):
        raise ValueError(
            f"data.reverse={str(bool(configured)).lower()} but the transferred checkpoint {path} "
            f"was trained with data.reverse={str(theirs).lower()}; set "
            f"data.reverse={str(theirs).lower()}"
        )


class Transfer(Callback):
    """Load a language model trained on another corpus into this run (module docstring)."""

    #: the ``optim.groups`` that gradual unfreezing walks through, one group per epoch
    grouping = "lm_split"

    def __init__(self, ckpt_path: str, gradual_unfreeze: bool = False) -> None:
        self.ckpt_path = Path(ckpt_path)
        self.gradual_unfreeze = gradual_unfreeze
        self._trainable: int | None = None  # groups last unfrozen (epoch 1 starts twice)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if self.gradual_unfreeze and pl_module.hparams["optim"].get("groups") != self.grouping:
            raise ValueError(
                "transfer.gradual_unfreeze=true unfreezes parameter groups one by one: set "
                f"optim.groups={self.grouping}"
            )
        self.load(pl_module)

    def read(self, pl_module: L.LightningModule) -> dict[str, Any]:
        """The checkpoint, refused when its tokenizer or direction is not this run's
        (``data.tokenizer``, ``data.reverse``)."""
        ckpt = read_checkpoint(self.ckpt_path)
        data = pl_module.hparams.get("data") or {}
        configured = data.get("tokenizer") or "word"
        check_tokenizer(ckpt, str(getattr(configured, "value", configured)), self.ckpt_path)
        check_direction(ckpt, bool(data.get("reverse", False)), self.ckpt_path)
        return ckpt

    def load(self, pl_module: L.LightningModule) -> None:
        """Copy the checkpoint's weights into ``pl_module``, the word rows matched by word."""
        ckpt = self.read(pl_module)
        check_sizes(ckpt["hyper_parameters"]["model"], pl_module.hparams["model"], self.ckpt_path)
        old_vocab, new_vocab = ckpt.get("vocab"), pl_module.vocab
        if old_vocab is None or new_vocab is None:
            raise ValueError(f"{self.ckpt_path} holds no vocabulary to match words with")
        state = ckpt["state_dict"]
        shared = 0
        for key in VOCAB_KEYS:
            if key in state:
                state[key], shared = match_vocab(state[key], list(old_vocab), list(new_vocab))
        keep_own_head(state, pl_module.state_dict())
        adapt_checkpoint_state(state, pl_module.state_dict())  # float -> QAT: fresh quantizers
        pl_module.load_state_dict(state)
        log.info(
            "transfer from %s: %d of the %d target words were in its %d-word vocabulary, the "
            "others start at the mean embedding row",
            self.ckpt_path,
            shared,
            len(new_vocab),
            len(old_vocab),
        )

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._unfreeze(trainer)  # also a run resumed mid-epoch, which skips the epoch start

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._unfreeze(trainer)

    def _unfreeze(self, trainer: L.Trainer) -> None:
        if not self.gradual_unfreeze:
            return
        groups = trainer.optimizers[0].param_groups
        trainable = min(len(groups), trainer.current_epoch + 1)
        if trainable == self._trainable:
            return
        self._trainable = trainable
        set_trainable(groups, trainable)
        log.info(
            "gradual unfreezing: epoch %d trains the last %d of %d parameter groups",
            trainer.current_epoch + 1,
            trainable,
            len(groups),
        )
