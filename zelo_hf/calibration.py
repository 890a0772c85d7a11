"""Cross-query calibration (ZELO.md, pipeline step 6): make scores comparable between queries.

Thurstone scores are only relative within one query (the prior centres each query at 0). Calibration asks
judges comparisons *across* queries -- "which document better answers its own query?" -- and fits one
offset ``b_q`` per query by the same maximum likelihood, with the within-query scores held fixed:

    P(doc a of query q beats doc b of query r) = F((s_a + b_q) - (s_b + b_r))

with the same ``F`` as the within-query fit and a weak Gaussian prior on the offsets (which fixes the gauge:
offsets have mean about 0). Calibrated scores are ``score = elo + offset``.

Optional absolute anchor: pointwise "is this document relevant?" votes on a few documents per query, modelled
as ``P(relevant) = F(s + b_q - t)`` with one global threshold ``t`` fitted jointly. The reported offsets are
then ``b_q - t``, so ``score = 0`` is the relevance boundary ("relevant" iff ``score > 0``). Without anchors
the zero of the scale is arbitrary (the mean query).

The query pairs to compare are a sparse graph over queries (unions of random Hamiltonian cycles, as within a
query), and each query's documents are drawn across its whole score range (stratified quantiles), so the
offsets rest on comparisons of strong, middling and weak documents alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .graphs import comparison_graph
from .label_sets import save_label_set
from .schema import (
    ANCHOR_COLUMNS,
    CROSS_FIT_COLUMNS,
    CROSS_QUERY_COLUMNS,
    LABEL_COLUMNS,
    PAIR_COLUMNS,
    check_probabilities,
    cross_pair_features,
    require_columns,
)
from .thurstone import DEFAULT_PRIOR_SD, check_fit_model, fit_scores_flat
from .utils import get_logger

logger = get_logger(__name__)

__all__ = ["OffsetResult", "sample_cross_query_pairs", "fit_query_offsets", "calibrate_labels"]


@dataclass
class OffsetResult:
    """Fitted per-query offsets and diagnostics.

    Attributes:
        offsets: ``b_q`` per query (``b_q - t`` when anchors were given).
        se: standard errors of the offsets (``None`` for more than ``max_se_queries`` queries).
        threshold: the fitted relevance threshold ``t`` before shifting (``None`` without anchors).
        converged, iterations, log_likelihood: as in the within-query fit.
        connected: the graph of cross-query comparisons (plus anchors) connects all queries.
        n_pairs, n_anchors: data counts.
    """

    offsets: np.ndarray
    se: np.ndarray | None
    threshold: float | None
    converged: bool
    iterations: int
    log_likelihood: float
    connected: bool
    n_pairs: int
    n_anchors: int

    def summary(self) -> dict[str, Any]:
        return {
            "queries": len(self.offsets),
            "cross-query pairs": self.n_pairs,
            "anchor votes": self.n_anchors,
            "query graph connected": self.connected,
            "converged": self.converged,
            "Newton iterations": self.iterations,
            "log-likelihood per pair": round(self.log_likelihood / max(self.n_pairs + self.n_anchors, 1), 4),
            "offset sd": round(float(np.std(self.offsets)), 4),
            "relevance threshold": None if self.threshold is None else round(self.threshold, 4),
        }


def _stratified_positions(query_of_slot: np.ndarray, n_docs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each slot (a use of a query in a comparison), a rank in that query's score order.

    The k-th of a query's K slots (in random order) takes quantile (k + U) / K of its documents, so each
    query's documents are spread over its whole score range.
    """
    order = np.lexsort((rng.random(len(query_of_slot)), query_of_slot))
    counts = np.bincount(query_of_slot, minlength=len(n_docs))
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    k = np.empty(len(order), dtype=np.int64)
    k[order] = np.arange(len(order)) - np.repeat(first, counts)
    quantile = (k + rng.random(len(k))) / counts[query_of_slot]
    return np.minimum((quantile * n_docs[query_of_slot]).astype(np.int64), n_docs[query_of_slot] - 1)


def sample_cross_query_pairs(
    label_ds,
    n_cycles: int = 4,
    pairs_per_edge: int = 1,
    seed: int | np.random.Generator | None = None,
    score_column: str = "elo",
):
    """Cross-query pairs to judge: a preference set (``prob_a`` empty) plus ``query_b_id`` / ``query_b``.

    Queries are joined along ``n_cycles`` random Hamiltonian cycles (a ``2 * n_cycles``-regular query graph;
    dense when there are few queries); every query-graph edge gives ``pairs_per_edge`` document pairs, doc_a
    from the first query and doc_b from the second, drawn by stratified quantiles of the within-query scores.

    Args:
        label_ds: a label set (one row per query with ``doc_ids``, ``docs`` and ``score_column``).
        n_cycles: cycles over queries (each query takes part in ``2 * n_cycles * pairs_per_edge`` comparisons).
        pairs_per_edge: document pairs per pair of queries.
        seed: int or generator (reproducible).
        score_column: the within-query scores used for stratification.
    """
    from datasets import Dataset

    require_columns(label_ds.column_names, (*LABEL_COLUMNS, score_column), "the label set")
    if len(label_ds) < 2:
        raise ValueError(f"cross-query calibration needs >= 2 queries (got {len(label_ds)}): label more queries.")
    if n_cycles < 1 or pairs_per_edge < 1:
        raise ValueError(f"`n_cycles` and `pairs_per_edge` must be >= 1 (got {n_cycles}, {pairs_per_edge}).")
    rng = np.random.default_rng(seed)
    edges = np.repeat(comparison_graph(len(label_ds), 2 * n_cycles, seed=rng), pairs_per_edge, axis=0)
    n_docs = np.array([len(d) for d in label_ds["doc_ids"]], dtype=np.int64)
    ranks = _stratified_positions(edges.ravel(), n_docs, rng).reshape(-1, 2)
    scores = label_ds[score_column]
    by_rank = [np.argsort(-np.asarray(s), kind="stable") for s in scores]  # rank 0 = the query's best document
    doc_ids, docs, queries, query_ids = label_ds["doc_ids"], label_ds["docs"], label_ds["query"], label_ds["query_id"]
    rows: dict[str, list] = {c: [] for c in (*PAIR_COLUMNS, *CROSS_QUERY_COLUMNS)}
    for (qa, qb), (ra, rb) in zip(edges, ranks):
        ia, ib = by_rank[qa][ra], by_rank[qb][rb]
        rows["query_id"].append(query_ids[qa])
        rows["query"].append(queries[qa])
        rows["doc_a_id"].append(doc_ids[qa][ia])
        rows["doc_a"].append(docs[qa][ia])
        rows["doc_b_id"].append(doc_ids[qb][ib])
        rows["doc_b"].append(docs[qb][ib])
        rows["query_b_id"].append(query_ids[qb])
        rows["query_b"].append(queries[qb])
    rows["prob_a"] = [None] * len(edges)
    return Dataset.from_dict(rows, features=cross_pair_features())


def fit_query_offsets(
    query_a: np.ndarray,
    query_b: np.ndarray,
    score_a: np.ndarray,
    score_b: np.ndarray,
    probs: np.ndarray,
    n_queries: int,
    anchors: dict[str, np.ndarray] | None = None,
    model: str = "thurstone",
    prior_sd: float = DEFAULT_PRIOR_SD,
    tol: float = 1e-9,
    max_se_queries: int = 2000,
) -> OffsetResult:
    """Maximum-likelihood offsets ``b_q`` from cross-query comparisons, within-query scores held fixed.

    Args:
        query_a, query_b: query index (0 .. n_queries-1) of doc a and of doc b for each comparison.
        score_a, score_b: their within-query scores (``elo``).
        probs: P(doc a answers its query better than doc b answers its own), soft labels in [0, 1].
        n_queries: number of queries.
        anchors: optional pointwise relevance votes, a dict with arrays ``query`` (index), ``score`` (the
            document's within-query score) and ``prob`` (share of "relevant" votes): adds a jointly fitted
            threshold ``t`` with ``P(relevant) = F(score + b_q - t)``; offsets are then reported as ``b_q - t``.
        model, prior_sd, tol: as in :func:`zelo_hf.thurstone.fit_scores_flat` (the prior is on the offsets).
        max_se_queries: standard errors need a dense inverse; skipped (``se=None``) above this many queries.
    """
    query_a, query_b = np.asarray(query_a, dtype=np.int64), np.asarray(query_b, dtype=np.int64)
    if np.any(query_a == query_b):
        e = int(np.flatnonzero(query_a == query_b)[0])
        raise ValueError(f"cross-query pair {e} compares query {query_a[e]} with itself: drop within-query pairs.")
    edges = np.stack([query_a, query_b], axis=1)
    offset = np.asarray(score_a, dtype=np.float64) - np.asarray(score_b, dtype=np.float64)
    probs = np.asarray(probs, dtype=np.float64)
    n_items, n_anchors = n_queries, 0
    if anchors is not None:
        # the threshold is one extra item T: F(b_q - t + s) is an edge (q, T) with the document's score as offset
        aq = np.asarray(anchors["query"], dtype=np.int64)
        n_anchors, n_items = len(aq), n_queries + 1
        edges = np.concatenate([edges, np.stack([aq, np.full_like(aq, n_queries)], axis=1)])
        offset = np.concatenate([offset, np.asarray(anchors["score"], dtype=np.float64)])
        probs = np.concatenate([probs, np.asarray(anchors["prob"], dtype=np.float64)])
    res = fit_scores_flat(
        edges, probs, [n_items], model=model, prior_sd=prior_sd, tol=tol, edge_offset=offset,
        compute_se=n_items <= max_se_queries, query_ids=["cross-query"], max_cg=1000,
    )[0]  # fmt: skip
    offsets, threshold = res.scores[:n_queries], None
    if anchors is not None:
        threshold = float(res.scores[n_queries])
        offsets = offsets - threshold
    se = None if res.se is None else res.se[:n_queries]
    return OffsetResult(
        offsets=offsets, se=se, threshold=threshold, converged=res.converged, iterations=res.iterations,
        log_likelihood=res.log_likelihood, connected=res.connected, n_pairs=len(query_a), n_anchors=n_anchors,
    )  # fmt: skip


def _score_lookup(label_ds, score_column: str):
    """(query_id, doc_id) -> (query index, within-query score) as a pandas frame for vectorised merges."""
    import pandas as pd

    n_docs = [len(d) for d in label_ds["doc_ids"]]
    return pd.DataFrame(
        {
            "query_id": np.repeat(np.asarray(label_ds["query_id"], dtype=object), n_docs),
            "doc_id": [d for row in label_ds["doc_ids"] for d in row],
            "q": np.repeat(np.arange(len(label_ds)), n_docs),
            "s": np.concatenate([np.asarray(s, dtype=np.float64) for s in label_ds[score_column]]),
        }
    )


def _lookup(table, query_ids, doc_ids, what: str):
    import pandas as pd

    keys = pd.DataFrame({"query_id": np.asarray(query_ids, dtype=object), "doc_id": np.asarray(doc_ids, dtype=object)})
    found = keys.merge(table, on=["query_id", "doc_id"], how="left", validate="many_to_one")
    missing = found["q"].isna().to_numpy()
    if missing.any():
        i = int(np.flatnonzero(missing)[0])
        raise ValueError(
            f"{what} row {i}: (query_id={keys.query_id[i]!r}, doc_id={keys.doc_id[i]!r}) is not in the label set: "
            "sample cross-query pairs from this label set (`sample_cross_query_pairs`)."
        )
    return found["q"].to_numpy(dtype=np.int64), found["s"].to_numpy()


def calibrate_labels(
    label_ds,
    cross_pref_ds,
    anchors=None,
    model: str = "thurstone",
    prior_sd: float = DEFAULT_PRIOR_SD,
    score_column: str = "elo",
    return_result: bool = False,
):
    """Add ``offset`` and ``score`` (= ``elo`` + ``offset``, comparable across queries) to a label set.

    Args:
        label_ds: label set (from :func:`zelo_hf.labeling.label_preferences`).
        cross_pref_ds: judged cross-query pairs (``sample_cross_query_pairs`` output with ``prob_a`` filled).
        anchors: optional ``Dataset`` of pointwise relevance votes with ``query_id``, ``doc_id``,
            ``prob_relevant`` (share of "relevant" votes), pinning ``score = 0`` to the relevance boundary.
        model, prior_sd: as in the within-query fit (use the same model).
        return_result: also return the :class:`OffsetResult` (diagnostics).
    """
    check_fit_model(model)
    require_columns(cross_pref_ds.column_names, CROSS_FIT_COLUMNS, "the cross-query preference set")
    if len(cross_pref_ds) == 0:
        raise ValueError("the cross-query preference set has no rows: write pairs with `zelo calibrate --sample_pairs`, "
                         "judge them (`zelo judge --pairs ...`) and pass that folder.")
    check_probabilities(cross_pref_ds, "prob_a", "the cross-query preference set")
    probs = np.array([np.nan if p is None else p for p in cross_pref_ds["prob_a"]], dtype=np.float64)
    if not np.isfinite(probs).all():
        i = int(np.flatnonzero(~np.isfinite(probs))[0])
        raise ValueError(
            f"cross-query pair {i} (query_id={cross_pref_ds[i]['query_id']!r}) has no prob_a: judge the pairs "
            "first (`zelo judge`), or drop failed ones."
        )
    table = _score_lookup(label_ds, score_column)
    qa, sa = _lookup(table, cross_pref_ds["query_id"], cross_pref_ds["doc_a_id"], "cross-query pair (doc_a)")
    qb, sb = _lookup(table, cross_pref_ds["query_b_id"], cross_pref_ds["doc_b_id"], "cross-query pair (doc_b)")
    anchor_arrays = None
    if anchors is not None:
        require_columns(anchors.column_names, ANCHOR_COLUMNS, "the anchors")
        check_probabilities(anchors, "prob_relevant", "the anchors")
        aq, as_ = _lookup(table, anchors["query_id"], anchors["doc_id"], "anchor")
        anchor_arrays = {"query": aq, "score": as_, "prob": np.asarray(anchors["prob_relevant"], dtype=np.float64)}
    result = fit_query_offsets(qa, qb, sa, sb, probs, len(label_ds), anchor_arrays, model=model, prior_sd=prior_sd)
    if not result.connected:
        logger.warning("the cross-query comparison graph is not connected: offsets of separate parts are not tied.")
    offsets = result.offsets.tolist()
    calibrated = label_ds.map(
        _add_offset, with_indices=True, fn_kwargs={"offsets": offsets, "score_column": score_column},
        desc="Calibrate scores",
    )  # fmt: skip
    return (calibrated, result) if return_result else calibrated


def _add_offset(row: dict, index: int, offsets: list[float], score_column: str) -> dict:
    offset = offsets[index]
    return {"offset": offset, "score": [s + offset for s in row[score_column]]}


def calibrate_label_set(label_ds, cross_pref_ds, output_dir, anchors=None, model: str = "thurstone",
                        prior_sd: float = DEFAULT_PRIOR_SD, details: dict[str, Any] | None = None, **card_info: Any):
    """The one calibration step of ``zelo calibrate`` and of the zerank ``calibration`` stage: offsets from the judged
    cross-query pairs (and optional relevance ``anchors``), then the calibrated label set saved with its card, whose
    calibration section is the fit's summary plus ``details`` (e.g. what judging the pairs cost).

    ``card_info`` goes to :func:`zelo_hf.label_sets.save_label_set` (``push_to_hub``, ``source``, ``degree``, ...).
    Returns ``(calibrated, OffsetResult)``.
    """
    calibrated, result = calibrate_labels(label_ds, cross_pref_ds, anchors=anchors, model=model, prior_sd=prior_sd,
                                          return_result=True)
    save_label_set(calibrated, output_dir, model=model, calibration={**result.summary(), **(details or {})},
                   **card_info)
    return calibrated, result
