from __future__ import annotations

import math

import pytest
import torch

from zelo_hf.trainer.losses import (
    POINTWISE_LOSSES,
    binary_bce_loss,
    info_nce_loss,
    mse_loss,
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
    # soft_bce: the sigmoid is a target transform, the BCE the loss (issue #9)
    soft = soft_bce_loss(scores, transform_targets(targets, "sigmoid", temperature=2.0))
    assert soft.item() == pytest.approx(expected.item(), rel=1e-6)
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
    assert torch.allclose(transform_targets(t, "sigmoid", temperature=2.0), torch.sigmoid(t / 2.0))
    np_t = transform_targets(t.numpy().astype("float64"), "sigmoid", temperature=2.0)  # the datasets.map path
    assert np_t.dtype == "float64" and np_t == pytest.approx(torch.sigmoid(t / 2.0).tolist())
    with pytest.raises(ValueError, match="`target_transform` must be one of"):
        transform_targets(t, "log")


def test_loss_type_table_dispatches_each_pointwise_loss():
    """Each loss_type names its target column and its loss; nothing else changes the loss."""
    scores, labels = torch.tensor([1.0, -1.0]), torch.tensor([0.8, 0.1])
    batch, args = {"labels": labels}, type("Args", (), {"temperature": 1.0})()
    assert {k: v.column for k, v in POINTWISE_LOSSES.items()} == {
        "mse": "score", "soft_bce": "score", "binary": "label", "contrastive": "label"
    }
    assert POINTWISE_LOSSES["mse"].loss(scores, batch, args).item() == pytest.approx(mse_loss(scores, labels).item())
    assert POINTWISE_LOSSES["soft_bce"].loss(scores, batch, args).item() == pytest.approx(
        soft_bce_loss(scores, labels).item()
    )
    grouped = {"group_size": torch.tensor(2)}
    assert POINTWISE_LOSSES["contrastive"].loss(scores, grouped, args).item() == pytest.approx(
        info_nce_loss(scores.view(1, 2)).item()
    )
