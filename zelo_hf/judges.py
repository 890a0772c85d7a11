"""Pairwise relevance judges (ZELO.md step 3): LLMs through litellm, ensembles, a simulated judge, a local model.

Every judge answers "is document A more relevant to the query than document B?" with a :class:`Vote`.
A vote whose call failed has ``error`` set and ``prob_a=None``: a failed call is a failed vote, never a tie.

* :class:`LiteLLMJudge` -- any litellm model string (``openai/...``, ``anthropic/...``, ``gemini/...`` or an
  OpenAI-compatible server through ``api_base``). Async, rate-limited (requests and tokens per minute), per-call
  timeouts, retries with exponential backoff and jitter (longer when a 429 says Retry-After) on 429 / 5xx /
  timeouts / dropped connections, unreadable answers re-asked (with a correction) then recorded as failed,
  position-bias swap seeded per pair and undone. Issue #10: fatal errors (bad key, unknown model, quota, server
  down) are not retried and stop the judge after a few in a row (:class:`CircuitBreaker`, one line on stderr), a
  stalled provider is paused then stopped, timeouts and 429s lower the requests in flight
  (:class:`AdaptiveConcurrency`, AIMD), and documents are cut to a token budget so every prompt fits.
* :class:`EnsembleJudge` -- several judges per pair, one soft label (the paper's GPT + Claude + Gemini).
* :class:`SimulatedJudge` -- graded qrels + the ZELO.md noise model, vectorised, deterministic per pair.
* :class:`PairwiseModelJudge` -- the distilled pairwise small model (``zelo_hf.modeling.PairwiseScorer``).

Secrets come only from the environment (litellm reads ``OPENAI_API_KEY`` etc.); every answer and error kept
in a vote goes through :func:`zelo_hf.utils.redact`.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import os
import random
import re
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from functools import lru_cache, partial
from typing import Any

import numpy as np

from .prompts import ANSWER_FORMATS, PROMPT_VERSION, ParseError, build_messages, parse_answer, reask_messages
from .utils import get_logger, redact

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
logger = get_logger(__name__)

# Typical answer lengths, for the dry-run estimate (the score format lets the model reason briefly).
ASSUMED_OUTPUT_TOKENS = {"score": 60, "verdict": 1, "logprobs": 1}
DEFAULT_MAX_TOKENS = {"score": 256, "verdict": 4, "logprobs": 1}
# OpenAI-compatible local servers usually want no key, but the openai SDK refuses to start without one.
_PLACEHOLDER_KEY = "no-key-needed"
_SECRET_KWARGS = ("api_key", "api_token", "token", "azure_ad_token", "aws_secret_access_key")


@dataclass
class Vote:
    """One judge's answer on one pair, in the canonical (A, B) order whatever order the judge saw.

    ``score`` is the parsed answer in the *presented* order (first shown = Document A of the prompt);
    ``prob_a`` is P(A more relevant than B) after undoing the swap; ``swapped`` says B was shown first.
    ``cost`` sums every billed attempt (re-asked unreadable answers included). ``error`` set => ``prob_a`` is None.
    """

    judge: str
    raw_answer: str | None = None
    score: float | None = None
    prob_a: float | None = None
    swapped: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    latency: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.prob_a is not None

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _VOTE_FIELDS}  # dataclasses.asdict deep-copies: 20x slower

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Vote:
        return cls(**{k: v for k, v in data.items() if k in _VOTE_FIELDS})


_VOTE_FIELDS = tuple(f.name for f in fields(Vote))


@dataclass
class Comparison:
    """One pair to judge: ``doc_a`` vs ``doc_b`` for ``query`` (cross-query when ``query_b`` is set: B answers it)."""

    query: str
    doc_a: str
    doc_b: str
    query_b: str | None = None
    query_id: str | None = None
    doc_a_id: str | None = None
    doc_b_id: str | None = None
    query_b_id: str | None = None


@lru_cache(maxsize=1 << 16)
def _json_text(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _digest(*parts: Any) -> bytes:
    """sha256 of ``json.dumps(parts)``, byte for byte (cache keys must not change), with each text's JSON encoding
    memoised: a document sits in ~degree pairs per judge, and encoding it again was the dry run's hot spot."""
    encoded = [_json_text(p) if isinstance(p, str) else json.dumps(p, ensure_ascii=False, default=str) for p in parts]
    return hashlib.sha256(("[" + ", ".join(encoded) + "]").encode("utf-8")).digest()


class Judge:
    """Base class: ``acompare`` one pair (async); ``acompare_many`` / ``compare_many`` for a batch.

    A subclass implements :meth:`acompare` (one pair, async) or :meth:`judge_batch` (synchronous, vectorised over
    the whole batch), or both; each default delegates to the other.
    ``cacheable`` judges (paid calls) get their votes stored in a :class:`zelo_hf.cache.JudgmentCache`.
    """

    name: str = "judge"
    cacheable: bool = False
    seed: int = 0
    requests_sent: int = 0  # HTTP requests sent so far (local judges send none)
    stopped: str | None = None  # why the judge gave up (see CircuitBreaker); None while it can still judge

    def leaves(self) -> list[Judge]:
        """The single judges that cast votes (an ensemble lists its members)."""
        return [self]

    def swap_for(self, c: Comparison) -> bool:
        """Whether to show B first: a coin seeded by (seed, judge, query, documents), so reruns agree (and hit cache)."""
        return bool(_digest(self.seed, self.name, c.query, c.query_b, c.doc_a, c.doc_b)[0] & 1)

    def cache_key(self, c: Comparison, swapped: bool) -> str | None:
        """Key of this judge's answer to ``c`` in the cache (None: not cached)."""
        return None

    async def acompare(self, query: str, doc_a: str, doc_b: str, query_b: str | None = None, **ids: str) -> Vote:
        votes = await self.acompare_many([Comparison(query, doc_a, doc_b, query_b, **ids)])
        return votes[0]

    async def acompare_comparison(self, c: Comparison) -> Vote:
        return await self.acompare(c.query, c.doc_a, c.doc_b, c.query_b)

    def judge_batch(self, comparisons: Sequence[Comparison]) -> list[Vote] | None:
        """Vectorised synchronous path; ``None`` when the judge has none (then calls are made one by one)."""
        return None

    async def acompare_many(self, comparisons: Sequence[Comparison], concurrency: int = 64) -> list[Vote]:
        """Judge a batch, at most ``concurrency`` calls in flight; votes in input order."""
        batch = self.judge_batch(comparisons)
        if batch is not None:
            return batch
        semaphore = asyncio.Semaphore(concurrency)

        async def one(c: Comparison) -> Vote:
            async with semaphore:
                return await self.acompare_comparison(c)

        return list(await asyncio.gather(*(one(c) for c in comparisons)))

    def compare_many(self, comparisons: Sequence[Comparison], concurrency: int = 64) -> list[Vote]:
        """Synchronous wrapper of :meth:`acompare_many` (not from inside a running event loop)."""
        return asyncio.run(self.acompare_many(comparisons, concurrency))

    def estimate(self, comparisons: Sequence[Comparison], concurrency: int = 64, **kwargs: Any) -> dict[str, Any]:
        """Dry-run estimate of the bill and time (free, local judges: zero cost)."""
        return {"judge": self.name, "calls": len(comparisons), "prompt_tokens": 0, "completion_tokens": 0,
                "cost": 0.0, "batch_cost": 0.0, "seconds": None}


class RateLimiter:
    """Token buckets for requests and tokens per minute (either may be None = unlimited), shared by all calls.

    Waiters are served first come, first served; a request larger than the whole token budget waits for a full
    bucket rather than forever.
    """

    def __init__(self, rpm: float | None = None, tpm: float | None = None):
        for name, value in (("rpm", rpm), ("tpm", tpm)):
            if value is not None and value <= 0:
                raise ValueError(f"`{name}` must be > 0 or None for no limit (got {name}={value}).")
        self.rpm, self.tpm = rpm, tpm
        self._requests = float(rpm or 0)
        self._tokens = float(tpm or 0)
        self._stamp = time.monotonic()
        self._locks: dict[int, asyncio.Lock] = {}

    def _refill(self) -> None:
        now = time.monotonic()
        elapsed, self._stamp = now - self._stamp, now
        if self.rpm:
            self._requests = min(self.rpm, self._requests + elapsed * self.rpm / 60.0)
        if self.tpm:
            self._tokens = min(self.tpm, self._tokens + elapsed * self.tpm / 60.0)

    def _wait_time(self, tokens: float) -> float:
        wait = 0.0
        if self.rpm and self._requests < 1.0:
            wait = max(wait, (1.0 - self._requests) * 60.0 / self.rpm)
        if self.tpm:
            need = min(tokens, self.tpm)
            if self._tokens < need:
                wait = max(wait, (need - self._tokens) * 60.0 / self.tpm)
        return wait

    async def acquire(self, tokens: float = 0.0) -> None:
        if not self.rpm and not self.tpm:
            return
        loop_id = id(asyncio.get_running_loop())  # a lock is bound to one event loop; judges outlive asyncio.run
        lock = self._locks.setdefault(loop_id, asyncio.Lock())
        async with lock:
            while True:
                self._refill()
                wait = self._wait_time(tokens)
                if wait <= 0.0:
                    self._requests -= 1.0 if self.rpm else 0.0
                    self._tokens -= min(tokens, self.tpm) if self.tpm else 0.0
                    return
                await asyncio.sleep(wait)


def _litellm():
    """litellm, imported on first use (it is slow to import) and told not to print its help banner on errors."""
    import litellm

    litellm.suppress_debug_info = True
    return litellm


def _retry_after(exc: BaseException | None) -> float | None:
    """Seconds a provider asked to wait before retrying (``retry-after-ms``, or ``Retry-After`` in seconds or as an
    HTTP date), when its error response said so; litellm keeps the headers on the exception."""
    import email.utils

    for headers in (getattr(exc, "litellm_response_headers", None),
                    getattr(getattr(exc, "response", None), "headers", None)):  # fmt: skip
        if not headers:
            continue
        try:
            if headers.get("retry-after-ms"):
                return float(headers["retry-after-ms"]) / 1000.0
            value = headers.get("retry-after")
            if value:
                try:
                    return float(value)
                except ValueError:
                    return email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):  # a malformed header: fall back to our own backoff
            return None
    return None


def _backoff(attempt: int, initial: float, cap: float, asked: float | None) -> float:
    """Seconds before retry ``attempt`` (0-based): exponential backoff with up to 1 s of jitter, or longer when the
    provider's Retry-After asks; never beyond ``cap``."""
    ours = initial * 2.0**attempt + random.uniform(0.0, 1.0)
    return min(max(ours, asked or 0.0), cap)


# Error kinds (issue #10). Fatal kinds cannot heal by retrying: after `max_fatal_errors` in a row the judge stops.
FATAL_KINDS = ("auth", "model", "quota", "unreachable")
RETRIED_KINDS = ("timeout", "rate_limit", "transient")
_AUTH = re.compile(
    r"missing credentials|incorrect api key|invalid[_ ]api[_ ]key|invalid x-api-key|api key not valid|"
    r"missing [\w ]{0,24}api[ _-]?key|no api key|api[ _]key (?:is )?(?:required|not (?:set|found))|unauthori[sz]ed",
    re.IGNORECASE,
)
_MODEL = re.compile(r"llm provider not provided|model[_ ]not[_ ]found|unknown model|no such model|"
                    r"model .{0,80}(?:does not exist|not found)", re.IGNORECASE)
_QUOTA = re.compile(r"insufficient[_ ]quota|exceeded your current quota|credit balance is too low|"
                    r"billing (?:hard )?limit|quota (?:has been )?exhausted", re.IGNORECASE)
_CONTEXT = re.compile(r"maximum context length|context[_ ]length[_ ]exceeded|exceeds? the available context|"
                      r"context window|prompt is too long|too many (?:input )?tokens", re.IGNORECASE)
_DOWN = re.compile(r"connection refused|connect call failed|all connection attempts failed|name or service not known|"
                   r"nodename nor servname|temporary failure in name resolution|getaddrinfo failed", re.IGNORECASE)
_FIXES = {
    "auth": "set a valid key for this provider in the environment (e.g. OPENAI_API_KEY, ANTHROPIC_API_KEY, "
            "GEMINI_API_KEY) and check that it may use this model",
    "model": "check the model string (provider/model, e.g. openai/gpt-4.1-mini) and, for a local server, --api_base "
             "and the model name the server serves",
    "quota": "add credit or raise the quota with the provider, or judge with another model",
    "unreachable": "start the server or fix --api_base (or OPENAI_BASE_URL) and the network",
}


def _chain(exc: BaseException, depth: int = 8) -> list[BaseException]:
    """``exc`` and the exceptions it wraps (litellm wraps the SDK's, which wraps the transport's)."""
    out, todo = [], [exc]
    while todo and len(out) < depth:
        e = todo.pop(0)
        if e is None or any(e is seen for seen in out):
            continue
        out.append(e)
        todo += [e.__cause__, e.__context__, getattr(e, "original_exception", None)]
    return out


def _status(exc: BaseException) -> int | None:
    try:
        status = getattr(exc, "status_code", None)
        return int(status) if status is not None else None
    except (TypeError, ValueError):
        return None


def classify_error(exc: BaseException) -> str:
    """What a failed call means: a fatal kind (:data:`FATAL_KINDS`), ``"context"`` (the prompt does not fit: not
    retried), ``"timeout"`` / ``"rate_limit"`` (congestion: retried, lower the concurrency), ``"transient"`` (5xx,
    dropped connections, garbled JSON: retried) or ``"other"`` (a bad request: not retried)."""
    litellm = _litellm()
    chain = _chain(exc)
    text = " ".join(str(e)[:2000] for e in chain)
    status = _status(exc)
    if isinstance(exc, litellm.ContextWindowExceededError) or (status in (400, 413, None) and _CONTEXT.search(text)):
        return "context"
    if isinstance(exc, litellm.AuthenticationError | litellm.PermissionDeniedError) or status in (401, 403) \
            or _AUTH.search(text):
        return "auth"
    if isinstance(exc, litellm.NotFoundError) or status == 404 or _MODEL.search(text):
        return "model"
    if _QUOTA.search(text) and _retry_after(exc) is None:  # a per-minute quota says when to come back
        return "quota"
    if isinstance(exc, litellm.Timeout | asyncio.TimeoutError):
        return "timeout"
    if any(isinstance(e, ConnectionRefusedError | socket.gaierror) for e in chain) or _DOWN.search(text):
        return "unreachable"
    if isinstance(exc, litellm.RateLimitError) or status == 429:
        return "rate_limit"
    transient = (litellm.InternalServerError, litellm.ServiceUnavailableError, litellm.BadGatewayError,
                 litellm.APIConnectionError, json.JSONDecodeError)
    if isinstance(exc, transient) or (isinstance(exc, litellm.APIError) and (status is None or status >= 500)):
        return "transient"
    return "other"


def provider_message(exc: BaseException) -> str:
    """The provider's message in one redacted line (litellm's type prefixes and appended tracebacks dropped)."""
    first = (str(exc).strip().splitlines() or [""])[0]
    first = re.sub(r"^(?:litellm\.\w+:\s*)+(?:\w+Error:\s*)?", "", first)
    return redact(first)[:300]


class JudgeStopped(RuntimeError):
    """The judge was stopped (dead credentials, unknown model, server down, or a stalled provider)."""


class CircuitBreaker:
    """Per-judge health (issue #10): stops a judge after ``max_fatal_errors`` fatal errors in a row, and pauses a
    judge whose recent calls all timed out, then sends one probe and stops the judge when the probe times out too.

    "All timed out" means ``stall_after`` timeouts in a row and no answer for ``stall_window`` seconds, so an
    overloaded server that still answers some calls only gets fewer requests (:class:`AdaptiveConcurrency`).
    When the judge stops, one line (judge, error class, provider message redacted, the fix) goes to stderr.
    """

    def __init__(self, name: str, max_fatal_errors: int = 3, stall_after: int = 3, stall_pause: float = 30.0,
                 stall_window: float = 60.0, hint: str = ""):
        self.name, self.max_fatal_errors, self.stall_after = name, max_fatal_errors, stall_after
        self.stall_pause, self.stall_window, self.hint = stall_pause, stall_window, hint
        self.fatal_streak = self.timeout_streak = 0
        self.state = "closed"  # "open": paused until _reopen_at; "probe": one request decides
        self.stopped: str | None = None
        self._reopen_at = 0.0
        self._last_answer = time.monotonic()

    async def gate(self) -> bool:
        """Wait while the judge is paused; True when this caller is the probe; raises :class:`JudgeStopped`."""
        while True:
            if self.stopped:
                raise JudgeStopped(self.stopped)
            if self.state == "closed":
                return False
            now = time.monotonic()
            if self.state == "open" and now >= self._reopen_at:
                self.state = "probe"
                return True
            await asyncio.sleep(min(max(self._reopen_at - now, 0.0), 0.25) if self.state == "open" else 0.05)

    def record(self, kind: str, exc: BaseException | None = None, probe: bool = False) -> None:
        """One call's outcome: ``"ok"`` (any answer, readable or not) or an error kind of :func:`classify_error`."""
        if kind == "timeout":
            self.timeout_streak += 1
            if probe:
                self.stop(f"stalled: its last {self.timeout_streak} calls timed out, and so did a probe after a "
                          f"{self.stall_pause:g} s pause", "check that the server is up and not overloaded, raise "
                          "--timeout or lower --concurrency")
            elif self.state == "closed" and self.timeout_streak >= self.stall_after \
                    and time.monotonic() - self._last_answer > self.stall_window:
                self.state, self._reopen_at = "open", time.monotonic() + self.stall_pause
                logger.warning("judge %s: its last %d calls all timed out; pausing %g s, then probing once.",
                               self.name, self.timeout_streak, self.stall_pause)
            return
        self.timeout_streak = 0
        if kind in FATAL_KINDS:
            self.fatal_streak += 1
            if self.fatal_streak >= self.max_fatal_errors:
                self.stop(f"{self.fatal_streak} consecutive fatal errors, {kind} ({type(exc).__name__}): "
                          f"{provider_message(exc)}", _FIXES[kind])
            return
        self.fatal_streak = 0  # the provider answered: alive, and the credentials work
        self._last_answer = time.monotonic()
        if self.state != "closed" and (probe or kind == "ok"):
            self.state = "closed"

    def stop(self, reason: str, fix: str) -> None:
        if self.stopped:
            return
        hint = f" ({self.hint})" if self.hint else ""
        self.stopped = redact(f"judge {self.name!r} stopped after {reason}. Fix: {fix}{hint}; then rerun with "
                              "--resume (answers so far are cached). Its remaining pairs are recorded as failed.")
        print(f"zelo: {self.stopped}", file=sys.stderr, flush=True)


class AdaptiveConcurrency:
    """AIMD limit on one judge's requests in flight (issue #10), like TCP congestion control.

    Slow start: ``initial`` requests at first, +1 per answer (the window doubles every round trip), so dead
    credentials cost a handful of requests, not a whole pool's worth. The first timeout or 429 halves the limit
    (multiplicative decrease, once per window: requests sent before the last decrease do not decrease it again);
    from then on it grows by one per window of answers (additive increase: +1/limit per answer). The limit never
    runs more than one ahead of the requests actually in flight. A small local server is then sent what it can
    serve instead of having every queued request time out. ``enabled=False``: no limit (the caller's pool only).
    """

    def __init__(self, minimum: int = 1, decrease: float = 0.5, enabled: bool = True, initial: int = 4):
        self.minimum, self.decrease, self.enabled = minimum, decrease, enabled
        self.limit: float | None = float(max(initial, minimum)) if enabled else None
        self.slow_start = enabled
        self.in_flight = self.peak = self.decreases = self.epoch = 0
        self._waiters: collections.deque = collections.deque()

    async def acquire(self) -> int:
        """Wait for a slot; returns the window (epoch) the request is sent in."""
        if self.limit is not None and (self.in_flight >= int(self.limit) or self._waiters):
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter  # the slot is reserved for us when woken
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._release_slot()
                else:
                    self._waiters.remove(waiter)
                raise
        else:
            self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        return self.epoch

    def release(self, epoch: int, outcome: str) -> None:
        """``outcome``: ``"ok"`` (an answer), ``"congested"`` (timeout / 429) or ``"neutral"``."""
        if self.limit is not None and outcome == "congested" and epoch == self.epoch:
            self.limit = max(float(self.minimum), min(self.limit, self.in_flight) * self.decrease)
            self.slow_start = False
            self.epoch += 1
            self.decreases += 1
            logger.info("concurrency lowered to %d after a timeout or 429", int(self.limit))
        elif self.limit is not None and outcome == "ok":
            step = 1.0 if self.slow_start else 1.0 / self.limit
            self.limit = min(self.limit + step, float(self.peak + 1))
        self._release_slot()

    def _release_slot(self) -> None:
        self.in_flight -= 1
        while self._waiters and (self.limit is None or self.in_flight < int(self.limit)):
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(None)


class LiteLLMJudge(Judge):
    """A judge backed by one LLM through ``litellm.acompletion``.

    Args:
        model: a litellm model string, e.g. ``openai/gpt-4.1-mini``, ``anthropic/claude-sonnet-4-5``,
            ``gemini/gemini-2.5-flash``, or ``openai/<name>`` with ``api_base`` for an OpenAI-compatible server.
        api_base: base URL of the server (None: the provider's default, or ``OPENAI_BASE_URL`` / ``OPENAI_API_BASE``).
        temperature: sampling temperature (0: as deterministic as the provider allows).
        max_tokens: answer budget; default 256 for ``score``, 4 for ``verdict``, 1 for ``logprobs``.
        timeout: seconds per call before it counts as a timeout (then retried).
        max_retries: retries of one call on 429 / 5xx / timeouts / dropped connections (exponential backoff + jitter).
            Fatal errors (bad key, unknown model, quota exhausted, server down) and context-window errors are not
            retried.
        max_parse_retries: times an unreadable answer (or a refusal) is re-asked (with the bad answer and a
            correction appended, so the request differs) before the vote is failed.
        rpm, tpm: requests / tokens per minute allowed for this model (None: unlimited).
        answer_format: ``"score"`` (a number in [-1, 1]), ``"verdict"`` (A/B) or ``"logprobs"`` (A/B token logprobs).
        prompt_version: recorded in votes and cache keys; bump it when you change the prompt.
        seed: seeds the per-pair position swap (a provider-side ``seed`` goes in ``litellm_kwargs``).
        swap: randomise the presentation order per pair (recommended; ZELO.md step 3) -- False always shows A first.
        retry_wait: ``(initial, max)`` seconds of the exponential backoff; a provider's ``Retry-After`` is honoured up
            to ``max``.
        cost_per_token: ``(input, output)`` dollars per token for models missing from litellm's cost map.
        name: the judge's name in votes (default: ``model``).
        max_doc_tokens: documents are cut to this many tokens so every prompt fits (None: derived from
            ``context_window``, else from litellm's model info; no cut when neither is known).
        context_window: the model's context in tokens, for servers litellm does not know (e.g. a llama.cpp server
            started with ``-c 4096``: its per-slot context).
        max_fatal_errors: fatal errors in a row after which the judge stops (its remaining pairs fail at once).
        stall_after, stall_pause: after ``stall_after`` timeouts in a row with no answer for ``timeout`` seconds the
            judge pauses ``stall_pause`` seconds, then sends one probe; a probe that times out stops the judge.
        adaptive_concurrency: lower the requests in flight on timeouts / 429s (AIMD) instead of timing out every
            queued request.
        litellm_kwargs: extra arguments for ``litellm.acompletion`` (e.g. ``top_p``, ``reasoning_effort``, or
            ``mock_response`` in tests). Keys are never accepted here: litellm reads them from the environment.
    """

    cacheable = True

    def __init__(
        self,
        model: str,
        api_base: str | None = None,
        temperature: float = 0.0,
        max_tokens: int | None = None,
        timeout: float = 60.0,
        max_retries: int = 6,
        max_parse_retries: int = 2,
        rpm: float | None = None,
        tpm: float | None = None,
        answer_format: str = "score",
        prompt_version: str = PROMPT_VERSION,
        seed: int = 0,
        swap: bool = True,
        retry_wait: tuple[float, float] = (1.0, 60.0),
        cost_per_token: tuple[float, float] | None = None,
        name: str | None = None,
        max_doc_tokens: int | None = None,
        context_window: int | None = None,
        max_fatal_errors: int = 3,
        stall_after: int = 3,
        stall_pause: float = 30.0,
        adaptive_concurrency: bool = True,
        **litellm_kwargs: Any,
    ):
        _check_judge_args(answer_format, litellm_kwargs, timeout=timeout, max_retries=max_retries,
                          max_parse_retries=max_parse_retries, max_doc_tokens=max_doc_tokens,
                          context_window=context_window, max_fatal_errors=max_fatal_errors, stall_after=stall_after,
                          stall_pause=stall_pause)
        self.model, self.api_base, self.temperature = model, api_base, temperature
        self.max_tokens = max_tokens or DEFAULT_MAX_TOKENS[answer_format]
        self.timeout, self.max_retries, self.max_parse_retries = timeout, max_retries, max_parse_retries
        self.answer_format, self.prompt_version, self.seed, self.swap = answer_format, prompt_version, seed, swap
        self.retry_wait, self.cost_per_token = retry_wait, cost_per_token
        self.name = redact(name or model)
        self.litellm_kwargs = litellm_kwargs
        self.limiter = RateLimiter(rpm, tpm)
        self.max_doc_tokens, self.context_window = max_doc_tokens, context_window
        self._doc_budget: int | None | str = "unset"
        self.breaker = CircuitBreaker(self.name, max_fatal_errors, stall_after, stall_pause, stall_window=timeout,
                                      hint=redact(f"api_base={api_base}") if api_base else "")
        self.slots = AdaptiveConcurrency(enabled=adaptive_concurrency)
        self.requests_sent = 0  # HTTP requests actually sent (retries and re-asks included)
        self._warned_cost = self._warned_cut = False

    def __repr__(self) -> str:
        return f"LiteLLMJudge(model={self.model!r}, answer_format={self.answer_format!r}, prompt={self.prompt_version!r})"

    @property
    def stopped(self) -> str | None:
        """Why the judge stopped (None while it runs): see :class:`CircuitBreaker`. A stopped judge stays stopped
        (every later pair fails at once): build a new one after fixing the cause."""
        return self.breaker.stopped

    def swap_for(self, c: Comparison) -> bool:
        return super().swap_for(c) if self.swap else False

    def cache_key(self, c: Comparison, swapped: bool) -> str:
        # Keyed on the documents as sent: an uncut document keeps the key it always had (cached answers stay valid).
        settings = (self.answer_format, self.temperature, self.max_tokens, sorted(self.litellm_kwargs.items()))
        doc_a, doc_b = self.fit_document(c.doc_a), self.fit_document(c.doc_b)
        return _digest(self.model, self.prompt_version, settings, c.query, c.query_b, doc_a, doc_b, swapped).hex()

    def messages(self, c: Comparison, swapped: bool) -> list[dict[str, str]]:
        doc_a, doc_b = self.fit_document(c.doc_a), self.fit_document(c.doc_b)
        first, second = (doc_b, doc_a) if swapped else (doc_a, doc_b)
        query, query_b = (c.query_b, c.query) if swapped and c.query_b is not None else (c.query, c.query_b)
        return build_messages(query, first, second, query_b, self.answer_format)

    # ---------------------------------------------------------------- per-document token budget (issue #10)

    def doc_token_budget(self) -> int | None:
        """Tokens per document: ``max_doc_tokens``, else derived from the context window (None: no cut)."""
        if self._doc_budget == "unset":
            self._doc_budget = self.max_doc_tokens if self.max_doc_tokens is not None else self._derived_budget()
        return self._doc_budget

    def _derived_budget(self) -> int | None:
        """Half of what the context leaves after the answer, the prompt template and two queries, with a 10 % margin
        for tokenizers that count more than litellm's (a local model's own tokenizer is unknown to it)."""
        window = self.context_window or _known_context_window(self.model)
        if not window:
            return None
        empty = build_messages("", "", "", "", self.answer_format)  # the cross-query template: the longer one
        template = _litellm().token_counter(model=self.model, messages=empty)
        room = window - self.max_tokens - template - 2 * _QUERY_ALLOWANCE
        budget = int(0.9 * room) // 2
        if budget < _MIN_DOC_TOKENS:
            raise ValueError(
                f"context_window={window} leaves {budget} tokens per document for {self.model} (max_tokens="
                f"{self.max_tokens}, prompt template {template} tokens, {_QUERY_ALLOWANCE} per query): pass a larger "
                f"`context_window` (--context_window), a smaller `max_tokens`, or `max_doc_tokens` (--max_doc_tokens)."
            )
        return budget

    def fit_document(self, text: str) -> str:
        """``text`` cut to :meth:`doc_token_budget` tokens (unchanged when it fits)."""
        budget = self.doc_token_budget()
        if budget is None or 4 * len(text) <= budget or len(text.encode("utf-8")) <= budget:  # a token is >= 1 byte
            return text
        cut = _truncate_tokens(self.model, text, budget)
        if not self._warned_cut and cut != text:
            logger.warning("%s: documents longer than %d tokens are cut to fit the context (max_doc_tokens).",
                           self.name, budget)
            self._warned_cut = True
        return cut

    # ---------------------------------------------------------------- calls

    async def acompare(self, query: str, doc_a: str, doc_b: str, query_b: str | None = None, **ids: str) -> Vote:
        return await self.acompare_comparison(Comparison(query, doc_a, doc_b, query_b, **ids))

    async def acompare_comparison(self, c: Comparison, swapped: bool | None = None) -> Vote:
        """Judge one pair: ask (swapped as seeded), re-ask unreadable answers, undo the swap; never raises on API errors."""
        swapped = self.swap_for(c) if swapped is None else swapped
        vote = Vote(judge=self.name, swapped=swapped)
        if self.stopped:
            vote.error = f"not asked: {self.stopped}"[:500]
            return vote
        messages = first = self.messages(c, swapped)
        start = time.perf_counter()
        for attempt in range(self.max_parse_retries + 1):
            try:
                response = await self._request(messages)
            except Exception as exc:  # noqa: BLE001 -- any API failure becomes a failed vote, never a crash or a tie
                vote.error = self._error_text(exc)[:500]
                break
            self._account(vote, response)
            text, logprobs = _answer(response)
            vote.raw_answer = redact(text or "")[:2000]
            try:
                vote.score, p_first = parse_answer(text or "", self.answer_format, logprobs)
            except ParseError as exc:
                vote.error = redact(f"unparseable answer after {attempt + 1} attempt(s): {exc}")[:500]
                messages = reask_messages(first, text or "", str(exc), self.answer_format)
                continue
            vote.error = None
            vote.prob_a = 1.0 - p_first if swapped else p_first
            break
        vote.latency = time.perf_counter() - start
        return vote

    def _error_text(self, exc: BaseException) -> str:
        if isinstance(exc, JudgeStopped):
            return f"not asked: {exc}"
        if isinstance(exc, _CallFailed) and exc.fix:  # the fix first: the error is cut at 500 characters
            cause = exc.__cause__
            return redact(f"{type(cause).__name__}: {exc.fix}. Provider: {provider_message(cause)}")
        return redact(str(exc) if isinstance(exc, _CallFailed) else f"{type(exc).__name__}: {exc}")

    def _call_kwargs(self) -> dict[str, Any]:
        kwargs = dict(self.litellm_kwargs)
        base = self.api_base or os.environ.get("OPENAI_BASE_URL") or os.environ.get("OPENAI_API_BASE")
        if base and self.model.startswith("openai/") and not os.environ.get("OPENAI_API_KEY"):
            kwargs["api_key"] = _PLACEHOLDER_KEY
        if self.answer_format == "logprobs":
            kwargs.setdefault("logprobs", True)
            kwargs.setdefault("top_logprobs", 5)
        return kwargs

    async def _request(self, messages: list[dict[str, str]]):
        """One logical call: rate-limited, concurrency-limited (AIMD), timed out, retried with backoff on transient
        errors; fatal errors feed the circuit breaker and are raised at once."""
        kwargs, tokens = self._call_kwargs(), self._estimated_tokens(messages)
        for attempt in range(self.max_retries + 1):
            await self.limiter.acquire(tokens)
            try:
                return await self._attempt(messages, kwargs)
            except _CallFailed as failed:
                if failed.kind not in RETRIED_KINDS or attempt == self.max_retries:
                    raise
                asked = _retry_after(failed.__cause__)
                await asyncio.sleep(_backoff(attempt, self.retry_wait[0], self.retry_wait[1], asked))
        raise AssertionError("unreachable")  # the loop returns or raises

    async def _attempt(self, messages: list[dict[str, str]], kwargs: dict[str, Any]):
        """One HTTP request in one AIMD slot; its outcome goes to the breaker and the concurrency limit.

        The breaker is asked once the slot is ours: a request that waited for a slot while the judge stopped (or
        paused) is not sent."""
        litellm = _litellm()
        epoch, outcome = await self.slots.acquire(), "neutral"
        try:
            probe = await self.breaker.gate()  # JudgeStopped: nothing sent, the slot is released below
            try:
                self.requests_sent += 1
                # The SDK's own retries are off (max_retries=0, num_retries=0): every HTTP call is one attempt here.
                coro = litellm.acompletion(
                    model=self.model, messages=messages, api_base=self.api_base, temperature=self.temperature,
                    max_tokens=self.max_tokens, timeout=self.timeout, max_retries=0, num_retries=0, **kwargs,
                )
                response = await _with_timeout(coro, self.timeout + 5.0)
                outcome = "ok"
            except Exception as exc:
                kind = classify_error(exc)
                outcome = "congested" if kind in ("timeout", "rate_limit") else "neutral"
                self.breaker.record(kind, exc, probe)
                raise _CallFailed(kind, self._context_fix() if kind == "context" else "") from exc
        finally:
            self.slots.release(epoch, outcome)
        self.breaker.record("ok", None, probe)
        return response

    def _context_fix(self) -> str:
        return (f"the prompt does not fit {self.model}'s context window: lower `max_doc_tokens` (--max_doc_tokens; "
                f"now {self.doc_token_budget()}) or set `context_window` (--context_window) to the server's real "
                "context size (not retried)")

    def _estimated_tokens(self, messages: list[dict[str, str]]) -> float:
        if not self.limiter.tpm:
            return 0.0
        chars = sum(len(m["content"]) for m in messages)
        return chars / 4.0 + self.max_tokens  # ~4 characters per token; exact counts would cost more than the call

    def _account(self, vote: Vote, response: Any) -> None:
        usage = getattr(response, "usage", None)
        prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        vote.prompt_tokens += prompt_tokens
        vote.completion_tokens += completion_tokens
        vote.cost += self._cost(prompt_tokens, completion_tokens, response)

    def _cost(self, prompt_tokens: int, completion_tokens: int, response: Any = None) -> float:
        litellm = _litellm()

        if self.cost_per_token is not None:
            return prompt_tokens * self.cost_per_token[0] + completion_tokens * self.cost_per_token[1]
        try:
            if response is not None:
                return float(litellm.completion_cost(completion_response=response, model=self.model))
            return float(sum(litellm.cost_per_token(self.model, prompt_tokens, completion_tokens)))
        except Exception:  # noqa: BLE001 -- unknown model in the offline cost map
            if not self._warned_cost:
                logger.warning("no price for %s in litellm's cost map: costs recorded as 0; pass cost_per_token.",
                               self.name)
                self._warned_cost = True
            return 0.0

    # ---------------------------------------------------------------- provider batch API (zelo judge --batch)

    def batch_model(self) -> str:
        """The provider's own model name for batch request bodies; only OpenAI-protocol judges batch for now."""
        model, provider, _, _ = _litellm().get_llm_provider(self.model)
        if provider != "openai":
            raise ValueError(
                f"--batch sends OpenAI Batch API requests (files + batches), so it needs an openai/... judge "
                f"(got {self.model!r}, provider {provider!r}): judge it online (drop --batch), or serve it behind an "
                "OpenAI-compatible batch endpoint."
            )
        return model

    def batch_line(self, c: Comparison, swapped: bool, key: str) -> dict[str, Any]:
        """One JSONL line of a batch input file: the very request :meth:`acompare_comparison` would send."""
        body: dict[str, Any] = {"model": self.batch_model(), "messages": self.messages(c, swapped),
                                "temperature": self.temperature, "max_tokens": self.max_tokens}
        if self.answer_format == "logprobs":
            body.update(logprobs=True, top_logprobs=5)
        body.update({k: v for k, v in self.litellm_kwargs.items() if k not in _LOCAL_KWARGS})
        return {"custom_id": key, "method": "POST", "url": "/v1/chat/completions", "body": body}

    def batch_vote(self, line: dict[str, Any], swapped: bool) -> Vote:
        """The vote of one batch output / error line (same parsing and swap handling as online; billed at the batch
        price). An unreadable answer is a failed vote here: a batch cannot re-ask, the next run does."""
        vote = Vote(judge=self.name, swapped=swapped)
        response = line.get("response") or {}
        body = response.get("body") or {}
        if line.get("error") or response.get("status_code") != 200:
            error = line.get("error") or body.get("error") or {}
            status = response.get("status_code") or error.get("code")
            vote.error = redact(f"batch request failed ({status}): {error.get('message') or error}")[:500]
            return vote
        usage = body.get("usage") or {}
        vote.prompt_tokens = int(usage.get("prompt_tokens") or 0)
        vote.completion_tokens = int(usage.get("completion_tokens") or 0)
        prices = self.batch_token_prices()
        vote.cost = vote.prompt_tokens * prices[0] + vote.completion_tokens * prices[1]
        choice = (body.get("choices") or [{}])[0]
        text = (choice.get("message") or {}).get("content")
        vote.raw_answer = redact(text or "")[:2000]
        try:
            vote.score, p_first = parse_answer(text or "", self.answer_format, choice.get("logprobs"))
        except ParseError as exc:
            vote.error = redact(f"unparseable answer (batch: asked again on the next run): {exc}")[:500]
            return vote
        vote.prob_a = 1.0 - p_first if swapped else p_first
        return vote

    async def batch_api(self, name: str, **kwargs: Any) -> Any:
        """One call of litellm's files / batches API (``acreate_file``, ``acreate_batch``, ``aretrieve_batch``,
        ``afile_content``) with the judge's retry rules; fatal errors feed the breaker and are raised at once."""
        call = getattr(_litellm(), name)
        auth = {"api_key": self._call_kwargs()["api_key"]} if "api_key" in self._call_kwargs() else {}
        for attempt in range(self.max_retries + 1):
            if self.stopped:
                raise JudgeStopped(self.stopped)
            try:
                seconds = max(self.timeout, 300.0)  # uploads and downloads of up to 200 MB
                result = await _with_timeout(call(custom_llm_provider="openai", api_base=self.api_base,
                                                  timeout=seconds, **auth, **kwargs), seconds + 5.0)
            except Exception as exc:
                kind = classify_error(exc)
                self.breaker.record(kind, exc)
                if kind not in RETRIED_KINDS or attempt == self.max_retries:
                    raise _CallFailed(kind) from exc
                await asyncio.sleep(_backoff(attempt, self.retry_wait[0], self.retry_wait[1], _retry_after(exc)))
                continue
            self.breaker.record("ok")
            return result
        raise AssertionError("unreachable")  # the loop returns or raises

    def batch_token_prices(self) -> tuple[float, float]:
        """Dollars per (input, output) token through the batch API: litellm's batch prices, else half the online."""
        if self.cost_per_token is not None:
            return 0.5 * self.cost_per_token[0], 0.5 * self.cost_per_token[1]
        try:
            info = _litellm().get_model_info(self.model)
        except Exception:  # noqa: BLE001 -- unmapped model
            self._cost(0, 0)  # warns once that costs are recorded as 0
            return 0.0, 0.0
        online = (info.get("input_cost_per_token") or 0.0, info.get("output_cost_per_token") or 0.0)
        batch = (info.get("input_cost_per_token_batches"), info.get("output_cost_per_token_batches"))
        return tuple(b if b is not None else 0.5 * o for b, o in zip(batch, online))

    # ---------------------------------------------------------------- dry-run estimate

    def estimate(
        self, comparisons: Sequence[Comparison], concurrency: int = 64, output_tokens: int | None = None,
        latency: float = 2.0, **kwargs: Any,
    ) -> dict[str, Any]:
        """Tokens, dollars (online and batch) and seconds before anything is spent.

        Each distinct text is counted once (litellm's tokenizer for the model; documents capped at the token
        budget) and a prompt is the template plus its texts; each call is priced on its own, as it is billed (the
        summed tokens priced as one call would cross tiered prices such as Gemini's >200k-token tier).
        """
        n = len(comparisons)
        if n == 0:
            return {**super().estimate(comparisons), "batch_cost": 0.0, "price_known": self._price_known()}
        prompt = self.prompt_token_counts(comparisons)
        completion = output_tokens if output_tokens is not None else ASSUMED_OUTPUT_TOKENS[self.answer_format]
        cost = self._price_calls(prompt, completion)
        prompt_tokens, completion_tokens = int(prompt.sum()), n * completion
        seconds = n * latency / max(concurrency, 1)
        if self.limiter.rpm:
            seconds = max(seconds, n * 60.0 / self.limiter.rpm)
        if self.limiter.tpm:
            seconds = max(seconds, (prompt_tokens + completion_tokens) * 60.0 / self.limiter.tpm)
        batch_cost, batch_source = self._batch_cost(cost, prompt_tokens, completion_tokens)
        return {"judge": self.name, "calls": n, "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "cost": cost, "batch_cost": batch_cost, "batch_price": batch_source, "seconds": seconds,
                "price_known": self._price_known(), "max_doc_tokens": self.doc_token_budget()}

    def prompt_token_counts(self, comparisons: Sequence[Comparison]) -> np.ndarray:
        """Prompt tokens of each comparison's call: template + query(ies) + both documents (capped at the budget).

        Each distinct text is tokenized once and looked up for the rest (a document sits in ~degree pairs).
        """
        litellm = _litellm()
        n, budget = len(comparisons), self.doc_token_budget()
        template = {cross: litellm.token_counter(model=self.model, messages=build_messages(
            "", "", "", "" if cross else None, self.answer_format)) for cross in (False, True)}
        columns = {name: [getattr(c, name) for c in comparisons] for name in ("query", "query_b", "doc_a", "doc_b")}
        counts = _text_token_counts(self.model, {t for texts in columns.values() for t in texts if t is not None})
        counts[None] = 0

        def column(name: str) -> np.ndarray:
            return np.fromiter(map(counts.__getitem__, columns[name]), dtype=np.int64, count=n)

        docs = column("doc_a") + column("doc_b") if budget is None else \
            np.minimum(column("doc_a"), budget) + np.minimum(column("doc_b"), budget)
        cross = np.fromiter((q is not None for q in columns["query_b"]), dtype=bool, count=n)
        return np.where(cross, template[True], template[False]) + column("query") + column("query_b") + docs

    def _price_calls(self, prompt: np.ndarray, completion: int) -> float:
        """The sum of each call's own price. Prices linear over the calls' range (no tier crossed among them) are
        summed in one step; otherwise each distinct prompt length is priced on its own."""
        values, counts = np.unique(prompt, return_counts=True)
        probes = np.unique(np.quantile(values, [0.0, 0.25, 0.5, 0.75, 1.0], method="nearest"))
        priced = np.array([self._cost(int(v), completion) for v in probes])
        if len(probes) > 1:
            slope = (priced[-1] - priced[0]) / float(probes[-1] - probes[0])
            line = priced[0] + slope * (values - probes[0])
            if np.allclose(priced, priced[0] + slope * (probes - probes[0]), rtol=1e-9, atol=1e-15):
                return float((line * counts).sum())
        return float(sum(self._cost(int(v), completion) * k for v, k in zip(values, counts)))

    def _batch_cost(self, cost: float, prompt_tokens: int, completion_tokens: int) -> tuple[float, str]:
        """The bill through the provider's batch API: litellm's batch prices when it has them, else 50 %."""
        if self.cost_per_token is None:
            try:
                info = _litellm().get_model_info(self.model)
                prices = info.get("input_cost_per_token_batches"), info.get("output_cost_per_token_batches")
            except Exception:  # noqa: BLE001 -- unmapped model
                prices = (None, None)
            if None not in prices:
                return prompt_tokens * prices[0] + completion_tokens * prices[1], "litellm batch prices"
        return 0.5 * cost, "50% of the online price"

    def _price_known(self) -> bool:
        """Whether dollars can be computed: ``cost_per_token`` given or the model in litellm's offline cost map."""
        if self.cost_per_token is not None:
            return True
        try:
            _litellm().cost_per_token(self.model, 1, 1)
        except Exception:  # noqa: BLE001 -- litellm raises several types for unmapped models
            return False
        return True


class _CallFailed(Exception):
    """A failed HTTP call, with its :func:`classify_error` kind (the original error is its ``__cause__``)."""

    def __init__(self, kind: str, fix: str = ""):
        super().__init__(kind)
        self.kind, self.fix = kind, fix

    def __str__(self) -> str:
        cause = self.__cause__
        return f"{type(cause).__name__}: {cause}" if cause is not None else self.kind


_LOCAL_KWARGS = ("mock_response",)  # litellm-side test switches, never sent to a provider
_QUERY_ALLOWANCE = 128  # tokens kept for each query when a document budget is derived from the context window
_MIN_DOC_TOKENS = 16


def _known_context_window(model: str) -> int | None:
    try:
        return _litellm().get_model_info(model).get("max_input_tokens") or None
    except Exception:  # noqa: BLE001 -- a model litellm does not know (e.g. a local server's)
        return None


@lru_cache(maxsize=1 << 15)
def _truncate_tokens(model: str, text: str, budget: int) -> str:
    litellm = _litellm()
    ids = litellm.encode(model=model, text=text)
    if len(ids) <= budget:
        return text
    return litellm.decode(model=model, tokens=list(ids[: max(budget - 3, 1)])) + " [...]"


_TOKEN_COUNTS: dict[Any, dict[str, int]] = {}  # per tokenizer: text -> tokens (judges sharing one count once)


def _text_token_counts(model: str, texts: set[str]) -> dict[str | None, int]:
    """Tokens of each distinct text by litellm's tokenizer for ``model`` (the dry run counts each text once)."""
    encode = partial(_litellm().encode, model=model)
    try:
        from litellm.utils import select_tokenizer

        chosen = select_tokenizer(model=model)
        key: Any = (chosen["type"], id(chosen["tokenizer"]))
    except Exception:  # noqa: BLE001 -- an older / newer litellm: memoise per model
        key = model
    memo = _TOKEN_COUNTS.setdefault(key, {})
    if len(memo) > 1_000_000:
        memo.clear()
    for text in texts - memo.keys():
        memo[text] = len(encode(text=text))
    return {t: memo[t] for t in texts}


def _check_judge_args(answer_format: str, litellm_kwargs: dict[str, Any], **numbers: Any) -> None:
    """Validate LiteLLMJudge's arguments: the field, the value received and the fix."""
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(f"`answer_format` must be one of {ANSWER_FORMATS} (got answer_format={answer_format!r}).")
    secret = [k for k in litellm_kwargs if k in _SECRET_KWARGS]
    if secret:
        raise ValueError(
            f"LiteLLMJudge got secret argument(s) {secret}: set the provider's environment variable instead "
            "(e.g. OPENAI_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY); litellm reads it from there."
        )
    if numbers["timeout"] <= 0 or numbers["max_retries"] < 0 or numbers["max_parse_retries"] < 0:
        raise ValueError(
            f"need timeout > 0, max_retries >= 0, max_parse_retries >= 0 (got timeout={numbers['timeout']}, "
            f"max_retries={numbers['max_retries']}, max_parse_retries={numbers['max_parse_retries']})."
        )
    for name, example in _ARG_EXAMPLES.items():
        value = numbers[name]
        if value is not None and (not isinstance(value, int) or value < 1):
            optional = " or None" if name in ("max_doc_tokens", "context_window") else ""
            raise ValueError(f"`{name}` must be a positive integer{optional} (got {name}={value!r}): e.g. {example}.")
    if numbers["stall_pause"] < 0:
        raise ValueError(f"`stall_pause` must be >= 0 seconds (got stall_pause={numbers['stall_pause']}): e.g. 30.")


_ARG_EXAMPLES = {"max_doc_tokens": "512", "context_window": "4096", "max_fatal_errors": "3", "stall_after": "3"}


async def flush_litellm_logging() -> None:
    """Let litellm finish its queued logging callbacks inside this event loop.

    litellm runs a success callback per call in a background queue; left pending when ``asyncio.run`` returns,
    they are carried into the next event loop (a warning each time) and cost CPU there instead of here.
    """
    try:
        from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER
    except ImportError:  # a litellm without the worker: nothing queued
        return
    await GLOBAL_LOGGING_WORKER.flush()


async def _with_timeout(coro, seconds: float):
    """A hard deadline on top of the HTTP client's own timeout (``asyncio.timeout`` avoids wait_for's extra task)."""
    if hasattr(asyncio, "timeout"):  # Python >= 3.11
        async with asyncio.timeout(seconds):
            return await coro
    return await asyncio.wait_for(coro, seconds)


def _answer(response: Any) -> tuple[str | None, Any]:
    """The answer text and the first choice's logprobs (when returned) of a chat completion."""
    choices = getattr(response, "choices", None) or []
    if not choices:
        return None, None
    message = getattr(choices[0], "message", None)
    return getattr(message, "content", None), getattr(choices[0], "logprobs", None)


def combine_votes(votes: Sequence[Vote], combine: str = "mean") -> float | None:
    """One soft label from several votes (failed votes are left out); None when every vote failed."""
    if combine not in ("mean", "median"):
        raise ValueError(f"`combine` must be 'mean' or 'median' (got combine={combine!r}).")
    probs = [v.prob_a for v in votes if v.ok]
    if not probs:
        return None
    return float(np.mean(probs) if combine == "mean" else np.median(probs))


class EnsembleJudge(Judge):
    """Several judges on every pair -> one soft label (mean or median of the successful votes).

    Every vote is kept. A pair whose votes all failed is a failed pair (``prob_a=None``); a pair with some failed
    votes is labelled from the successful ones (the preference set keeps the failed votes, so this shows).
    """

    def __init__(self, judges: Sequence[Judge], combine: str = "mean", name: str | None = None):
        if not judges:
            raise ValueError("`judges` is empty: pass at least one judge, e.g. [LiteLLMJudge('openai/gpt-4.1-mini')].")
        combine_votes([], combine)  # validates `combine`
        self.judges = [leaf for judge in judges for leaf in judge.leaves()]
        names = [j.name for j in self.judges]
        if len(set(names)) != len(names):
            raise ValueError(f"ensemble judges need distinct names (got {names}): pass name=... to tell them apart.")
        self.combine = combine
        self.name = name or "ensemble(" + ",".join(names) + ")"

    def leaves(self) -> list[Judge]:
        return list(self.judges)

    async def acompare_votes(self, c: Comparison) -> list[Vote]:
        return list(await asyncio.gather(*(j.acompare_many([c]) for j in self.judges)))

    async def acompare(self, query: str, doc_a: str, doc_b: str, query_b: str | None = None, **ids: str) -> Vote:
        """A summary vote (mean label, summed tokens and cost); use :func:`zelo_hf.preferences.judge_pairs` to keep all."""
        votes = [v[0] for v in await self.acompare_votes(Comparison(query, doc_a, doc_b, query_b, **ids))]
        prob = combine_votes(votes, self.combine)
        errors = [f"{v.judge}: {v.error}" for v in votes if not v.ok]
        return Vote(
            judge=self.name, raw_answer=None, score=None if prob is None else 2 * prob - 1, prob_a=prob,
            prompt_tokens=sum(v.prompt_tokens for v in votes), completion_tokens=sum(v.completion_tokens for v in votes),
            cost=sum(v.cost for v in votes), latency=max(v.latency for v in votes),
            error=None if prob is not None else "; ".join(errors),
        )

    async def acompare_comparison(self, c: Comparison) -> Vote:
        return await self.acompare(c.query, c.doc_a, c.doc_b, c.query_b)

    def estimate(self, comparisons: Sequence[Comparison], concurrency: int = 64, **kwargs: Any) -> dict[str, Any]:
        parts = [j.estimate(comparisons, concurrency, **kwargs) for j in self.judges]
        seconds = [p["seconds"] for p in parts if p["seconds"] is not None]
        return {"judge": self.name, "calls": sum(p["calls"] for p in parts),
                "prompt_tokens": sum(p["prompt_tokens"] for p in parts),
                "completion_tokens": sum(p["completion_tokens"] for p in parts),
                "cost": sum(p["cost"] for p in parts), "batch_cost": sum(p.get("batch_cost", 0.0) for p in parts),
                "seconds": max(seconds) if seconds else None, "judges": parts}


def _hashed_uniforms(keys: Sequence[bytes], n: int) -> np.ndarray:
    """``(len(keys), n)`` uniforms in (0, 1) from the bytes of per-pair digests (counter-based, order-free)."""
    raw = np.frombuffer(b"".join(k[: 4 * n] for k in keys), dtype="<u4").reshape(len(keys), n)
    return (raw.astype(np.float64) + 0.5) / 2.0**32


class SimulatedJudge(Judge):
    """A judge driven by graded qrels and the ZELO.md noise model (see :mod:`zelo_hf.simulate`).

    The latent relevance of (query, doc) is ``grade * grade_scale`` (unjudged documents: grade 0), absolute, so
    cross-query comparisons work. The judge sees the pair in its presented order and answers
    ``sigmoid(discrimination * (l_first - l_second) + position_bias + N(0, noise_sd^2))``, a uniform random
    probability with rate ``uniform_rate``; then the swap is undone. The noise of a vote is drawn from a digest of
    (seed, judge, query, documents), so a vote does not depend on batch order and a rerun gives the same vote.

    Args:
        qrels: ``{query_id: {doc_id: grade}}``; comparisons must carry ``query_id``/``doc_a_id``/``doc_b_id``.
        noise_sd, uniform_rate: the ZELO.md noise (0.2 and 2 %).
        grade_scale: latent units per grade; default ``4 / max_grade`` so grade differences span about +-4.
        position_bias: added to the presented-first document's side (0: an unbiased judge).
        discrimination: multiplies the latent difference (1: the ZELO.md judge; < 1: a noisier rater).
        seed, swap, name: as for :class:`LiteLLMJudge`.
    """

    def __init__(
        self,
        qrels: dict[str, dict[str, int]],
        noise_sd: float = 0.2,
        uniform_rate: float = 0.02,
        grade_scale: float | None = None,
        position_bias: float = 0.0,
        discrimination: float = 1.0,
        seed: int = 0,
        swap: bool = True,
        name: str = "simulated",
    ):
        if not qrels:
            raise ValueError("`qrels` is empty: SimulatedJudge needs graded judgments {query_id: {doc_id: grade}}.")
        if noise_sd < 0 or not 0.0 <= uniform_rate <= 1.0:
            raise ValueError(f"need noise_sd >= 0 and 0 <= uniform_rate <= 1 (got {noise_sd}, {uniform_rate}).")
        max_grade = max((g for docs in qrels.values() for g in docs.values()), default=0)
        self.grade_scale = grade_scale if grade_scale is not None else 4.0 / max(max_grade, 1)
        self.qrels = qrels
        self.noise_sd, self.uniform_rate = noise_sd, uniform_rate
        self.position_bias, self.discrimination = position_bias, discrimination
        self.seed, self.swap, self.name = seed, swap, name

    def _latent(self, query_ids: Sequence[str], doc_ids: Sequence[str]) -> np.ndarray:
        return self.grade_scale * np.array(
            [self.qrels.get(q, {}).get(d, 0) for q, d in zip(query_ids, doc_ids)], dtype=np.float64
        )

    def judge_batch(self, comparisons: Sequence[Comparison]) -> list[Vote]:
        """All votes at once: vectorised over the batch."""
        missing = [c for c in comparisons if c.query_id is None or c.doc_a_id is None or c.doc_b_id is None]
        if missing:
            raise ValueError(
                "SimulatedJudge needs ids: comparisons must set query_id, doc_a_id and doc_b_id "
                f"(got {missing[0]!r}); judge_pairs passes them from the candidate or pairs dataset."
            )
        qb = [c.query_b_id if c.query_b_id is not None else c.query_id for c in comparisons]
        latent_a = self._latent([c.query_id for c in comparisons], [c.doc_a_id for c in comparisons])
        latent_b = self._latent(qb, [c.doc_b_id for c in comparisons])
        keys = [_digest(self.seed, self.name, c.query_id, c.query_b_id, c.doc_a_id, c.doc_b_id) for c in comparisons]
        u = _hashed_uniforms(keys, 4)
        swapped = (u[:, 3] < 0.5) if self.swap else np.zeros(len(comparisons), dtype=bool)
        from scipy.special import expit, ndtri

        diff_first = np.where(swapped, latent_b - latent_a, latent_a - latent_b)
        z = self.discrimination * diff_first + self.position_bias + self.noise_sd * ndtri(u[:, 0])
        p_first = np.where(u[:, 1] < self.uniform_rate, u[:, 2], expit(z))
        prob_a = np.where(swapped, 1.0 - p_first, p_first)
        return [
            Vote(judge=self.name, raw_answer=None, score=float(2 * pf - 1), prob_a=float(pa), swapped=bool(s))
            for pf, pa, s in zip(p_first, prob_a, swapped)
        ]

    async def acompare(self, query: str, doc_a: str, doc_b: str, query_b: str | None = None, **ids: str) -> Vote:
        return self.judge_batch([Comparison(query, doc_a, doc_b, query_b, **ids)])[0]

    async def acompare_comparison(self, c: Comparison) -> Vote:
        return self.judge_batch([c])[0]


class PairwiseModelJudge(Judge):
    """A judge backed by the local pairwise small model (ZELO.md step 4), batched on CPU or GPU.

    Args:
        model_path_or_scorer: a folder / Hub id of a trained pairwise cross-encoder, or a loaded
            ``zelo_hf.modeling.PairwiseScorer`` (anything with ``predict(queries, docs_a, docs_b, batch_size)``).
        batch_size: pairs per forward pass.
        max_length: tokens per (query, doc A, doc B) input, when loading from a path.
        max_query_length: queries are cut to this many tokens (use the value the model was trained with).

    No swap coin is needed: ``PairwiseScorer.predict`` already scores both orders and antisymmetrises.
    """

    def __init__(self, model_path_or_scorer: Any, batch_size: int = 32, max_length: int | None = None,
                 name: str | None = None, max_query_length: int = 64):
        if isinstance(model_path_or_scorer, str | os.PathLike):
            from .modeling import PairwiseScorer

            self.scorer = PairwiseScorer(
                str(model_path_or_scorer), max_length=max_length, max_query_length=max_query_length
            )
            default_name = f"pairwise:{model_path_or_scorer}"
        else:
            if not hasattr(model_path_or_scorer, "predict"):
                raise TypeError(
                    f"`model_path_or_scorer` must be a path or an object with .predict(queries, docs_a, docs_b, "
                    f"batch_size) (got {type(model_path_or_scorer).__name__})."
                )
            self.scorer = model_path_or_scorer
            default_name = f"pairwise:{type(model_path_or_scorer).__name__}"
        self.batch_size = batch_size
        self.name = name or default_name

    def judge_batch(self, comparisons: Sequence[Comparison]) -> list[Vote]:
        cross = [c for c in comparisons if c.query_b is not None]
        if cross:
            raise ValueError(
                "PairwiseModelJudge reads (query, doc A, doc B) and cannot judge cross-query pairs "
                f"(got query_b={cross[0].query_b!r}): use an LLM judge for calibration pairs."
            )
        if not comparisons:
            return []
        queries = [c.query for c in comparisons]
        docs_a, docs_b = [c.doc_a for c in comparisons], [c.doc_b for c in comparisons]
        start = time.perf_counter()
        p = np.asarray(self.scorer.predict(queries, docs_a, docs_b, batch_size=self.batch_size), dtype=np.float64)
        latency = (time.perf_counter() - start) / len(comparisons)
        bad = ~np.isfinite(p)
        return [
            Vote(judge=self.name, score=None if b else float(2 * x - 1), prob_a=None if b else float(x),
                 swapped=False, latency=latency, error="non-finite model output" if b else None)
            for x, b in zip(p, bad)
        ]

    async def acompare(self, query: str, doc_a: str, doc_b: str, query_b: str | None = None, **ids: str) -> Vote:
        return (await asyncio.to_thread(self.judge_batch, [Comparison(query, doc_a, doc_b, query_b, **ids)]))[0]

    async def acompare_comparison(self, c: Comparison) -> Vote:
        return (await asyncio.to_thread(self.judge_batch, [c]))[0]


def judge_from_config(spec: str | dict[str, Any], seed: int = 0, qrels: dict | None = None) -> Judge:
    """A judge from a CLI/YAML spec: ``"simulated"``, ``"pairwise:<path>"``, a litellm model string, or a dict
    ``{model: ..., api_base: ..., rpm: ..., tpm: ..., ...}`` of :class:`LiteLLMJudge` (or ``{type: simulated, ...}``).
    """
    if isinstance(spec, str):
        spec = {"model": spec}
    spec = dict(spec)
    kind = spec.pop("type", None) or ("simulated" if spec.get("model") == "simulated" else None)
    if kind == "simulated":
        spec.pop("model", None)
        if not qrels:
            raise ValueError("the simulated judge needs graded qrels: pass --data <dataset> or candidates with `grades`.")
        return SimulatedJudge(qrels, seed=spec.pop("seed", seed), **spec)
    model = spec.pop("model", None)
    if not model:
        raise ValueError(f"a judge spec needs `model` (got {spec!r}): e.g. {{model: openai/gpt-4.1-mini, rpm: 500}}.")
    if kind == "pairwise" or model.startswith("pairwise:"):
        return PairwiseModelJudge(model.split(":", 1)[1] if model.startswith("pairwise:") else model, **spec)
    if isinstance(spec.get("retry_wait"), list):
        spec["retry_wait"] = tuple(spec["retry_wait"])
    if isinstance(spec.get("cost_per_token"), list):
        spec["cost_per_token"] = tuple(spec["cost_per_token"])
    return LiteLLMJudge(model, seed=spec.pop("seed", seed), **spec)


def total_seconds(estimates: Sequence[dict[str, Any]]) -> float | None:
    """Judges run side by side: the slowest one sets the wall time."""
    values = [e["seconds"] for e in estimates if e.get("seconds") is not None]
    return max(values) if values else None


__all__ = [
    "Vote", "Comparison", "Judge", "RateLimiter", "LiteLLMJudge", "EnsembleJudge", "SimulatedJudge",
    "PairwiseModelJudge", "combine_votes", "judge_from_config",
]
