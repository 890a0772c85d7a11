"""Sparse comparison graphs (ZELO.md step 2) and the simulated judges."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from zelo_hf.graphs import comparison_graph, dense_graph, graph_diameter, is_connected, sample_cycle_graph
from zelo_hf.simulate import latent_scores, simulate_probs, simulate_queries


@pytest.mark.parametrize("n,degree", [(100, 8), (10, 4), (7, 2), (33, 16)])
def test_cycle_graph_is_regular_connected_and_duplicate_free(n, degree):
    edges = sample_cycle_graph(n, degree, seed=0)
    assert edges.dtype == np.int64 and edges.shape == (n * degree // 2, 2)
    assert (edges[:, 0] != edges[:, 1]).all()
    np.testing.assert_array_equal(np.bincount(edges.ravel(), minlength=n), np.full(n, degree))
    keys = np.minimum(edges[:, 0], edges[:, 1]) * n + np.maximum(edges[:, 0], edges[:, 1])
    assert len(np.unique(keys)) == len(keys)
    assert is_connected(edges, n)


def test_cycle_graph_is_reproducible_and_seed_dependent():
    a, b, c = sample_cycle_graph(50, 8, seed=3), sample_cycle_graph(50, 8, seed=3), sample_cycle_graph(50, 8, seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    gen = np.random.default_rng(3)
    np.testing.assert_array_equal(sample_cycle_graph(50, 8, seed=gen), a)


def test_a_seed_gives_the_graph_it_always_gave():
    """Judgment caches are keyed on the pairs: a faster sampler must draw the very graphs of the old one (the digest
    was taken from the sampler before #12 re-keyed only the swapped edges), re-draw-heavy cases included."""
    import hashlib
    import warnings

    digest = hashlib.sha256()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (30, 28) keeps repeats after the re-draws, and says so
        for n, degree in [(100, 8), (20, 8), (10, 8), (30, 28)]:
            for seed in range(5):
                digest.update(sample_cycle_graph(n, degree, seed=seed).tobytes())
    assert digest.hexdigest()[:16] == "28697dff7ef0464e"


def test_expander_diameter_is_small():
    assert 2 <= graph_diameter(sample_cycle_graph(100, 8, seed=0), 100) <= 5


def _n_repeats(edges, n):
    keys = np.minimum(edges[:, 0], edges[:, 1]) * n + np.maximum(edges[:, 0], edges[:, 1])
    return len(keys) - len(np.unique(keys))


def test_repeats_are_redrawn_or_warned_never_silent():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = [sample_cycle_graph(6, 4, seed=s, redraw_duplicates=False) for s in range(20)]
    seed = next(s for s, edges in enumerate(raw) if _n_repeats(edges, 6))  # a seed whose raw draw repeats a pair
    with pytest.warns(UserWarning, match=r"repeated pair\(s\) left after max_redraws=0"):
        kept = sample_cycle_graph(6, 4, seed=seed, max_redraws=0)
    assert _n_repeats(kept, 6) > 0 and kept.shape == (12, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default budget repairs it: no warning, no repeat
        assert _n_repeats(sample_cycle_graph(6, 4, seed=seed), 6) == 0


@pytest.mark.parametrize(
    "n,degree,match",
    [(10, 3, "must be even"), (8, 8, "< n"), (10, 0, ">= 2"), (2, 2, "`n` must be >= 3"), (9, 10, "degree=10, n=9")],
)
def test_cycle_graph_errors_name_the_argument(n, degree, match):
    with pytest.raises(ValueError, match=match):
        sample_cycle_graph(n, degree)


def test_small_n_falls_back_to_dense():
    np.testing.assert_array_equal(comparison_graph(2, 8), [[0, 1]])
    assert len(comparison_graph(3, 8)) == 3 and len(comparison_graph(9, 8)) == 36
    assert len(comparison_graph(10, 8, seed=0)) == 40
    with pytest.raises(ValueError, match="n=1"):
        comparison_graph(1, 8)
    assert len(dense_graph(100)) == 4950


def test_disconnected_graph_detected():
    edges = np.array([[0, 1], [2, 3]])
    assert not is_connected(edges, 4) and graph_diameter(edges, 4) == -1
    assert (
        is_connected(np.array([[0, 1], [1, 2], [2, 3]]), 4)
        and graph_diameter(np.array([[0, 1], [1, 2], [2, 3]]), 4) == 3
    )
    with pytest.raises(ValueError, match="out of range"):
        is_connected(np.array([[0, 5]]), 4)


def test_simulated_judges_follow_the_noise_model():
    rng = np.random.default_rng(0)
    latent = np.array([1.0, 0.0])
    edges = np.tile([[0, 1]], (20000, 1))
    probs = simulate_probs(latent, edges, rng, noise_sd=0.2, uniform_rate=0.0)
    assert abs(probs.mean() - 0.7293) < 0.01  # E[sigmoid(1 + N(0, .04))] ~ 0.7293
    noisy = simulate_probs(latent, edges, rng, noise_sd=0.0, uniform_rate=0.5)
    assert abs((np.abs(noisy - 1 / (1 + np.exp(-1.0))) > 1e-12).mean() - 0.5) < 0.02
    votes = simulate_probs(latent, edges, rng, n_votes=5, binary=True)
    assert set(np.unique(votes * 5).round().astype(int)) <= set(range(6))
    with pytest.raises(ValueError, match="n_votes=0"):
        simulate_probs(latent, edges, rng, n_votes=0)


def test_simulate_queries_layout():
    sim = simulate_queries(5, n_docs=np.array([2, 5, 20, 20, 3]), degree=4, seed=0, offset_sd=1.0)
    assert sim.latent.shape == (50,) and len(sim.probs) == len(sim.edges)
    lat, edges, probs = sim.query(2)
    assert len(lat) == 20 and edges.max() < 20 and len(edges) == 40 and len(probs) == 40
    assert np.all((latent_scores(1000, 0) >= -2) & (latent_scores(1000, 0) <= 2))


def test_zelo_graph_writes_the_pairs_that_judging_judges():
    """`zelo graph` (candidate_pairs) and `zelo judge --candidates` / the recipe (build_pairs) draw each query's graph
    from (seed, query_id): the same pairs, whatever the order or subset of queries (so the cache entries are shared)."""
    from datasets import Dataset

    from zelo_hf.graphs import candidate_pairs
    from zelo_hf.judging.pairs import build_pairs

    rows = [{"query_id": f"q{i}", "query": f"query {i}", "doc_ids": [f"d{j}" for j in range(6 + i)],
             "docs": [f"doc {j}" for j in range(6 + i)]} for i in range(4)]
    candidates = Dataset.from_list(rows)
    pairs = candidate_pairs(candidates, degree=4, seed=7)
    written = set(zip(pairs["query_id"], pairs["doc_a_id"], pairs["doc_b_id"]))
    judged = {(c.query_id, c.doc_a_id, c.doc_b_id) for c in build_pairs(candidates, degree=4, seed=7)}
    assert written == judged and len(written) == len(pairs)
    subset = candidate_pairs(Dataset.from_list(rows[::-1][:2]), degree=4, seed=7)
    assert set(zip(subset["query_id"], subset["doc_a_id"], subset["doc_b_id"])) <= written
