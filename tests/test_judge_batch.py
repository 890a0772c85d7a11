"""`zelo judge --batch` against a local server speaking the OpenAI files + batches protocol (issue #10; Anthropic
Message Batches: tests/test_judge_batch_anthropic.py).

A batch that partly fails, a batch split at the request limit, a process killed while polling and restarted (0
requests resubmitted), and a batch that expires: every pair ends judged or failed with the reason, never a tie.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from zelo_hf.judging.cache import JudgmentCache
from zelo_hf.judging.litellm_judge import LiteLLMJudge
from zelo_hf.judging.preferences import judge_pairs
from zelo_hf.judging.votes import Comparison

sys.path.insert(0, str(Path(__file__).parent))
from openai_batch_server import StubBatchServer  # noqa: E402
from openai_stub_server import kill_while_polling, ok  # noqa: E402

FAST = {"retry_wait": (0.01, 0.05), "max_retries": 2, "timeout": 5.0, "cost_per_token": (1e-6, 4e-6)}
POLL = {"batch": True, "batch_poll_interval": 0.05, "batch_timeout": 30.0, "progress": False}


def _pairs(markers: list[str]) -> list[Comparison]:
    return [Comparison("batch?", f"doc {i} [{m}]", f"plain doc {i}", None, "q", f"d{i}", f"p{i}")
            for i, m in enumerate(markers)]


def _behaviour(prompt: str, n: int):
    if "[err500]" in prompt:
        return {"status": 500}
    if "[refuse]" in prompt:
        return ok("I cannot compare these.")
    return ok("SCORE: 0.6")


def test_a_batch_that_partly_fails_records_each_failure_with_its_reason(tmp_path):
    markers = ["ok"] * 6 + ["err500", "refuse"]
    with StubBatchServer(_behaviour) as server:
        judge = LiteLLMJudge("openai/stub", api_base=server.url, **FAST)
        result = judge_pairs(_pairs(markers), judge, cache=tmp_path / "c.sqlite", **POLL)
        assert server.calls["upload"] == server.calls["create"] == 1 and server.calls["content"] >= 2  # out + err
    summary = result.summary
    assert summary["judged"] == 6 and summary["failed"] == 2 and summary["calls"] == summary["requests"] == 8
    assert sorted(set(np.round(result.preferences["prob_a"], 6))) <= [0.2, 0.8]  # swap undone, no tie invented
    errors = {p["doc_a_id"]: p["errors"][0] for p in summary["failed_pairs"]}
    assert errors["d6"].startswith("batch request failed (500): injected 500")
    assert "unparseable answer (batch: asked again on the next run)" in errors["d7"]
    # Billed at the batch price: half of cost_per_token.
    votes = [v[0] for v in result.preferences["votes"]]
    assert all(v["cost"] == pytest.approx(0.5e-6 * v["prompt_tokens"] + 2e-6 * v["completion_tokens"]) for v in votes)
    assert summary["per_judge"]["openai/stub"]["batch"] == {"resumed": 0, "submitted": 8,
                                                            "batch_ids": list(server.batches)}
    # A rerun asks only the two failed pairs (answers are in the cache, the finished batch is closed).
    with StubBatchServer(_behaviour) as server:
        judge = LiteLLMJudge("openai/stub", api_base=server.url, **FAST)
        again = judge_pairs(_pairs(markers), judge, cache=tmp_path / "c.sqlite", **POLL).summary
        assert again["cached"] == 6 and again["calls"] == 2 and sum(server.counts.values()) == 2


def test_batches_are_split_at_the_request_limit(tmp_path, monkeypatch):
    monkeypatch.setattr("zelo_hf.judging.batch.BATCH_LIMITS", (4, 200 * 1024 * 1024))
    with StubBatchServer(_behaviour) as server:
        judge = LiteLLMJudge("openai/stub", api_base=server.url, **FAST)
        summary = judge_pairs(_pairs(["ok"] * 10), judge, cache=tmp_path / "c.sqlite", **POLL).summary
        assert server.calls["create"] == 3 and sum(server.counts.values()) == 10  # 4 + 4 + 2 requests
    assert summary["judged"] == 10


def test_an_expired_batch_fails_the_requests_it_did_not_run(tmp_path):
    with StubBatchServer(_behaviour, expire=True, expire_after=3) as server:
        judge = LiteLLMJudge("openai/stub", api_base=server.url, **FAST)
        result = judge_pairs(_pairs(["ok"] * 8), judge, cache=tmp_path / "c.sqlite", **POLL)
    assert result.summary["judged"] == 3 and result.summary["failed"] == 5
    errors = [p["errors"][0] for p in result.summary["failed_pairs"]]
    assert all("batch_expired" in e and "completion window expired" in e for e in errors)
    with JudgmentCache(tmp_path / "c.sqlite") as cache:
        assert cache.open_batches("openai/stub") == {}  # closed: its results are stored, a rerun submits anew


def test_batch_needs_a_cache_and_a_provider_with_a_batch_api():
    with pytest.raises(ValueError, match="batch=True needs a judgment cache"):
        judge_pairs(_pairs(["ok"]), LiteLLMJudge("openai/stub"), batch=True, progress=False)
    with pytest.raises(ValueError, match=r"OpenAI Batch .* or Anthropic Message Batches .* \(got 'gemini/gemini-2.5"):
        judge_pairs(_pairs(["ok"]), LiteLLMJudge("gemini/gemini-2.5-flash"), batch=True, cache="unused.sqlite",
                    progress=False)


def test_a_process_killed_while_polling_resumes_without_resubmitting(tmp_path):
    cache = tmp_path / "c.sqlite"
    with StubBatchServer(_behaviour, batch_delay=4.0) as server:
        kill_while_polling(server, "test_judge_batch", "openai/stub", cache)
        (batch_id,) = server.batches
        assert server.batches[batch_id]["status"] == "in_progress"  # killed before the results existed
        judge = LiteLLMJudge("openai/stub", api_base=server.url, **FAST)
        result = judge_pairs(_pairs(["ok"] * 12), judge, cache=cache, **POLL)
        assert server.calls["upload"] == server.calls["create"] == 1  # 0 requests resubmitted
        assert sum(server.counts.values()) == 12  # each request ran once, in the one batch
    summary = result.summary
    assert summary["judged"] == 12 and summary["calls"] == 0 and summary["cached"] == 0
    assert summary["per_judge"]["openai/stub"]["batch"] == {"resumed": 1, "submitted": 0, "batch_ids": [batch_id]}
    assert json.loads(json.dumps(summary))["failed"] == 0


def test_cli_judge_batch_end_to_end(tmp_path):
    from datasets import Dataset, load_dataset

    from zelo_hf.cli import main

    rows = [{"query_id": f"q{q}", "query": f"query {q}", "doc_ids": [f"d{q}_{i}" for i in range(6)],
             "docs": [f"text {q} {i}" for i in range(6)]} for q in range(2)]
    Dataset.from_list(rows).to_parquet(str(tmp_path / "cands.parquet"))
    with StubBatchServer(_behaviour) as server:
        status = main(["judge", "--candidates", str(tmp_path / "cands.parquet"), "--output_dir", str(tmp_path / "out"),
                       "--judge", "openai/stub", "--api_base", server.url, "--degree", "2", "--batch",
                       "--batch_poll_interval", "0.05", "--progress", "false"])
        assert status == 0 and server.calls["create"] == 1
    prefs = load_dataset(str(tmp_path / "out"), split="train")
    assert len(prefs) == 12 and set(np.round(prefs["prob_a"], 6)) <= {0.2, 0.8}
