"""The LightningModule: AWD-LSTM training with the paper's procedure (REFERENCE §2).

Manual optimization, because each step scales the learning rate by ``seq_len / bptt`` (variable
BPTT), clips the gradient norm, and NT-ASGD swaps the optimizer mid-run. Lightning 2 has no
truncated BPTT, so the hidden state lives here: carried from window to window (detached), reset at
the start of every training epoch and every evaluation pass.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor
from torchmetrics import SumMetric

from src.data.bptt import Window
from src.training import nt_asgd
from src.training.loss import lm_loss
from src.training.model_factory import (
    adapt_checkpoint_state,
    build_model,
    transform_callbacks,
)
from src.training.optimizers import configure_optimization

Hidden = list[tuple[Tensor, Tensor]]
log = logging.getLogger(__name__)


def detach_hidden(hidden: Hidden) -> Hidden:
    """Cut the graph between windows (truncated BPTT) while keeping the state's values."""
    return [(h.detach(), c.detach()) for h, c in hidden]


class LMModule(L.LightningModule):
    """AWD-LSTM language model + loss (CE + AR + TAR) + SGD/NT-ASGD/Adam optimization.

    Args are plain dicts (the composed Hydra groups) so checkpoints rebuild the module alone:
    ``model`` -> :class:`AWDLSTMConfig`, ``optim`` and ``loss`` as in ``src/config.py``, ``data``
    (kept for evaluation: tokenizer, corpus, batch sizes, ``bptt``), ``quant`` (a model
    transform, :mod:`src.training.model_factory`; its callbacks come from
    :meth:`configure_callbacks`).
    """

    def __init__(
        self,
        model: dict[str, Any],
        optim: dict[str, Any],
        loss: dict[str, Any],
        data: dict[str, Any],
        quant: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = build_model(model, quant, loss)
        self.automatic_optimization = False
        self.char_level = bool(data.get("char_level", False))
        self.vocab: list[str] | None = None  # set by the entry point; saved in checkpoints
        # NT-ASGD state (saved in checkpoints so a resumed run keeps its phase and history).
        self.asgd_active = False
        self.val_history: list[float] = []
        self._live_weights: dict[torch.nn.Parameter, Tensor] | None = None
        # Token-weighted NLL sums (perplexity = exp(sum / count); REFERENCE §7).
        self.val_nll = SumMetric()
        self.val_tokens = SumMetric()
        self.test_nll = SumMetric()
        self.test_tokens = SumMetric()
        self._train_hidden: Hidden | None = None
        self.skipped_batches = 0  # batches dropped for a non-finite loss (optim.nonfinite=skip)
        # (epoch, hidden) restored from a mid-epoch checkpoint; used when that epoch restarts
        self._restored_hidden: tuple[int, Hidden] | None = None
        self._eval_hidden: Hidden | None = None
        self._last_step_time: float | None = None

    def configure_callbacks(self) -> list[Callback]:
        """The model transforms' own callbacks (QAT: ``QATSchedule``), once per trainer (a
        ``trainer.test`` after ``fit`` keeps the instance fit used)."""
        present = {type(cb) for cb in self.trainer.callbacks} if self._trainer else set()
        return [
            cb for cb in transform_callbacks(self.hparams.get("quant")) if type(cb) not in present
        ]

    @property
    def evaluating_averages(self) -> bool:
        """True while NT-ASGD's averaged weights stand in for the live ones (a validation)."""
        return self._live_weights is not None

    # ------------------------------------------------------------------ optimizers
    def configure_optimizers(self) -> Any:
        """SGD / averaged SGD / Adam over ``optim.groups`` (each group at its own rate), and the
        ``scheduler`` stepped per optimizer step (none by default)."""
        return configure_optimization(
            self.model,
            self.hparams.optim,
            self.hparams.get("scheduler"),
            lambda: self.trainer.estimated_stepping_batches,
            asgd_active=self.asgd_active,
        )

    # ------------------------------------------------------------------ training
    def on_train_start(self) -> None:
        # Resumed mid-epoch (Lightning then skips on_train_epoch_start): carry on from the
        # hidden state after the last trained window, as the uninterrupted run would.
        restored, self._restored_hidden = self._restored_hidden, None
        if restored is not None and restored[0] == self.current_epoch:
            self._train_hidden = [(h.to(self.device), c.to(self.device)) for h, c in restored[1]]

    def on_train_epoch_start(self) -> None:
        self._train_hidden = None
        self._last_step_time = None

    def training_step(self, batch: Window, batch_idx: int) -> Tensor:
        inputs, targets, lr_scale = batch
        seq_len, batch_size = inputs.shape
        hidden = self._train_hidden or self.model.init_hidden(batch_size)
        loss_cfg = self.hparams.loss
        loss, nll, ar, tar, out = lm_loss(
            self.model, inputs, targets, hidden, loss_cfg["alpha"], loss_cfg["beta"]
        )

        opt = self.optimizers()
        opt.zero_grad()
        self.manual_backward(loss)
        clip = self.hparams.optim["clip"]
        grad_norm = torch.nn.utils.clip_grad_norm_(
            self.model.parameters(), clip if clip > 0 else float("inf")
        )
        if self._skip_nonfinite(loss, grad_norm, batch_idx):
            opt.zero_grad()
            return loss.detach()
        self._train_hidden = detach_hidden(out.hidden)
        base_lrs = [group["lr"] for group in opt.param_groups]
        for group, lr in zip(opt.param_groups, base_lrs, strict=True):
            group["lr"] = lr * float(lr_scale)  # variable-length BPTT: lr * seq_len / bptt
        opt.step()
        for group, lr in zip(opt.param_groups, base_lrs, strict=True):
            group["lr"] = lr
        base_lr = base_lrs[-1]  # the top group's: the configured optim.lr (or its schedule)
        if (scheduler := self.lr_schedulers()) is not None:
            scheduler.step()

        tokens = seq_len * batch_size
        # Under DDP each rank's nll is its own shard's mean; with equal shards the mean over
        # ranks is the whole batch's loss (what one process with all the streams logs).
        self.log(
            "train/loss",
            nll,
            on_step=True,
            on_epoch=True,
            prog_bar=True,
            batch_size=tokens,
            sync_dist=True,
        )
        self.log("train/ar", ar, on_step=True, on_epoch=False, batch_size=tokens)
        self.log("train/tar", tar, on_step=True, on_epoch=False, batch_size=tokens)
        self.log("lr", base_lr, on_step=True, on_epoch=False, batch_size=tokens)
        self.log("optim/asgd", float(self.asgd_active), on_step=True, batch_size=tokens)
        if self.char_level:
            self.log("train/bpc", nll / math.log(2), on_step=True, on_epoch=True, batch_size=tokens)
        now = time.perf_counter()
        if self._last_step_time is not None:
            rate = tokens / max(now - self._last_step_time, 1e-9)
            self.log(
                "train/tokens_per_sec",
                rate,
                on_step=True,
                on_epoch=True,
                prog_bar=True,
                batch_size=tokens,
            )
        self._last_step_time = now
        return loss.detach()

    def _skip_nonfinite(self, loss: Tensor, grad_norm: Tensor, batch_idx: int) -> bool:
        """A NaN/Inf loss or gradient: stop with a message (default), or skip the batch.

        `optim.nonfinite`: `stop` raises before the optimizer step, so the weights, the best
        checkpoint and last.ckpt stay as they were; `skip` drops this batch's update (and keeps
        the previous hidden state); `ignore` does not check (no host sync per step).
        """
        policy = self.hparams.optim.get("nonfinite", "stop")
        if policy == "ignore" or bool(torch.isfinite(loss.detach()) & torch.isfinite(grad_norm)):
            return False
        where = f"step {self.global_step} (epoch {self.current_epoch}, batch {batch_idx})"
        bad = "loss" if not bool(torch.isfinite(loss.detach())) else "gradient norm"
        what = f"{bad} (loss {loss.item()}, gradient norm {grad_norm.item()})"
        if policy == "skip":
            self.skipped_batches += 1
            log.warning("non-finite %s at %s: batch skipped", what, where)
            self.log("train/skipped_batches", float(self.skipped_batches), on_step=True)
            return True
        ckpt = self.trainer.checkpoint_callback
        best = getattr(ckpt, "best_model_path", "") or "none yet"
        raise FloatingPointError(
            f"non-finite {what} at {where}. Stopped before the optimizer step: the weights and "
            f"checkpoints are untouched; last good checkpoint: {best}. Lower optim.lr or "
            "optim.clip, or set optim.nonfinite=skip to drop such batches."
        )

    def on_train_epoch_end(self) -> None:
        epoch = self.current_epoch + 1  # salesforce counts epochs from 1
        if epoch in self.hparams.optim["when"]:
            for group in self.optimizers().param_groups:
                group["lr"] /= 10.0

    # ------------------------------------------------------------------ evaluation
    def _eval_step(self, batch: Window, nll_sum: SumMetric, count: SumMetric) -> None:
        inputs, targets, _ = batch
        hidden = self._eval_hidden or self.model.init_hidden(inputs.size(1))
        out = self.model(inputs, hidden)
        self._eval_hidden = detach_hidden(out.hidden)
        # the softmax head's normalized NLL (full: cross entropy of the decoder's logits)
        nll = self.model.softmax.nll(self.model.decoder, out.output, targets, reduction="sum")
        nll_sum.update(nll)
        count.update(torch.tensor(float(targets.numel()), device=nll.device))

    def _log_eval(self, split: str, nll_sum: SumMetric, count: SumMetric) -> float:
        loss = (nll_sum.compute() / count.compute()).item()
        nll_sum.reset()
        count.reset()
        self.log(f"{split}/loss", loss, sync_dist=False)
        self.log(f"{split}/ppl", math.exp(min(loss, 700.0)), prog_bar=True)
        if self.char_level:
            self.log(f"{split}/bpc", loss / math.log(2))
        return loss

    def on_validation_start(self) -> None:
        if self.asgd_active and self.trainer.state.fn == "fit":
            opt = self.trainer.optimizers[0]
            if nt_asgd.has_averages(opt):
                self._live_weights = nt_asgd.swap_in_averages(opt)

    def on_validation_epoch_start(self) -> None:
        self._eval_hidden = None

    def validation_step(self, batch: Window, batch_idx: int) -> None:
        self._eval_step(batch, self.val_nll, self.val_tokens)

    def on_validation_epoch_end(self) -> None:
        val_loss = self._log_eval("val", self.val_nll, self.val_tokens)
        if self.trainer.sanity_checking or self.trainer.state.fn != "fit":
            return
        o = self.hparams.optim
        if (
            o["name"] == "sgd"
            and o["nt_asgd"]
            and not self.asgd_active
            and nt_asgd.should_switch_to_asgd(self.val_history, val_loss, o["nonmono"])
        ):
            self._switch_to_asgd()
        self.val_history.append(val_loss)

    def on_validation_end(self) -> None:
        # Checkpoint callbacks have run (they see the averaged weights); restore the live ones.
        if self._live_weights is not None:
            nt_asgd.restore_live(self._live_weights)
            self._live_weights = None

    def _switch_to_asgd(self) -> None:
        """Averaged SGD from here, over the same parameter groups at their current rates."""
        sgd = self.trainer.optimizers[0]
        lr, wd = sgd.param_groups[0]["lr"], sgd.param_groups[0]["weight_decay"]
        groups = [
            {"params": g["params"], "lr": g["lr"], "weight_decay": g["weight_decay"]}
            for g in sgd.param_groups
        ]
        self.trainer.optimizers = [nt_asgd.make_asgd(groups, lr, wd)]
        self.asgd_active = True
        self.print(f"NT-ASGD: switching to averaged SGD at epoch {self.current_epoch + 1}")

    def on_test_epoch_start(self) -> None:
        self._eval_hidden = None

    def test_step(self, batch: Window, batch_idx: int) -> None:
        self._eval_step(batch, self.test_nll, self.test_tokens)

    def on_test_epoch_end(self) -> None:
        self._log_eval("test", self.test_nll, self.test_tokens)

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["vocab"] = self.vocab
        if self._train_hidden is not None:
            checkpoint["train_hidden"] = {
                "epoch": self.current_epoch,
                "hidden": [(h.cpu(), c.cpu()) for h, c in self._train_hidden],
            }
        # (update, not replace: callbacks such as QATSchedule may have added their entries)
        state = checkpoint.setdefault("nt_asgd", {})
        state.update(active=self.asgd_active, history=list(self.val_history))
        if self._live_weights is not None:
            # The state dict holds the averaged weights (what evaluation should use); keep the
            # live iterate too so a resumed run continues exactly where it was.
            names = {p: n for n, p in self.named_parameters()}
            state["live_weights"] = {names[p]: v.cpu() for p, v in self._live_weights.items()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.vocab = checkpoint.get("vocab")
        state = checkpoint.get("nt_asgd", {})
        self.asgd_active = bool(state.get("active", False))
        self.val_history = list(state.get("history", []))
        trainer = self._trainer
        resuming = trainer is not None and trainer.state.fn == "fit"
        if resuming and "train_hidden" in checkpoint:
            saved = checkpoint["train_hidden"]
            self._restored_hidden = (int(saved["epoch"]), list(saved["hidden"]))
        if resuming and "live_weights" in state:
            checkpoint["state_dict"].update(state["live_weights"])
        # written with other model transforms (float <-> QAT): fill in / drop their entries
        added, dropped = adapt_checkpoint_state(checkpoint["state_dict"], self.state_dict())
        if added or dropped:
            log.info(
                "checkpoint adapted to this model: %d entries fresh, %d dropped",
                len(added),
                len(dropped),
            )
