"""NT-ASGD: the trigger on scripted validation histories, and the averaged-weight swap."""

from __future__ import annotations

import pytest
import torch

from src.training.nt_asgd import (
    has_averages,
    make_asgd,
    restore_live,
    should_switch_to_asgd,
    swap_in_averages,
)


def run_trigger(losses: list[float], nonmono: int) -> int | None:
    """Replay the salesforce loop: check, then append. Return the 1-based switch epoch."""
    history: list[float] = []
    for epoch, loss in enumerate(losses, start=1):
        if should_switch_to_asgd(history, loss, nonmono):
            return epoch
        history.append(loss)
    return None


def test_no_switch_while_improving() -> None:
    assert run_trigger([10.0 - i for i in range(20)], nonmono=5) is None


def test_needs_more_than_nonmono_epochs_of_history() -> None:
    # Worse than everything from epoch 2 on, but only checked once len(history) > nonmono.
    losses = [1.0] + [5.0] * 10
    assert run_trigger(losses, nonmono=5) == 7  # history has 6 entries at epoch 7


def test_compares_with_min_excluding_last_nonmono() -> None:
    # Epochs 1..6 improve, epoch 7 is worse than epoch 1's best-before-window.
    losses = [5.0, 4.0, 3.9, 3.8, 3.7, 3.6, 4.5]
    # history at epoch 7 = losses[:6]; min(history[:-5]) = min([5.0]) = 5.0; 4.5 < 5 -> no switch
    assert run_trigger(losses, nonmono=5) is None
    losses = [5.0, 4.0, 3.9, 3.8, 3.7, 3.6, 3.65, 4.1]
    # at epoch 8: history[:-5] = [5.0, 4.0] -> min 4.0; 4.1 > 4.0 -> switch
    assert run_trigger(losses, nonmono=5) == 8


def test_equal_loss_does_not_trigger() -> None:
    # history[:-1] = [2.0, 1.0] -> min 1.0; only a strictly larger loss triggers
    assert not should_switch_to_asgd([2.0, 1.0, 0.5], 1.0, nonmono=1)
    assert should_switch_to_asgd([2.0, 1.0, 0.5], 1.0 + 1e-6, nonmono=1)


def test_asgd_average_swap_and_restore() -> None:
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4))
    opt = make_asgd([w], lr=0.1, weight_decay=0.0)
    assert not has_averages(opt)
    seen = []
    for _ in range(5):
        seen.append(w.detach().clone())
        opt.zero_grad()
        (w * torch.randn(4)).sum().backward()
        opt.step()
    assert has_averages(opt)
    live = w.detach().clone()
    # t0=0, lambd=0: torch's ASGD uses the previous step's mu, so ax is the running mean of
    # the iterates from the second step on (mu = 1 for the first two steps).
    saved = swap_in_averages(opt)
    expected = torch.stack(seen[2:] + [live]).mean(0)
    assert torch.allclose(w.detach(), expected, atol=1e-6)
    restore_live(saved)
    assert torch.equal(w.detach(), live)


def test_sgd_has_no_averages() -> None:
    w = torch.nn.Parameter(torch.zeros(2))
    assert not has_averages(torch.optim.SGD([w], lr=1.0))


@pytest.mark.parametrize("nonmono", [1, 5])
def test_trigger_never_fires_on_empty_history(nonmono: int) -> None:
    assert not should_switch_to_asgd([], 100.0, nonmono)
