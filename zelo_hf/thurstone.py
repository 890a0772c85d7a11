"""Thurstone / Bradley-Terry maximum-likelihood scores from soft pairwise labels (ZELO.md, pipeline step 5).

Per query, the scores ``s`` maximise the concave objective

    sum_e [ p_e log F(s_a - s_b) + (1 - p_e) log F(s_b - s_a) ]  -  sum_i s_i^2 / (2 prior_sd^2)

with ``F(x) = (1 + erf(x)) / 2`` (``model="thurstone"``, the paper's probit form) or ``F = sigmoid``
(``model="bradley-terry"``). ``log F`` is concave for both, and the Gaussian prior makes the objective strictly
concave, so the optimum is unique, finite (a document that wins everything stays finite), centred (the prior
fixes the gauge: scores sum to 0) and well defined even on a disconnected graph (such queries are flagged
``connected=False``, never hidden). :func:`fit_scores` reports that exact optimum (to ``tol`` on the gradient).

Many queries are fitted in one vectorised call (:func:`fit_scores_flat`): all documents get one global index,
the Hessian is block diagonal over queries (a weighted graph Laplacian plus the prior's diagonal), and every
Newton system is solved by one batched Jacobi-preconditioned conjugate gradient (random regular graphs are
expanders, so CG needs few iterations) with per-query step sizes, per-query backtracking (monotone ascent) and
a per-query convergence flag. Standard errors are exact: ``sqrt(diag(H^-1))`` at the optimum, from the dense
per-query Hessians stacked over queries of equal size and inverted by blocks (stacked GEMMs, one NumPy call per
block of queries). Blocks of queries run in parallel threads with BLAS/OpenMP pinned to one thread each.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy.special import erfc, expit, log_ndtr, logit, ndtri

__all__ = [
    "FIT_MODELS", "FitResult", "BatchFitResult", "check_fit_model", "fit_scores", "fit_scores_batched",
    "fit_scores_flat", "objective",
]  # fmt: skip

# The fit-model vocabulary (F in P(a beats b) = F(s_a - s_b)), the one list every caller imports: the recipe's
# `link`, `fit_raters`, `zelo fit --model` and `zelo calibrate --model` (issue #9).
FIT_MODELS = ("thurstone", "bradley-terry")
# Latent differences span about +-4 (ZELO.md), i.e. scores about +-2. A prior this wide shrinks a document
# with 8 comparisons by only a few percent, yet keeps all-wins documents finite and the gauge fixed.
DEFAULT_PRIOR_SD = 4.0
_SQRT2 = np.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / np.sqrt(2.0 * np.pi)
# Inexact Newton: each CG solve stops at residual <= max(min(_ETA0, _ETA1 |g|) |g|, _FLOOR tol) (see _newton).
_ETA0, _ETA1, _FLOOR = 0.003, 0.3, 0.3
_TAIL = 25.0  # |d| beyond which erfc underflows towards 1e-300: use log_ndtr there


@dataclass
class FitResult:
    """Scores of one query and the fit's diagnostics.

    Attributes:
        scores: fitted scores (mean 0 up to the prior's pull), one per document.
        se: standard errors ``sqrt(diag(H^-1))`` at the optimum (``None`` when not computed).
        converged: max |gradient| <= tol was reached within ``max_iter`` Newton steps.
        iterations: Newton steps taken.
        log_likelihood: the data term of the objective at the optimum (prior excluded).
        connected: the comparison graph connects all documents (scores of separate components are
            only tied together by the prior: compare them with care).
    """

    scores: np.ndarray
    se: np.ndarray | None
    converged: bool
    iterations: int
    log_likelihood: float
    connected: bool


@dataclass
class BatchFitResult:
    """Struct-of-arrays result of :func:`fit_scores_flat`; ``result[q]`` gives query ``q``'s :class:`FitResult`."""

    scores: np.ndarray
    se: np.ndarray | None
    sizes: np.ndarray
    converged: np.ndarray
    iterations: np.ndarray
    log_likelihood: np.ndarray
    connected: np.ndarray
    grad_norm: np.ndarray
    starts: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)

    def __len__(self) -> int:
        return len(self.sizes)

    def split(self, values: np.ndarray) -> list[np.ndarray]:
        """Cut a flat per-document array into one array per query."""
        return np.split(values, np.cumsum(self.sizes)[:-1])

    def __getitem__(self, q: int) -> FitResult:
        sl = slice(self.starts[q], self.starts[q] + self.sizes[q])
        return FitResult(
            scores=self.scores[sl],
            se=None if self.se is None else self.se[sl],
            converged=bool(self.converged[q]),
            iterations=int(self.iterations[q]),
            log_likelihood=float(self.log_likelihood[q]),
            connected=bool(self.connected[q]),
        )

    def to_list(self) -> list[FitResult]:
        return [self[q] for q in range(len(self))]


# ----------------------------------------------------------------------------------------------- edge terms
# Each returns the derivative of the per-edge log-likelihood l(d) in d, the curvature weight -l''(d) > 0, and
# a callable giving l(d) itself, computed on demand from the intermediates already at hand (the line search
# needs it; objective() and the final report too), so no second special function is evaluated.
# ``ws`` is an optional scratch array of shape (_WS_ROWS, len(d)) that receives every edge-length
# intermediate (the returned arrays are rows of it): edge arrays are ~1 MB, and fresh ones of that size cost
# page faults on every allocation, which made up about half the time of these functions.
_WS_ROWS = 12


def _terms_bt(d: np.ndarray, p: np.ndarray, ws: np.ndarray | None = None):
    """Bradley-Terry: sigmoid derivatives; the log-likelihood lazily."""
    sig, dl, w = np.empty((3, len(d))) if ws is None else ws[:3]
    expit(d, out=sig)
    np.subtract(p, sig, out=dl)
    np.subtract(1.0, sig, out=w)
    w *= sig

    def ll() -> np.ndarray:
        with np.errstate(divide="ignore"):
            log_f_pos = np.log(sig)  # log sigmoid(d); only d < -745 underflows, handled below
        far = sig == 0.0
        if far.any():
            log_f_pos[far] = d[far] - np.log1p(np.exp(d[far]))
        return log_f_pos - (1.0 - p) * d  # p log s(d) + (1-p) log s(-d), with log s(-d) = log s(d) - d

    return dl, w, ll


def _terms_thurstone(d: np.ndarray, p: np.ndarray, ws: np.ndarray | None = None):
    """Thurstone: F(d) = Phi(sqrt(2) d) = erfc(-d) / 2, written for u = |d| so one erfc per edge suffices (it is
    the main cost): the small tail Phi(-sqrt2 u) is computed, the large side is 1 - tail (accurate). ``p_w`` is
    the label's mass on the side that ``d`` favours. Beyond u > 25 the tail underflows, so log_ndtr takes over
    there. Written with in-place ufuncs into ``ws`` (see above)."""
    if ws is None:
        ws = np.empty((_WS_ROWS, len(d)))
    z, uu, sign, p_w, q_w, tail, big, lam_big, lam_tail, curv_tail, dl, w = ws[:_WS_ROWS]
    u = np.abs(d, out=z)  # becomes z = sqrt2 u below
    # Arithmetic, not np.where: with a data-dependent mask np.where is ~50x slower than a multiply-add.
    neg = np.less(d, 0.0, out=sign)  # 1.0 where d < 0; becomes sqrt2 * sign(d) below
    np.multiply(p, -2.0, out=p_w)
    p_w += 1.0
    p_w *= neg
    p_w += p  # p where d >= 0, else 1 - p
    np.subtract(1.0, p_w, out=q_w)
    erfc(u, out=tail)
    tail *= 0.5
    np.subtract(1.0, tail, out=big)  # in [0.5, 1]: log(big) is accurate to ~1e-17 absolute
    np.multiply(u, u, out=uu)
    phi = np.negative(uu, out=lam_tail)
    np.exp(phi, out=phi)
    phi *= _INV_SQRT_2PI
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        np.divide(phi, big, out=lam_big)  # inverse Mills ratios at +z and -z (z = sqrt2 u)
        np.divide(phi, tail, out=lam_tail)  # phi is not needed afterwards
    z *= _SQRT2
    far = np.flatnonzero(z > _TAIL * _SQRT2)  # |d| > _TAIL
    log_tail_far = None
    if len(far):
        log_tail_far = log_ndtr(-z[far])
        lam_tail[far] = np.exp(-uu[far] + np.log(_INV_SQRT_2PI) - log_tail_far)
    np.multiply(p_w, lam_big, out=dl)
    np.multiply(q_w, lam_tail, out=curv_tail)
    dl -= curv_tail
    sign *= -2.0 * _SQRT2
    sign += _SQRT2
    dl *= sign  # sqrt2 * sign(d), with sign(0) = +1
    # -(d^2/dz^2) log Phi(z) = lam(z) (z + lam(z)), in (0, 1); the chain rule through z = sqrt2 d gives the 2.
    np.subtract(lam_tail, z, out=curv_tail)
    curv_tail *= lam_tail
    if len(far):
        np.clip(curv_tail, 0.0, 1.0, out=curv_tail)
    curv_tail *= q_w
    np.add(lam_big, z, out=w)
    w *= lam_big
    w *= p_w
    w += curv_tail
    w *= 2.0

    def ll() -> np.ndarray:
        with np.errstate(divide="ignore"):
            log_tail = np.log(tail)
        if log_tail_far is not None:
            log_tail[far] = log_tail_far
        return p_w * np.log(big) + q_w * log_tail

    return dl, w, ll


_TERMS = {"thurstone": _terms_thurstone, "bradley-terry": _terms_bt}


def objective(
    scores: np.ndarray,
    edges: np.ndarray,
    probs: np.ndarray,
    model: str = "thurstone",
    prior_sd: float = DEFAULT_PRIOR_SD,
) -> float:
    """The penalised log-likelihood that :func:`fit_scores` maximises (for checks against other optimisers)."""
    scores, edges = np.asarray(scores, dtype=np.float64), np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    _, _, ll = _TERMS[check_fit_model(model)](scores[edges[:, 0]] - scores[edges[:, 1]], np.asarray(probs, float))
    return float(ll().sum() - 0.5 * np.sum(scores**2) / prior_sd**2)


# ----------------------------------------------------------------------------------------------- validation
def check_fit_model(model: str, name: str = "model") -> str:
    """``model`` if it is one of :data:`FIT_MODELS`, else a ValueError naming the setting ``name``, the value and the
    fix (call it where settings are parsed, so a bad value fails before anything is judged)."""
    if model not in FIT_MODELS:
        alias = " (a logistic F is 'bradley-terry')" if str(model).lower() in ("logistic", "logit", "sigmoid") else ""
        raise ValueError(
            f"`{name}` must be one of {FIT_MODELS} (got {name}={model!r}): use 'thurstone' (the paper's, "
            f"F = (1 + erf) / 2) or 'bradley-terry' (F = sigmoid){alias}."
        )
    return model


def _name(query_ids, q: int) -> str:
    if query_ids is None:
        return f"query #{q}"
    qid = query_ids[q]
    return f"query_id={getattr(qid, 'item', lambda: qid)()!r}"


def _validate(edges, probs, sizes, query_ids):
    """Check the flat inputs; return int64 edges, float64 probs, int64 sizes, the query of each edge (None when
    the edges are already in query order) and the number of edges per query."""
    sizes = np.asarray(sizes, dtype=np.int64).reshape(-1)
    edges = np.asarray(edges)
    if edges.size == 0:
        edges = edges.reshape(0, 2)
    if edges.ndim != 2 or edges.shape[1] != 2:
        raise ValueError(f"`edges` must have shape (m, 2) (got shape={edges.shape}): pass pairs (a, b) of indices.")
    edges = np.asarray(edges, dtype=np.int64)  # no copy when already int64: the fit only reads it
    probs = np.asarray(probs, dtype=np.float64).reshape(-1)
    if len(probs) != len(edges):
        raise ValueError(f"`probs` has {len(probs)} values for {len(edges)} edges: pass one P(a beats b) per edge.")
    small = np.flatnonzero(sizes < 2)
    if len(small):
        q = small[0]
        raise ValueError(
            f"{_name(query_ids, q)} has {sizes[q]} document(s): a fit needs >= 2 per query; drop such queries "
            "(nothing to rank) before fitting."
        )
    n_total = int(sizes.sum())
    if len(edges) and (edges.min() < 0 or edges.max() >= n_total):
        bad = np.flatnonzero((edges < 0).any(axis=1) | (edges >= n_total).any(axis=1))
        raise ValueError(
            f"`edges` row {bad[0]} = {edges[bad[0]].tolist()} is out of range for {n_total} documents: indices "
            "must point into the query's doc list."
        )
    item_query = np.repeat(np.arange(len(sizes)), sizes)
    counts, grouped = _scan_pairs(edges, probs, item_query, len(sizes))
    if grouped is None:  # some pair is invalid: the full check finds the first one and says what is wrong
        edge_query = item_query[edges[:, 0]]
        _check_pairs(edges, probs, item_query, edge_query, np.concatenate([[0], np.cumsum(sizes)[:-1]]), query_ids)
    edge_query = None if grouped else item_query[edges[:, 0]]
    return edges, probs, sizes, edge_query, counts


def _scan_pairs(edges, probs, item_query, n_queries: int, block: int = 1 << 16):
    """One pass over the pairs in cache-sized blocks: the number of pairs per query, whether the pairs are
    grouped by query (query order, as the chunks need them) and whether every pair is valid (``grouped`` is
    None if not). Blocks keep the temporaries small: full-length temporaries of millions of pairs cost more in
    fresh memory (page faults) than the checks themselves."""
    counts = np.zeros(n_queries, dtype=np.int64)
    grouped, last = True, -1
    for lo in range(0, len(edges), block):
        a, b, p = edges[lo : lo + block, 0], edges[lo : lo + block, 1], probs[lo : lo + block]
        qa = item_query[a]
        if (
            np.any(a == b)
            or np.any(item_query[b] != qa)
            or not np.all(np.isfinite(p))
            or np.any(p < 0)
            or np.any(p > 1)
        ):
            return counts, None
        grouped = grouped and qa[0] >= last and bool(np.all(qa[1:] >= qa[:-1]))
        last = qa[-1]
        counts += np.bincount(qa, minlength=len(counts))
    return counts, grouped


def _check_pairs(edges, probs, item_query, edge_query, starts, query_ids) -> None:
    """Errors show the pair with indices local to its query (as in ``pair_a`` / ``pair_b``)."""
    for mask, what, fix in (
        (edges[:, 0] == edges[:, 1], "compares a document with itself", "drop self-pairs"),
        (item_query[edges[:, 1]] != edge_query, "joins documents of different queries", "fit queries separately"),
        (~np.isfinite(probs), "has a non-finite prob_a", "drop or re-judge failed pairs"),
        ((probs < 0) | (probs > 1), "has prob_a outside [0, 1]", "pass probabilities P(a beats b)"),
    ):
        bad = np.flatnonzero(mask)
        if len(bad):
            e = bad[0]
            raise ValueError(
                f"{_name(query_ids, edge_query[e])}: pair {(edges[e] - starts[edge_query[e]]).tolist()} {what} "
                f"(prob_a={probs[e]}): {fix}."
            )


# ----------------------------------------------------------------------------------------------- the solver
class _Chunk:
    """A block of whole queries with local indices; holds the sparse incidence matrix for fast mat-vecs."""

    def __init__(self, a, b, p, c, sizes, model, prior_sd):
        self.a, self.b, self.p, self.c, self.sizes = a, b, p, c, sizes
        self.n, self.m, self.q = int(sizes.sum()), len(a), len(sizes)
        self.starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.edge_query = np.repeat(np.arange(self.q), sizes)[a] if self.m else np.empty(0, np.int64)
        self.model, self.prior_sd = model, prior_sd
        self.terms, self.prec = _TERMS[model], 1.0 / prior_sd**2
        cols = np.stack([a, b], axis=1).ravel()
        incidence = sp.csr_matrix(
            (np.tile([1.0, -1.0], self.m), cols, np.arange(0, 2 * self.m + 1)[::2]), (self.m, self.n)
        )
        self.BT = incidence.T.tocsr()  # B^T: the scatter of a gradient as a row-wise gather, sorted once
        # H = B^T diag(w) B + prec I = diag + off-diagonal part. The off-diagonal part reuses B^T's row layout:
        # slot k of row i is edge e = BT.indices[k], whose other end is a[e] + b[e] - i (duplicates are fine in CSR).
        self.slot_edge = self.BT.indices
        rows = np.repeat(np.arange(self.n), np.diff(self.BT.indptr))
        other = (a + b)[self.slot_edge] - rows
        # Stored with +w (H's off-diagonal is -w): assemble() then gathers the weights straight into .data.
        self.offdiag = sp.csr_matrix((np.zeros(len(other)), other, self.BT.indptr), shape=(self.n, self.n))
        # |B|^T: the Laplacian's diagonal (sum of incident weights) as one sparse mat-vec
        self.abs_BT = sp.csr_matrix((np.ones(len(other)), self.slot_edge, self.BT.indptr), shape=(self.n, self.m))
        self.diag = np.full(self.n, self.prec)
        self.ws = np.empty((_WS_ROWS + 2, self.m))  # scratch of evaluate()
        # per-query sums over edges: a contiguous reduceat when edges are grouped by query and none is empty
        counts = np.bincount(self.edge_query, minlength=self.q)
        grouped = bool(np.all(np.diff(self.edge_query) >= 0)) and bool(np.all(counts > 0))
        self.edge_starts = np.concatenate([[0], np.cumsum(counts)[:-1]]) if grouped else None

    def assemble(self, w: np.ndarray) -> np.ndarray:
        """Fill H with the curvature weights ``w``; returns its diagonal (the Jacobi preconditioner)."""
        np.take(w, self.slot_edge, out=self.offdiag.data, mode="clip")  # indices are valid; 'raise' buffers
        self.diag = self.abs_BT @ w
        self.diag += self.prec
        return self.diag

    def seg(self, x: np.ndarray) -> np.ndarray:
        """Per-query sums of a per-document array."""
        return np.add.reduceat(x, self.starts)

    def seg_edges(self, x: np.ndarray) -> np.ndarray:
        """Per-query sums of a per-edge array."""
        if self.edge_starts is not None:
            return np.add.reduceat(x, self.edge_starts)
        return np.bincount(self.edge_query, weights=x, minlength=self.q).astype(np.float64)

    def per_doc(self, x: np.ndarray) -> np.ndarray:
        """Broadcast a per-query array to the query's documents."""
        return np.repeat(x, self.sizes)

    def evaluate(self, s: np.ndarray):
        """Edge derivatives ``dl``, curvature weights ``w``, the lazy edge log-likelihood and the gradient at s.

        The edge arrays live in one scratch buffer: they are only valid until the next call."""
        ws = self.ws
        d, sb = ws[_WS_ROWS], ws[_WS_ROWS + 1]
        np.take(s, self.a, out=d, mode="clip")  # indices are valid; the default mode='raise' buffers out
        d -= np.take(s, self.b, out=sb, mode="clip")
        if self.c is not None:
            d += self.c
        dl, w, ll = self.terms(d, self.p, ws)
        g = self.BT @ dl
        g -= self.prec * s
        return dl, w, ll, g

    def objective(self, s: np.ndarray, ll) -> np.ndarray:
        """Per-query objective from the lazy edge log-likelihood ``ll`` of :meth:`evaluate` at the same s."""
        return self.seg_edges(ll()) - 0.5 * self.prec * self.seg(s * s)

    def hess_vec(self, v: np.ndarray) -> np.ndarray:
        hv = self.diag * v
        hv -= self.offdiag @ v
        return hv


def _pcg(ch: _Chunk, w: np.ndarray, rhs: np.ndarray, target: np.ndarray, max_cg: int) -> np.ndarray:
    """Solve H x = rhs for every query at once (Jacobi-preconditioned CG, per-query alpha/beta and stopping)."""
    inv_diag = 1.0 / ch.assemble(w)
    x, r = np.zeros_like(rhs), rhs.copy()
    z = r * inv_diag
    d, rz = z.copy(), ch.seg(r * z)
    target2 = target**2
    active = ch.seg(r * r) > target2
    for _ in range(max_cg):
        if not active.any():
            break
        hd = ch.hess_vec(d)
        dhd = ch.seg(d * hd)
        alpha = np.where(active & (dhd > 0), rz / np.where(dhd > 0, dhd, 1.0), 0.0)
        alpha_i = ch.per_doc(alpha)
        x += alpha_i * d
        hd *= alpha_i
        r -= hd
        active &= ch.seg(r * r) > target2
        np.multiply(r, inv_diag, out=z)
        rz_new = ch.seg(r * z)
        beta = np.where(active, rz_new / np.where(rz > 0, rz, 1.0), 0.0)
        d *= ch.per_doc(beta)
        d += z
        rz = rz_new
    return x


def _line_search(ch: _Chunk, s, step, f, slope):
    """Per-query backtracking (Armijo) so every query's objective never decreases."""
    t = np.ones(ch.q)
    s_new = s + step
    for _ in range(40):
        dl, w, ll, g = ch.evaluate(s_new)
        f_new = ch.objective(s_new, ll)
        # Near the optimum the predicted gain is below rounding of f: accept the Newton step there.
        ok = (f_new >= f + 1e-4 * t * slope) | (t * slope <= 1e-13 * (1.0 + np.abs(f)))
        if ok.all():
            return s_new, dl, w, ll, g, f_new
        t = np.where(ok, t, 0.5 * t)
        s_new = s + ch.per_doc(t) * step
    t = np.where(ok, t, 0.0)  # no ascent found: keep the old point for those queries
    s_new = s + ch.per_doc(t) * step
    dl, w, ll, g = ch.evaluate(s_new)
    return s_new, dl, w, ll, g, ch.objective(s_new, ll)


def _warm_start(ch: _Chunk, max_cg: int) -> np.ndarray:
    """Least-squares scores for the linearised model: differences ~ F^-1(p) (clipped), unit weights, solved
    loosely. It saves about two Newton steps over starting from 0; Newton then finds the exact optimum."""
    p = np.clip(ch.p, 0.03, 0.97)
    # F^-1(p) = ndtri(p) / sqrt2 for Thurstone (= erfinv(2p - 1), but ndtri is ~2.5x cheaper)
    target = ndtri(p) / _SQRT2 if ch.terms is _terms_thurstone else logit(p)
    if ch.c is not None:
        target = target - ch.c
    rhs = ch.BT @ target
    return _pcg(ch, np.ones(ch.m), rhs, 1e-2 * np.sqrt(ch.seg(rhs * rhs)), max_cg)


def _newton(ch: _Chunk, tol: float, max_iter: int, max_cg: int, s: np.ndarray | None = None):
    s = _warm_start(ch, max_cg) if s is None else s
    dl, w, ll, g = ch.evaluate(s)
    f = ch.objective(s, ll)
    iterations = np.zeros(ch.q, dtype=np.int64)
    for it in range(max_iter + 1):
        gmax = np.maximum.reduceat(np.abs(g), ch.starts)
        todo = gmax > tol
        n_todo = np.count_nonzero(todo)
        if not n_todo or it >= max_iter:
            break
        if n_todo * 4 < ch.q:
            return _newton_stragglers(ch, todo, s, w, ll(), iterations, gmax, tol, max_iter - it, max_cg)
        iterations += todo
        g_todo = np.where(ch.per_doc(todo), g, 0.0)
        gnorm = np.sqrt(ch.seg(g_todo * g_todo))
        # Inexact Newton: loose solves far from the optimum, tight ones near it (superlinear convergence).
        # A residual below tol already meets the stopping rule: never solve tighter than that. The forcing
        # term min(0.003, 0.3 |g|) is tight enough that nearly every query meets tol after 3 steps from the
        # warm start (looser solves save CG iterations but cost a 4th Newton step, i.e. a full evaluation).
        target = np.maximum(np.minimum(_ETA0, _ETA1 * gnorm) * gnorm, _FLOOR * tol)
        step = _pcg(ch, w, g_todo, target, max_cg)
        s, dl, w, ll, g, f = _line_search(ch, s, step, f, ch.seg(g_todo * step))
    return s, w, ll(), iterations, gmax


def _newton_stragglers(ch: _Chunk, todo, s, w, ll, iterations, gmax, tol, max_iter, max_cg):
    """Finish the few queries still above tol in a chunk of their own. The others have converged and would
    stay where they are, but every further step on the whole chunk would re-evaluate and re-solve them all.
    Per-query results are unchanged: each query's arithmetic does not depend on its neighbours."""
    docs, edges = ch.per_doc(todo), todo[ch.edge_query]
    local = np.cumsum(docs) - 1  # index of each kept document in the small chunk
    c = None if ch.c is None else ch.c[edges]
    sub = _Chunk(local[ch.a[edges]], local[ch.b[edges]], ch.p[edges], c, ch.sizes[todo], ch.model, ch.prior_sd)
    s_sub, w_sub, ll_sub, it_sub, gmax_sub = _newton(sub, tol, max_iter, max_cg, s[docs])
    s = s.copy()
    s[docs], w[edges], ll[edges], gmax[todo] = s_sub, w_sub, ll_sub, gmax_sub
    iterations[todo] += it_sub
    return s, w, ll, iterations, gmax


def _connected(ch: _Chunk) -> np.ndarray:
    """Per query: does its comparison graph connect all its documents? (Components never cross queries.)"""
    from scipy.sparse.csgraph import connected_components

    # the off-diagonal layout already lists both directions of every edge: a symmetric adjacency for free
    adj = sp.csr_matrix((np.ones(len(ch.offdiag.indices)), ch.offdiag.indices, ch.offdiag.indptr), (ch.n, ch.n))
    _, labels = connected_components(adj, directed=True, connection="weak")
    return np.minimum.reduceat(labels, ch.starts) == np.maximum.reduceat(labels, ch.starts)


def _standard_errors(ch: _Chunk, w: np.ndarray, block_bytes: int = 1 << 21) -> np.ndarray:
    """Exact ``sqrt(diag(H^-1))`` at the optimum: dense per-query Hessians of equal size, stacked in blocks of about
    ``block_bytes`` (cache-sized), each block inverted in one batched call (:func:`_inverse_diagonals`)."""
    se = np.empty(ch.n)
    diag = ch.abs_BT @ w + ch.prec  # H's diagonal at these weights (assemble() last saw the previous step's)
    local_a, local_b = ch.a - ch.starts[ch.edge_query], ch.b - ch.starts[ch.edge_query]
    edge_size = ch.sizes[ch.edge_query]
    for n in np.unique(ch.sizes):
        queries = np.flatnonzero(ch.sizes == n)
        edges = np.flatnonzero(edge_size == n)
        if ch.edge_starts is None:  # pairs not in query order: sort this size's pairs by query
            edges = edges[np.argsort(ch.edge_query[edges], kind="stable")]
        rank = np.zeros(ch.q, dtype=np.int64)  # position of each query of this size among them
        rank[queries] = np.arange(len(queries))
        edge_rank = rank[ch.edge_query[edges]]
        block = max(1, block_bytes // (8 * int(n) * int(n)))
        bounds = np.searchsorted(edge_rank, np.arange(0, len(queries) + block, block))
        for k, lo in enumerate(range(0, len(queries), block)):
            qs, span = queries[lo : lo + block], slice(bounds[k], bounds[k + 1])
            sel = edges[span]
            hess = _dense_hessians(n, len(qs), edge_rank[span] - lo, local_a[sel], local_b[sel], w[sel])
            items = (ch.starts[qs][:, None] + np.arange(n)).ravel()
            hess.reshape(len(qs), -1)[:, :: n + 1] = diag[items].reshape(len(qs), n)
            se[items] = np.sqrt(_inverse_diagonals(hess)).ravel()
    return se


def _dense_hessians(n: int, n_queries: int, query, a, b, w) -> np.ndarray:
    """The off-diagonal part ``-sum_e w_e`` of ``n_queries`` dense ``n x n`` Hessians, by one bincount (repeated
    pairs add up); the caller writes the diagonal."""
    base = query * (n * n)
    idx = np.concatenate([base + a * n + b, base + b * n + a])
    vals = np.concatenate([w, w])
    np.negative(vals, out=vals)
    hess = np.bincount(idx, vals, minlength=n_queries * n * n).astype(np.float64, copy=False)  # int64 if no pairs
    return hess.reshape(n_queries, n, n)


_LEAF = 32  # up to this size a stack is inverted by LAPACK in one batched call; above it, by 2x2 blocks and GEMMs


def _leaf_inverse(hess: np.ndarray) -> np.ndarray:
    """Inverse of a stack of small SPD matrices in one call: NumPy's batched ``inv`` (LU). It releases the GIL, so the
    fit's threads invert side by side; SciPy's batched ``inv(assume_a="pos")`` (Cholesky) does ~20% fewer flops but
    holds the GIL for the whole stack, which made two threads slower than one (#12)."""
    return np.linalg.inv(hess)


def _inverse_diagonals(hess: np.ndarray) -> np.ndarray:
    """``diag(H^-1)`` for a stack ``(B, n, n)`` of SPD matrices, exact (no approximation), batched over the stack.

    By 2x2 blocks ``H = [[A, C], [C^T, D]]`` with the Schur complement ``S = D - C^T A^-1 C`` (SPD like H):
    ``diag(H^-1) = [diag(A^-1) + rowsum((A^-1 C S^-1) * (A^-1 C)), diag(S^-1)]``. The work is stacked matrix
    products (BLAS-3 GEMMs, ~10x the flop rate of a per-matrix Cholesky + inverse at n ~ 100) and LAPACK inverses
    of the small leaves, each one NumPy call for the whole stack: never one LAPACK call per query from Python.
    """
    n = hess.shape[-1]
    if n <= _LEAF:
        return np.diagonal(_leaf_inverse(hess), axis1=1, axis2=2)
    a_inv, x, s_inv = _schur_parts(hess)
    y = x @ s_inv
    top = np.diagonal(a_inv, axis1=1, axis2=2) + np.einsum("bij,bij->bi", y, x)
    return np.concatenate([top, np.diagonal(s_inv, axis1=1, axis2=2)], axis=1)


def _schur_parts(hess: np.ndarray):
    """``A^-1``, ``X = A^-1 C`` and ``S^-1`` of the 2x2 block split of a stack of SPD matrices."""
    n1 = hess.shape[-1] // 2
    a_inv = _inverse(hess[:, :n1, :n1])
    x = a_inv @ hess[:, :n1, n1:]
    s = hess[:, n1:, n1:] - hess[:, n1:, :n1] @ x
    return a_inv, x, _inverse(s)


def _inverse(hess: np.ndarray) -> np.ndarray:
    """Full inverse of a stack of SPD matrices by the same block recursion."""
    n = hess.shape[-1]
    if n <= _LEAF:
        return _leaf_inverse(hess)
    n1 = n // 2
    a_inv, x, s_inv = _schur_parts(hess)
    y = x @ s_inv
    out = np.empty_like(hess)
    out[:, :n1, :n1] = a_inv + y @ np.swapaxes(x, 1, 2)
    out[:, :n1, n1:] = -y
    out[:, n1:, :n1] = -np.swapaxes(y, 1, 2)
    out[:, n1:, n1:] = s_inv
    return out


def _fit_chunk(args) -> dict[str, np.ndarray]:
    a, b, p, c, sizes, opts = args
    ch = _Chunk(a, b, p, c, sizes, opts["model"], opts["prior_sd"])
    s, w, ll, iterations, gmax = _newton(ch, opts["tol"], opts["max_iter"], opts["max_cg"])
    return {
        "scores": s,
        "se": _standard_errors(ch, w) if opts["compute_se"] else None,
        "iterations": iterations,
        "grad_norm": gmax,
        "converged": gmax <= opts["tol"],
        "log_likelihood": ch.seg_edges(ll),
        "connected": _connected(ch),
    }


def _chunks(edges, probs, edge_offset, sizes, edge_query, counts, chunk_size, opts):
    """Blocks of ``chunk_size`` whole queries; ``edge_query`` is None when the pairs are already in query order,
    else the query of each pair (they get sorted by it), ``counts`` the pairs per query."""
    if edge_query is not None:
        order = np.argsort(edge_query, kind="stable")
        edges, probs = edges[order], probs[order]
        edge_offset = None if edge_offset is None else edge_offset[order]
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    edge_bounds = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    for q0 in range(0, len(sizes), chunk_size):
        q1 = min(q0 + chunk_size, len(sizes))
        e0, e1 = edge_bounds[q0], edge_bounds[q1]
        local = edges[e0:e1] - starts[q0]
        c = None if edge_offset is None else edge_offset[e0:e1]
        yield local[:, 0], local[:, 1], probs[e0:e1], c, sizes[q0:q1], opts


# ----------------------------------------------------------------------------------------------- threads
# The dense kernels (standard errors) are many small matrices: a multi-threaded BLAS only adds synchronisation,
# and on a shared or oversubscribed machine each tiny call then waits for busy cores (8x slower measured, #12).
# Parallelism comes from the fit's own threads over chunks of queries instead, with BLAS/OpenMP pinned to one
# thread each, so T threads use T cores; under `Dataset.map(num_proc=N)` each worker process uses one thread.
_PIN = {"lock": threading.Lock(), "owner": None, "controller": {}}


def _reset_pin_after_fork() -> None:  # a forked worker (Dataset.map(num_proc=N)) starts with no fit of its own
    _PIN.update(lock=threading.Lock(), owner=None)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_pin_after_fork)


@contextlib.contextmanager
def _pinned_blas():
    """BLAS/OpenMP limited to 1 thread while a fit runs, the previous limits restored after.

    OpenBLAS's pool is process-wide and threadpoolctl lets one thread at a time change it, so the first of
    concurrent fits (several Python threads) sets the limit and restores it itself; the others run under it and
    touch nothing. (Limiters opened and closed by several threads at once would leave 1 thread behind for good.)
    """
    limiter = None
    with _PIN["lock"]:
        if _PIN["owner"] is None:
            limiter = _blas_limiter()
            _PIN["owner"] = threading.get_ident()
    try:
        if limiter is None:
            yield
        else:
            with limiter:
                yield
    finally:
        if limiter is not None:
            with _PIN["lock"]:
                _PIN["owner"] = None


def _blas_limiter():
    try:
        import threadpoolctl
    except ImportError:  # a declared dependency; without it BLAS may oversubscribe, results are identical
        return contextlib.nullcontext()
    if hasattr(threadpoolctl, "get_cached_controller"):  # >= 3.8: cached, refreshed when new libraries load
        controller = threadpoolctl.get_cached_controller()
    else:  # building one scans the loaded libraries (~ms); a limit is ~10 us
        controller = _PIN["controller"].setdefault(os.getpid(), threadpoolctl.ThreadpoolController())
    return controller.limit(limits=1)


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a container's or `taskset`'s share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _in_worker_process() -> bool:
    """Inside a (multi)processing pool worker, e.g. ``Dataset.map(num_proc=N)``: its siblings use the other cores."""
    for name in ("multiprocess", "multiprocessing"):
        module = sys.modules.get(name)
        if module is not None and module.current_process().daemon:
            return True
    return False


def default_num_threads() -> int:
    """Fit threads when none are given: 1 in a pool worker process (N processes x 1 thread), else every core."""
    return 1 if _in_worker_process() else available_cores()


def fit_scores_flat(
    edges: np.ndarray,
    probs: np.ndarray,
    sizes: np.ndarray,
    model: str = "thurstone",
    prior_sd: float = DEFAULT_PRIOR_SD,
    tol: float = 1e-9,
    max_iter: int = 50,
    max_cg: int = 200,
    compute_se: bool = True,
    query_ids: list | None = None,
    edge_offset: np.ndarray | None = None,
    chunk_size: int = 256,
    num_threads: int | None = None,
) -> BatchFitResult:
    """Fit many queries of any sizes in one vectorised call (the layout used by the labeling map).

    Documents of all queries are numbered globally, query after query: query ``q`` owns documents
    ``sum(sizes[:q]) ... sum(sizes[:q+1]) - 1``, and ``edges`` holds global indices (each pair inside one query).

    Args:
        edges: ``(m, 2)`` int pairs ``(a, b)``; ``probs[e]`` = P(a beats b), a soft label in ``[0, 1]``.
        sizes: documents per query (each >= 2).
        model: ``"thurstone"`` (F = (1 + erf) / 2, the paper's) or ``"bradley-terry"`` (F = sigmoid).
        prior_sd: sd of the Gaussian prior on scores (default 4: weak against differences of about +-4).
        tol: a query has converged when max |gradient| <= tol.
        max_iter, max_cg: Newton steps and CG iterations per Newton step.
        compute_se: also compute exact standard errors (dense per-query inverses; most of the cost for n ~ 100).
        query_ids: names for error messages.
        edge_offset: a known constant ``c_e`` added to each difference, ``F(s_a - s_b + c_e)`` (cross-query
            calibration: the within-query scores of the two documents).
        chunk_size, num_threads: queries per independent block (cache-sized), blocks solved in parallel threads
            (default: every core this process may use, 1 inside a pool worker such as ``Dataset.map(num_proc=N)``);
            BLAS/OpenMP run one thread each meanwhile, so threads and processes never multiply (issue #12).
    """
    check_fit_model(model)
    if not prior_sd > 0:
        raise ValueError(f"`prior_sd` must be > 0 (got prior_sd={prior_sd}): e.g. {DEFAULT_PRIOR_SD}.")
    edges, probs, sizes, edge_query, counts = _validate(edges, probs, sizes, query_ids)
    opts = dict(model=model, prior_sd=prior_sd, tol=tol, max_iter=max_iter, max_cg=max_cg, compute_se=compute_se)
    if edge_offset is not None:
        edge_offset = np.asarray(edge_offset, dtype=np.float64).reshape(-1)
        if len(edge_offset) != len(edges) or not np.isfinite(edge_offset).all():
            raise ValueError(
                f"`edge_offset` must hold {len(edges)} finite values, one per edge (got {len(edge_offset)})."
            )
    jobs = list(_chunks(edges, probs, edge_offset, sizes, edge_query, counts, chunk_size, opts))
    workers = min(len(jobs), num_threads or default_num_threads())
    with _pinned_blas():
        if workers > 1:
            with ThreadPoolExecutor(workers) as pool:
                parts = list(pool.map(_fit_chunk, jobs))
        else:
            parts = [_fit_chunk(job) for job in jobs]
    cat = {k: np.concatenate([part[k] for part in parts]) for k in parts[0] if k != "se"}
    se = np.concatenate([part["se"] for part in parts]) if compute_se else None
    return BatchFitResult(se=se, sizes=sizes, **cat)


def fit_scores_batched(
    edges_list: list[np.ndarray],
    probs_list: list[np.ndarray],
    n_items_list: list[int],
    **kwargs,
) -> list[FitResult]:
    """Fit many queries given as per-query lists (local indices); one :class:`FitResult` per query.

    A convenience over :func:`fit_scores_flat` (same keyword arguments), which it calls once for all queries.
    """
    if not len(edges_list) == len(probs_list) == len(n_items_list):
        raise ValueError(
            f"`edges_list`, `probs_list`, `n_items_list` must have equal lengths (got {len(edges_list)}, "
            f"{len(probs_list)}, {len(n_items_list)}): pass one entry per query."
        )
    sizes = np.asarray(n_items_list, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    edges = [np.asarray(e, dtype=np.int64).reshape(-1, 2) + o for e, o in zip(edges_list, offsets)]
    edges = np.concatenate(edges) if edges else np.empty((0, 2), dtype=np.int64)
    probs = np.concatenate([np.asarray(p, dtype=np.float64).reshape(-1) for p in probs_list]) if probs_list else []
    return fit_scores_flat(edges, probs, sizes, **kwargs).to_list()


def fit_scores(
    edges: np.ndarray,
    probs: np.ndarray,
    n_items: int,
    model: str = "thurstone",
    prior_sd: float = DEFAULT_PRIOR_SD,
    tol: float = 1e-9,
    max_iter: int = 50,
    return_result: bool = False,
    compute_se: bool = True,
) -> np.ndarray | FitResult:
    """Scores of the ``n_items`` documents of one query from judged pairs (see the module docstring).

    Args:
        edges: ``(m, 2)`` int pairs ``(a, b)`` of document indices.
        probs: ``(m,)`` soft labels P(a beats b) in ``[0, 1]``.
        n_items: number of documents (>= 2; documents in no pair get the prior's 0 and a wide ``se``).
        model, prior_sd, tol, max_iter, compute_se: see :func:`fit_scores_flat`.
        return_result: return the :class:`FitResult` (scores, se, diagnostics) instead of the scores.
    """
    result = fit_scores_flat(
        edges,
        probs,
        [n_items],
        model=model,
        prior_sd=prior_sd,
        tol=tol,
        max_iter=max_iter,
        compute_se=compute_se and return_result,
        num_threads=1,
    )[0]
    return result if return_result else result.scores
