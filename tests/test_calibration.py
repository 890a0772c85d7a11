"""Cross-query calibration (ZELO.md step 6): recovering true per-query offsets with simulated judges."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import Dataset

from zelo_hf.calibration import calibrate_labels, fit_query_offsets, sample_cross_query_pairs
from zelo_hf.labeling import thurstone_map
from zelo_hf.simulate import simulate_probs, simulate_queries


def simulated_label_set(n_queries=40, n_docs=20, seed=0, offset_sd=1.5):
    """A label set fitted from simulated within-query judgments, plus the true total relevance per doc."""
    sim = simulate_queries(n_queries, n_docs, degree=8, seed=seed, offset_sd=offset_sd)
    rows = {"query_id": [], "query": [], "doc_ids": [], "docs": [], "pair_a": [], "pair_b": [], "prob_a": []}
    truth = {}
    for q in range(n_queries):
        total, edges, probs = sim.query(q)
        ids = [f"q{q}-d{i}" for i in range(n_docs)]
        truth |= dict(zip(ids, total))
        for key, value in zip(rows, (f"q{q}", f"query {q}", ids, [f"text {i}" for i in ids], edges[:, 0].tolist(),
                                     edges[:, 1].tolist(), probs.tolist())):  # fmt: skip
            rows[key].append(value)
    labels = Dataset.from_dict(rows).map(thurstone_map, batched=True, fn_kwargs={"model": "bradley-terry"})
    return labels, truth, sim.offsets


def judge(pairs: Dataset, truth: dict, seed=0) -> Dataset:
    """Simulated judges on cross-query pairs: sigmoid((s_a + b_qa) - (s_b + b_qb) + noise), 2 % random."""
    total = np.array([truth[a] for a in pairs["doc_a_id"]] + [truth[b] for b in pairs["doc_b_id"]])
    n = len(pairs)
    probs = simulate_probs(total, np.stack([np.arange(n), np.arange(n, 2 * n)], axis=1), seed, n_votes=3)
    return pairs.remove_columns("prob_a").add_column("prob_a", probs.tolist())


def test_sampled_pairs_follow_the_schema_and_span_the_score_range():
    labels, _, _ = simulated_label_set(n_queries=10)
    pairs = sample_cross_query_pairs(labels, n_cycles=2, pairs_per_edge=2, seed=0)
    assert pairs.column_names == ["query_id", "query", "doc_a_id", "doc_a", "doc_b_id", "doc_b", "query_b_id",
                                  "query_b", "prob_a"]  # fmt: skip
    assert len(pairs) == 10 * 2 * 2 and all(p is None for p in pairs["prob_a"])
    assert all(a != b for a, b in zip(pairs["query_id"], pairs["query_b_id"]))
    assert all(d.startswith(q + "-") for q, d in zip(pairs["query_b_id"], pairs["doc_b_id"]))
    # each query takes part in 8 comparisons, one per score octile: they cover its range
    ranks = {}
    for row in labels:
        order = np.argsort(-np.asarray(row["elo"]))
        ranks |= {row["doc_ids"][i]: r for r, i in enumerate(order)}
    used = [ranks[d] for q, d in zip(pairs["query_id"], pairs["doc_a_id"]) if q == "q3"]
    used += [ranks[d] for q, d in zip(pairs["query_b_id"], pairs["doc_b_id"]) if q == "q3"]
    ranks_used = np.sort(used)
    slots = np.arange(8)
    assert (
        len(used) == 8 and np.all(ranks_used >= np.floor(slots * 20 / 8)) and np.all(ranks_used < (slots + 1) * 20 / 8)
    )
    again = sample_cross_query_pairs(labels, n_cycles=2, pairs_per_edge=2, seed=0)
    assert again["doc_a_id"] == pairs["doc_a_id"]


def test_calibration_recovers_true_offsets():
    labels, truth, offsets = simulated_label_set()
    pairs = judge(sample_cross_query_pairs(labels, n_cycles=4, pairs_per_edge=2, seed=1), truth)
    calibrated, result = calibrate_labels(labels, pairs, model="bradley-terry", return_result=True)
    assert result.converged and result.connected and result.n_pairs == 40 * 8
    assert np.corrcoef(result.offsets, offsets)[0, 1] >= 0.95
    assert calibrated["offset"] == pytest.approx(result.offsets.tolist())
    row = calibrated[5]
    np.testing.assert_allclose(row["score"], np.asarray(row["elo"]) + row["offset"])
    # calibrated scores order documents across queries far better than raw elo
    flat_true = [truth[d] for r in calibrated for d in r["doc_ids"]]
    flat_raw = [s for r in calibrated for s in r["elo"]]
    flat_cal = [s for r in calibrated for s in r["score"]]
    assert np.corrcoef(flat_cal, flat_true)[0, 1] > np.corrcoef(flat_raw, flat_true)[0, 1] + 0.2


def test_anchors_pin_zero_to_the_relevance_boundary():
    labels, truth, offsets = simulated_label_set(seed=2)
    pairs = judge(sample_cross_query_pairs(labels, n_cycles=3, seed=3), truth)
    rng = np.random.default_rng(0)
    boundary = 1.0  # true: relevant iff total latent > 1
    doc_ids = [d for r in labels for d in r["doc_ids"][:5]]
    query_ids = [r["query_id"] for r in labels for _ in range(5)]
    votes = [float(np.mean(rng.random(5) < 1 / (1 + np.exp(-(truth[d] - boundary))))) for d in doc_ids]
    anchors = Dataset.from_dict({"query_id": query_ids, "doc_id": doc_ids, "prob_relevant": votes})
    calibrated, result = calibrate_labels(labels, pairs, anchors=anchors, model="bradley-terry", return_result=True)
    assert result.threshold is not None and result.n_anchors == 200
    scores = np.array([s for r in calibrated for s in r["score"]])
    true = np.array([truth[d] for r in calibrated for d in r["doc_ids"]])
    agree = np.mean((scores > 0) == (true > boundary))
    assert agree > 0.8


def test_offsets_core_and_errors():
    # two queries, perfectly informative comparisons: query 1 is better by 2 at equal within-query scores
    res = fit_query_offsets([0] * 50, [1] * 50, np.zeros(50), np.zeros(50), np.full(50, 0.1192029), 2,
                            model="bradley-terry", prior_sd=100.0)  # fmt: skip
    assert res.offsets[1] - res.offsets[0] == pytest.approx(2.0, abs=1e-3)
    with pytest.raises(ValueError, match="compares query 0 with itself"):
        fit_query_offsets([0], [0], [0.0], [0.0], [0.5], 2)
    labels, _, _ = simulated_label_set(n_queries=3, n_docs=6)
    pairs = sample_cross_query_pairs(labels, n_cycles=1, seed=0)
    with pytest.raises(ValueError, match="has no prob_a: judge the pairs"):
        calibrate_labels(labels, pairs)
    unknown = pairs.map(lambda r: {"doc_b_id": "nope", "prob_a": 0.5})
    with pytest.raises(ValueError, match=r"doc_id='nope'\) is not in the label set"):
        calibrate_labels(labels, unknown)
    with pytest.raises(ValueError, match="needs >= 2 queries"):
        sample_cross_query_pairs(labels.select([0]))
