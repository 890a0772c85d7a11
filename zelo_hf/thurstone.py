"""Thurstone / Bradley-Terry maximum-likelihood scores from soft pairwise labels (ZELO.md, pipeline step 5).

Per query, the scores ``s`` maximise the concave objective

    sum_e [ p_e log F(s_a - s_b) + (1 - p_e) log F(s_b - s_a) ]  -  sum_i s_i^2 / (2 prior_sd^2)

with ``F(x) = (1 + erf(x)) / 2`` (``model="thurstone"``, the paper's probit form) or ``F = sigmoid``
(``model="bradley-terry"``). ``log F`` is concave for both, and the Gaussian prior makes the objective strictly
concave, so the optimum is unique, finite (a document that wins everything stays finite), centred (the prior
fixes the gauge: scores sum to 0) and well defined even on a disconnected graph (such queries are flagged
``connected=False``, never hidden). :func:`fit_scores` reports that exact optimum (to ``tol`` on the gradient).

Many queries are fitted in one call (:func:`fit_scores_flat`): all documents get one global index, and blocks of
whole queries go to a compiled kernel (:mod:`zelo_hf.fit_kernel`, numba) that fits them query after query with the
GIL released, so blocks run in parallel threads. Per query: a least-squares warm start, Newton steps solved by
Jacobi-preconditioned conjugate gradients on the sparse Hessian (a weighted graph Laplacian plus the prior's
diagonal; random regular graphs are expanders, so CG needs few iterations), inexact solves far from the optimum and
tight ones near it, and a backtracking line search (monotone ascent). Standard errors are exact:
``sqrt(diag(H^-1))`` at the optimum, by eliminating an independent set of the comparison graph and a dense
Cholesky factor of the Schur complement left. The per-pair terms (l', l'' and l of every judgment) are computed
for a query's pairs in one SIMD loop. The kernel calls no BLAS, so T threads use T cores whatever BLAS/OpenMP would
do on a shared machine.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .fit_kernel import edge_log_likelihoods, fit_block
from .fit_kernel import inverse_diagonals as _inverse_diagonals  # noqa: F401 (exact diag(H^-1) of a stack)

__all__ = [
    "FIT_MODELS", "FitResult", "BatchFitResult", "check_fit_model", "fit_scores", "fit_scores_batched",
    "fit_scores_flat", "fit_scores_grouped", "objective",
]  # fmt: skip

# The fit-model vocabulary (F in P(a beats b) = F(s_a - s_b)), the one list every caller imports: the recipe's
# `link`, `fit_raters`, `zelo fit --model` and `zelo calibrate --model` (issue #9).
FIT_MODELS = ("thurstone", "bradley-terry")
# Latent differences span about +-4 (ZELO.md), i.e. scores about +-2. A prior this wide shrinks a document
# with 8 comparisons by only a few percent, yet keeps all-wins documents finite and the gauge fixed.
DEFAULT_PRIOR_SD = 4.0


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


def objective(
    scores: np.ndarray,
    edges: np.ndarray,
    probs: np.ndarray,
    model: str = "thurstone",
    prior_sd: float = DEFAULT_PRIOR_SD,
) -> float:
    """The penalised log-likelihood that :func:`fit_scores` maximises (for checks against other optimisers)."""
    scores, edges = np.asarray(scores, dtype=np.float64), np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    d = scores[edges[:, 0]] - scores[edges[:, 1]]
    ll = edge_log_likelihoods(d, np.asarray(probs, dtype=np.float64).reshape(-1), check_fit_model(model) == "thurstone")
    return float(ll.sum() - 0.5 * np.sum(scores**2) / prior_sd**2)


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


def _check_options(model: str, prior_sd: float) -> None:
    check_fit_model(model)
    if not prior_sd > 0:
        raise ValueError(f"`prior_sd` must be > 0 (got prior_sd={prior_sd}): e.g. {DEFAULT_PRIOR_SD}.")


def _check_sizes(sizes, query_ids) -> np.ndarray:
    """Documents per query as int64; each query needs >= 2."""
    sizes = np.asarray(sizes, dtype=np.int64).reshape(-1)
    small = np.flatnonzero(sizes < 2)
    if len(small):
        q = small[0]
        raise ValueError(
            f"{_name(query_ids, q)} has {sizes[q]} document(s): a fit needs >= 2 per query; drop such queries "
            "(nothing to rank) before fitting."
        )
    return sizes


def _check_offsets(edge_offset, m: int) -> np.ndarray:
    edge_offset = np.ascontiguousarray(edge_offset, dtype=np.float64).reshape(-1)
    if len(edge_offset) != m or not np.isfinite(edge_offset).all():
        raise ValueError(f"`edge_offset` must hold {m} finite values, one per edge (got {len(edge_offset)}).")
    return edge_offset


def _name(query_ids, q: int) -> str:
    if query_ids is None:
        return f"query #{q}"
    qid = query_ids[q]
    return f"query_id={getattr(qid, 'item', lambda: qid)()!r}"


def _validate(edges, probs, sizes, query_ids):
    """Check the flat inputs (shapes, index ranges, each pair inside one query) and bring them to the grouped layout:
    local pair indices ``a``, ``b``, probs and the order that groups them by query (None when already grouped), and
    the number of pairs per query. Per-pair checks (self-pairs, labels) are the kernel's (:func:`fit_scores_grouped`)."""
    sizes = _check_sizes(sizes, query_ids)
    edges = np.asarray(edges)
    if edges.size == 0:
        edges = edges.reshape(0, 2)
    if edges.ndim != 2 or edges.shape[1] != 2:
        raise ValueError(f"`edges` must have shape (m, 2) (got shape={edges.shape}): pass pairs (a, b) of indices.")
    edges = np.asarray(edges, dtype=np.int64)  # no copy when already int64: the fit only reads it
    probs = np.asarray(probs, dtype=np.float64).reshape(-1)
    if len(probs) != len(edges):
        raise ValueError(f"`probs` has {len(probs)} values for {len(edges)} edges: pass one P(a beats b) per edge.")
    n_total = int(sizes.sum())
    if len(edges) and (edges.min() < 0 or edges.max() >= n_total):
        bad = np.flatnonzero((edges < 0).any(axis=1) | (edges >= n_total).any(axis=1))
        raise ValueError(
            f"`edges` row {bad[0]} = {edges[bad[0]].tolist()} is out of range for {n_total} documents: indices "
            "must point into the query's doc list."
        )
    item_query = np.repeat(np.arange(len(sizes)), sizes)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    a, b, counts, grouped = _local_pairs(edges, probs, item_query, starts, query_ids)
    order = None if grouped else np.argsort(item_query[edges[:, 0]], kind="stable")
    if order is not None:
        a, b, probs = a[order], b[order], probs[order]
    return a, b, probs, sizes, counts, order


def _local_pairs(edges, probs, item_query, starts, query_ids, block: int = 1 << 16):
    """One pass over the pairs in cache-sized blocks: indices local to the query of ``a``, the pairs per query and
    whether the pairs are grouped by query (query order, as the kernel needs them); an error names the first pair
    that joins two queries. Blocks keep the temporaries small: full-length temporaries of millions of pairs cost more
    in fresh memory (page faults) than the work itself."""
    m = len(edges)
    local_a, local_b = np.empty(m, dtype=np.int64), np.empty(m, dtype=np.int64)
    counts = np.zeros(len(starts), dtype=np.int64)
    grouped, last = True, -1
    for lo in range(0, m, block):
        a, b = edges[lo : lo + block, 0], edges[lo : lo + block, 1]
        qa = item_query[a]
        cross = np.flatnonzero(item_query[b] != qa)
        if len(cross):
            e = lo + cross[0]
            q = item_query[edges[e, 0]]
            raise ValueError(
                f"{_name(query_ids, q)}: pair {(edges[e] - starts[q]).tolist()} joins documents of different queries "
                f"(prob_a={probs[e]}): fit queries separately."
            )
        first = starts[qa]
        local_a[lo : lo + block], local_b[lo : lo + block] = a - first, b - first
        grouped = grouped and qa[0] >= last and bool(np.all(qa[1:] >= qa[:-1]))
        last = qa[-1]
        counts += np.bincount(qa, minlength=len(counts))
    return local_a, local_b, counts, grouped


def _pair_error(query_ids, q: int, pair: tuple[int, int], prob: float, n: int) -> ValueError:
    """The error for the pair the kernel could not fit (indices local to its query, as in ``pair_a`` / ``pair_b``)."""
    a, b = pair
    if not (0 <= a < n and 0 <= b < n):
        what = f"is out of range for {n} doc_ids: pair_a / pair_b must index into doc_ids"
    elif a == b:
        what = f"compares a document with itself (prob_a={prob}): drop self-pairs"
    elif not np.isfinite(prob):
        what = f"has a non-finite prob_a (prob_a={prob}): drop or re-judge failed pairs"
    else:
        what = f"has prob_a outside [0, 1] (prob_a={prob}): pass probabilities P(a beats b)"
    return ValueError(f"{_name(query_ids, q)}: pair {pair} {what}.")


# ----------------------------------------------------------------------------------------------- the solver
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
    *,
    query_ids: list | None = None,
    edge_offset: np.ndarray | None = None,
    **kwargs,
) -> BatchFitResult:
    """Fit many queries of any sizes in one vectorised call, pairs given with global indices in any order.

    Documents of all queries are numbered globally, query after query: query ``q`` owns documents
    ``sum(sizes[:q]) ... sum(sizes[:q+1]) - 1``, and ``edges`` holds global indices (each pair inside one query).
    The pairs are brought to the grouped layout of :func:`fit_scores_grouped` (local indices, query order), which
    fits them.

    Args:
        edges: ``(m, 2)`` int pairs ``(a, b)``; ``probs[e]`` = P(a beats b), a soft label in ``[0, 1]``.
        sizes: documents per query (each >= 2).
        query_ids: names for error messages.
        edge_offset: a known constant ``c_e`` added to each difference, ``F(s_a - s_b + c_e)`` (cross-query
            calibration: the within-query scores of the two documents).
        kwargs: the fit's options (``model``, ``prior_sd``, ``tol``, ``max_iter``, ``max_cg``, ``compute_se``,
            ``chunk_size``, ``num_threads``), see :func:`fit_scores_grouped`.
    """
    a, b, probs, sizes, counts, order = _validate(edges, probs, sizes, query_ids)
    if edge_offset is not None:
        edge_offset = _check_offsets(edge_offset, len(a))
        edge_offset = edge_offset if order is None else edge_offset[order]
    return fit_scores_grouped(a, b, probs, sizes, counts, query_ids=query_ids, edge_offset=edge_offset, **kwargs)


def fit_scores_grouped(
    pair_a: np.ndarray,
    pair_b: np.ndarray,
    probs: np.ndarray,
    sizes: np.ndarray,
    counts: np.ndarray,
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
    """Fit many queries laid out as a grouped preference set stores them (what the labeling map passes).

    Query after query: query ``q`` has ``sizes[q]`` documents and the next ``counts[q]`` pairs, whose indices
    ``pair_a`` / ``pair_b`` are local to it (``0 .. sizes[q] - 1``, as in the ``pair_a`` / ``pair_b`` columns).
    Blocks of ``chunk_size`` whole queries go to the compiled kernel in parallel threads, which read the arrays in
    place; every pair is checked there, and a bad one raises an error naming its query.

    Args:
        pair_a, pair_b, probs: flat per pair, query after query; ``probs[e]`` = P(a beats b), a soft label in
            ``[0, 1]``.
        sizes, counts: documents (each >= 2) and pairs per query.
        model: ``"thurstone"`` (F = (1 + erf) / 2, the paper's) or ``"bradley-terry"`` (F = sigmoid).
        prior_sd: sd of the Gaussian prior on scores (default 4: weak against differences of about +-4).
        tol: a query has converged when max |gradient| <= tol.
        max_iter, max_cg: Newton steps and CG iterations per Newton step.
        compute_se: also compute exact standard errors (block elimination, then a dense Cholesky per query:
            ~1/3 of the fit at n = 100).
        query_ids: names for error messages.
        edge_offset: a known constant added to each pair's difference (see :func:`fit_scores_flat`).
        chunk_size, num_threads: queries per independent block (cache-sized), blocks solved in parallel threads
            (default: every core this process may use, 1 inside a pool worker such as ``Dataset.map(num_proc=N)``);
            the kernel calls no BLAS, so threads and processes never multiply (issue #12).
    """
    _check_options(model, prior_sd)
    sizes = _check_sizes(sizes, query_ids)
    counts = np.asarray(counts, dtype=np.int64).reshape(-1)
    a, b = np.ascontiguousarray(pair_a, dtype=np.int64), np.ascontiguousarray(pair_b, dtype=np.int64)
    probs = np.ascontiguousarray(probs, dtype=np.float64)
    if len(counts) != len(sizes) or not len(a) == len(b) == len(probs) == counts.sum():
        raise ValueError(
            f"{len(sizes)} queries with {counts.sum()} pairs in `counts` need one count per query and as many "
            f"pair_a / pair_b / probs (got {len(counts)} counts, {len(a)} / {len(b)} / {len(probs)} values)."
        )
    offsets = np.empty(0) if edge_offset is None else _check_offsets(edge_offset, len(a))
    doc_starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    edge_starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    n_docs, n_queries = int(doc_starts[-1]), len(sizes)
    res = BatchFitResult(
        scores=np.empty(n_docs), se=np.empty(n_docs) if compute_se else None, sizes=sizes,
        converged=np.empty(n_queries, np.bool_), iterations=np.empty(n_queries, np.int64),
        log_likelihood=np.empty(n_queries), connected=np.empty(n_queries, np.bool_), grad_norm=np.empty(n_queries),
    )  # fmt: skip
    bad_pair = np.full(n_queries, -1, dtype=np.int64)

    def fit(q0: int) -> None:  # the kernel releases the GIL: blocks run in parallel threads
        fit_block(
            a, b, probs, offsets, doc_starts, edge_starts, q0, min(q0 + chunk_size, n_queries),
            model == "thurstone", 1.0 / prior_sd**2, tol, max_iter, max_cg, compute_se, res.scores,
            np.empty(0) if res.se is None else res.se, res.iterations, res.grad_norm, res.log_likelihood,
            res.connected, bad_pair,
        )  # fmt: skip

    blocks = range(0, n_queries, chunk_size)
    workers = min(len(blocks), num_threads or default_num_threads())
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(fit, blocks))
    else:
        for q0 in blocks:
            fit(q0)
    bad = np.flatnonzero(bad_pair >= 0)
    if len(bad):
        q = int(bad[0])
        e = int(edge_starts[q] + bad_pair[q])
        raise _pair_error(query_ids, q, (int(a[e]), int(b[e])), float(probs[e]), int(sizes[q]))
    np.less_equal(res.grad_norm, tol, out=res.converged)
    return res


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
