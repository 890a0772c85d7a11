"""Per-rater calibration (zerank-2): document scores fitted jointly with each judge's position bias and noise.

A judge ``j`` shown document ``f`` first and ``s`` second says ``f`` wins with probability

    P(f beats s) = F(alpha_j * (score_f - score_s) + beta_j)

where ``beta_j`` is the judge's position bias (additive on the presented-first document) and ``alpha_j`` its
discrimination (the inverse of its noise scale: a careless judge has a small ``alpha``), F the logistic
(Bradley-Terry) or the paper's Thurstone link ``(1 + erf(x)) / 2``. We maximise the soft-label log-likelihood

    sum_v  y_v log F(z_v) + (1 - y_v) log F(-z_v)  -  |scores|^2 / (2 prior_sd^2)  - priors on alpha, beta

by alternating Newton steps: all scores at once (a sparse Laplacian-plus-diagonal system, every query and
cross-query edge in one solve), then every judge's (alpha, beta) at once (2x2 systems, vectorised). Each block is
concave, each step is backtracked until the objective rises. ``alpha`` is only defined up to the scale of the
scores: we fix the geometric mean of the ``alpha`` to 1, so scores are in the units of an average judge.

Plain averaging (one soft label per pair, then a single-rater fit) weighs a careless judge like a careful one and
lets a position-biased judge push whichever document it happened to see first; this fit removes both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import spsolve
from scipy.special import expit, log_expit, log_ndtr

from .thurstone import check_fit_model

_SQRT2 = float(np.sqrt(2.0))


def _link(z: np.ndarray, y: np.ndarray, model: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-vote log-likelihood, its first derivative and minus its second derivative in ``z``."""
    if model == "bradley-terry":
        p = expit(z)
        return y * log_expit(z) + (1 - y) * log_expit(-z), y - p, p * (1 - p)
    if model == "thurstone":  # F(z) = (1 + erf(z)) / 2 = Phi(sqrt(2) z)
        u = _SQRT2 * z
        lp, lm = log_ndtr(u), log_ndtr(-u)
        log_phi = -0.5 * u**2 - 0.5 * np.log(2 * np.pi)
        r_p, r_m = np.exp(log_phi - lp), np.exp(log_phi - lm)  # inverse Mills ratios
        grad = _SQRT2 * (y * r_p - (1 - y) * r_m)
        curv = 2.0 * (y * r_p * (u + r_p) + (1 - y) * r_m * (r_m - u))
        return y * lp + (1 - y) * lm, grad, curv
    check_fit_model(model)
    raise AssertionError(f"no likelihood for fit model {model!r}")  # every one of FIT_MODELS is handled above


@dataclass
class RaterFit:
    """Result of :func:`fit_raters`.

    Attributes:
        items: the item keys (``(query_id, doc_id)`` for preference sets), in the order of ``scores``.
        scores: consensus scores (mean 0 per connected query under the prior; units of an average judge).
        judges: judge names, in the order of ``bias`` / ``scale``.
        bias: per-judge position bias ``beta`` (added on the presented-first side).
        scale: per-judge discrimination ``alpha`` (geometric mean 1; small = noisy).
        agreement: per judge, the fraction of its decisive votes that agree with the consensus order.
        intransitive_rate: fraction of triangles of the aggregated comparison graph whose majority votes cycle.
    """

    items: list[Any]
    scores: np.ndarray
    judges: list[str]
    bias: np.ndarray
    scale: np.ndarray
    agreement: dict[str, float]
    intransitive_rate: float
    log_likelihood: float
    iterations: int
    converged: bool
    n_votes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def score_of(self) -> dict[Any, float]:
        return dict(zip(self.items, self.scores.tolist()))

    def judge_table(self) -> list[dict[str, Any]]:
        return [{"judge": j, "bias": float(b), "scale": float(a), "agreement": self.agreement.get(j)}
                for j, b, a in zip(self.judges, self.bias, self.scale)]


def _objective(scores, alpha, beta, first, second, judge, y, model, prior_sd, alpha_sd, beta_sd) -> float:
    z = alpha[judge] * (scores[first] - scores[second]) + beta[judge]
    ll = _link(z, y, model)[0].sum()
    return float(ll - (scores**2).sum() / (2 * prior_sd**2) - ((alpha - 1) ** 2).sum() / (2 * alpha_sd**2)
                 - (beta**2).sum() / (2 * beta_sd**2))


def _score_step(scores, alpha, beta, first, second, judge, y, model, prior_sd) -> np.ndarray:
    """Newton direction for all scores at once (sparse graph Laplacian weighted by alpha^2 * curvature)."""
    n = len(scores)
    a = alpha[judge]
    _, g, w = _link(a * (scores[first] - scores[second]) + beta[judge], y, model)
    grad = np.bincount(first, a * g, n) - np.bincount(second, a * g, n) - scores / prior_sd**2
    ww = a**2 * w
    rows = np.concatenate([first, second, first, second])
    cols = np.concatenate([first, second, second, first])
    vals = np.concatenate([ww, ww, -ww, -ww])
    hess = sparse.coo_matrix((vals, (rows, cols)), shape=(n, n)).tocsc() + sparse.identity(n, format="csc") / prior_sd**2
    return spsolve(hess, grad)


def _judge_step(scores, alpha, beta, first, second, judge, y, model, n_judges, fit_bias, fit_scale, alpha_sd, beta_sd):
    """Newton direction for every judge's (alpha, beta): one 2x2 system per judge, vectorised with bincount."""
    d = scores[first] - scores[second]
    _, g, w = _link(alpha[judge] * d + beta[judge], y, model)
    ga = np.bincount(judge, g * d, n_judges) - (alpha - 1) / alpha_sd**2
    gb = np.bincount(judge, g, n_judges) - beta / beta_sd**2
    haa = np.bincount(judge, w * d * d, n_judges) + 1 / alpha_sd**2
    hab = np.bincount(judge, w * d, n_judges)
    hbb = np.bincount(judge, w, n_judges) + 1 / beta_sd**2
    if not fit_bias:
        return ga / haa * fit_scale, np.zeros(n_judges)
    if not fit_scale:
        return np.zeros(n_judges), gb / hbb
    det = haa * hbb - hab**2
    return (hbb * ga - hab * gb) / det, (haa * gb - hab * ga) / det


def _ascend(objective, params, step, max_halvings: int = 20):
    """Backtracking: halve the Newton step until the objective does not decrease."""
    base = objective(*params)
    t = 1.0
    for _ in range(max_halvings):
        trial = tuple(p + t * s for p, s in zip(params, step))
        value = objective(*trial)
        if value >= base - 1e-12:
            return trial, value
        t /= 2
    return params, base


def fit_raters_arrays(
    first: np.ndarray,
    second: np.ndarray,
    judge: np.ndarray,
    y: np.ndarray,
    n_items: int,
    n_judges: int,
    model: str = "bradley-terry",
    prior_sd: float = 3.0,
    alpha_sd: float = 1.0,
    beta_sd: float = 1.0,
    fit_bias: bool = True,
    fit_scale: bool = True,
    max_iter: int = 200,
    tol: float = 1e-7,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, int, bool]:
    """The multi-rater fit on flat arrays: vote ``v`` says presented-first item ``first[v]`` beats ``second[v]``
    with probability ``y[v]``, cast by judge ``judge[v]``. Returns ``(scores, alpha, beta, loglik, iters, converged)``.
    """
    first, second, judge = (np.asarray(a, dtype=np.int64) for a in (first, second, judge))
    y = np.asarray(y, dtype=np.float64)
    check_fit_model(model)
    if not (len(first) == len(second) == len(judge) == len(y)):
        raise ValueError(f"`first`, `second`, `judge`, `y` must have equal lengths (got {len(first)}, {len(second)}, "
                         f"{len(judge)}, {len(y)}).")
    if len(y) and (np.nanmin(y) < 0 or np.nanmax(y) > 1 or np.isnan(y).any()):
        raise ValueError("`y` must be probabilities in [0, 1] without NaN: drop failed votes before fitting.")
    scores, alpha, beta = np.zeros(n_items), np.ones(n_judges), np.zeros(n_judges)
    data = (first, second, judge, y, model)

    def objective(s, a, b):
        return _objective(s, a, b, *data, prior_sd, alpha_sd, beta_sd)

    value, converged, iterations = objective(scores, alpha, beta), False, 0
    for iterations in range(1, max_iter + 1):  # noqa: B007 -- reported below
        step = _score_step(scores, alpha, beta, *data, prior_sd)
        (scores,), _ = _ascend(lambda s, a=alpha, b=beta: objective(s, a, b), (scores,), (step,))
        if fit_bias or fit_scale:
            da, db = _judge_step(scores, alpha, beta, *data, n_judges, fit_bias, fit_scale, alpha_sd, beta_sd)
            (alpha, beta), _ = _ascend(lambda a, b, s=scores: objective(s, a, b), (alpha, beta), (da, db))
            alpha = np.maximum(alpha, 1e-3)
            if fit_scale:  # gauge: geometric-mean discrimination 1 (scores carry the scale)
                g = float(np.exp(np.mean(np.log(alpha))))
                alpha, scores = alpha / g, scores * g
        new_value = objective(scores, alpha, beta)
        if abs(new_value - value) <= tol * max(1.0, abs(value)):
            converged, value = True, new_value
            break
        value = new_value
    return scores, alpha, beta, value, iterations, converged


def intransitive_triangle_rate(a: np.ndarray, b: np.ndarray, prob_a: np.ndarray, n_items: int) -> float:
    """Fraction of triangles (3 items, all 3 pairs judged) whose majority preferences form a cycle a>b>c>a.

    Repeated pairs are averaged first; a pair at exactly 0.5 has no direction, so its triangles are not counted.
    """
    a, b, prob = (np.asarray(x) for x in (a, b, prob_a))
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    p_lo = np.where(a == lo, prob, 1 - prob)  # P(lo beats hi)
    keys, inverse = np.unique(lo.astype(np.int64) * n_items + hi, return_inverse=True)
    mean = np.bincount(inverse, p_lo) / np.bincount(inverse)
    lo_u, hi_u = keys // n_items, keys % n_items
    decided = mean != 0.5
    winner = np.where(mean > 0.5, lo_u, hi_u)[decided]
    loser = np.where(mean > 0.5, hi_u, lo_u)[decided]
    ones = np.ones(len(winner))
    directed = sparse.csr_matrix((ones, (winner, loser)), shape=(n_items, n_items))
    undirected = directed + directed.T
    total = (undirected @ undirected).multiply(undirected).sum() / 6.0
    cyclic = (directed @ directed).multiply(directed.T).sum() / 3.0
    return float(cyclic / total) if total > 0 else 0.0


def agreement_by_judge(judges: Sequence[str], vote_probs: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Per judge: the fraction of its decisive votes (prob != 0.5) on the same side of 0.5 as ``reference``."""
    judges = np.asarray(judges)
    vote_side = np.sign(np.asarray(vote_probs, dtype=np.float64) - 0.5)
    ref_side = np.sign(np.asarray(reference, dtype=np.float64) - 0.5)
    decisive = (vote_side != 0) & (ref_side != 0)
    out = {}
    for name in dict.fromkeys(judges.tolist()):
        mask = decisive & (judges == name)
        out[name] = float(np.mean(vote_side[mask] == ref_side[mask])) if mask.any() else float("nan")
    return out


def votes_to_arrays(preferences: Any) -> dict[str, Any]:
    """Flatten a preference set (rows with ``votes``) to per-vote arrays in presented order, with item keys.

    Items are ``(query_id, doc_id)``; in cross-query rows document B belongs to ``query_b_id``. Failed votes
    (``prob_a`` None) are left out.
    """
    index: dict[tuple[str, str], int] = {}
    judge_index: dict[str, int] = {}
    a_idx, b_idx, judge, prob, swapped = [], [], [], [], []
    columns = preferences.column_names if hasattr(preferences, "column_names") else None
    rows = preferences if columns is None else preferences.select_columns(
        [c for c in ("query_id", "doc_a_id", "doc_b_id", "query_b_id", "votes") if c in columns])
    for row in rows:
        ka = (str(row["query_id"]), str(row["doc_a_id"]))
        kb = (str(row.get("query_b_id") or row["query_id"]), str(row["doc_b_id"]))
        ia, ib = index.setdefault(ka, len(index)), index.setdefault(kb, len(index))
        for vote in row["votes"]:
            if vote.get("prob_a") is None or vote.get("error"):
                continue
            a_idx.append(ia)
            b_idx.append(ib)
            judge.append(judge_index.setdefault(vote["judge"], len(judge_index)))
            prob.append(float(vote["prob_a"]))
            swapped.append(bool(vote.get("swapped")))
    if not prob:
        raise ValueError("the preference set has no successful votes: nothing to fit (check the judges' errors).")
    return {"items": list(index), "judges": list(judge_index), "a": np.array(a_idx), "b": np.array(b_idx),
            "judge": np.array(judge), "prob_a": np.array(prob), "swapped": np.array(swapped, dtype=bool)}


def fit_raters(
    votes: Any,
    model: str = "bradley-terry",
    prior_sd: float = 3.0,
    fit_bias: bool = True,
    fit_scale: bool = True,
    max_iter: int = 200,
    tol: float = 1e-7,
) -> RaterFit:
    """Fit consensus scores and each judge's position bias and discrimination from raw votes.

    Args:
        votes: a preference set (``datasets.Dataset`` or list of rows with ``votes``, as written by
            :func:`zelo_hf.judging.preferences.judge_pairs`), or a dict of arrays ``{"a", "b", "judge", "prob_a",
            "swapped"}`` (+ optional ``"items"``, ``"judges"`` names) with ``a``/``b`` item indices.
        model: ``"bradley-terry"`` (logistic) or ``"thurstone"`` (``(1 + erf(x)) / 2``).
        prior_sd: Gaussian prior on the scores (keeps a document that wins everything finite; fixes the mean).
        fit_bias, fit_scale: fit the per-judge position bias / discrimination (False: 0 / 1).
    """
    arrays = votes if isinstance(votes, dict) else votes_to_arrays(votes)
    a, b = np.asarray(arrays["a"], dtype=np.int64), np.asarray(arrays["b"], dtype=np.int64)
    judge_idx, prob = np.asarray(arrays["judge"], dtype=np.int64), np.asarray(arrays["prob_a"], dtype=np.float64)
    swapped = np.asarray(arrays.get("swapped", np.zeros(len(a), dtype=bool)), dtype=bool)
    n_items = len(arrays["items"]) if "items" in arrays else int(max(a.max(), b.max()) + 1)
    judges = list(arrays.get("judges") or [f"judge_{i}" for i in range(int(judge_idx.max()) + 1)])
    first, second = np.where(swapped, b, a), np.where(swapped, a, b)
    y_first = np.where(swapped, 1.0 - prob, prob)
    scores, alpha, beta, ll, iters, converged = fit_raters_arrays(
        first, second, judge_idx, y_first, n_items, len(judges), model=model, prior_sd=prior_sd,
        fit_bias=fit_bias, fit_scale=fit_scale, max_iter=max_iter, tol=tol,
    )
    names = [judges[j] for j in judge_idx]
    reference = expit(scores[a] - scores[b])
    return RaterFit(
        items=list(arrays.get("items") or range(n_items)), scores=scores, judges=judges, bias=beta, scale=alpha,
        agreement=agreement_by_judge(names, prob, reference),
        intransitive_rate=intransitive_triangle_rate(a, b, prob, n_items),
        log_likelihood=ll, iterations=iters, converged=converged, n_votes=len(a),
    )
