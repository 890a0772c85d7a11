"""Training losses as pure functions of (scores, targets); the trainers' ``compute_loss`` only calls these.

All take float tensors and return a scalar mean over the batch. Scores are raw logits (no activation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

TARGET_TRANSFORMS = ("raw", "standardize", "sigmoid")


def soft_bce_loss(logits: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """Pairwise distillation loss (ZELO.md step 4): BCE-with-logits against the judges' soft ``prob_a``.

    The minimum is at ``sigmoid(logit) == prob_a`` (not its rounding), so a 0.6 vote stays a weak preference.
    """
    return F.binary_cross_entropy_with_logits(logits.float(), probs.float())


def mse_loss(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Pointwise regression on calibrated zELO scores (ZELO.md step 7)."""
    return F.mse_loss(scores.float(), targets.float())


def sigmoid_target_bce_loss(scores: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """BCE of ``sigmoid(score)`` against ``sigmoid(target / temperature)``: a bounded alternative to MSE.

    Large score gaps saturate instead of dominating the loss; ``temperature`` sets which gaps still matter.
    """
    return F.binary_cross_entropy_with_logits(scores.float(), torch.sigmoid(targets.float() / temperature))


def binary_bce_loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The classic baseline: BCE against binary relevance labels (e.g. ``grade > 0``)."""
    return F.binary_cross_entropy_with_logits(scores.float(), labels.float())


def info_nce_loss(scores: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Contrastive baseline: ``scores`` is ``(n_groups, group_size)`` with the positive in column 0.

    Cross-entropy of the softmax over each query's candidates (one positive + negatives).
    """
    if scores.dim() != 2:
        raise ValueError(f"`scores` must be (n_groups, group_size) for InfoNCE (got shape {tuple(scores.shape)}).")
    target = torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)
    return F.cross_entropy(scores.float() / temperature, target)


def transform_targets(targets: torch.Tensor, transform: str, mean: float = 0.0, std: float = 1.0) -> torch.Tensor:
    """Targets the pointwise MSE sees: ``raw``, ``standardize`` ((t - mean) / std, fitted on train) or ``sigmoid``.

    ``sigmoid`` leaves targets unchanged here: :func:`sigmoid_target_bce_loss` applies the sigmoid itself.
    """
    if transform not in TARGET_TRANSFORMS:
        raise ValueError(f"`target_transform` must be one of {TARGET_TRANSFORMS} (got {transform!r}).")
    if transform == "standardize":
        return (targets - mean) / std
    return targets
