"""Parameter groups and discriminative learning rates (ULMFiT; fastai's ``awd_lstm_lm_split``).

``optim.groups``:

* ``single``: every parameter in one group (the paper's training; salesforce's code);
* ``lm_split``: one group per recurrent layer, bottom to top, then the embedding with the
  decoder (fastai's ``awd_lstm_lm_split``): ``num_layers + 1`` groups.
* ``clas_split`` (``task=classify``): the embedding, each recurrent layer, then the head
  (fastai's ``awd_lstm_clas_split``): ``num_layers + 2`` groups.

``optim.lr_decay_per_group`` F gives group k of n (k = 0 the lowest layer) the rate
``lr / F**(n - 1 - k)`` (Howard & Ruder 2018, sec. 3.2: F = 2.6), so the embedding and decoder
train at ``lr`` and each layer below at the rate above it divided by F. A tied embedding /
decoder matrix is one parameter and belongs to the last group once.
"""

from __future__ import annotations

from typing import Any

from torch import nn

GROUPINGS = ("single", "lm_split", "clas_split")


def lm_split(model: nn.Module) -> list[list[nn.Parameter]]:
    """fastai's ``awd_lstm_lm_split``: [layer 0], ..., [layer n-1], [embedding + decoder + the
    rest]. Every parameter lands in exactly one group (shared ones once, in the first that
    reaches them, so the tied matrix goes with the embedding)."""
    seen: set[int] = set()

    def take(params: Any) -> list[nn.Parameter]:
        out = []
        for p in params:
            if id(p) not in seen:
                seen.add(id(p))
                out.append(p)
        return out

    groups = [take(layer.parameters()) for layer in model.layers]
    groups.append(take(model.parameters()))  # embedding, decoder (bias), anything else
    return groups


def clas_split(model: nn.Module) -> list[list[nn.Parameter]]:
    """fastai's ``awd_lstm_clas_split`` for a classifier (``embedding``, ``layers``, ``head``
    attributes, src/models/classifier.py): [embedding], [layer 0], ..., [layer n-1], [head +
    the rest]: ``num_layers + 2`` groups, every parameter once."""
    seen: set[int] = set()

    def once(params: Any) -> list[nn.Parameter]:
        out = [p for p in params if id(p) not in seen]
        seen.update(id(p) for p in out)
        return out

    groups = [once(model.embedding.parameters())]
    groups += [once(layer.parameters()) for layer in model.layers]
    groups.append(once(model.parameters()))  # the head, anything else
    return groups


def parameter_groups(
    model: nn.Module, grouping: str, lr: float, lr_decay_per_group: float = 1.0
) -> list[dict[str, Any]]:
    """The optimizer's parameter groups, each with its own ``lr`` (``lr / F**(n-1-k)``)."""
    if grouping == "single":
        return [{"params": list(model.parameters()), "lr": lr}]
    if grouping not in GROUPINGS:
        raise ValueError(f"optim.groups={grouping!r}: expected one of {', '.join(GROUPINGS)}")
    groups = lm_split(model) if grouping == "lm_split" else clas_split(model)
    n = len(groups)
    return [
        {"params": params, "lr": lr / lr_decay_per_group ** (n - 1 - k)}
        for k, params in enumerate(groups)
    ]


def set_trainable(groups: list[dict[str, Any]], trainable: int) -> None:
    """Gradual unfreezing: only the last ``trainable`` groups get gradients (ULMFiT sec. 3.2).

    A frozen parameter has ``requires_grad = False``: no gradient, so the optimizers skip it
    entirely (no weight decay, no averaging), and its value does not move."""
    n = len(groups)
    for k, group in enumerate(groups):
        for p in group["params"]:
            p.requires_grad_(k >= n - trainable)
