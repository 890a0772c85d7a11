"""Evaluation metrics of the trainers: pairwise agreement with the judges, pointwise ranking quality, calibration."""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr


def binary_entropy(logits: np.ndarray, targets: np.ndarray) -> float:
    """Mean BCE-with-logits (stable) of soft targets."""
    return float(np.mean(np.logaddexp(0.0, logits) - targets * logits))


def expected_calibration_error(probs: np.ndarray, targets: np.ndarray, n_bins: int = 10) -> float:
    """ECE: bin-weighted |mean predicted - mean observed| over equal-width probability bins (soft targets)."""
    bins = np.minimum((probs * n_bins).astype(int), n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    pred = np.bincount(bins, weights=probs, minlength=n_bins)
    obs = np.bincount(bins, weights=targets, minlength=n_bins)
    used = counts > 0
    return float(np.sum(np.abs(pred[used] - obs[used])) / max(len(probs), 1))


CONFIDENT_MARGIN = 0.3  # |prob_a - 0.5| >= 0.3: pairs the judges agree on (p <= 0.2 or p >= 0.8)


def pairwise_metrics(logits: np.ndarray, prob_a: np.ndarray) -> dict[str, float]:
    """Accuracy against the majority vote (``prob_a > 0.5``; ties excluded), ``agreement`` on the pairs the judges
    are confident about (``|prob_a - 0.5| >= 0.3``, counted in ``confident_pairs``), soft BCE and ECE."""
    logits, prob_a = np.asarray(logits, dtype=np.float64).ravel(), np.asarray(prob_a, dtype=np.float64).ravel()
    decided = prob_a != 0.5
    accuracy = float(np.mean((logits[decided] > 0) == (prob_a[decided] > 0.5))) if decided.any() else float("nan")
    confident = np.abs(prob_a - 0.5) >= CONFIDENT_MARGIN
    agreement = float(np.mean((logits[confident] > 0) == (prob_a[confident] > 0.5))) if confident.any() else float("nan")
    probs = 1.0 / (1.0 + np.exp(-logits))
    return {
        "accuracy": accuracy,
        "agreement": agreement,
        "confident_pairs": float(confident.sum()),
        "bce": binary_entropy(logits, prob_a),
        "ece": expected_calibration_error(probs, prob_a),
    }


def ndcg_at_k(scores: np.ndarray, gains: np.ndarray, k: int = 10) -> float:
    """NDCG@k of ``scores`` against graded ``gains`` (NaN when every gain is 0)."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    top = gains[np.argsort(-scores, kind="stable")][:k]
    ideal = np.sort(gains)[::-1][:k]
    idcg = float(np.sum(ideal * discounts[: len(ideal)]))
    return float(np.sum(top * discounts[: len(top)]) / idcg) if idcg > 0 else float("nan")


def pointwise_metrics(scores: np.ndarray, targets: np.ndarray, query_index: np.ndarray) -> dict[str, float]:
    """MSE plus per-query Spearman and NDCG@10 (gains = target - the query's minimum), averaged over queries."""
    scores, targets = np.asarray(scores, dtype=np.float64).ravel(), np.asarray(targets, dtype=np.float64).ravel()
    query_index = np.asarray(query_index).ravel()
    spearman, ndcg = [], []
    order = np.argsort(query_index, kind="stable")
    splits = np.flatnonzero(np.diff(query_index[order])) + 1
    for idx in np.split(order, splits):  # one cheap pass per query: these are eval metrics, not a kernel
        if len(idx) < 2 or np.ptp(targets[idx]) == 0:
            continue
        spearman.append(spearmanr(scores[idx], targets[idx]).statistic)
        ndcg.append(ndcg_at_k(scores[idx], targets[idx] - targets[idx].min()))
    return {
        "mse": float(np.mean((scores - targets) ** 2)),
        "spearman": float(np.nanmean(spearman)) if spearman else float("nan"),
        "ndcg@10": float(np.nanmean(ndcg)) if ndcg else float("nan"),
    }
