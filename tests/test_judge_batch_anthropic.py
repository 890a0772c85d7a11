"""`zelo judge --batch` with anthropic/... judges, against a local server speaking Message Batches (issue #10).

A batch that partly fails, batches split at the request and size limits, a process killed while polling and
restarted (0 requests resubmitted), a batch that expires, and a missing or rejected key failing fast with the fix:
every pair ends judged or failed with the reason, never a tie.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from zelo_hf.judging.batch_anthropic import batch_request, custom_id
from zelo_hf.judging.cache import JudgmentCache, cache_key
from zelo_hf.judging.litellm_judge import LiteLLMJudge
from zelo_hf.judging.preferences import judge_pairs

sys.path.insert(0, str(Path(__file__).parent))
from anthropic_batch_server import StubAnthropicBatchServer  # noqa: E402
from openai_stub_server import kill_while_polling  # noqa: E402
from test_judge_batch import FAST, POLL, _behaviour, _pairs  # noqa: E402  (the same pairs and answers as OpenAI's)

MODEL = "anthropic/claude-stub"
KEY = "sk-ant-stub"
@pytest.fixture(autouse=True)
def _anthropic_env(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    for name in ("ANTHROPIC_API_BASE", "ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def test_a_batch_that_partly_fails_records_each_failure_with_its_reason(tmp_path):
    markers = ["ok"] * 6 + ["err500", "refuse"]
    with StubAnthropicBatchServer(_behaviour) as server:
        judge = LiteLLMJudge(MODEL, api_base=server.url, **FAST)
        result = judge_pairs(_pairs(markers), judge, cache=tmp_path / "c.sqlite", **POLL)
        assert server.calls["create"] == 1 and server.calls["results"] == 1 and server.calls["rejected"] == 0
        (sent,) = server.requests.values()
    # Anthropic's shape: the system prompt in params.system, the cache key as custom_id.
    assert [r["custom_id"] for r in sent] == [cache_key(judge, c) for c in _pairs(markers)]
    params = sent[0]["params"]
    assert params["model"] == "claude-stub" and params["max_tokens"] == 256 and params["temperature"] == 0.0
    assert params["system"] and [m["role"] for m in params["messages"]] == ["user"]
    summary = result.summary
    assert summary["judged"] == 6 and summary["failed"] == 2 and summary["calls"] == summary["requests"] == 8
    votes = [v[0] for v in result.preferences["votes"]]
    judged = [v for v in votes if v["error"] is None]
    assert {v["swapped"] for v in judged} == {False, True}  # both orders shown ...
    assert all(v["prob_a"] == pytest.approx(0.2 if v["swapped"] else 0.8) for v in judged)  # ... the swap undone
    errors = {p["doc_a_id"]: p["errors"][0] for p in summary["failed_pairs"]}
    assert errors["d6"] == "batch request failed (api_error): injected 500"
    assert errors["d7"].startswith("unparseable answer (batch: asked again on the next run)")
    # Billed at the batch price (half of cost_per_token), from message.usage's input / output tokens.
    assert all(v["prompt_tokens"] > 0 and v["completion_tokens"] > 0 for v in judged)
    assert all(v["cost"] == pytest.approx(0.5e-6 * v["prompt_tokens"] + 2e-6 * v["completion_tokens"]) for v in votes)
    assert summary["per_judge"][MODEL]["batch"] == {"resumed": 0, "submitted": 8, "batch_ids": list(server.batches)}
    # A rerun asks only the two failed pairs (answers are in the cache, the ended batch is closed).
    with StubAnthropicBatchServer(_behaviour) as server:
        judge = LiteLLMJudge(MODEL, api_base=server.url, **FAST)
        again = judge_pairs(_pairs(markers), judge, cache=tmp_path / "c.sqlite", **POLL).summary
        assert again["cached"] == 6 and again["calls"] == 2 and sum(server.counts.values()) == 2


@pytest.mark.parametrize("limit", ["requests", "bytes"])
def test_batches_are_split_at_the_request_and_size_limits(tmp_path, monkeypatch, limit):
    judge = LiteLLMJudge(MODEL, **FAST)
    size = len(json.dumps(batch_request(judge, _pairs(["ok"])[0], False, "k" * 64)).encode()) + 1
    limits = (4, 256 * 1024 * 1024) if limit == "requests" else (100_000, 4 * size + size // 2)
    monkeypatch.setattr("zelo_hf.judging.batch_anthropic.BATCH_LIMITS", limits)
    with StubAnthropicBatchServer(_behaviour) as server:
        judge = LiteLLMJudge(MODEL, api_base=server.url, **FAST)
        summary = judge_pairs(_pairs(["ok"] * 10), judge, cache=tmp_path / "c.sqlite", **POLL).summary
        assert server.calls["create"] == 3 and sum(server.counts.values()) == 10  # 4 + 4 + 2 requests
        assert [len(r) for r in server.requests.values()] == [4, 4, 2]
    assert summary["judged"] == 10 and len(summary["per_judge"][MODEL]["batch"]["batch_ids"]) == 3


def test_an_expired_batch_fails_the_requests_it_did_not_run(tmp_path):
    with StubAnthropicBatchServer(_behaviour, expire=True, expire_after=3) as server:
        judge = LiteLLMJudge(MODEL, api_base=server.url, **FAST)
        result = judge_pairs(_pairs(["ok"] * 8), judge, cache=tmp_path / "c.sqlite", **POLL)
        assert server.batches[next(iter(server.batches))]["request_counts"]["expired"] == 5
    assert result.summary["judged"] == 3 and result.summary["failed"] == 5
    errors = [p["errors"][0] for p in result.summary["failed_pairs"]]
    assert all(e.startswith("batch request expired: the batch ended (24 h) before this request ran") for e in errors)
    with JudgmentCache(tmp_path / "c.sqlite") as cache:
        assert cache.open_batches(MODEL) == {}  # closed: its results are stored, a rerun submits anew
        assert len(cache.failures()) == 5


def test_a_missing_or_rejected_key_fails_fast_with_the_fix(tmp_path, monkeypatch):
    with StubAnthropicBatchServer(_behaviour) as server:
        judge = LiteLLMJudge(MODEL, api_base=server.url, **FAST)
        monkeypatch.delenv("ANTHROPIC_API_KEY")
        with pytest.raises(ValueError, match=r"needs ANTHROPIC_API_KEY \(got it unset or empty\): export"):
            judge_pairs(_pairs(["ok"] * 3), judge, cache=tmp_path / "c.sqlite", **POLL)
        assert sum(server.calls.values()) == 0  # refused before anything was sent
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-wrong")
        started = time.monotonic()
        result = judge_pairs(_pairs(["ok"] * 3), judge, cache=tmp_path / "c.sqlite", **POLL)
        assert time.monotonic() - started < 10
        assert server.calls["rejected"] == 1 and server.calls["create"] == 0  # a 401 is not retried
    assert result.summary["judged"] == 0 and result.summary["failed"] == 3
    error = result.summary["failed_pairs"][0]["errors"][0]
    assert error.startswith("batch API failed: APIError: set a valid key for this provider in the environment")
    assert "ANTHROPIC_API_KEY" in error and "authentication_error: invalid x-api-key" in error
    assert "sk-ant-wrong" not in error
    with JudgmentCache(tmp_path / "c.sqlite") as cache:
        assert cache.open_batches(MODEL) == {}  # nothing was created, nothing to resume


def test_anthropic_batches_refuse_logprobs_and_other_providers_still_cannot_batch():
    with pytest.raises(ValueError, match=r"answer_format='logprobs'.*Anthropic does not return.*--answer_format score"):
        LiteLLMJudge(MODEL, answer_format="logprobs").check(batch=True)
    with pytest.raises(ValueError, match=r"Anthropic does not return"):
        LiteLLMJudge(MODEL, answer_format="logprobs").check()  # online too: it would read a bare letter
    with pytest.raises(ValueError, match=r"\(got 'gemini/gemini-2.5-flash', provider 'gemini'\): judge it online"):
        judge_pairs(_pairs(["ok"]), LiteLLMJudge("gemini/gemini-2.5-flash"), batch=True, cache="unused.sqlite",
                    progress=False)
    assert LiteLLMJudge(MODEL).batch_model() == "claude-stub"
    assert custom_id("a" * 64) == "a" * 64 and len(custom_id("a key: too odd")) == 64  # mapped, deterministically


def test_a_process_killed_while_polling_resumes_without_resubmitting(tmp_path):
    cache = tmp_path / "c.sqlite"
    with StubAnthropicBatchServer(_behaviour, batch_delay=4.0) as server:
        kill_while_polling(server, "test_judge_batch_anthropic", MODEL, cache)
        (batch_id,) = server.batches
        assert server.batches[batch_id]["processing_status"] == "in_progress"  # killed before the results existed
        judge = LiteLLMJudge(MODEL, api_base=server.url, **FAST)
        result = judge_pairs(_pairs(["ok"] * 12), judge, cache=cache, **POLL)
        assert server.calls["create"] == 1  # 0 requests resubmitted
        assert sum(server.counts.values()) == 12 and server.calls["results"] == 1  # each request ran once
    summary = result.summary
    assert summary["judged"] == 12 and summary["calls"] == 0 and summary["cached"] == 0
    assert summary["per_judge"][MODEL]["batch"] == {"resumed": 1, "submitted": 0, "batch_ids": [batch_id]}
    with JudgmentCache(cache) as store:
        assert store.open_batches(MODEL) == {}


def test_cli_judge_batch_with_an_anthropic_judge(tmp_path):
    from datasets import Dataset, load_dataset

    from zelo_hf.cli import main

    rows = [{"query_id": f"q{q}", "query": f"query {q}", "doc_ids": [f"d{q}_{i}" for i in range(6)],
             "docs": [f"text {q} {i}" for i in range(6)]} for q in range(2)]
    Dataset.from_list(rows).to_parquet(str(tmp_path / "cands.parquet"))
    with StubAnthropicBatchServer(_behaviour) as server:
        status = main(["judge", "--candidates", str(tmp_path / "cands.parquet"), "--output_dir", str(tmp_path / "out"),
                       "--judge", MODEL, "--api_base", server.url, "--degree", "2", "--batch",
                       "--batch_poll_interval", "0.05", "--progress", "false"])
        assert status == 0 and server.calls["create"] == 1
    prefs = load_dataset(str(tmp_path / "out"), split="train")
    assert len(prefs) == 12 and set(np.round(prefs["prob_a"], 6)) <= {0.2, 0.8}
