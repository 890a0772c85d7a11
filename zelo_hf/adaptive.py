"""Adaptive judging rounds: spend comparisons where they matter for the top of each ranking (issue #13).

Random cycles (ZELO.md step 2) spend comparisons evenly, but NDCG@10 only looks at the top of a query's ranking,
and the Thurstone fit already knows where it is unsure (its standard errors). :func:`adaptive_judge` judges a
first round of random Hamiltonian cycles (:func:`zelo_hf.judging.pairs.build_pairs`, so a connected graph from the
start; the same pairs, hence the same cache entries, as ``zelo judge --degree first_degree``), fits, and then
spends the rest of each query's budget over ``rounds - 1`` rounds on the pairs chosen by :func:`select_pairs`.

**Which pairs** (:func:`pair_utility`). With fitted scores ``s`` and standard errors ``se`` of one query, and the
top-``k`` boundary ``t`` (midway between the k-th and (k+1)-th fitted score), a pair ``(i, j)`` is worth

    P(the fit orders i, j wrongly) * max(P(i in top-k), P(j in top-k))
    = Phi(-|s_i - s_j| / sqrt(se_i^2 + se_j^2)) * max(Phi((s_i - t) / se_i), Phi((s_j - t) / se_j))

The first factor is largest for close pairs with wide intervals (where one more vote moves the fit most), the
second drops pairs that cannot be in the top-k, whose order NDCG@10 and the top-20 Spearman never see. Pairs across
the boundary with overlapping intervals score highest; pairs inside the top with overlapping intervals next.
A round takes each query's highest-valued unjudged pairs with at most ``max_per_doc`` new pairs per document (one
vote shrinks a document's interval: the next pair is better spent on another document), relaxed only when the
round's quota needs it. Added pairs never disconnect a graph, and the budget is met exactly. ``eval/bench_adaptive.py``
measures the label quality this buys against random cycles at the same number of comparisons.

Everything is vectorised over the queries of one size (``(queries, n, n)`` arrays); queries of different sizes are
grouped by size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import ndtr

from .judging.cache import JudgmentCache
from .judging.pairs import build_pairs, candidate_rows
from .judging.preferences import JudgingResult, judge_pairs
from .judging.votes import Comparison
from .thurstone import fit_scores_flat
from .utils import get_logger

logger = get_logger(__name__)

__all__ = ["pair_utility", "select_pairs", "round_quotas", "check_adaptive_args", "first_round_pairs",
           "adaptive_judge", "AdaptivePlan"]

_CHUNK = 1 << 22  # pair entries per vectorised block (~32 MB per (Q, n, n) float array)
DEFAULT_TOP_K = 20  # NDCG@10 and the top-20 Spearman of the benchmark both live inside the top 20


# ----------------------------------------------------------------------------------------------- arguments


def first_round_pairs(n: int, first_degree: int) -> int:
    """Pairs of the first round for a query of ``n`` documents (cycles, or the dense graph for small ``n``)."""
    return n * (n - 1) // 2 if n <= first_degree + 1 else n * first_degree // 2


def check_adaptive_args(rounds: int, budget: int, first_degree: int, sizes: Any = (), names: Any = None) -> None:
    """Raise a ValueError naming the field, the value and the fix for bad adaptive settings."""
    if not isinstance(rounds, int | np.integer) or rounds < 1:
        raise ValueError(f"`rounds` must be an integer >= 1 (got rounds={rounds!r}): e.g. rounds=4 (1 = only the "
                         "first round of random cycles).")
    if first_degree < 2 or first_degree % 2:
        raise ValueError(f"`first_degree` must be even and >= 2 (got first_degree={first_degree!r}): the first "
                         "round is first_degree/2 random Hamiltonian cycles, e.g. first_degree=4.")
    if not isinstance(budget, int | np.integer) or budget < 1:
        raise ValueError(f"`budget` must be a positive integer number of comparisons per query (got "
                         f"budget={budget!r}): e.g. budget=400 (degree-8 cycles on 100 documents).")
    for q, n in enumerate(sizes):
        first = first_round_pairs(int(n), first_degree)
        if budget < first:
            name = f"query_id={names[q]!r}" if names is not None else f"query #{q}"
            raise ValueError(
                f"`budget` must cover the first round (got budget={budget}; {name} has {n} documents, so "
                f"first_degree={first_degree} cycles take {first} pairs): raise budget to >= {first}"
                + (f" or lower first_degree to {2 * (budget // int(n))}." if budget >= n else ".")
            )


def round_quotas(remaining: np.ndarray, rounds_left: int) -> np.ndarray:
    """This round's pairs per query: the remaining budget spread over the rounds left (the last takes the rest)."""
    remaining = np.asarray(remaining, dtype=np.int64)
    return -(-remaining // max(rounds_left, 1))


# ----------------------------------------------------------------------------------------------- pair choice


def _boundary(scores: np.ndarray, top_k: int) -> np.ndarray:
    """Per query, the score midway between the top_k-th and (top_k+1)-th best (``-inf`` when n <= top_k)."""
    n = scores.shape[1]
    if n <= top_k:
        return np.full(scores.shape[0], -np.inf)
    part = -np.partition(-scores, (top_k - 1, top_k), axis=1)
    return 0.5 * (part[:, top_k - 1] + part[:, top_k])


def pair_utility(scores: np.ndarray, se: np.ndarray, top_k: int = DEFAULT_TOP_K) -> np.ndarray:
    """Value of judging each pair, ``(Q, n, n)``, for queries of equal size (see the module docstring).

    Args:
        scores, se: ``(Q, n)`` fitted scores and their standard errors (``zelo_hf.thurstone.fit_scores_flat``).
        top_k: the part of the ranking that matters (default 20).
    """
    scores, se = np.atleast_2d(np.asarray(scores, dtype=np.float64)), np.atleast_2d(np.asarray(se, dtype=np.float64))
    if scores.shape != se.shape:
        raise ValueError(f"`scores` and `se` must have the same shape (got {scores.shape} and {se.shape}).")
    if not np.isfinite(se).all() or (se <= 0).any():
        raise ValueError("`se` must be finite and > 0 for every document: fit with compute_se=True.")
    t = _boundary(scores, top_k)[:, None]
    p_top = ndtr((scores - t) / se)
    var = se * se
    spread = np.sqrt(var[:, :, None] + var[:, None, :])
    wrong = ndtr(-np.abs(scores[:, :, None] - scores[:, None, :]) / spread)
    return wrong * np.maximum(p_top[:, :, None], p_top[:, None, :])


def _greedy_take(order, iu, ju, quota, cap, taken, blocked):
    """Walk each query's pairs in value order, taking a free pair while both documents have < ``cap`` new pairs
    (``cap=None``: no limit) until the query's quota is met. ``taken`` is updated in place and returned."""
    rows = np.arange(order.shape[0])
    per_doc = np.zeros((order.shape[0], int(ju.max(initial=0)) + 1), dtype=np.int64)
    have = taken.sum(1)
    for r in range(order.shape[1]):
        active = have < quota
        if not active.any():
            break
        p = order[:, r]
        ok = active & ~taken[rows, p] & ~blocked[rows, p]
        if cap is not None:
            a, b = iu[p], ju[p]
            ok &= (per_doc[rows, a] < cap) & (per_doc[rows, b] < cap)
            per_doc[rows[ok], a[ok]] += 1
            per_doc[rows[ok], b[ok]] += 1
        taken[rows[ok], p[ok]] = True
        have = have + ok
    return taken


def select_pairs(
    utility: np.ndarray,
    judged: np.ndarray,
    quota: np.ndarray | int,
    max_per_doc: int | None = 2,
) -> list[np.ndarray]:
    """The next round's pairs of queries of equal size: per query ``quota`` unjudged pairs of highest utility.

    Args:
        utility: ``(Q, n, n)`` from :func:`pair_utility` (only ``i < j`` is read).
        judged: ``(Q, n, n)`` bool, True for pairs already judged (either order); never chosen again.
        quota: pairs to choose per query (int or ``(Q,)``); exactly that many (an error when fewer are unjudged).
        max_per_doc: new pairs per document in this round; relaxed when the quota cannot be met under it
            (``None``: no cap).

    Returns:
        one ``int64`` ``(quota_q, 2)`` array ``(i, j)``, ``i < j``, per query, in value order of the walk.
    """
    utility, judged = np.asarray(utility), np.asarray(judged, dtype=bool)
    q_count, n = utility.shape[0], utility.shape[1]
    quota = np.broadcast_to(np.asarray(quota, dtype=np.int64), (q_count,))
    iu, ju = np.triu_indices(n, k=1)
    if judged.shape != utility.shape:
        raise ValueError(f"`judged` must have the shape of `utility` (got {judged.shape} and {utility.shape}).")
    done = judged[:, iu, ju] | judged[:, ju, iu]
    free = (~done).sum(1)
    if (quota < 0).any() or (quota > free).any():
        q = int(np.flatnonzero((quota < 0) | (quota > free))[0])
        raise ValueError(f"`quota` must be in [0, unjudged pairs] (got quota={quota[q]} with {free[q]} unjudged "
                         f"pairs for query #{q}): lower the budget to at most n*(n-1)/2 pairs per query.")
    value = np.where(done, -np.inf, utility[:, iu, ju])
    order = np.argsort(-value, axis=1, kind="stable")
    taken = np.zeros_like(done)
    if max_per_doc is not None:  # spread the round over documents first, then fill what the cap left open
        _greedy_take(order, iu, ju, quota, max_per_doc, taken, done)
    _greedy_take(order, iu, ju, quota, None, taken, done)
    out = []
    for q in range(q_count):
        picked = order[q][taken[q, order[q]]]
        out.append(np.stack([iu[picked], ju[picked]], axis=1).astype(np.int64))
    return out


# ----------------------------------------------------------------------------------------------- planning


@dataclass
class AdaptivePlan:
    """Per-query state between rounds: documents, judged pairs, and the fit's scores and standard errors."""

    sizes: np.ndarray  # (Q,) documents per query
    judged: list[np.ndarray]  # per query (n, n) bool, symmetric
    spent: np.ndarray  # (Q,) pairs asked so far (failed pairs included: they were billed)
    budget: np.ndarray  # (Q,) min(budget, n(n-1)/2)

    @classmethod
    def start(cls, sizes, budget: int) -> AdaptivePlan:
        sizes = np.asarray(sizes, dtype=np.int64)
        judged = [np.zeros((n, n), dtype=bool) for n in sizes]
        return cls(sizes, judged, np.zeros(len(sizes), dtype=np.int64), np.minimum(budget, sizes * (sizes - 1) // 2))

    def mark(self, q: int, a: np.ndarray, b: np.ndarray) -> None:
        self.judged[q][a, b] = self.judged[q][b, a] = True
        self.spent[q] = int(np.triu(self.judged[q], 1).sum())

    def next_round(self, scores: list[np.ndarray], se: list[np.ndarray], rounds_left: int, top_k: int,
                   max_per_doc: int | None) -> list[np.ndarray]:
        """The next round's local pairs of every query (queries of one size are chosen in one vectorised call)."""
        quota = round_quotas(self.budget - self.spent, rounds_left)
        out: list[np.ndarray] = [np.empty((0, 2), dtype=np.int64)] * len(self.sizes)
        for n in np.unique(self.sizes):
            for idx in np.array_split(todo := np.flatnonzero((self.sizes == n) & (quota > 0)),
                                      max(1, -(-len(todo) * int(n) ** 2 // _CHUNK))):
                self._choose(idx, scores, se, quota, top_k, max_per_doc, out)
        return out

    def _choose(self, idx, scores, se, quota, top_k, max_per_doc, out) -> None:
        if len(idx):
            util = pair_utility(np.stack([scores[q] for q in idx]), np.stack([se[q] for q in idx]), top_k)
            chosen = select_pairs(util, np.stack([self.judged[q] for q in idx]), quota[idx], max_per_doc)
            for q, pairs in zip(idx, chosen):
                out[q] = pairs


# ----------------------------------------------------------------------------------------------- driver


def _fit(plan: AdaptivePlan, pair_q: list[int], pair_a: list[int], pair_b: list[int], probs: list[float],
         fit_kwargs: dict[str, Any]):
    starts = np.concatenate([[0], np.cumsum(plan.sizes)[:-1]])
    q = np.asarray(pair_q, dtype=np.int64)
    edges = np.stack([starts[q] + np.asarray(pair_a, dtype=np.int64), starts[q] + np.asarray(pair_b, dtype=np.int64)],
                     axis=1) if len(q) else np.empty((0, 2), dtype=np.int64)
    res = fit_scores_flat(edges, np.asarray(probs, dtype=np.float64), plan.sizes, compute_se=True, **fit_kwargs)
    return res.split(res.scores), res.split(res.se)


def _comparisons(rows: list[tuple], local: list[np.ndarray]):
    pairs = []
    for (qid, query, ids, docs, _), edges in zip(rows, local):
        pairs += [Comparison(query, docs[a], docs[b], None, qid, str(ids[a]), str(ids[b])) for a, b in edges]
    return pairs


def _merge_summaries(rounds: list[dict[str, Any]], settings: dict[str, Any]) -> dict[str, Any]:
    """One judging summary for all rounds: counts and money summed, the per-round summaries kept."""
    total = dict(rounds[0])
    for s in rounds[1:]:
        for key, value in s.items():
            if key in ("degree", "seed", "queries", "intransitive_triangle_rate"):
                continue
            if isinstance(value, int | float) and not isinstance(value, bool):
                total[key] = total.get(key, 0) + value
            elif key == "failed_pairs":
                total[key] = total[key] + value
            elif key == "stopped_judges":
                total[key] = {**total[key], **value}
            elif key == "per_judge":
                total[key] = {name: {k: (v + value[name].get(k, 0)) if isinstance(v, int | float)
                                     and not isinstance(v, bool) else value[name].get(k, v)
                                     for k, v in j.items()} for name, j in total[key].items()}
    total["adaptive"] = settings | {"pairs_per_round": [s["pairs"] for s in rounds],
                                    "rounds_summaries": [{k: v for k, v in s.items() if k not in ("failed_pairs",
                                                                                                  "per_judge")}
                                                         for s in rounds]}
    return total


def _record(plan, rows, index, res, pair_q, pair_a, pair_b, probs) -> None:
    """Mark every asked pair of a round as judged; keep the answered ones (with their labels) for the fit."""
    by_query: dict[int, list[tuple[int, int]]] = {}
    for c in res.pairs:
        q = index[c.query_id]
        pos = rows[q][4]
        by_query.setdefault(q, []).append((pos[c.doc_a_id], pos[c.doc_b_id]))
    for q, ab in by_query.items():
        arr = np.asarray(ab, dtype=np.int64)
        plan.mark(q, arr[:, 0], arr[:, 1])
    cols = res.preferences.select_columns(["query_id", "doc_a_id", "doc_b_id", "prob_a"]).to_dict()
    for qid, a, b, p in zip(cols["query_id"], cols["doc_a_id"], cols["doc_b_id"], cols["prob_a"]):
        q = index[qid]
        pair_q.append(q)
        pair_a.append(rows[q][4][a])
        pair_b.append(rows[q][4][b])
        probs.append(p)


def _candidate_rows(candidates) -> list[tuple]:
    """``candidate_rows`` plus each query's doc-id -> position map (ids must be distinct: pairs are found by id)."""
    rows = []
    for qid, query, ids, docs in candidate_rows(candidates):
        if len(set(ids)) != len(ids):
            raise ValueError(f"query_id={qid!r}: repeated doc_ids: each candidate must have its own id.")
        rows.append((qid, query, ids, docs, {d: i for i, d in enumerate(ids)}))
    return rows


def adaptive_judge(
    candidates: Any,
    judge: Any,
    rounds: int = 4,
    budget: int = 400,
    first_degree: int = 4,
    cache: Any = None,
    seed: int = 0,
    top_k: int = DEFAULT_TOP_K,
    max_per_doc: int | None = 2,
    fit_kwargs: dict[str, Any] | None = None,
    **judge_kwargs: Any,
):
    """Judge a candidate set in ``rounds`` rounds: random cycles first, then the pairs the fit is least sure of.

    Args:
        candidates: candidate set (``query_id, query, doc_ids, docs``), a ``datasets.Dataset``.
        judge: any :class:`zelo_hf.judging.base.Judge`.
        rounds: judging rounds (1 = only the first round's cycles).
        budget: comparisons per query in all rounds together, exactly (at most ``n(n-1)/2`` for a small query).
        first_degree: degree of the first round's random cycles (``build_pairs(candidates, first_degree, seed)``).
        cache: a ``JudgmentCache`` or a path: every round goes through it, so a rerun chooses the same pairs from
            the same cached answers and bills nothing; an interrupted run resumes where it stopped.
        seed: seeds the first round's graphs (with each query_id) and the judge's position swaps.
        top_k: the part of each ranking the later rounds sharpen (default 20).
        max_per_doc: new pairs per document per round (see :func:`select_pairs`).
        fit_kwargs: keyword arguments of ``zelo_hf.thurstone.fit_scores_flat`` for the fits between rounds.
        judge_kwargs: passed to every round's :func:`zelo_hf.judging.preferences.judge_pairs` (``concurrency``,
            ``batch``, ``progress``, ...): each round's pairs are one call, hence one provider batch.

    Returns:
        a :class:`zelo_hf.judging.preferences.JudgingResult` over all rounds; ``summary["adaptive"]`` has the pairs per round.
    """
    from datasets import concatenate_datasets


    if judge_kwargs.get("dry_run"):
        raise ValueError("adaptive_judge(dry_run=True): later rounds depend on the answers, so they cannot be "
                         "priced in advance; price the same number of pairs with judge_pairs(degree=...) instead.")
    if judge_kwargs.get("max_pairs") is not None:
        raise ValueError(f"adaptive_judge takes `budget`, not max_pairs (got max_pairs={judge_kwargs['max_pairs']}): "
                         "pass budget=<comparisons per query>.")
    rows = _candidate_rows(candidates)
    check_adaptive_args(rounds, budget, first_degree, [len(r[2]) for r in rows], [r[0] for r in rows])
    if top_k < 1:
        raise ValueError(f"`top_k` must be >= 1 (got top_k={top_k}): e.g. {DEFAULT_TOP_K}.")
    plan = AdaptivePlan.start([len(r[2]) for r in rows], budget)
    index = {r[0]: q for q, r in enumerate(rows)}
    owned = isinstance(cache, str | Path)
    cache = JudgmentCache(cache) if owned else cache
    results, pair_q, pair_a, pair_b, probs = [], [], [], [], []
    try:
        pairs = build_pairs(candidates, first_degree, seed)
        for r in range(rounds):
            if not pairs:
                break
            res = judge_pairs(pairs, judge, degree=first_degree, seed=seed, cache=cache, **judge_kwargs)
            results.append(res)
            _record(plan, rows, index, res, pair_q, pair_a, pair_b, probs)
            if r + 1 < rounds and (plan.spent < plan.budget).any():
                scores, se = _fit(plan, pair_q, pair_a, pair_b, probs, fit_kwargs or {})
                pairs = _comparisons(rows, plan.next_round(scores, se, rounds - r - 1, top_k, max_per_doc))
            else:
                pairs = []
    finally:
        if owned:
            cache.close()
    settings = {"rounds": rounds, "budget": budget, "first_degree": first_degree, "top_k": top_k,
                "max_per_doc": max_per_doc}
    summary = _merge_summaries([res.summary for res in results], settings)
    return JudgingResult(concatenate_datasets([res.preferences for res in results]), summary,
                         concatenate_datasets([res.failed for res in results]),
                         [c for res in results for c in res.pairs])


def judge_candidates(data: Any, judge: Any, rounds: int = 1, budget: int | None = None, first_degree: int = 4,
                     degree: int = 8, seed: int = 0, cache: Any = None, **judge_kwargs: Any):
    """The one judging step of ``zelo judge`` and of the zerank ``preferences`` stage: ``rounds=1`` judges each
    query's degree-``degree`` comparison graph (``judge_pairs``); ``rounds > 1`` runs the adaptive rounds
    (:func:`adaptive_judge`, every round one ``judge_pairs`` call through the same cache)."""
    if rounds == 1:
        return judge_pairs(data, judge, degree=degree, seed=seed, cache=cache, **judge_kwargs)
    return adaptive_judge(data, judge, rounds=rounds, budget=budget, first_degree=first_degree, cache=cache, seed=seed,
                          **judge_kwargs)
