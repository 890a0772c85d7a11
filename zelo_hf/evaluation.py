"""Rerank-a-first-stage evaluation: NDCG@10, Recall@100, MRR@10 with pytrec_eval, and MTEB tasks for BEIR folders.

Conventions (those of ``trec_eval``, which ``pytrec_eval`` wraps and MTEB calls):

* **Gains are linear**: a document of grade ``g`` contributes ``g / log2(rank + 1)`` to DCG, and the ideal DCG
  sorts the judged grades of the query. The bundled data README's reference BM25 used exponential gains
  ``2^g - 1``; on binary qrels (SciFact) the two agree, on graded ones (Cranfield, 0-4) they differ, so compare
  Cranfield figures only with figures computed the same way.
* A document is relevant for recall and MRR when its grade is ``>= 1`` (grade 0 = judged non-relevant).
* Ties in a run are broken as ``trec_eval`` does: equal scores are ordered by document id, descending.
* Aggregates are means over the queries of the run that have at least one relevant judgment (MTEB drops the
  other queries too); a query of the run whose candidate list is empty scores 0, it is not skipped.

A *run* is ``{query_id: {doc_id: score}}``; *qrels* are ``{query_id: {doc_id: grade}}``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .utils import get_logger, require

logger = get_logger(__name__)

Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]
ScoreFn = Callable[[list[str], list[str]], "np.ndarray | Sequence[float]"]

DEFAULT_METRICS = ("ndcg@10", "recall@100", "mrr@10")
# our name -> (trec_eval measure family, key prefix in pytrec_eval's output)
_TREC_FAMILIES = {"ndcg": ("ndcg_cut", "ndcg_cut_"), "recall": ("recall", "recall_"), "map": ("map_cut", "map_cut_")}
_TREC_FAMILIES |= {"precision": ("P", "P_"), "p": ("P", "P_")}
_METRIC_RE = re.compile(r"^(ndcg|recall|map|precision|p|mrr)@(\d+)$")


# ----------------------------------------------------------------------------------------------------------------------
# metrics
# ----------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Metric:
    name: str
    family: str
    k: int


def _parse_metrics(metrics: Iterable[str]) -> list[_Metric]:
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
    parsed = _parse_metrics(metrics)
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


# ----------------------------------------------------------------------------------------------------------------------
# scorers
# ----------------------------------------------------------------------------------------------------------------------
def _is_bi_encoder_folder(path: Path) -> bool:
    """A sentence-transformers bi-encoder folder has a ``modules.json`` with a Pooling module."""
    modules = path / "modules.json"
    if not modules.exists():
        return False
    return any(t in m.get("type", "") for m in json.loads(modules.read_text()) for t in ("Pooling", "Router"))


def load_scorer(model: str | Path, kind: str = "auto", max_length: int | None = None, device: str | None = None):
    """Load a model path or Hub name as a ``CrossEncoder`` (``kind="cross"``) or ``SentenceTransformer`` (``"bi"``).

    ``kind="auto"`` picks the bi-encoder when the folder has a sentence-transformers Pooling module.
    """
    if kind not in ("auto", "cross", "bi"):
        raise ValueError(f"`kind` must be 'auto', 'cross' or 'bi' (got kind={kind!r}).")
    if kind == "auto":
        kind = "bi" if Path(model).is_dir() and _is_bi_encoder_folder(Path(model)) else "cross"
    from sentence_transformers import CrossEncoder, SentenceTransformer

    if kind == "bi":
        encoder = SentenceTransformer(str(model), device=device)
        if max_length is not None:
            encoder.max_seq_length = max_length
        return encoder
    return CrossEncoder(str(model), max_length=max_length, device=device)


def _cross_encoder_fn(model, batch_size: int) -> ScoreFn:
    def score(queries: list[str], docs: list[str]) -> np.ndarray:
        pairs = list(zip(queries, docs))
        # Identity activation: raw logits rank the same as sigmoid outputs and keep score resolution.
        import torch

        out = model.predict(
            pairs,
            batch_size=batch_size,
            show_progress_bar=False,
            activation_fn=torch.nn.Identity(),
            convert_to_numpy=True,
        )
        return np.asarray(out, dtype=np.float64).reshape(len(pairs), -1)[:, 0]

    return score


def _bi_encoder_fn(model, batch_size: int) -> ScoreFn:
    def score(queries: list[str], docs: list[str]) -> np.ndarray:
        # Encode each distinct text once: a candidate set repeats every query ~100 times.
        uq, q_idx = np.unique(np.asarray(queries, dtype=object), return_inverse=True)
        ud, d_idx = np.unique(np.asarray(docs, dtype=object), return_inverse=True)
        kwargs = {"batch_size": batch_size, "show_progress_bar": False, "normalize_embeddings": True}
        # encode_query / encode_document: an asymmetric (Router) model such as zembed routes each side to its tower
        q_emb = np.asarray(model.encode_query(list(uq), convert_to_numpy=True, **kwargs), dtype=np.float64)
        d_emb = np.asarray(model.encode_document(list(ud), convert_to_numpy=True, **kwargs), dtype=np.float64)
        return np.einsum("ij,ij->i", q_emb[q_idx], d_emb[d_idx])

    return score


def _reranker_fn(model, tokenizer, batch_size: int, max_length: int | None) -> ScoreFn:
    from .modeling import score_pairs

    # the trainers' default query budget (64 tokens), kept below a short max_length
    max_query_length = 64 if max_length is None else min(64, max_length // 2)

    def score(queries: list[str], docs: list[str]) -> np.ndarray:
        out = score_pairs(
            model, tokenizer, list(queries), list(docs), batch_size, max_length, max_query_length=max_query_length
        )
        return np.asarray(out, dtype=np.float64)

    return score


def _callable_fn(fn: Callable, batch_size: int) -> ScoreFn:
    def score(queries: list[str], docs: list[str]) -> np.ndarray:
        out = []
        for start in range(0, len(queries), batch_size):
            chunk = np.asarray(fn(queries[start : start + batch_size], docs[start : start + batch_size]), dtype=float)
            if chunk.shape != (len(queries[start : start + batch_size]),):
                raise ValueError(
                    f"`scorer` must return one score per (query, doc) pair (got shape {chunk.shape} for "
                    f"{len(queries[start : start + batch_size])} pairs): return a 1-d list or array."
                )
            out.append(chunk)
        return np.concatenate(out) if out else np.zeros(0)

    return score


def as_score_fn(scorer: Any, batch_size: int = 32, kind: str = "auto", max_length: int | None = None) -> ScoreFn:
    """Turn a scorer into ``fn(queries, docs) -> scores`` over aligned lists of (query, document) pairs.

    ``scorer`` is a model path or name (see :func:`load_scorer`), a sentence-transformers ``CrossEncoder``
    (raw logits), a ``SentenceTransformer`` bi-encoder (cosine of normalised embeddings), the toolkit's reranker
    as a ``(model, tokenizer)`` tuple from ``zelo_hf.modeling.load_reranker`` (scored with ``score_pairs`` at
    ``max_length``, as training saw it), an object with a ``predict(pairs)`` method, or a callable
    ``(queries, docs) -> scores`` (called in chunks of ``batch_size``).
    """
    from sentence_transformers import CrossEncoder, SentenceTransformer

    if isinstance(scorer, (str, Path)):
        scorer = load_scorer(scorer, kind=kind, max_length=max_length)
    if isinstance(scorer, tuple) and len(scorer) == 2 and hasattr(scorer[0], "config"):
        return _reranker_fn(scorer[0], scorer[1], batch_size, max_length)
    if isinstance(scorer, SentenceTransformer):
        return _bi_encoder_fn(scorer, batch_size)
    if isinstance(scorer, CrossEncoder):
        return _cross_encoder_fn(scorer, batch_size)
    if hasattr(scorer, "predict"):
        return _callable_fn(lambda qs, ds: scorer.predict(list(zip(qs, ds))), batch_size)
    if callable(scorer):
        return _callable_fn(scorer, batch_size)
    raise TypeError(
        f"`scorer` must be a model path, a CrossEncoder, a SentenceTransformer, an object with `predict(pairs)` or "
        f"a callable (queries, docs) -> scores (got {type(scorer).__name__})."
    )


# ----------------------------------------------------------------------------------------------------------------------
# reranking a first stage
# ----------------------------------------------------------------------------------------------------------------------
def _rows(candidates) -> list[dict[str, Any]]:
    columns = ("query_id", "query", "doc_ids", "docs")
    names = getattr(candidates, "column_names", None) or (list(candidates[0]) if len(candidates) else columns)
    missing = [c for c in columns if c not in names]
    if missing:
        raise ValueError(
            f"the candidate set lacks columns {missing} (has {names}): build it with `zelo_hf.bm25_candidates`."
        )
    return [dict(row) for row in candidates]


def first_stage_run(candidates) -> Run:
    """The first stage's own ranking as a run (``first_stage_scores``, or descending ranks where absent)."""
    run: Run = {}
    for row in _rows(candidates):
        n = len(row["doc_ids"])
        scores = row.get("first_stage_scores") or list(range(n, 0, -1))
        run[str(row["query_id"])] = {str(d): float(s) for d, s in zip(row["doc_ids"], scores)}
    return run


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


def label_run(labels, column: str) -> Run:
    """A label set's scores (``elo`` or the calibrated ``score``) as a run, to measure them like a system's."""
    return {str(q): {str(d): float(v) for d, v in zip(ids, values)}
            for q, ids, values in zip(labels["query_id"], labels["doc_ids"], labels[column])}


def random_run(candidates, seed: int) -> Run:
    """A random ordering of each query's candidates (the floor every reranker must clear), seeded."""
    rng = np.random.default_rng(seed)
    return {str(r["query_id"]): {str(d): float(v) for d, v in zip(r["doc_ids"], rng.permutation(len(r["doc_ids"])))}
            for r in _rows(candidates)}


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
    rows = _rows(candidates)
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


# ----------------------------------------------------------------------------------------------------------------------
# MTEB
# ----------------------------------------------------------------------------------------------------------------------
def _task_metadata(name: str, split: str, description: str):
    from mteb.abstasks.task_metadata import TaskMetadata

    return TaskMetadata(
        name=name,
        description=description,
        reference=None,
        dataset={"path": f"local/{name}", "revision": "local"},
        type="Retrieval",
        category="t2t",
        modalities=["text"],
        eval_splits=[split],
        eval_langs=["eng-Latn"],
        main_score="ndcg_at_10",
        date=None,
        domains=None,
        task_subtypes=None,
        license=None,
        annotations_creators=None,
        dialect=None,
        sample_creation=None,
        bibtex_citation="",
    )


def make_mteb_task(
    data,
    top_ranked: dict[str, list[str]] | None = None,
    name: str | None = None,
    corpus_ids: Iterable[str] | None = None,
):
    """An MTEB retrieval task over a :class:`~zelo_hf.data.RetrievalData` (a local BEIR folder, bundled data).

    MTEB's own loader reads the Hub, so the task overrides ``load_data`` and builds the split in memory.
    Documents are the toolkit's ``doc_text`` (title and text) so MTEB reads exactly what the rerankers read.
    ``top_ranked`` (``{query_id: [doc_id, ...]}``) turns it into a reranking task: cross-encoders rescore these
    lists, bi-encoders rank them by cosine. ``corpus_ids`` restricts the corpus (e.g. to the candidates).
    """
    require("mteb", "eval", "MTEB evaluation")
    from datasets import Dataset
    from mteb.abstasks.retrieval import AbsTaskRetrieval

    task_name = name or f"ZeloLocal{data.name.title().replace('-', '').replace('_', '')}"
    metadata = _task_metadata(task_name, data.split, f"Local BEIR folder {data.name!r}, split {data.split!r}.")
    ids = sorted(set(corpus_ids)) if corpus_ids is not None else list(data.corpus)
    queries = {q: t for q, t in data.queries.items() if q in data.qrels and (top_ranked is None or q in top_ranked)}

    class LocalBeirRetrieval(AbsTaskRetrieval):
        # a class attribute: MTEB's `unload_data` drops instance-level metadata
        def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
            corpus = Dataset.from_dict({"id": ids, "text": [data.doc_text(i) for i in ids], "title": [""] * len(ids)})
            query_ds = Dataset.from_dict({"id": list(queries), "text": list(queries.values())})
            split = {"corpus": corpus, "queries": query_ds, "relevant_docs": {q: dict(data.qrels[q]) for q in queries}}
            split["top_ranked"] = {q: list(top_ranked[q]) for q in queries} if top_ranked is not None else None
            self.dataset = {"default": {data.split: split}}
            self.data_loaded = True

    LocalBeirRetrieval.metadata = metadata
    LocalBeirRetrieval.__name__ = task_name
    return LocalBeirRetrieval()


def retrieval_data_from_mteb(task, split: str = "test", subset: str = "default"):
    """The loaded split of an MTEB retrieval task as :class:`~zelo_hf.data.RetrievalData` (to build a first stage)."""
    from .data import RetrievalData

    if not task.data_loaded:
        task.load_data()
    task.convert_v1_dataset_format_to_v2()
    if subset not in task.dataset or split not in task.dataset[subset]:
        available = {s: list(v) for s, v in task.dataset.items()}
        raise KeyError(f"task {task.metadata.name!r} has no subset/split {subset!r}/{split!r} (has {available}).")
    part = task.dataset[subset][split]
    titles = part["corpus"]["title"] if "title" in part["corpus"].column_names else [""] * len(part["corpus"])
    corpus = {
        str(i): {"title": t or "", "text": x or ""}
        for i, t, x in zip(part["corpus"]["id"], titles, part["corpus"]["text"])
    }
    queries = {str(i): q for i, q in zip(part["queries"]["id"], part["queries"]["text"])}
    qrels = {str(q): {str(d): int(g) for d, g in docs.items()} for q, docs in part["relevant_docs"].items()}
    return RetrievalData(name=task.metadata.name, corpus=corpus, queries=queries, qrels=qrels, split=split)


def add_first_stage(task, candidates, split: str = "test", subset: str = "default"):
    """Make a loaded MTEB retrieval task a reranking task over ``candidates`` (its ``top_ranked``)."""
    if not task.data_loaded:
        task.load_data()
    task.convert_v1_dataset_format_to_v2()
    task.dataset[subset][split]["top_ranked"] = top_ranked_from_candidates(candidates)
    return task


def top_ranked_from_candidates(candidates) -> dict[str, list[str]]:
    """``{query_id: [doc_id, ...]}`` in first-stage order, MTEB's ``top_ranked`` for reranking tasks."""
    return {str(r["query_id"]): [str(d) for d in r["doc_ids"]] for r in _rows(candidates)}


def run_mteb(model: Any, task, split: str = "test", batch_size: int = 32, prediction_folder: str | Path | None = None):
    """Evaluate ``model`` on an MTEB task object or task name (online for names) and return that split's scores.

    ``model`` is a ``CrossEncoder``, a ``SentenceTransformer`` or a model path (loaded with :func:`load_scorer`).
    Returns MTEB's score dict (``ndcg_at_10``, ``recall_at_100``, ``mrr_at_10``, ... rounded to 5 decimals by MTEB).
    """
    require("mteb", "eval", "MTEB evaluation")
    import mteb

    if isinstance(model, (str, Path)):
        model = load_scorer(model)
    if isinstance(task, str):
        task = mteb.get_task(task, eval_splits=[split])
    result = mteb.evaluate(
        model,
        task,
        cache=None,
        encode_kwargs={"batch_size": batch_size},
        prediction_folder=str(prediction_folder) if prediction_folder else None,
        show_progress_bar=False,
    )
    task_result = result.task_results[0]
    return dict(task_result.scores[split][0])


def mteb_metrics(scores: dict[str, Any], metrics: Sequence[str] = DEFAULT_METRICS) -> dict[str, float]:
    """Pick our metric names (``ndcg@10``) out of an MTEB score dict (``ndcg_at_10``)."""
    out = {}
    for m in _parse_metrics(metrics):
        key = {"p": "precision"}.get(m.family, m.family) + f"_at_{m.k}"
        if key not in scores:
            raise KeyError(f"MTEB scores have no {key!r} for metric {m.name!r} (has e.g. {sorted(scores)[:8]}).")
        out[m.name] = float(scores[key])
    return out


# ----------------------------------------------------------------------------------------------------------------------
# reporting
# ----------------------------------------------------------------------------------------------------------------------
def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(_fmt, value))
    return "" if value is None else str(value)


def results_to_markdown(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A GitHub markdown table of result rows (one dict per row; columns default to the union, in order)."""
    if not rows:
        raise ValueError("`rows` is empty: pass at least one result row.")
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_fmt(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def result_row(name: str, dataset: str, split: str, result: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """One table row: ``model``, ``dataset``, ``split``, ``queries`` and each aggregate metric (+ ``extra``)."""
    row = {"model": name, "dataset": dataset, "split": split, "queries": result["num_queries"]}
    row.update(result["aggregate"])
    row.update(extra)
    return row


ROW_KINDS = ("first_stage", "random", "base", "trained")


def seed_row(name: str, kind: str, results: Sequence[dict[str, Any]], seeds: Sequence[int] | None = None,
             qrels: Qrels | None = None) -> dict:
    """One honest table row from one result per seed (or per random ordering): every metric's mean, the sd of
    NDCG@10 across seeds (0 for a single run), the seeds, the number of queries and the per-seed NDCG@10."""
    if kind not in ROW_KINDS:
        raise ValueError(f"`kind` must be one of {ROW_KINDS} (got kind={kind!r}).")
    if not results:
        raise ValueError(f"row {name!r}: `results` is empty: pass one evaluation result per seed.")
    queries = {r["num_queries"] for r in results}
    if len(queries) != 1:
        raise ValueError(f"row {name!r}: the seeds were scored on different query sets ({sorted(queries)} queries).")
    ndcg = np.array([r["aggregate"]["ndcg@10"] for r in results])
    row: dict[str, Any] = {"model": name, "kind": kind, "ndcg@10": float(ndcg.mean()),
                           "ndcg@10_sd": float(ndcg.std(ddof=1)) if len(ndcg) > 1 else 0.0,
                           "seeds": list(seeds) if seeds is not None else []}
    for metric in results[0]["aggregate"]:
        if metric != "ndcg@10":
            row[metric] = float(np.mean([r["aggregate"][metric] for r in results]))
    if qrels is not None and all("run" in r for r in results):  # cross-query calibration of the scores
        row["pooled_auc"] = float(np.mean([cross_query_auc(r["run"], qrels) for r in results]))
    row["queries"] = queries.pop()
    row["ndcg@10_per_seed"] = [round(float(x), 4) for x in ndcg]
    return row


def card_eval_rows(rows: Sequence[dict[str, Any]], metrics: Sequence[str] = DEFAULT_METRICS) -> list[dict[str, Any]]:
    """Rows a model-card template renders (``dataset``, ``split``, ``metric``, ``value``) plus ``eval_results``.

    Each input row comes from :func:`result_row`; the output is flat (one metric per row) so a Jinja template
    loops over it, and :func:`card_eval_results` turns the same rows into ``huggingface_hub.EvalResult``s.
    """
    flat = []
    for row in rows:
        for metric in metrics:
            if metric in row:
                flat.append(
                    {
                        "model": row.get("model"),
                        "dataset": row["dataset"],
                        "split": row["split"],
                        "metric": metric,
                        "value": round(float(row[metric]), 4),
                    }
                )
    return flat


def card_eval_results(rows: Sequence[dict[str, Any]], model_name: str, task_type: str = "text-ranking"):
    """``huggingface_hub.EvalResult`` objects for ``ModelCardData(eval_results=...)`` (the model-index)."""
    from huggingface_hub import EvalResult

    return [
        EvalResult(
            task_type=task_type,
            dataset_type=r["dataset"],
            dataset_name=r["dataset"],
            dataset_split=r["split"],
            metric_type=r["metric"].replace("@", "_at_"),
            metric_name=r["metric"],
            metric_value=r["value"],
        )
        for r in card_eval_rows(rows)
        if r.get("model") in (None, model_name)
    ]
