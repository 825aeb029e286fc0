"""Dynamic evaluation (Krause, Kahembwe, Murray & Renals 2018, "Dynamic Evaluation of Neural
Sequence Models"), SGD form.

The test text is read in order, in segments; each segment is first *scored* with the current
weights, then the weights take one SGD step on that segment's loss, so the model adapts to the
recent text before it predicts the next segment::

    score(s_i | theta_{i-1});   theta_i = theta_{i-1} - lr * grad L(s_i; theta_{i-1})
                                          + decay * (theta_0 - theta_{i-1})

``decay`` pulls the weights back toward the trained ones theta_0 (Krause et al.'s global prior;
0 turns it off). No dropout is used (eval mode). The model is adapted in place and nothing is
restored: pass a copy (``copy.deepcopy``) to keep the trained weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import torch

from src.data.bptt import Window
from src.evaluation.scoring import Score, detach, target_log_probs
from src.models.awd import AWDLSTM


def check_options(lr: float, decay: float, clip: float) -> None:
    if not lr >= 0:
        raise ValueError(f"dynamic-evaluation lr must be >= 0, got {lr!r}")
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"dynamic-evaluation decay must be in [0, 1], got {decay!r}")
    if not clip >= 0:
        raise ValueError(f"dynamic-evaluation clip must be >= 0 (0: off), got {clip!r}")


def dynamic_evaluate(
    model: AWDLSTM,
    windows: Iterable[Window],
    *,
    lr: float,
    decay: float = 0.0,
    clip: float = 0.0,
) -> Score:
    """Score each window, then take one SGD step on it; return the adaptive score.

    ``clip`` > 0 clips each step's gradient norm (the training runs clip at 0.25).
    """
    check_options(lr, decay, clip)
    model.eval()
    params = [p for p in model.parameters() if p.requires_grad]
    device = params[0].device
    trained = [p.detach().clone() for p in params] if decay > 0 else []
    # cuDNN's RNN backward refuses eval mode; the native kernels accept it.
    no_cudnn = torch.backends.cudnn.flags(enabled=False) if device.type == "cuda" else None
    score, hidden = Score(), None
    with no_cudnn or contextlib.nullcontext(), torch.enable_grad():
        for inputs, targets, _ in windows:
            inputs, targets = inputs.to(device), targets.to(device)
            out = model(inputs, hidden)
            hidden = detach(out.hidden)
            log_probs = target_log_probs(model, out.output, targets)
            score.add(log_probs.detach())  # scored before the weights see this segment
            model.zero_grad(set_to_none=True)
            (-log_probs.mean()).backward()
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(params, clip)
            with torch.no_grad():
                for i, p in enumerate(params):
                    if p.grad is not None:
                        p.add_(p.grad, alpha=-lr)
                    if decay > 0:
                        p.add_(trained[i] - p, alpha=decay)
    model.zero_grad(set_to_none=True)
    return score
