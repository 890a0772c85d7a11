"""The reranker-in-the-loop round (ZELO.md; issue #13): the trained model's disagreements go back to the judges.

After a first model is trained on the zELO labels, it scores every training query's candidates. Where its ranking and
the labels' ranking disagree at the top (documents it puts in its top-k that the labels put low, and the reverse), the
labels are least trustworthy or the model is wrong: either way one more judgment there is worth more than one
anywhere else. :func:`loop_pairs` chooses those pairs, never one already judged; the pipeline judges them, refits,
recalibrates (the same cross-query pairs, answered from the cache) and retrains.

**Which pairs** (:func:`disagreement_utility`). With 0-based ranks ``r_m`` (the model's) and ``r_l`` (the labels')
and the top-``k`` discount ``D(r) = 1 / log2(r + 2)`` for ``r < k`` (0 below the top ``k``), a pair ``(i, j)`` is worth

    max(0, -(D(r_m(i)) - D(r_m(j))) * (D(r_l(i)) - D(r_l(j))))

It is positive only when the two rankings order ``i`` and ``j`` oppositely and each ranking has one of them in its
top ``k``; it is largest for a document the model puts first that the labels put below their top ``k`` (or the
reverse), i.e. the swaps that move NDCG@k most under either ranking. Pairs whose value is 0 (both rankings agree,
or the swap is invisible at the top) are never chosen. ``selection="random"`` is the control: per query, the same
number of pairs drawn uniformly from the unjudged ones, so a comparison says what the choice of pairs buys.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .adaptive import select_pairs
from .judging.votes import Comparison

__all__ = ["SELECTIONS", "disagreement_utility", "judged_pairs", "loop_pairs"]

SELECTIONS = ("disagreement", "random")


def _discount(scores: np.ndarray, top_k: int) -> np.ndarray:
    """``D(rank)`` of every document of one query: ``1 / log2(rank + 2)`` inside the top ``top_k``, else 0."""
    ranks = np.empty(len(scores), dtype=np.int64)
    ranks[np.argsort(-scores, kind="stable")] = np.arange(len(scores))
    return np.where(ranks < top_k, 1.0 / np.log2(ranks + 2.0), 0.0)


def disagreement_utility(model_scores, label_scores, top_k: int = 10) -> np.ndarray:
    """``(n, n)`` value of judging each pair of one query's documents (see the module docstring); symmetric."""
    model_scores = np.asarray(model_scores, dtype=np.float64)
    label_scores = np.asarray(label_scores, dtype=np.float64)
    if model_scores.shape != label_scores.shape or model_scores.ndim != 1:
        raise ValueError(f"`model_scores` and `label_scores` must be 1-d and of one length per query (got shapes "
                         f"{model_scores.shape} and {label_scores.shape}): score every candidate of the query.")
    if not (np.isfinite(model_scores).all() and np.isfinite(label_scores).all()):
        raise ValueError("`model_scores` and `label_scores` must be finite: a NaN score cannot be ranked.")
    dm, dl = _discount(model_scores, top_k), _discount(label_scores, top_k)
    return np.maximum(0.0, -(dm[:, None] - dm[None, :]) * (dl[:, None] - dl[None, :]))


def judged_pairs(preferences: Any) -> dict[str, set[frozenset[str]]]:
    """Per query id, the document-id pairs a preference set already holds (either order)."""
    cols = preferences.select_columns(["query_id", "doc_a_id", "doc_b_id"]).to_dict()
    out: dict[str, set[frozenset[str]]] = {}
    for q, a, b in zip(cols["query_id"], cols["doc_a_id"], cols["doc_b_id"]):
        out.setdefault(str(q), set()).add(frozenset((str(a), str(b))))
    return out


def loop_pairs(
    labels: Any,
    model_scores: list[list[float]],
    judged: dict[str, set[frozenset[str]]],
    pairs_per_query: int,
    top_k: int = 10,
    selection: str = "disagreement",
    seed: int = 0,
    max_per_doc: int | None = 2,
) -> list[Comparison]:
    """The round's pairs: per query at most ``pairs_per_query`` unjudged pairs of positive disagreement value.

    Args:
        labels: a label set (``query_id, query, doc_ids, docs`` and ``score``, else ``elo``): the labels' ranking.
        model_scores: the trained model's score of every candidate, one list per row of ``labels``.
        judged: :func:`judged_pairs` of every preference set the labels were fitted on: never chosen again.
        pairs_per_query: the most pairs a query gets (fewer when fewer pairs disagree).
        top_k: the depth whose order matters (NDCG@10: 10).
        selection: ``"disagreement"``, or ``"random"`` (the control: as many pairs per query, drawn uniformly from
            the unjudged ones).
        seed: the random control's seed.
        max_per_doc: new pairs per document (``zelo_hf.adaptive.select_pairs``), relaxed when the quota needs it.
    """
    if selection not in SELECTIONS:
        raise ValueError(f"`selection` must be one of {SELECTIONS} (got selection={selection!r}).")
    if pairs_per_query < 1 or top_k < 1:
        raise ValueError(f"`pairs_per_query` and `top_k` must be >= 1 (got {pairs_per_query} and {top_k}): e.g. "
                         "pairs_per_query=10, top_k=10.")
    if len(model_scores) != len(labels):
        raise ValueError(f"`model_scores` must have one list per label-set row (got {len(model_scores)} for "
                         f"{len(labels)} rows).")
    column = "score" if "score" in labels.column_names else "elo"
    rng = np.random.default_rng(seed)
    names = ["query_id", "query", "doc_ids", "docs", column]
    cols = labels.select_columns(names).to_dict()
    out: list[Comparison] = []
    for (qid, query, ids, docs, label), scores in zip(zip(*(cols[c] for c in names)), model_scores):
        ids = [str(i) for i in ids]
        done = _judged_matrix(ids, judged.get(str(qid), set()))
        utility = disagreement_utility(scores, label, top_k)
        worthless = done | (utility <= 0)  # a pair both rankings order alike is never chosen, not even to fill
        quota = min(pairs_per_query, int((~worthless[np.triu_indices(len(ids), k=1)]).sum()))
        if quota == 0:
            continue
        if selection == "random":  # the control: as many pairs, uniformly from every unjudged one
            (chosen,) = select_pairs(rng.random(utility.shape)[None], done[None], quota, None)
        else:
            (chosen,) = select_pairs(utility[None], worthless[None], quota, max_per_doc)
        out += [Comparison(query, docs[a], docs[b], None, str(qid), ids[a], ids[b]) for a, b in chosen]
    return out


def _judged_matrix(ids: list[str], judged: set[frozenset[str]]) -> np.ndarray:
    pos = {d: i for i, d in enumerate(ids)}
    done = np.zeros((len(ids), len(ids)), dtype=bool)
    for pair in judged:
        a, b = (tuple(pair) * 2)[:2]
        if a in pos and b in pos:
            done[pos[a], pos[b]] = done[pos[b], pos[a]] = True
    return done
