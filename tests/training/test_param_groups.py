"""Parameter groups, discriminative rates, frozen groups, schedules and vocabulary matching
(ULMFiT's fine-tuning pieces), checked against their definitions."""

from __future__ import annotations

import math

import pytest
import torch

from src.models.awd import AWDLSTM, AWDLSTMConfig
from src.quant.config import QuantConfig
from src.quant.qat import prepare
from src.training.param_groups import lm_split, parameter_groups, set_trainable
from src.training.schedulers import build_scheduler, check_scheduler, stlr_factor
from src.training.transfer import match_vocab

V = 30


def tiny_model(**kw: object) -> AWDLSTM:
    torch.manual_seed(0)
    cfg = dict(vocab_size=V, emb_size=6, hidden_size=10, num_layers=3, weight_drop=0.5)
    return AWDLSTM(AWDLSTMConfig(**{**cfg, **kw}))


@pytest.mark.parametrize(
    "build",
    [
        lambda: tiny_model(),
        lambda: tiny_model(tie_weights=False),
        lambda: tiny_model(cell="mlstm"),
        lambda: prepare(tiny_model(), QuantConfig(enabled=True)),
    ],
    ids=["lstm", "untied", "mlstm", "qat"],
)
def test_lm_split_covers_every_parameter_once(build) -> None:  # noqa: ANN001
    model = build()
    groups = lm_split(model)
    assert len(groups) == model.config.num_layers + 1
    ids = [id(p) for g in groups for p in g]
    assert len(ids) == len(set(ids))  # no parameter twice (the tied matrix included)
    assert set(ids) == {id(p) for p in model.parameters()}
    for k, layer in enumerate(model.layers):
        assert {id(p) for p in groups[k]} == {id(p) for p in layer.parameters()}
    last = {id(p) for p in groups[-1]}
    assert id(model.embedding.weight) in last and id(model.decoder.bias) in last
    assert id(model.decoder.weight) in last


def test_each_group_trains_at_lr_over_f_to_the_distance_from_the_top() -> None:
    model = tiny_model()
    groups = parameter_groups(model, "lm_split", lr=1.0, lr_decay_per_group=2.6)
    assert [g["lr"] for g in groups] == pytest.approx([2.6**-3, 2.6**-2, 2.6**-1, 1.0])
    single = parameter_groups(model, "single", lr=0.5)
    assert len(single) == 1 and single[0]["lr"] == 0.5
    assert [id(p) for p in single[0]["params"]] == [id(p) for p in model.parameters()]


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "asgd"])
def test_frozen_groups_keep_bit_identical_weights(optimizer: str) -> None:
    """Only the last two groups train: the others get no gradient, no weight decay, and do not
    move; the trained ones do."""
    model = tiny_model()
    groups = parameter_groups(model, "lm_split", lr=0.5, lr_decay_per_group=2.6)
    cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "asgd": torch.optim.ASGD}[optimizer]
    opt = cls(groups, lr=0.5, weight_decay=0.1)
    set_trainable(opt.param_groups, 2)
    before = [[p.detach().clone() for p in g["params"]] for g in opt.param_groups]
    tokens = torch.randint(0, V, (7, 3))
    for _ in range(3):
        out = model(tokens)
        loss = model.decoder(out.output).logsumexp(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    for k, (group, old) in enumerate(zip(opt.param_groups, before, strict=True)):
        moved = [not torch.equal(p, o) for p, o in zip(group["params"], old, strict=True)]
        if k < 2:
            assert not any(moved) and all(p.grad is None for p in group["params"])
        else:
            assert any(moved)
    set_trainable(opt.param_groups, 4)
    assert all(p.requires_grad for p in model.parameters())


def test_stlr_is_ulmfit_eq_3() -> None:
    T, cut_frac, ratio = 200, 0.1, 32.0
    cut = 20
    assert stlr_factor(0, T) == pytest.approx(1 / ratio)
    assert stlr_factor(cut, T) == pytest.approx(1.0)
    assert stlr_factor(10, T) == pytest.approx((1 + 0.5 * (ratio - 1)) / ratio)
    p = 1 - (110 - cut) / (cut * (1 / cut_frac - 1))
    assert stlr_factor(110, T) == pytest.approx((1 + p * (ratio - 1)) / ratio)
    assert stlr_factor(T, T) == pytest.approx(1 / ratio)


def two_group_optimizer() -> torch.optim.Optimizer:
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    return torch.optim.Adam([{"params": [a], "lr": 1.0}, {"params": [b], "lr": 2.6}], lr=1.0)


def rates_after(scheduler: torch.optim.lr_scheduler.LRScheduler, steps: int) -> list[float]:
    for _ in range(steps):
        scheduler.optimizer.step()
        scheduler.step()
    return [g["lr"] for g in scheduler.optimizer.param_groups]


@pytest.mark.parametrize("step", [0, 5, 20, 60, 100])
def test_stlr_scales_every_groups_own_rate(step: int) -> None:
    sched = build_scheduler(two_group_optimizer(), {"name": "stlr"}, total_steps=100)
    factor = stlr_factor(step, 100)
    assert rates_after(sched, step) == pytest.approx([1.0 * factor, 2.6 * factor])


@pytest.mark.parametrize("step", [0, 32, 109])
def test_one_cycle_closed_form(step: int) -> None:
    """OneCycleLR (cos): max_lr / 25 at step 0, the group's peak at step pct_start * T - 1
    (torch's phase boundary), and (max_lr / 25) / 1e4 at the last step T - 1."""
    sched = build_scheduler(two_group_optimizer(), {"name": "one_cycle"}, total_steps=110)
    peaks = [1.0, 2.6]
    if step == 0:
        want = [m / 25 for m in peaks]
    elif step == 32:
        want = peaks
    else:
        want = [m / 25 / 1e4 for m in peaks]
    assert rates_after(sched, step) == pytest.approx(want, rel=1e-6)


def test_a_schedule_with_nt_asgd_is_refused() -> None:
    with pytest.raises(ValueError, match="two policies"):
        check_scheduler({"name": "stlr"}, {"name": "sgd", "nt_asgd": True})
    assert check_scheduler({"name": "stlr"}, {"name": "sgd", "nt_asgd": False}) == "stlr"
    assert check_scheduler({"name": "one_cycle"}, {"name": "adam", "nt_asgd": False})
    assert check_scheduler(None, {"name": "sgd", "nt_asgd": True}) == "none"


def test_match_vocab_copies_shared_rows_and_puts_new_words_at_the_mean() -> None:
    old = ["<unk>", "the", "cat", "sat"]
    new = ["the", "dog", "sat", "<unk>", "mat"]
    weight = torch.arange(12, dtype=torch.float32).view(4, 3)
    rows, shared = match_vocab(weight, old, new)
    assert shared == 3 and rows.shape == (5, 3)
    mean = weight.mean(0)
    assert torch.equal(rows[0], weight[1]) and torch.equal(rows[2], weight[3])
    assert torch.equal(rows[3], weight[0])
    assert torch.allclose(rows[1], mean) and torch.allclose(rows[4], mean)
    bias, _ = match_vocab(torch.tensor([1.0, 2.0, 3.0, 6.0]), old, new)
    assert bias.tolist() == [2.0, 3.0, 6.0, 1.0, 3.0]
    assert math.isclose(float(bias[1]), 3.0)
