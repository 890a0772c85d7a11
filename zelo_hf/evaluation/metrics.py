"""Metrics of a run against qrels (pytrec_eval, trec_eval semantics; see :mod:`zelo_hf.evaluation`) and the pooled
cross-query AUC."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..utils import require

Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]

DEFAULT_METRICS = ("ndcg@10", "recall@100", "mrr@10")
# our name -> (trec_eval measure family, key prefix in pytrec_eval's output)
_TREC_FAMILIES = {"ndcg": ("ndcg_cut", "ndcg_cut_"), "recall": ("recall", "recall_"), "map": ("map_cut", "map_cut_")}
_TREC_FAMILIES |= {"precision": ("P", "P_"), "p": ("P", "P_")}
_METRIC_RE = re.compile(r"^(ndcg|recall|map|precision|p|mrr)@(\d+)$")


@dataclass(frozen=True)
class _Metric:
    name: str
    family: str
    k: int


def parse_metrics(metrics: Iterable[str]) -> list[_Metric]:
    parsed = []
    for name in metrics:
        match = _METRIC_RE.match(name.lower().strip())
        if match is None:
            raise ValueError(
                f"`metrics` entries must look like 'ndcg@10', 'recall@100', 'mrr@10', 'map@100' or 'precision@5' "
                f"(got {name!r}): write the measure, '@' and a cutoff."
            )
        parsed.append(_Metric(name.lower().strip(), match.group(1), int(match.group(2))))
    return parsed


def _truncate(run: Run, k: int) -> Run:
    """Each query's top-``k`` documents in trec_eval order (score descending, then doc id descending)."""
    return {
        qid: dict(sorted(docs.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)[:k]) for qid, docs in run.items()
    }


def _pytrec_scores(run: Run, qrels: Qrels, measures: set[str]) -> dict[str, dict[str, float]]:
    import pytrec_eval

    evaluator = pytrec_eval.RelevanceEvaluator(qrels, measures)
    return evaluator.evaluate(run)


def _check_run(run: Run) -> Run:
    clean: Run = {}
    for qid, docs in run.items():
        if not isinstance(docs, dict):
            raise TypeError(f"`run[{qid!r}]` must be a dict {{doc_id: score}} (got {type(docs).__name__}).")
        values = {str(d): float(s) for d, s in docs.items()}
        bad = [d for d, s in values.items() if not math.isfinite(s)]
        if bad:
            raise ValueError(f"`run[{qid!r}]` has non-finite scores for docs {bad[:5]}: check the scorer's output.")
        clean[str(qid)] = values
    return clean


def evaluate_run(run: Run, qrels: Qrels, metrics: Sequence[str] = DEFAULT_METRICS) -> dict[str, Any]:
    """Score a run against qrels with pytrec_eval (trec_eval semantics: linear gains, grade >= 1 is relevant).

    Returns ``{"aggregate": {metric: mean}, "per_query": {qid: {metric: value}}, "num_queries": n}``; the mean is
    over the run's queries that have at least one relevant judgment. ``mrr@k`` is trec_eval's ``recip_rank`` on
    the run cut to its top ``k`` (trec_eval has no cutoff for it).
    """
    require("pytrec_eval", "eval", "evaluate_run")
    parsed = parse_metrics(metrics)
    run = _check_run(run)
    judged = {qid: {d: int(g) for d, g in docs.items()} for qid, docs in qrels.items()}
    query_ids = sorted(q for q in run if any(g > 0 for g in judged.get(q, {}).values()))
    if not query_ids:
        raise ValueError(
            f"no query of the run has a relevant judgment in `qrels` (run has {len(run)} queries, e.g. "
            f"{sorted(run)[:3]}; qrels have {len(qrels)}): pass the qrels of the same split."
        )
    sub_qrels = {q: judged[q] for q in query_ids}
    per_query: dict[str, dict[str, float]] = {q: {} for q in query_ids}
    trec = [m for m in parsed if m.family != "mrr"]
    if trec:
        measures = {f"{_TREC_FAMILIES[m.family][0]}.{m.k}" for m in trec}
        scores = _pytrec_scores({q: run[q] for q in query_ids}, sub_qrels, measures)
        for q in query_ids:
            for m in trec:
                per_query[q][m.name] = scores.get(q, {}).get(f"{_TREC_FAMILIES[m.family][1]}{m.k}", 0.0)
    for m in (m for m in parsed if m.family == "mrr"):
        scores = _pytrec_scores(_truncate({q: run[q] for q in query_ids}, m.k), sub_qrels, {"recip_rank"})
        for q in query_ids:
            per_query[q][m.name] = scores.get(q, {}).get("recip_rank", 0.0)
    aggregate = {m.name: float(np.mean([per_query[q][m.name] for q in query_ids])) for m in parsed}
    return {"aggregate": aggregate, "per_query": per_query, "num_queries": len(query_ids)}


def cross_query_auc(run: Run, qrels: Qrels) -> float:
    """Pooled ROC-AUC over every (query, document) of the run: the probability that a relevant pair (grade >= 1)
    outscores a non-relevant one *of any query*. A metric only scores that mean the same in every query win (one
    global threshold works); per-query metrics such as NDCG cannot see a query-dependent offset."""
    from scipy.stats import rankdata

    scores, relevant = [], []
    for qid, docs in _check_run(run).items():
        judged = qrels.get(qid, {})
        for doc_id, score in docs.items():
            scores.append(score)
            relevant.append(judged.get(doc_id, 0) > 0)
    relevant = np.asarray(relevant, dtype=bool)
    n_pos, n_neg = int(relevant.sum()), int((~relevant).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"cross_query_auc needs relevant and non-relevant pairs (got {n_pos} and {n_neg}).")
    ranks = rankdata(np.asarray(scores, dtype=np.float64))  # ties get their mean rank (Mann-Whitney)
    return float((ranks[relevant].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
