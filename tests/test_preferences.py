"""judge_pairs: candidates -> comparison graphs -> judged preference set; saving, the card, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from datasets import Dataset, load_dataset

from zelo_hf.judging.base import EnsembleJudge
from zelo_hf.judging.litellm_judge import LiteLLMJudge
from zelo_hf.judging.local import SimulatedJudge
from zelo_hf.judging.pairs import build_pairs
from zelo_hf.judging.preference_set import save_preference_set
from zelo_hf.judging.preferences import judge_pairs
from zelo_hf.preference_tables import load_preference_set

N_QUERIES, N_DOCS = 4, 12
QRELS = {f"q{q}": {f"d{q}_{d}": (d * 7 + q) % 5 for d in range(N_DOCS)} for q in range(N_QUERIES)}


@pytest.fixture
def candidates():
    return Dataset.from_list([
        {"query_id": q, "query": f"query {q}", "doc_ids": list(docs), "docs": [f"text of {d}" for d in docs],
         "first_stage_scores": [float(N_DOCS - i) for i in range(N_DOCS)], "grades": list(docs.values())}
        for q, docs in QRELS.items()
    ])


def test_preference_set_schema_and_graph_sizes(candidates):
    prefs, summary = judge_pairs(candidates, SimulatedJudge(QRELS), degree=4, progress=False)
    assert len(prefs) == N_QUERIES * N_DOCS * 4 // 2 == summary["pairs"] == summary["judged"]
    assert prefs.column_names == ["query_id", "query", "doc_a_id", "doc_a", "doc_b_id", "doc_b", "prob_a", "votes"]
    assert set(prefs[0]["votes"][0]) == {"judge", "raw_answer", "score", "prob_a", "swapped", "prompt_tokens",
                                         "completion_tokens", "cost", "latency", "error"}
    probs = np.array(prefs["prob_a"])
    assert ((probs >= 0) & (probs <= 1)).all()
    # Each query's graph is degree-regular over its own candidates.
    for q in QRELS:
        rows = prefs.filter(lambda r, q=q: r["query_id"] == q)
        ids = list(rows["doc_a_id"]) + list(rows["doc_b_id"])
        assert set(ids) == set(QRELS[q]) and all(ids.count(d) == 4 for d in QRELS[q])
    # Graphs are seeded per query: the same query gets the same pairs whatever the other queries.
    alone = build_pairs(candidates.select([2]), degree=4, seed=0)
    together = [c for c in build_pairs(candidates, degree=4, seed=0) if c.query_id == "q2"]
    assert [(c.doc_a_id, c.doc_b_id) for c in alone] == [(c.doc_a_id, c.doc_b_id) for c in together]
    # Higher grades win more often (the simulated judge reads the qrels).
    grade = {d: g for docs in QRELS.values() for d, g in docs.items()}
    diff = np.array([grade[a] - grade[b] for a, b in zip(prefs["doc_a_id"], prefs["doc_b_id"])])
    assert np.corrcoef(diff, probs)[0, 1] > 0.9


def test_failed_pairs_are_listed_never_ties(candidates):
    good = LiteLLMJudge("openai/gpt-4o-mini", mock_response="SCORE: 0.5", name="good")
    bad = LiteLLMJudge("openai/gpt-4o-mini", mock_response="I cannot judge this.", max_parse_retries=0, name="bad")
    result = judge_pairs(candidates.select([0]), bad, degree=2, progress=False)
    assert len(result.preferences) == 0 and len(result.failed) == result.summary["failed"] == N_DOCS
    assert all(p is None for p in result.failed["prob_a"]) and len(result.summary["failed_pairs"]) == N_DOCS
    mixed = judge_pairs(candidates.select([0]), EnsembleJudge([good, bad]), degree=2, progress=False)
    assert mixed.summary["judged"] == mixed.summary["partially_failed"] == N_DOCS and mixed.summary["failed"] == 0
    assert all(len(v) == 2 and v[1]["error"] and v[1]["prob_a"] is None for v in mixed.preferences["votes"])
    per_judge = mixed.summary["per_judge"]
    assert per_judge["bad"]["failed_votes"] == N_DOCS and per_judge["good"]["votes"] == N_DOCS


def test_a_bad_combine_fails_before_anything_is_judged(candidates, tmp_path):
    llm = LiteLLMJudge("openai/gpt-4o-mini", api_base="http://127.0.0.1:9/v1")  # a dead server: nothing may be sent
    with pytest.raises(ValueError, match="combine"):
        judge_pairs(candidates, llm, degree=4, cache=tmp_path / "c.sqlite", combine="max", progress=False)
    assert llm.requests_sent == 0 and not (tmp_path / "c.sqlite").exists()


def test_cross_query_pairs_dataset(candidates):
    pairs = Dataset.from_list([
        {"query_id": "q0", "query": "query q0", "doc_a_id": "d0_1", "doc_a": "x", "doc_b_id": "d1_3", "doc_b": "y",
         "query_b_id": "q1", "query_b": "query q1"},
        {"query_id": "q2", "query": "query q2", "doc_a_id": "d2_0", "doc_a": "x", "doc_b_id": "d3_4", "doc_b": "y",
         "query_b_id": "q3", "query_b": "query q3"},
    ])
    prefs, summary = judge_pairs(pairs, SimulatedJudge(QRELS, noise_sd=0, uniform_rate=0), progress=False)
    assert list(prefs["query_b_id"]) == ["q1", "q3"] and summary["pairs"] == 2
    grade = lambda q, d: QRELS[q][d]  # noqa: E731
    assert (prefs["prob_a"][0] > 0.5) == (grade("q0", "d0_1") > grade("q1", "d1_3"))
    with pytest.raises(ValueError, match="lacks column"):
        judge_pairs(pairs.remove_columns("doc_b"), SimulatedJudge(QRELS), progress=False)


def test_dry_run_spends_nothing(candidates, tmp_path):
    judge = LiteLLMJudge("openai/gpt-4o-mini", api_base="http://127.0.0.1:9/v1", rpm=600)
    result = judge_pairs(candidates, judge, degree=4, cache=tmp_path / "c.sqlite", dry_run=True, progress=False)
    assert result.preferences is None and result.summary["dry_run"]
    est = result.summary
    assert est["calls"] == N_QUERIES * N_DOCS * 2 and est["cost"] > 0 and est["seconds"] == pytest.approx(9.6)
    assert result.summary["cached"] == 0


def test_dry_run_writes_nothing_and_reads_an_existing_cache(candidates, tmp_path):
    """Issue #10: a dry run created `<output_dir>.judgments.sqlite`; now it creates no file and changes no byte."""
    judge = LiteLLMJudge("openai/gpt-4o-mini", mock_response="SCORE: 0.5")
    judge_pairs(candidates, judge, degree=4, cache=tmp_path / "none.sqlite", dry_run=True, progress=False)
    assert list(tmp_path.iterdir()) == []
    judge_pairs(candidates.select([0, 1]), judge, degree=4, cache=tmp_path / "c.sqlite", progress=False)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    est = judge_pairs(candidates, judge, degree=4, cache=tmp_path / "c.sqlite", dry_run=True, progress=False).summary
    assert est["cached"] == 2 * N_DOCS * 2 and est["calls"] == 2 * N_DOCS * 2  # two queries answered, two to go
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_cli_dry_run_creates_no_cache_and_shows_the_batch_price(candidates, tmp_path, capsys):
    from zelo_hf.cli import main

    candidates.to_parquet(str(tmp_path / "cands.parquet"))
    out = tmp_path / "prefs"
    assert main(["judge", "--candidates", str(tmp_path / "cands.parquet"), "--output_dir", str(out), "--degree", "4",
                 "--judge", "openai/gpt-4o-mini", "--dry_run", "--progress", "false"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cands.parquet"]  # no prefs.judgments.sqlite
    estimate = json.loads(capsys.readouterr().out)
    assert 0 < estimate["batch_cost"] == pytest.approx(estimate["cost"] / 2)  # gpt-4o-mini's batch prices: half


def test_dry_run_hashes_nothing_and_counts_each_text_once(candidates, monkeypatch):
    """The 809-query SciFact dry run spent 51 of its 69 s hashing every pair twice per judge (swap coin + cache key)
    and counted tokens per pair; without a cache there is nothing to look up, and a document is counted once."""
    import litellm

    from zelo_hf.judging import base, cache, local, pricing, votes

    digests, encoded = [], []
    real_digest, real_encode = votes.digest, litellm.encode
    for module in (base, cache, local):  # every module that hashes (swap coins, cache keys, simulated noise)
        monkeypatch.setattr(module, "digest", lambda *parts: digests.append(1) or real_digest(*parts))
    monkeypatch.setattr(litellm, "encode", lambda **kw: encoded.append(kw["text"]) or real_encode(**kw))
    pricing._TOKEN_COUNTS.clear()
    gpt, claude = LiteLLMJudge("openai/gpt-4o-mini", name="gpt"), LiteLLMJudge("anthropic/claude-sonnet-4-5")
    est = judge_pairs(candidates, EnsembleJudge([gpt, claude]), degree=8, dry_run=True, progress=False).summary
    assert est["calls"] == 2 * N_QUERIES * N_DOCS * 4 and digests == []
    texts = {t for row in candidates for t in [row["query"], *row["docs"]]}
    assert sorted(encoded) == sorted(texts)  # each text once, shared by both judges (litellm gives them one tokenizer)


def test_save_load_card_and_push(candidates, tmp_path, monkeypatch):
    pushed = {}
    monkeypatch.setattr("zelo_hf.hub.push_folder", lambda folder, repo_id, **kw: pushed.update(repo=repo_id))
    judge = EnsembleJudge([SimulatedJudge(QRELS, name="sim-a", seed=1), SimulatedJudge(QRELS, name="sim-b", seed=2)])
    result = judge_pairs(candidates, judge, degree=4, progress=False)
    out = save_preference_set(result, tmp_path / "prefs", judge=judge, push_to_hub="me/prefs", source="cands")
    assert pushed == {"repo": "me/prefs"}
    loaded = load_dataset(str(out), split="train")  # the pair rows hold ids; the texts are in their own configs
    assert len(loaded) == len(result.preferences)
    assert loaded.column_names == ["query_id", "doc_a_id", "doc_b_id", "prob_a", "votes"]
    assert load_preference_set(out).column_names == result.preferences.column_names
    card = (out / "README.md").read_text()
    for needle in ("sim-a", "sim-b", "comparison graph degree | 4", "intransitive triangles", "agreement with ensemble"):
        assert needle in card
    assert json.loads((out / "judging_summary.json").read_text())["judged"] == len(loaded)


def test_cli_judge_from_yaml(candidates, tmp_path):
    from zelo_hf.cli import main

    candidates.to_parquet(str(tmp_path / "cands.parquet"))
    config = {"candidates": str(tmp_path / "cands.parquet"), "output_dir": str(tmp_path / "out"), "degree": 4,
              "judge": [{"type": "simulated", "name": "sim-x", "noise_sd": 0.1}, "simulated"], "progress": False}
    (tmp_path / "judge.yaml").write_text(yaml.safe_dump(config))
    assert main(["judge", "--config", str(tmp_path / "judge.yaml"), "--seed", "3"]) == 0
    prefs = load_dataset(str(tmp_path / "out"), split="train")
    assert len(prefs) == N_QUERIES * N_DOCS * 2 and {v["judge"] for v in prefs[0]["votes"]} == {"sim-x", "simulated"}
    summary = json.loads((tmp_path / "out" / "judging_summary.json").read_text())
    assert summary["seed"] == 3 and summary["degree"] == 4  # YAML sets values, flags override them
    with pytest.raises(ValueError, match="exactly one of --candidates or --pairs"):
        main(["judge", "--output_dir", str(tmp_path / "x")])


def test_judge_pairs_inside_a_running_event_loop(candidates):
    import asyncio

    judge = LiteLLMJudge("openai/gpt-4o-mini", mock_response="SCORE: 0.2", swap=False)

    async def notebook_cell():  # Jupyter runs cells inside an event loop, where asyncio.run is refused
        return judge_pairs(candidates.select([0]), judge, degree=2, progress=False)

    prefs, summary = asyncio.run(notebook_cell())
    assert summary["judged"] == N_DOCS and set(np.round(prefs["prob_a"], 6)) == {0.6}


def test_two_preference_sets_of_the_same_name_load_their_own_rows(candidates, tmp_path):
    """Plain `datasets.load_dataset(folder)` (what the card tells users) on two runs' folders named alike."""
    cache = tmp_path / "hf-cache"
    sizes = {}
    for run, degree in (("run1", 2), ("run2", 4)):
        result = judge_pairs(candidates, SimulatedJudge(QRELS), degree=degree, progress=False)
        out = save_preference_set(result, tmp_path / run / "preferences")
        sizes[run] = (len(result.preferences), len(load_dataset(str(out), split="train", cache_dir=str(cache))))
    assert sizes == {"run1": (48, 48), "run2": (96, 96)}  # 4 queries x 12 documents x degree / 2
