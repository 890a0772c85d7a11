"""Training losses as pure functions of (scores, targets); the trainers' ``compute_loss`` only calls these.

All take float tensors and return a scalar mean over the batch. Scores are raw logits (no activation). Which loss a
trainer uses is chosen by its config's ``loss_type`` only, through the tables at the bottom (``POINTWISE_LOSSES``,
``ZEMBED_LOSSES``); target transforms change the targets, never the loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

TARGET_TRANSFORMS = ("raw", "standardize", "sigmoid")


def soft_bce_loss(logits: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """Pairwise distillation loss (ZELO.md step 4): BCE-with-logits against the judges' soft ``prob_a``.

    The minimum is at ``sigmoid(logit) == prob_a`` (not its rounding), so a 0.6 vote stays a weak preference. The
    pointwise ``soft_bce`` loss is the same BCE against ``sigmoid(score / temperature)`` targets.
    """
    return F.binary_cross_entropy_with_logits(logits.float(), probs.float())


def mse_loss(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Pointwise regression on calibrated zELO scores (ZELO.md step 7)."""
    return F.mse_loss(scores.float(), targets.float())


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


def transform_targets(targets, transform: str, mean: float = 0.0, std: float = 1.0, temperature: float = 1.0):
    """The pointwise targets (a NumPy array or a tensor): ``raw``, ``standardize`` ((t - mean) / std, fitted on
    train) or ``sigmoid`` (``sigmoid(t / temperature)``: soft targets in (0, 1) for the ``soft_bce`` loss, so large
    score gaps saturate instead of dominating the loss; ``temperature`` sets which gaps still matter)."""
    if transform not in TARGET_TRANSFORMS:
        raise ValueError(f"`target_transform` must be one of {TARGET_TRANSFORMS} (got {transform!r}).")
    if transform == "standardize":
        return (targets - mean) / std
    if transform == "sigmoid":
        return 1.0 / (1.0 + math.e ** (-targets / temperature))  # `**` keeps the array type (NumPy or torch)
    return targets


def listwise_kl_loss(
    scores: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, teacher_temperature: float = 1.0
) -> torch.Tensor:
    """KL(teacher || student) over each query's documents: ``scores`` and ``targets`` are ``(queries, docs)``.

    The teacher is ``softmax(targets / teacher_temperature)`` over the query's documents (``mask``: real entries of a
    padded row); the student ``softmax(scores)``. Used for the zembed query tower on calibrated zELO scores.
    """
    neg = torch.finfo(torch.float32).min
    teacher = torch.softmax((targets.float() / teacher_temperature).masked_fill(~mask, neg), dim=-1)
    log_student = torch.log_softmax(scores.float().masked_fill(~mask, neg), dim=-1)
    terms = teacher * (torch.log(teacher.clamp_min(1e-30)) - log_student)
    return terms.masked_fill(~mask, 0.0).sum(-1).mean()


def pair_logits(scores: torch.Tensor, pair_a: torch.Tensor, pair_b: torch.Tensor) -> torch.Tensor:
    """``scores[q, a] - scores[q, b]`` for every padded pair slot: ``scores`` is ``(queries, docs)``, ``pair_a`` and
    ``pair_b`` are ``(queries, pairs)`` document indices of each query's row (the Bradley-Terry logit of A over B)."""
    return scores.gather(1, pair_a) - scores.gather(1, pair_b)


PAIR_WEIGHTINGS = ("uniform", "confidence")


def pairwise_bce_loss(scores: torch.Tensor, pair_a: torch.Tensor, pair_b: torch.Tensor, prob_a: torch.Tensor,
                      pair_mask: torch.Tensor, weighting: str = "uniform") -> torch.Tensor:
    """The pairwise judge on a bi-encoder: soft BCE of ``scores[a] - scores[b]`` against the judges' ``prob_a``,
    averaged over the real pairs of the batch (``pair_mask``: the slots of a padded row that hold a pair).

    ``weighting="confidence"`` weighs each pair by ``|2 p - 1|``: a near-tie (most pairs of a sparse graph over a
    query's candidates) then barely pulls the two cosines together, and the pairs the judges are sure of lead.
    """
    logits = pair_logits(scores.float(), pair_a, pair_b)
    target = prob_a.float()
    terms = F.binary_cross_entropy_with_logits(logits, target, reduction="none")[pair_mask]
    if weighting == "uniform":
        return terms.mean()
    if weighting != "confidence":
        raise ValueError(f"`pair_weighting` must be one of {PAIR_WEIGHTINGS} (got {weighting!r}).")
    weights = (2.0 * target[pair_mask] - 1.0).abs()
    return (weights * terms).sum() / weights.sum().clamp_min(1e-6)


def multi_positive_nce_loss(scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Contrastive baseline over each query's documents: cross-entropy against uniform weight on the positives.

    ``labels`` are 0/1 ``(queries, docs)``; queries without a positive are left out of the mean (a row of zeros has
    no target distribution), and at least one query of the batch must have one.
    """
    positives = (labels > 0) & mask
    keep = positives.any(-1)
    if not keep.any():
        raise ValueError("contrastive: no query of the batch has a positive (label > 0): check the `labels` column.")
    target = positives.float() / positives.sum(-1, keepdim=True).clamp_min(1)
    log_student = torch.log_softmax(scores.float().masked_fill(~mask, torch.finfo(torch.float32).min), dim=-1)
    return -(target * log_student.masked_fill(~mask, 0.0)).sum(-1)[keep].mean()


# ----------------------------------------------------------------------------------------------- loss_type tables


class Objective(NamedTuple):
    """A ``loss_type``: the dataset column its targets come from, the loss of ``(scores, batch, args)``, the
    config fields it reads (shown on the model card) and what one target belongs to (``"document"`` or, for the
    zembed pairwise judge, ``"pair"``: one ``prob_a`` per (``pair_a``, ``pair_b``) of grouped preferences)."""

    column: str
    loss: Callable[[torch.Tensor, dict, object], torch.Tensor]
    knobs: tuple[str, ...] = ()
    unit: str = "document"


def _grouped_info_nce(scores, batch, args):
    return info_nce_loss(scores.view(-1, int(batch["group_size"])), args.temperature)


POINTWISE_LOSSES: dict[str, Objective] = {
    "mse": Objective("score", lambda scores, batch, args: mse_loss(scores, batch["labels"]), ("target_transform",)),
    "soft_bce": Objective(
        "score", lambda scores, batch, args: soft_bce_loss(scores, batch["labels"]), ("target_transform", "temperature")
    ),
    "binary": Objective("label", lambda scores, batch, args: binary_bce_loss(scores, batch["labels"])),
    "contrastive": Objective("label", _grouped_info_nce, ("temperature", "num_negatives")),
}

ZEMBED_LOSSES: dict[str, Objective] = {
    "listwise_kl": Objective(
        "score",
        lambda scores, batch, args: listwise_kl_loss(scores, batch["targets"], batch["mask"], args.teacher_temperature),
        ("temperature", "teacher_temperature"),
    ),
    "contrastive": Objective(
        "labels",
        lambda scores, batch, args: multi_positive_nce_loss(scores, batch["targets"], batch["mask"]),
        ("temperature",),
    ),
    "pairwise_bce": Objective(
        "prob_a",
        lambda scores, batch, args: pairwise_bce_loss(scores, batch["pair_a"], batch["pair_b"], batch["targets"],
                                                      batch["pair_mask"], args.pair_weighting),
        ("temperature", "pair_weighting"),
        unit="pair",
    ),
}
