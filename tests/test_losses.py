from __future__ import annotations

import math

import pytest
import torch

from zelo_hf.trainer.losses import (
    binary_bce_loss,
    info_nce_loss,
    mse_loss,
    sigmoid_target_bce_loss,
    soft_bce_loss,
    transform_targets,
)


def test_soft_bce_matches_formula_and_is_minimal_at_the_soft_label():
    logits, probs = torch.tensor([0.0, 2.0, -1.0]), torch.tensor([0.5, 0.9, 0.2])
    expected = torch.mean(torch.log1p(torch.exp(logits)) - probs * logits)
    assert soft_bce_loss(logits, probs).item() == pytest.approx(expected.item(), rel=1e-6)
    x = torch.linspace(-3, 3, 601)
    losses = torch.stack([soft_bce_loss(v.view(1), torch.tensor([0.8])) for v in x])
    assert torch.sigmoid(x[losses.argmin()]).item() == pytest.approx(0.8, abs=0.01)  # not rounded to 1


def test_pointwise_losses():
    scores, targets = torch.tensor([1.0, -1.0]), torch.tensor([3.0, -1.0])
    assert mse_loss(scores, targets).item() == pytest.approx(2.0)
    t = torch.sigmoid(targets / 2.0)
    expected = torch.mean(torch.log1p(torch.exp(scores)) - t * scores)
    assert sigmoid_target_bce_loss(scores, targets, temperature=2.0).item() == pytest.approx(expected.item(), rel=1e-6)
    assert binary_bce_loss(torch.tensor([0.0]), torch.tensor([1.0])).item() == pytest.approx(math.log(2))


def test_info_nce_positive_first():
    scores = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    expected = (-(2 - math.log(math.exp(2) + 2)) + math.log(3)) / 2
    assert info_nce_loss(scores).item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match=r"\(n_groups, group_size\)"):
        info_nce_loss(torch.zeros(4))


def test_transform_targets():
    t = torch.tensor([1.0, 3.0])
    assert torch.equal(transform_targets(t, "standardize", mean=2.0, std=1.0), torch.tensor([-1.0, 1.0]))
    assert torch.equal(transform_targets(t, "raw"), t)
    with pytest.raises(ValueError, match="`target_transform` must be one of"):
        transform_targets(t, "log")
