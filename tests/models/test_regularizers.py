"""AR and TAR on hand-made tensors."""

from __future__ import annotations

import torch

from src.models.regularizers import (
    activation_regularization,
    temporal_activation_regularization,
)

# [T=2, B=1, E=2]
OUTPUT = torch.tensor([[[1.0, 2.0]], [[3.0, 5.0]]])


def test_activation_regularization_is_alpha_times_the_mean_square() -> None:
    # (1 + 4 + 9 + 25) / 4 = 9.75
    torch.testing.assert_close(activation_regularization(OUTPUT, 2.0), torch.tensor(19.5))


def test_temporal_activation_regularization_is_beta_times_the_mean_square_step() -> None:
    # steps (2, 3): (4 + 9) / 2 = 6.5
    torch.testing.assert_close(temporal_activation_regularization(OUTPUT, 1.0), torch.tensor(6.5))
    torch.testing.assert_close(temporal_activation_regularization(OUTPUT, 0.5), torch.tensor(3.25))


def test_tar_of_a_single_step_is_zero() -> None:
    assert temporal_activation_regularization(OUTPUT[:1], 1.0).item() == 0.0


def test_regularizers_are_differentiable() -> None:
    x = OUTPUT.clone().requires_grad_()
    (activation_regularization(x, 2.0) + temporal_activation_regularization(x, 1.0)).backward()
    # d AR / dx = 2 * 2x / 4 = x; d TAR / dx_t: (x_0 - x_1, x_1 - x_0)
    expected = OUTPUT + torch.cat([OUTPUT[:1] - OUTPUT[1:], OUTPUT[1:] - OUTPUT[:1]])
    torch.testing.assert_close(x.grad, expected)
