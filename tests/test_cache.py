"""JudgmentCache: SQLite WAL, one committed row per answer, fast bulk lookups, nothing secret stored."""

from __future__ import annotations

import sqlite3
import time

import pytest

from zelo_hf.judging.cache import JudgmentCache
from zelo_hf.judging.litellm_judge import LiteLLMJudge
from zelo_hf.judging.preferences import judge_pairs
from zelo_hf.judging.votes import Comparison, Vote


def test_roundtrip_wal_and_failures_kept_apart(tmp_path):
    path = tmp_path / "c.sqlite"
    with JudgmentCache(path) as cache:
        vote = Vote("gpt", raw_answer="SCORE: 0.2", score=0.2, prob_a=0.6, swapped=True, prompt_tokens=10,
                    completion_tokens=2, cost=0.001, latency=0.3)
        assert cache.put("k1", vote) is True
        assert cache.put("k1", Vote("gpt", prob_a=0.1)) is False  # an answer is never overwritten
        cache.put("k2", Vote("gpt", raw_answer="I refuse", error="unparseable", cost=0.002))
        assert cache.get("k1") == vote and cache.get("k2") is None and "k2" not in cache and len(cache) == 1
        assert [k for k, _ in cache.failures()] == ["k2"]
        totals = cache.totals()["gpt"]
        assert totals["answers"] == 1 and totals["failures"] == 1 and totals["cost"] == pytest.approx(0.003)
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    # Committed on put: a second connection (another process after a crash) sees the answer.
    assert JudgmentCache(path).get("k1").prob_a == 0.6


def test_secrets_are_redacted_before_storage(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-SECRET-0123456789")
    cache = JudgmentCache(tmp_path / "c.sqlite")
    cache.put("k", Vote("gpt", raw_answer="my key is sk-test-SECRET-0123456789", prob_a=0.5, score=0.0))
    cache.put("f", Vote("gpt", error="401 for key sk-test-SECRET-0123456789"))
    cache.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert b"SECRET-0123456789" not in raw


def test_bulk_lookup_of_10k_keys_is_fast(tmp_path):
    cache = JudgmentCache(tmp_path / "c.sqlite")
    votes = [(f"key{i}", Vote("gpt", raw_answer="SCORE: 0", score=0.0, prob_a=0.5)) for i in range(10_000)]
    assert cache.put_many(votes) == 10_000
    start = time.perf_counter()
    found = cache.get_many([f"key{i}" for i in range(10_000)] + ["missing"])
    assert time.perf_counter() - start < 1.0 and len(found) == 10_000


def test_rerun_bills_nothing_and_duplicates_share_one_call(tmp_path):
    judge = LiteLLMJudge("openai/gpt-4o-mini", mock_response="SCORE: 0.5")
    pairs = [Comparison("q", f"doc {i}", "other", None, "q", f"d{i}", "o") for i in range(12)]
    pairs.append(pairs[0])  # a repeated pair is asked once
    first = judge_pairs(pairs, judge, cache=tmp_path / "c.sqlite", progress=False)
    assert first.summary["calls"] == 12 and first.summary["cached"] == 0 and first.summary["cost_this_run"] > 0
    second = judge_pairs(pairs, judge, cache=tmp_path / "c.sqlite", progress=False)
    assert second.summary["calls"] == 0 and second.summary["cached"] == 13 and second.summary["cost_this_run"] == 0
    assert list(second.preferences["prob_a"]) == list(first.preferences["prob_a"])
    assert second.summary["cost"] == pytest.approx(first.summary["cost"])  # what the set cost, cached or not


def test_readonly_cache_reads_without_writing_a_byte(tmp_path):
    path = tmp_path / "c.sqlite"
    with JudgmentCache(path) as cache:
        cache.put("k1", Vote("gpt", raw_answer="SCORE: 0.2", score=0.2, prob_a=0.6))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with JudgmentCache(path, readonly=True) as ro:
        assert ro.get("k1").prob_a == 0.6 and len(ro) == 1
        with pytest.raises(ValueError, match="readonly=True"):
            ro.put("k2", Vote("gpt", prob_a=0.1))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no -wal / -shm, no change
    with pytest.raises(FileNotFoundError, match="drop readonly=True"):
        JudgmentCache(tmp_path / "missing.sqlite", readonly=True)
