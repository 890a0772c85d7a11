"""Per-rater calibration: the multi-rater Thurstone fit recovers judges' position biases and noise scales."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit
from scipy.stats import spearmanr

from zelo_hf.graphs import comparison_graph
from zelo_hf.raters import agreement_by_judge, fit_raters, intransitive_triangle_rate
from zelo_hf.thurstone import fit_scores_flat

ALPHA = np.array([1.5, 1.0, 0.25])  # careful, average, careless
BETA = np.array([0.0, 0.8, -1.0])  # unbiased, prefers the first shown, prefers the second shown


def _simulate(n_queries=30, n_docs=30, degree=8, seed=0):
    """Every pair judged once by every rater, order swapped at random, ZELO.md noise on top of each rater's own."""
    rng = np.random.default_rng(seed)
    latent = rng.uniform(-2, 2, n_queries * n_docs)
    edges = np.concatenate([comparison_graph(n_docs, degree, rng) + q * n_docs for q in range(n_queries)])
    n_judges = len(ALPHA)
    a, b = np.repeat(edges[:, 0], n_judges), np.repeat(edges[:, 1], n_judges)
    judge = np.tile(np.arange(n_judges), len(edges))
    swapped = rng.random(len(a)) < 0.5
    first, second = np.where(swapped, b, a), np.where(swapped, a, b)
    p_first = expit(ALPHA[judge] * (latent[first] - latent[second]) + BETA[judge] + rng.normal(0, 0.2, len(a)))
    p_first = np.where(rng.random(len(a)) < 0.02, rng.random(len(a)), p_first)
    votes = {"a": a, "b": b, "judge": judge, "prob_a": np.where(swapped, 1 - p_first, p_first), "swapped": swapped,
             "judges": ["careful", "biased", "careless"]}
    return votes, latent, edges, n_queries, n_docs


def _mean_spearman(scores, latent, n_queries, n_docs):
    return np.mean([spearmanr(s, t)[0] for s, t in zip(scores.reshape(n_queries, n_docs),
                                                        latent.reshape(n_queries, n_docs))])


def test_fit_recovers_biases_and_noise_and_beats_plain_averaging():
    votes, latent, edges, n_queries, n_docs = _simulate()
    fit = fit_raters(votes)
    assert fit.converged and fit.n_votes == len(votes["a"])
    np.testing.assert_allclose(fit.bias, BETA, atol=0.12)
    true_scale = ALPHA / np.exp(np.log(ALPHA).mean())  # the gauge: geometric-mean discrimination 1
    np.testing.assert_allclose(fit.scale, true_scale, rtol=0.15)
    # Plain averaging: one soft label per pair (mean of the three votes), then the single-rater fit.
    mean_prob = votes["prob_a"].reshape(-1, 3).mean(axis=1)
    plain_scores = fit_scores_flat(edges, mean_prob, [n_docs] * n_queries, model="bradley-terry").scores
    rater_rho = _mean_spearman(fit.scores, latent, n_queries, n_docs)
    plain_rho = _mean_spearman(plain_scores, latent, n_queries, n_docs)
    assert rater_rho > 0.98 and rater_rho > plain_rho + 0.005
    assert fit.agreement["careful"] > fit.agreement["biased"] > fit.agreement["careless"]


def test_without_bias_and_scale_it_is_a_single_rater_fit():
    votes, latent, *_ = _simulate(n_queries=5, n_docs=20, seed=1)
    fit = fit_raters(votes, fit_bias=False, fit_scale=False)
    assert np.all(fit.bias == 0) and np.all(fit.scale == 1)
    assert fit_raters(votes, model="thurstone").converged
    with pytest.raises(ValueError, match="model"):
        fit_raters(votes, model="elo")


def test_intransitive_triangles_and_agreement():
    cycle = intransitive_triangle_rate(np.array([0, 1, 2]), np.array([1, 2, 0]), np.array([0.9, 0.8, 0.7]), 3)
    order = intransitive_triangle_rate(np.array([0, 1, 0]), np.array([1, 2, 2]), np.array([0.9, 0.8, 0.7]), 3)
    assert cycle == 1.0 and order == 0.0
    # Repeated pairs are averaged first: 0>1 twice weakly and once strongly against -> still a cycle check.
    assert intransitive_triangle_rate(np.array([0, 0, 1, 2]), np.array([1, 1, 2, 0]),
                                      np.array([0.6, 0.6, 0.9, 0.9]), 3) == 1.0
    agreement = agreement_by_judge(["x", "x", "y"], np.array([0.9, 0.2, 0.5]), np.array([0.8, 0.7, 0.9]))
    assert agreement["x"] == 0.5 and np.isnan(agreement["y"])


def test_fit_raters_reads_a_preference_set_with_simulated_raters():
    from datasets import Dataset

    from zelo_hf.judging.base import EnsembleJudge
    from zelo_hf.judging.local import SimulatedJudge
    from zelo_hf.judging.preferences import judge_pairs

    rng = np.random.default_rng(0)
    qrels = {f"q{q}": {f"d{d}": int(rng.integers(0, 5)) for d in range(16)} for q in range(6)}
    candidates = Dataset.from_list([
        {"query_id": q, "query": f"query {q}", "doc_ids": list(docs), "docs": [f"text {d}" for d in docs]}
        for q, docs in qrels.items()
    ])
    judge = EnsembleJudge([
        SimulatedJudge(qrels, name="fair", seed=1),
        SimulatedJudge(qrels, name="first-lover", position_bias=1.0, seed=2),
        SimulatedJudge(qrels, name="sloppy", discrimination=0.3, seed=3),
    ])
    prefs, summary = judge_pairs(candidates, judge, degree=6, progress=False)
    fit = fit_raters(prefs)
    table = {row["judge"]: row for row in fit.judge_table()}
    assert table["first-lover"]["bias"] > 0.6 and abs(table["fair"]["bias"]) < 0.3
    assert table["sloppy"]["scale"] < 0.6 * table["fair"]["scale"]
    assert len(fit.items) == 6 * 16 and fit.intransitive_rate < 0.2
