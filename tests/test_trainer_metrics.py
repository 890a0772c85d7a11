from __future__ import annotations

import numpy as np
import pytest

from zelo_hf.trainer.metrics import expected_calibration_error, ndcg_at_k, pairwise_metrics, pointwise_metrics


def test_pairwise_metrics_values():
    logits = np.array([2.0, -1.0, 0.5, 3.0])
    prob_a = np.array([0.9, 0.2, 0.5, 0.3])  # the tie (0.5) is excluded from accuracy
    m = pairwise_metrics(logits, prob_a)
    assert m["accuracy"] == pytest.approx(2 / 3)
    expected_bce = np.mean(np.log1p(np.exp(logits)) - prob_a * logits)
    assert m["bce"] == pytest.approx(expected_bce)
    probs = np.array([0.05, 0.15, 0.95])
    assert expected_calibration_error(probs, np.array([0.0, 0.0, 1.0]), n_bins=10) == pytest.approx(0.25 / 3)


def test_agreement_counts_only_the_pairs_the_judges_are_sure_of():
    logits = np.array([2.0, -1.0, 1.0, -3.0, 0.5])
    prob_a = np.array([0.9, 0.15, 0.6, 0.95, 0.79])  # confident: 0.9 (right), 0.15 (right), 0.95 (wrong)
    m = pairwise_metrics(logits, prob_a)
    assert m["confident_pairs"] == 3 and m["agreement"] == pytest.approx(2 / 3)
    assert m["accuracy"] == pytest.approx(4 / 5)


def test_pointwise_metrics_per_query():
    """Per-query Spearman / NDCG@10 (gains = target - the query's minimum), averaged; a constant query is skipped."""
    scores = np.array([3.0, 2.0, 1.0, 1.0, 2.0, 3.0, 0.0, 1.0])
    targets = np.array([2.0, 1.0, 0.0, 2.0, 1.0, 0.0, 5.0, 5.0])
    query_index = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    m = pointwise_metrics(scores, targets, query_index)
    assert m["spearman"] == pytest.approx(0.0)  # +1 and -1
    assert m["mse"] == pytest.approx(np.mean((scores - targets) ** 2))
    worst = ndcg_at_k(np.array([1.0, 2.0, 3.0]), np.array([2.0, 1.0, 0.0]))
    assert m["ndcg@10"] == pytest.approx((1.0 + worst) / 2)
    assert np.isnan(ndcg_at_k(np.array([1.0, 2.0]), np.array([0.0, 0.0])))  # no gain: undefined, not 0
