"""The Thurstone / Bradley-Terry fit (ZELO.md step 5): exact optimum, recovery, batching, diagnostics, errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import expit, log_expit, log_ndtr
from scipy.stats import spearmanr

from zelo_hf.graphs import sample_cycle_graph
from zelo_hf.simulate import latent_scores, simulate_probs, simulate_queries
from zelo_hf.thurstone import (
    FitResult,
    fit_scores,
    fit_scores_batched,
    fit_scores_flat,
    fit_scores_grouped,
    objective,
)


class Reference:
    """An independent dense implementation of the same objective (scipy's log_ndtr / log_expit) for trust-exact."""

    def __init__(self, edges, probs, n, model, prior_sd):
        self.a, self.b, self.p, self.n, self.model, self.prec = edges[:, 0], edges[:, 1], probs, n, model, prior_sd**-2
        self.inc = np.zeros((len(edges), n))
        self.inc[np.arange(len(edges)), self.a] = 1.0
        self.inc[np.arange(len(edges)), self.b] = -1.0

    def _parts(self, s):
        d = self.inc @ s
        if self.model == "bradley-terry":
            return log_expit(d), log_expit(-d), expit(-d), -expit(d) * expit(-d)
        z = np.sqrt(2) * d
        lp, ln = log_ndtr(z), log_ndtr(-z)
        mills_p = np.exp(-z * z / 2 - 0.5 * np.log(2 * np.pi) - lp)  # phi(z) / Phi(z)
        return lp, ln, np.sqrt(2) * mills_p, -2 * mills_p * (z + mills_p)

    def value(self, s):
        lp, ln, _, _ = self._parts(s)
        return -(self.p @ lp + (1 - self.p) @ ln - 0.5 * self.prec * s @ s)

    def grad(self, s):
        _, _, g_pos, _ = self._parts(s)
        _, _, g_neg, _ = self._parts(-s)  # derivative of log F at -d
        return -(self.inc.T @ (self.p * g_pos - (1 - self.p) * g_neg) - self.prec * s)

    def hess(self, s):
        _, _, _, h_pos = self._parts(s)
        _, _, _, h_neg = self._parts(-s)
        w = -(self.p * h_pos + (1 - self.p) * h_neg)
        return self.inc.T @ (w[:, None] * self.inc) + self.prec * np.eye(self.n)

    def optimum(self):
        res = minimize(
            self.value,
            np.zeros(self.n),
            jac=self.grad,
            hess=self.hess,
            method="trust-exact",
            options={"gtol": 1e-12, "maxiter": 500},
        )
        return res.x, self.hess(res.x)


def _problem(n=30, degree=8, seed=0, **judge):
    rng = np.random.default_rng(seed)
    latent = latent_scores(n, rng)
    edges = sample_cycle_graph(n, degree, seed=rng)
    return latent, edges, simulate_probs(latent, edges, rng, **judge)


@pytest.mark.parametrize("model", ["thurstone", "bradley-terry"])
def test_fit_is_the_exact_optimum_of_an_independent_implementation(model):
    _, edges, probs = _problem()
    ref = Reference(edges, probs, 30, model, prior_sd=2.5)
    expected, hess = ref.optimum()
    result = fit_scores(edges, probs, 30, model=model, prior_sd=2.5, return_result=True)
    assert isinstance(result, FitResult) and result.converged and result.connected
    np.testing.assert_allclose(result.scores, expected, atol=1e-8)
    np.testing.assert_allclose(result.se, np.sqrt(np.diag(np.linalg.inv(hess))), rtol=1e-8)
    assert objective(result.scores, edges, probs, model, 2.5) == pytest.approx(-ref.value(expected), abs=1e-10)
    ll = -ref.value(expected) + 0.5 * expected @ expected / 2.5**2
    assert result.log_likelihood == pytest.approx(ll, rel=1e-9)
    assert abs(result.scores.sum()) < 1e-6  # the prior fixes the gauge: mean 0 at the optimum


def test_fit_recovers_latent_order_and_thurstone_beats_noise():
    latent, edges, probs = _problem(n=100, degree=8, seed=1)
    scores = fit_scores(edges, probs, 100)
    assert spearmanr(scores, latent).statistic > 0.97
    bt = fit_scores(edges, probs, 100, model="bradley-terry", prior_sd=100.0)
    # simulated judges are logistic in the latent difference: BT recovers the latent scale itself
    np.testing.assert_allclose(bt - bt.mean(), latent - latent.mean(), atol=0.5)


def test_extreme_and_hard_labels_stay_finite():
    edges = np.array([[0, 1], [1, 2], [0, 2], [2, 3]])
    probs = np.array([1.0, 1.0, 1.0, 0.0])  # 0 beats everything; 3 beats 2: perfectly separable
    for model in ("thurstone", "bradley-terry"):
        res = fit_scores(edges, probs, 4, model=model, return_result=True)
        assert res.converged and np.isfinite(res.scores).all() and np.isfinite(res.log_likelihood)
        assert res.scores[0] > res.scores[1] > res.scores[2] and res.scores[3] > res.scores[2]


def test_batched_equals_one_by_one_for_queries_of_different_sizes():
    sim = simulate_queries(12, n_docs=np.array([2, 3, 5, 9, 10, 17, 40, 100, 2, 64, 33, 8]), degree=8, seed=2)
    batch = fit_scores_flat(sim.edges, sim.probs, sim.sizes, chunk_size=5, num_threads=2)
    listed = fit_scores_batched(*zip(*[sim.query(q)[1:] for q in range(12)]), list(sim.sizes))
    for q in range(12):
        _, edges, probs = sim.query(q)
        single = fit_scores(edges, probs, int(sim.sizes[q]), return_result=True)
        np.testing.assert_allclose(batch[q].scores, single.scores, atol=1e-9)
        np.testing.assert_allclose(listed[q].se, single.se, rtol=1e-7)
        assert batch[q].converged and batch[q].connected
    assert batch.converged.all() and len(batch.split(batch.scores)) == 12


def test_disconnected_graph_is_fitted_and_flagged():
    edges = np.array([[0, 1], [2, 3]])
    res = fit_scores(edges, np.array([0.9, 0.2]), 5, return_result=True)
    assert res.converged and not res.connected
    assert res.scores[4] == pytest.approx(0.0, abs=1e-12) and res.se[4] == pytest.approx(4.0)  # prior only


def test_unsorted_edges_across_queries_are_handled():
    sim = simulate_queries(6, 20, 4, seed=3)
    order = np.random.default_rng(0).permutation(len(sim.edges))
    shuffled = fit_scores_flat(sim.edges[order], sim.probs[order], sim.sizes, compute_se=False)
    plain = fit_scores_flat(sim.edges, sim.probs, sim.sizes, compute_se=False)
    np.testing.assert_allclose(shuffled.scores, plain.scores, atol=1e-9)


@pytest.mark.parametrize(
    "edges,probs,sizes,match",
    [
        ([[0, 1]], [np.nan], [2], r"query_id='q0'.*non-finite prob_a"),
        ([[0, 1]], [1.5], [2], r"outside \[0, 1\]"),
        ([[0, 0]], [0.5], [2], "compares a document with itself"),
        ([[0, 5]], [0.5], [2], "out of range"),
        ([[1, 2]], [0.5], [2, 2], r"query_id='q0'.*different queries"),
        ([[0, 1]], [0.5], [2, 1], r"query_id='q1' has 1 document"),
        ([[0, 1]], [0.5, 0.5], [2], "one P"),
    ],
)
def test_bad_input_names_the_query_field_and_fix(edges, probs, sizes, match):
    with pytest.raises(ValueError, match=match):
        fit_scores_flat(np.array(edges), np.array(probs), sizes, query_ids=[f"q{i}" for i in range(len(sizes))])


def test_bad_arguments():
    with pytest.raises(ValueError, match="model='elo'"):
        fit_scores(np.array([[0, 1]]), [0.5], 2, model="elo")
    with pytest.raises(ValueError, match="prior_sd=0"):
        fit_scores(np.array([[0, 1]]), [0.5], 2, prior_sd=0)
    with pytest.raises(ValueError, match="query #0 has 1 document"):
        fit_scores(np.empty((0, 2)), [], 1)


def test_documents_in_no_pair_at_any_position_get_the_prior():
    edges = np.array([[1, 2], [2, 3], [1, 3]])
    for n in (4, 6):  # isolated documents first and last
        res = fit_scores(edges, np.array([0.8, 0.6, 0.9]), n, return_result=True)
        ref = Reference(edges, np.array([0.8, 0.6, 0.9]), n, "thurstone", 4.0)
        expected, hess = ref.optimum()
        np.testing.assert_allclose(res.scores, expected, atol=1e-8)
        np.testing.assert_allclose(res.se, np.sqrt(np.diag(np.linalg.inv(hess))), rtol=1e-8)
        assert not res.connected and res.se[0] == pytest.approx(4.0)


def test_query_without_pairs_and_uninformative_pairs():
    res = fit_scores(np.empty((0, 2)), [], 3, return_result=True)
    assert res.converged and not res.connected and res.iterations == 0
    np.testing.assert_allclose(res.scores, 0.0) and np.testing.assert_allclose(res.se, 4.0)
    ties = fit_scores(np.array([[0, 1]] * 3), [0.5] * 3, 2, return_result=True)
    np.testing.assert_allclose(ties.scores, 0.0, atol=1e-12)
    assert ties.log_likelihood == pytest.approx(3 * 2 * 0.5 * np.log(0.5))


# ----------------------------------------------------------------------------------------------- issue #12
def _dense_hessian(scores, edges, probs, n, model, prior_sd):
    """The Hessian of the negative objective at ``scores``, built densely per query by the reference."""
    return Reference(edges, probs, n, model, prior_sd).hess(scores)


@pytest.mark.parametrize("model", ["thurstone", "bradley-terry"])
def test_batched_standard_errors_equal_the_dense_inverse_per_query(model):
    sizes = np.array([2, 3, 7, 31, 32, 33, 64, 65, 100, 100, 129, 5, 100, 48, 200, 17])
    sim = simulate_queries(len(sizes), n_docs=sizes, degree=8, seed=7)
    order = np.random.default_rng(1).permutation(len(sim.edges))  # pairs in no particular order
    res = fit_scores_flat(sim.edges[order], sim.probs[order], sim.sizes, model=model, chunk_size=5, num_threads=2)
    for q in range(len(sizes)):
        _, edges, probs = sim.query(q)
        hess = _dense_hessian(res[q].scores, edges, probs, int(sizes[q]), model, 4.0)
        np.testing.assert_allclose(res[q].se, np.sqrt(np.diag(np.linalg.inv(hess))), rtol=0, atol=1e-10)


def _star(n):
    return np.array([[0, j] for j in range(1, n)])


def _path(n):
    return np.array([[j, j + 1] for j in range(n - 1)])


def _clique(n):
    return np.array([[i, j] for i in range(n) for j in range(i + 1, n)])


@pytest.mark.parametrize(
    "edges",
    [
        np.array([[0, 1], [1, 0], [0, 1]]),  # one pair judged three times, both orientations
        _star(9),  # the centre is eliminated first: every leaf is left, tied to the others through it
        _star(9)[:, ::-1],  # the leaves are eliminated: the centre alone is left
        np.concatenate([_path(12), _path(12)[:, ::-1], [[0, 2], [2, 0]]]),  # repeated pairs at eliminated nodes
        _clique(7),  # one node eliminated, the other six dense
        np.concatenate([_path(40), sample_cycle_graph(40, degree=8, seed=3)]),
    ],
    ids=["repeat", "star-centre", "star-leaves", "path-repeats", "clique", "path-and-cycles"],
)
def test_standard_errors_exact_on_graphs_that_stress_the_elimination(edges):
    n = int(edges.max()) + 1
    probs = np.random.default_rng(n).uniform(0.1, 0.9, len(edges))
    res = fit_scores(edges, probs, n, return_result=True)
    hess = _dense_hessian(res.scores, edges, probs, n, "thurstone", 4.0)
    np.testing.assert_allclose(res.se, np.sqrt(np.diag(np.linalg.inv(hess))), rtol=1e-10, atol=0)


@pytest.mark.parametrize("n", [1, 2, 31, 32, 33, 64, 100, 129])
def test_stacked_inverse_diagonals_are_exact(n):
    from zelo_hf.thurstone import _inverse_diagonals

    x = np.random.default_rng(n).normal(size=(5, n, 2 * n + 1))
    hess = x @ np.swapaxes(x, 1, 2) / n + 0.05 * np.eye(n)
    expected = np.stack([np.diag(np.linalg.inv(h)) for h in hess])
    np.testing.assert_allclose(_inverse_diagonals(hess), expected, rtol=1e-10, atol=0)


def test_far_tail_terms_match_scipy_log_ndtr():
    """Beyond |d| = 25 erfc underflows and the kernel switches to the asymptotic series of log Phi: it must agree
    with scipy's log_ndtr there (and on both sides of the switch)."""
    from scipy.special import log_ndtr

    for d in (24.9, 25.1, 30.0, 80.0, 400.0):
        for p in (0.0, 0.3, 1.0):
            scores = np.array([d, 0.0])
            expected = p * log_ndtr(np.sqrt(2) * d) + (1 - p) * log_ndtr(-np.sqrt(2) * d) - d**2 / (2 * 16.0)
            got = objective(scores, np.array([[0, 1]]), np.array([p]))
            assert got == pytest.approx(expected, rel=1e-13), (d, p)


def _terms_40_digits(d: float, p: float, model: str):
    """(l'(d), -l''(d), l(d), the size of l'(d)'s two terms) at 40 digits, l(d) = p log F(d) + (1 - p) log F(-d)."""
    import mpmath as mp

    with mp.workdps(40):
        d, p = mp.mpf(d), mp.mpf(p)
        if model == "thurstone":
            r2 = mp.sqrt(2)

            def log_f(x):  # log Phi(sqrt2 x), its digits kept where Phi is within 1e-40 of 1
                return mp.log1p(-mp.ncdf(-r2 * x)) if x > 0 else mp.log(mp.ncdf(r2 * x))

            def lam(x):  # d/dx log F(x)
                return r2 * mp.npdf(r2 * x) / mp.ncdf(r2 * x)

            def curv(x):  # -d2/dx2 log F(x)
                return lam(x) * (2 * x + lam(x))
        else:

            def log_f(x):
                return -mp.log1p(mp.exp(-x))

            def lam(x):
                return 1 / (1 + mp.exp(x))

            def curv(x):
                return mp.exp(x) / (1 + mp.exp(x)) ** 2

        return tuple(
            float(v)
            for v in (
                p * lam(d) - (1 - p) * lam(-d),
                p * curv(d) + (1 - p) * curv(-d),
                p * log_f(d) + (1 - p) * log_f(-d),
                p * lam(d) + (1 - p) * lam(-d),
            )
        )


@pytest.mark.parametrize("model", ["thurstone", "bradley-terry"])
def test_pair_terms_match_40_digit_references(model):
    """The kernel's per-pair terms (its own vectorisable exp, log and erfc) against mpmath at 40 digits, on both
    sides of every switch (erfc's pieces at |d| = 1 and 8, the asymptotic series at 25), with certain labels (p = 0
    or 1, where l(d) is a tail of 1e-300 that 1 - tail would round away) and for both signs of d."""
    from zelo_hf.fit_kernel import edge_terms

    rng = np.random.default_rng(0)
    edges = [0.0, 1.0, 8.0, 25.0, 700.0]
    d = np.concatenate([np.linspace(-40, 40, 321), rng.normal(0, 3, 160), [x * f for x in edges for f in (1 - 1e-12, 1 + 1e-12)]])
    d = np.concatenate([d, -d])
    p = rng.choice([0.0, 1.0, 0.3, 0.5, 5 / 6, 0.99], len(d))
    ref = np.array([_terms_40_digits(x, q, model) for x, q in zip(d, p)])
    dl, w, ll = np.empty(len(d)), np.empty(len(d)), np.empty(len(d))
    edge_terms(d, p, model == "thurstone", dl, w, ll)
    # Thurstone: exp(-u^2) carries the rounding of u^2 (u^2 eps, 2e-13 at |d| = 40); w: lam (lam - z) cancels
    tol = 3e-13 if model == "thurstone" else 1e-15
    np.testing.assert_array_less(np.abs(dl - ref[:, 0]), tol * ref[:, 3] + 1e-300)  # relative to its terms' size
    np.testing.assert_allclose(w, ref[:, 1], rtol=10 * tol, atol=1e-290)  # (w below 1e-290 is subnormal)
    np.testing.assert_allclose(ll, ref[:, 2], rtol=tol, atol=1e-300)


def test_default_threads_compose_with_worker_processes():
    import multiprocess

    from zelo_hf.thurstone import available_cores, default_num_threads

    assert default_num_threads() == available_cores()
    with multiprocess.Pool(1) as pool:  # the pool `Dataset.map(num_proc=N)` uses: N processes x 1 thread
        assert pool.apply(default_num_threads) == 1


def test_grouped_layout_equals_the_flat_one_and_names_a_bad_pair():
    """``fit_scores_grouped`` (local indices, query after query: the grouped preference set's layout, what the map
    passes) fits what ``fit_scores_flat`` fits; the kernel checks every pair and the error names the query."""
    sim = simulate_queries(5, n_docs=np.array([4, 9, 2, 30, 11]), degree=4, seed=4)
    flat = fit_scores_flat(sim.edges, sim.probs, sim.sizes, chunk_size=2, num_threads=2)
    starts = np.concatenate([[0], np.cumsum(sim.sizes)[:-1]])
    edge_query = np.repeat(np.arange(5), sim.sizes)[sim.edges[:, 0]]
    local = sim.edges - starts[edge_query][:, None]
    counts = np.bincount(edge_query, minlength=5)
    grouped = fit_scores_grouped(local[:, 0], local[:, 1], sim.probs, sim.sizes, counts, chunk_size=2)
    np.testing.assert_array_equal(grouped.scores, flat.scores)
    np.testing.assert_array_equal(grouped.se, flat.se)
    bad = local.copy()
    bad[counts[:3].sum() + 1, 1] = 30  # query 3 has 30 documents: index 30 is one past its last
    ids = [f"q{q}" for q in range(5)]
    with pytest.raises(ValueError, match=r"query_id='q3': pair \(\d+, 30\) is out of range for 30 doc_ids"):
        fit_scores_grouped(bad[:, 0], bad[:, 1], sim.probs, sim.sizes, counts, query_ids=ids)
    with pytest.raises(ValueError, match="one count per query"):
        fit_scores_grouped(local[:, 0], local[:, 1], sim.probs, sim.sizes, counts[:4])
