"""One line at the start of a fit whose split softmax uses the small-vocabulary default splits.

Below 75k words the authors used a plain softmax; ``loss.splits=null`` then gives
:func:`~src.models.softmax.default_splits`' fractions of WikiText-103's splits (PTB: [105, 747,
2839]). Measured on ``experiment=ptb_tiny`` (seed 141, 400 steps, SGD at lr 30, clip 0.25; the
README's ``loss.softmax`` section): those splits reached validation perplexity 1,748 where the
full softmax reached 407, [747, 2839] 721, one tail [2839] 399 at 1.8x full's speed, and the
default splits at lr 10 485. The more tokens the cluster vectors carry (half of PTB's with a
105-word head), the less stable SGD at a high rate is. The defaults stay as they are (their
numbers are recorded); the line names the measurement and the fixes.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from src.models.softmax import LARGE_VOCAB, default_splits

log = logging.getLogger(__name__)


def split_softmax_advice(loss: dict[str, Any], vocab_size: int) -> str | None:
    """The warning for ``loss`` (``softmax``, ``splits``) at ``vocab_size``, or None."""
    if loss.get("softmax") != "split" or loss.get("splits") is not None:
        return None
    if vocab_size > LARGE_VOCAB:  # the authors' own splits
        return None
    splits = default_splits(vocab_size)  # one tail at their last split matched full on PTB
    return (
        f"loss.softmax=split with the default splits for V <= {LARGE_VOCAB:,} "
        f"({splits} here): on PTB with SGD at lr 30 they trained far worse than the full "
        "softmax (val ppl 1,748 against 407 after 400 steps of ptb_tiny); one tail, "
        f"loss.splits=[{splits[-1]}], matched the full softmax at 1.8x its speed, or use "
        "loss.softmax=full or a lower lr (README, loss.softmax)"
    )


class SoftmaxAdvice(Callback):
    """Log :func:`split_softmax_advice`'s line as a warning when a language-model fit starts."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loss = pl_module.hparams.get("loss")
        model = getattr(pl_module, "model", None)
        config = getattr(model, "config", None)
        if not isinstance(loss, dict) or config is None:
            return
        advice = split_softmax_advice(dict(loss), int(config.vocab_size))
        if advice is not None and trainer.is_global_zero:
            log.warning(advice)
