"""`zelo graph`, `zelo fit`, `zelo calibrate` end to end on simulated judgments; the uploaded folder offline."""

from __future__ import annotations

import json

import numpy as np
import pytest
from datasets import Dataset, load_dataset

import zelo_hf.hub
from zelo_hf.cli import main as zelo
from zelo_hf.simulate import simulate_probs

N_QUERIES, N_DOCS = 6, 12


@pytest.fixture
def truth():
    rng = np.random.default_rng(0)
    offsets = rng.normal(0, 1.5, N_QUERIES)
    return {f"q{q}-d{i}": offsets[q] + rng.uniform(-2, 2) for q in range(N_QUERIES) for i in range(N_DOCS)}


@pytest.fixture
def pushed(monkeypatch):
    calls = []
    monkeypatch.setattr(zelo_hf.hub, "push_folder", lambda folder, repo_id, repo_type="dataset", **kw: calls.append(
        (str(folder), repo_id, repo_type)) or "https://example/commit")  # fmt: skip
    return calls


def _judge(pairs: Dataset, truth: dict, seed=0) -> Dataset:
    total = np.array([truth[d] for d in pairs["doc_a_id"]] + [truth[d] for d in pairs["doc_b_id"]])
    n = len(pairs)
    probs = simulate_probs(total, np.stack([np.arange(n), np.arange(n, 2 * n)], axis=1), seed)
    return (pairs.remove_columns("prob_a") if "prob_a" in pairs.column_names else pairs).add_column(
        "prob_a", probs.tolist()
    )


def test_graph_fit_calibrate_pipeline(tmp_path, truth, pushed, capsys):
    rows = [{"query_id": f"q{q}", "query": f"query {q}", "doc_ids": [f"q{q}-d{i}" for i in range(N_DOCS)],
             "docs": [f"text {q} {i}" for i in range(N_DOCS)]} for q in range(N_QUERIES)]  # fmt: skip
    (tmp_path / "candidates.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    assert zelo(["graph", "--input", str(tmp_path / "candidates.jsonl"), "--output_dir", str(tmp_path / "pairs"),
                 "--degree", "4", "--seed", "1"]) == 0  # fmt: skip
    pairs = load_dataset(str(tmp_path / "pairs"), split="train")
    assert pairs.column_names == ["query_id", "query", "doc_a_id", "doc_a", "doc_b_id", "doc_b"]
    assert len(pairs) == N_QUERIES * N_DOCS * 4 // 2
    assert all(a.split("-")[0] == q == b.split("-")[0] for q, a, b in zip(pairs["query_id"], pairs["doc_a_id"],
                                                                          pairs["doc_b_id"]))  # fmt: skip
    _judge(pairs, truth).to_parquet(str(tmp_path / "judged.parquet"))

    (tmp_path / "fit.yaml").write_text("model: bradley-terry\nprior_sd: 2.0\ndegree: 4\n")
    assert zelo(["fit", "--config", str(tmp_path / "fit.yaml"), "--input", str(tmp_path / "judged.parquet"),
                 "--output_dir", str(tmp_path / "labels"), "--prior_sd", "3.0", "--push_to_hub", "me/labels"]) == 0  # fmt: skip
    assert pushed == [(str(tmp_path / "labels"), "me/labels", "dataset")]
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["n_queries"] == N_QUERIES and summary["converged_pct"] == 100.0
    labels = load_dataset(str(tmp_path / "labels"), split="train")
    assert {"elo", "elo_se", "converged", "iterations", "log_likelihood", "connected"} <= set(labels.column_names)
    card = (tmp_path / "labels" / "README.md").read_text()
    for text in ("bradley-terry", "Gaussian prior sd: 3.0", "degree 4", "| judged pairs | 144 |",
                 "| converged | 100.0 % |", "| connected comparison graphs | 100.0 % |", "me/labels", "## Reproduce"):  # fmt: skip
        assert text in card, text
    assert "size_categories" in card and "text-ranking" in card

    assert zelo(["calibrate", "--labels", str(tmp_path / "labels"), "--output_dir", str(tmp_path / "cross"),
                 "--sample_pairs", "--n_cycles", "2", "--pairs_per_edge", "3"]) == 0  # fmt: skip
    cross = load_dataset(str(tmp_path / "cross"), split="train")
    assert len(cross) == N_QUERIES * 2 * 3 and "query_b_id" in cross.column_names
    _judge(cross, truth, seed=1).to_json(str(tmp_path / "cross_judged.jsonl"))
    assert zelo(["calibrate", "--labels", str(tmp_path / "labels"), "--output_dir", str(tmp_path / "calibrated"),
                 "--cross_pairs", str(tmp_path / "cross_judged.jsonl"), "--model", "bradley-terry",
                 "--push_to_hub", "me/calibrated"]) == 0  # fmt: skip
    assert pushed[-1] == (str(tmp_path / "calibrated"), "me/calibrated", "dataset")
    calibrated = load_dataset(str(tmp_path / "calibrated"), split="train")
    np.testing.assert_allclose(calibrated[0]["score"], np.asarray(calibrated[0]["elo"]) + calibrated[0]["offset"])
    true_means = [np.mean([truth[d] for d in ids]) for ids in calibrated["doc_ids"]]
    assert np.corrcoef(calibrated["offset"], true_means)[0, 1] > 0.9
    card = (tmp_path / "calibrated" / "README.md").read_text()
    assert "## Cross-query calibration" in card and "cross-query pairs: 36" in card and "`score` = `elo`" in card


def test_cli_errors_are_clear(tmp_path):
    Dataset.from_dict({"query_id": ["q"], "elo": [[0.0]]}).to_parquet(str(tmp_path / "labels.parquet"))
    with pytest.raises(ValueError, match="`--cross_pairs` is required"):
        zelo(["calibrate", "--labels", str(tmp_path / "labels.parquet"), "--output_dir", str(tmp_path / "out")])
    Dataset.from_dict({"query_id": ["q"], "docs": [["a"]]}).to_json(str(tmp_path / "cands.jsonl"))
    with pytest.raises(ValueError, match=r"missing column\(s\) \['doc_ids'\]"):
        zelo(["graph", "--input", str(tmp_path / "cands.jsonl"), "--output_dir", str(tmp_path / "out")])
    with pytest.raises(SystemExit):
        zelo(["fit", "--input", "x", "--output_dir", "y", "--model", "elo"])
