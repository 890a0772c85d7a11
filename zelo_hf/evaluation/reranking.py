"""Reranking a first stage: the first stage's own run, random orderings, a label set's scores as a run, a scorer's
reranked run and its metrics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..schema import CANDIDATE_COLUMNS, require_columns
from .metrics import DEFAULT_METRICS, Qrels, Run, evaluate_run
from .scorers import as_score_fn


def candidate_dicts(candidates) -> list[dict[str, Any]]:
    """A candidate set (a ``Dataset`` or a list of row dicts) as row dicts, its columns checked."""
    names = getattr(candidates, "column_names", None) or (list(candidates[0]) if len(candidates) else CANDIDATE_COLUMNS)
    require_columns(names, CANDIDATE_COLUMNS, "the candidate set", "build it with `zelo_hf.bm25_candidates`.")
    return [dict(row) for row in candidates]


def first_stage_run(candidates) -> Run:
    """The first stage's own ranking as a run (``first_stage_scores``, or descending ranks where absent)."""
    run: Run = {}
    for row in candidate_dicts(candidates):
        n = len(row["doc_ids"])
        scores = row.get("first_stage_scores") or list(range(n, 0, -1))
        run[str(row["query_id"])] = {str(d): float(s) for d, s in zip(row["doc_ids"], scores)}
    return run


def label_run(labels, column: str) -> Run:
    """A label set's scores (``elo`` or the calibrated ``score``) as a run, to measure them like a system's."""
    return {str(q): {str(d): float(v) for d, v in zip(ids, values)}
            for q, ids, values in zip(labels["query_id"], labels["doc_ids"], labels[column])}


def random_run(candidates, seed: int) -> Run:
    """A random ordering of each query's candidates (the floor every reranker must clear), seeded."""
    rng = np.random.default_rng(seed)
    return {str(r["query_id"]): {str(d): float(v) for d, v in zip(r["doc_ids"], rng.permutation(len(r["doc_ids"])))}
            for r in candidate_dicts(candidates)}


def rerank_candidates(
    candidates,
    scorer: Any,
    batch_size: int = 32,
    top_k: int | None = None,
    kind: str = "auto",
    max_length: int | None = None,
) -> Run:
    """Score every query's candidates with ``scorer`` and return the reranked run.

    With ``top_k`` only the first ``top_k`` candidates of each query are rescored; the rest keep their first-stage
    order below them (so Recall@100 of a top-100 list is unchanged by a top-10 rerank).
    """
    if top_k is not None and top_k < 1:
        raise ValueError(f"`top_k` must be >= 1 or None (got top_k={top_k}): pass e.g. top_k=100.")
    rows = candidate_dicts(candidates)
    score_fn = as_score_fn(scorer, batch_size=batch_size, kind=kind, max_length=max_length)
    counts = [len(r["doc_ids"]) if top_k is None else min(top_k, len(r["doc_ids"])) for r in rows]
    queries = [r["query"] for r, n in zip(rows, counts) for _ in range(n)]
    docs = [d for r, n in zip(rows, counts) for d in r["docs"][:n]]
    scores = np.asarray(score_fn(queries, docs), dtype=np.float64) if queries else np.zeros(0)
    run: Run = {}
    for row, mine in zip(rows, np.split(scores, np.cumsum(counts)[:-1])):
        ranked = {str(d): float(s) for d, s in zip(row["doc_ids"], mine)}
        rest = [str(d) for d in row["doc_ids"][len(mine) :]]
        floor = (float(mine.min()) if len(mine) else 0.0) - 1.0
        ranked.update({d: floor - j for j, d in enumerate(rest)})
        run[str(row["query_id"])] = ranked
    return run


def evaluate_reranker(
    candidates,
    qrels: Qrels,
    scorer: Any = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    batch_size: int = 32,
    top_k: int | None = None,
    kind: str = "auto",
    max_length: int | None = None,
    return_run: bool = False,
) -> dict[str, Any]:
    """Metrics of the first stage (``scorer=None``) or of ``scorer`` reranking it; see :func:`evaluate_run`.

    Candidate rows are compared with the qrels by ``query_id``; the qrels must be those of the evaluated queries.
    """
    run = (
        first_stage_run(candidates)
        if scorer is None
        else rerank_candidates(
            candidates, scorer, batch_size=batch_size, top_k=top_k, kind=kind, max_length=max_length
        )
    )
    result = evaluate_run(run, qrels, metrics)
    if return_run:
        result["run"] = run
    return result
