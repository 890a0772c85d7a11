"""Pairwise relevance judges (ZELO.md step 3): LLMs through litellm, ensembles, a simulated judge, a local model.

Every judge answers "is document A more relevant to the query than document B?" with a :class:`Vote`.
A vote whose call failed has ``error`` set and ``prob_a=None``: a failed call is a failed vote, never a tie.

* :class:`LiteLLMJudge` -- any litellm model string (``openai/...``, ``anthropic/...``, ``gemini/...`` or an
  OpenAI-compatible server through ``api_base``). Async, rate-limited (requests and tokens per minute), per-call
  timeouts, retries with exponential backoff and jitter (tenacity; longer when a 429 says Retry-After) on 429 / 5xx /
  timeouts / connection errors,
  unreadable answers re-asked then recorded as failed, position-bias swap seeded per pair and undone.
* :class:`EnsembleJudge` -- several judges per pair, one soft label (the paper's GPT + Claude + Gemini).
* :class:`SimulatedJudge` -- graded qrels + the ZELO.md noise model, vectorised, deterministic per pair.
* :class:`PairwiseModelJudge` -- the distilled pairwise small model (``zelo_hf.modeling.PairwiseScorer``).

Secrets come only from the environment (litellm reads ``OPENAI_API_KEY`` etc.); every answer and error kept
in a vote goes through :func:`zelo_hf.utils.redact`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from functools import partial
from typing import Any

import numpy as np

from .prompts import ANSWER_FORMATS, PROMPT_VERSION, ParseError, build_messages, parse_answer
from .utils import get_logger, redact

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
logger = get_logger(__name__)

# Typical answer lengths, for the dry-run estimate (the score format lets the model reason briefly).
ASSUMED_OUTPUT_TOKENS = {"score": 60, "verdict": 1, "logprobs": 1}
DEFAULT_MAX_TOKENS = {"score": 256, "verdict": 4, "logprobs": 1}
_FATAL = re.compile(r"missing credentials|incorrect api key|invalid[_ ]api[_ ]key|api key not valid", re.IGNORECASE)
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


def _digest(*parts: Any) -> bytes:
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False, default=str).encode("utf-8")).digest()


class Judge:
    """Base class: ``acompare`` one pair (async); ``acompare_many`` / ``compare_many`` for a batch.

    A subclass implements :meth:`acompare` (one pair, async) or :meth:`judge_batch` (synchronous, vectorised over
    the whole batch), or both; each default delegates to the other.
    ``cacheable`` judges (paid calls) get their votes stored in a :class:`zelo_hf.cache.JudgmentCache`.
    """

    name: str = "judge"
    cacheable: bool = False
    seed: int = 0

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
                "cost": 0.0, "seconds": None}


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


def _wait_for_provider(retry_state, backoff, cap: float) -> float:
    """Tenacity wait: our exponential backoff with jitter, or longer when the provider's Retry-After asks (capped)."""
    outcome = retry_state.outcome
    asked = _retry_after(outcome.exception()) if outcome is not None and outcome.failed else None
    return min(max(backoff(retry_state), asked or 0.0), cap)


def _transient(exc: BaseException) -> bool:
    """Errors worth retrying: rate limits, server errors, timeouts, dropped connections, garbled responses."""
    litellm = _litellm()

    retry_types = (
        litellm.RateLimitError,
        litellm.InternalServerError,
        litellm.ServiceUnavailableError,
        litellm.BadGatewayError,
        litellm.Timeout,
        litellm.APIConnectionError,
        asyncio.TimeoutError,
        json.JSONDecodeError,
    )
    if _FATAL.search(str(exc)):  # credentials missing or wrong: retrying cannot help (litellm may wrap it as a 500)
        return False
    if isinstance(exc, retry_types):
        return True
    status = getattr(exc, "status_code", None)
    return isinstance(exc, litellm.APIError) and (status is None or int(status) >= 500)


class LiteLLMJudge(Judge):
    """A judge backed by one LLM through ``litellm.acompletion``.

    Args:
        model: a litellm model string, e.g. ``openai/gpt-4.1-mini``, ``anthropic/claude-sonnet-4-5``,
            ``gemini/gemini-2.5-flash``, or ``openai/<name>`` with ``api_base`` for an OpenAI-compatible server.
        api_base: base URL of the server (None: the provider's default).
        temperature: sampling temperature (0: as deterministic as the provider allows).
        max_tokens: answer budget; default 256 for ``score``, 4 for ``verdict``, 1 for ``logprobs``.
        timeout: seconds per call before it counts as a timeout (then retried).
        max_retries: retries of one call on 429 / 5xx / timeouts / connection errors (exponential backoff + jitter).
        max_parse_retries: times an unreadable answer (or a refusal) is re-asked before the vote is failed.
        rpm, tpm: requests / tokens per minute allowed for this model (None: unlimited).
        answer_format: ``"score"`` (a number in [-1, 1]), ``"verdict"`` (A/B) or ``"logprobs"`` (A/B token logprobs).
        prompt_version: recorded in votes and cache keys; bump it when you change the prompt.
        seed: seeds the per-pair position swap (a provider-side ``seed`` goes in ``litellm_kwargs``).
        swap: randomise the presentation order per pair (recommended; ZELO.md step 3) -- False always shows A first.
        retry_wait: ``(initial, max)`` seconds of the exponential backoff; a provider's ``Retry-After`` is honoured up
            to ``max``.
        cost_per_token: ``(input, output)`` dollars per token for models missing from litellm's cost map.
        name: the judge's name in votes (default: ``model``).
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
        **litellm_kwargs: Any,
    ):
        if answer_format not in ANSWER_FORMATS:
            raise ValueError(f"`answer_format` must be one of {ANSWER_FORMATS} (got answer_format={answer_format!r}).")
        secret = [k for k in litellm_kwargs if k in _SECRET_KWARGS]
        if secret:
            raise ValueError(
                f"LiteLLMJudge got secret argument(s) {secret}: set the provider's environment variable instead "
                "(e.g. OPENAI_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY); litellm reads it from there."
            )
        if timeout <= 0 or max_retries < 0 or max_parse_retries < 0:
            raise ValueError(
                f"need timeout > 0, max_retries >= 0, max_parse_retries >= 0 (got timeout={timeout}, "
                f"max_retries={max_retries}, max_parse_retries={max_parse_retries})."
            )
        self.model, self.api_base, self.temperature = model, api_base, temperature
        self.max_tokens = max_tokens or DEFAULT_MAX_TOKENS[answer_format]
        self.timeout, self.max_retries, self.max_parse_retries = timeout, max_retries, max_parse_retries
        self.answer_format, self.prompt_version, self.seed, self.swap = answer_format, prompt_version, seed, swap
        self.retry_wait, self.cost_per_token = retry_wait, cost_per_token
        self.name = redact(name or model)
        self.litellm_kwargs = litellm_kwargs
        self.limiter = RateLimiter(rpm, tpm)
        self._warned_cost = False

    def __repr__(self) -> str:
        return f"LiteLLMJudge(model={self.model!r}, answer_format={self.answer_format!r}, prompt={self.prompt_version!r})"

    def swap_for(self, c: Comparison) -> bool:
        return super().swap_for(c) if self.swap else False

    def cache_key(self, c: Comparison, swapped: bool) -> str:
        settings = (self.answer_format, self.temperature, self.max_tokens, sorted(self.litellm_kwargs.items()))
        return _digest(self.model, self.prompt_version, settings, c.query, c.query_b, c.doc_a, c.doc_b, swapped).hex()

    def messages(self, c: Comparison, swapped: bool) -> list[dict[str, str]]:
        first, second = (c.doc_b, c.doc_a) if swapped else (c.doc_a, c.doc_b)
        query, query_b = (c.query_b, c.query) if swapped and c.query_b is not None else (c.query, c.query_b)
        return build_messages(query, first, second, query_b, self.answer_format)

    async def acompare(self, query: str, doc_a: str, doc_b: str, query_b: str | None = None, **ids: str) -> Vote:
        return await self.acompare_comparison(Comparison(query, doc_a, doc_b, query_b, **ids))

    async def acompare_comparison(self, c: Comparison, swapped: bool | None = None) -> Vote:
        """Judge one pair: ask (swapped as seeded), re-ask unreadable answers, undo the swap; never raises on API errors."""
        swapped = self.swap_for(c) if swapped is None else swapped
        messages = self.messages(c, swapped)
        vote = Vote(judge=self.name, swapped=swapped)
        start = time.perf_counter()
        for attempt in range(self.max_parse_retries + 1):
            try:
                response = await self._request(messages)
            except Exception as exc:  # noqa: BLE001 -- any API failure becomes a failed vote, never a crash or a tie
                vote.error = redact(f"{type(exc).__name__}: {exc}")[:500]
                break
            self._account(vote, response)
            text, logprobs = _answer(response)
            vote.raw_answer = redact(text or "")[:2000]
            try:
                vote.score, p_first = parse_answer(text or "", self.answer_format, logprobs)
            except ParseError as exc:
                vote.error = redact(f"unparseable answer after {attempt + 1} attempt(s): {exc}")[:500]
                continue
            vote.error = None
            vote.prob_a = 1.0 - p_first if swapped else p_first
            break
        vote.latency = time.perf_counter() - start
        return vote

    async def _request(self, messages: list[dict[str, str]]):
        """One logical call: rate-limited, timed out, retried with backoff on transient errors (tenacity)."""
        litellm = _litellm()
        from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

        kwargs = dict(self.litellm_kwargs)
        if self.api_base and self.model.startswith("openai/") and not os.environ.get("OPENAI_API_KEY"):
            kwargs["api_key"] = _PLACEHOLDER_KEY
        if self.answer_format == "logprobs":
            kwargs.setdefault("logprobs", True)
            kwargs.setdefault("top_logprobs", 5)
        tokens = self._estimated_tokens(messages)
        backoff = wait_exponential_jitter(initial=self.retry_wait[0], max=self.retry_wait[1])
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_retries + 1),
            wait=partial(_wait_for_provider, backoff=backoff, cap=self.retry_wait[1]),
            retry=retry_if_exception(_transient),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await self.limiter.acquire(tokens)
                # The SDK's own retries are off (max_retries=0, num_retries=0) so every HTTP call is one attempt here.
                coro = litellm.acompletion(
                    model=self.model, messages=messages, api_base=self.api_base, temperature=self.temperature,
                    max_tokens=self.max_tokens, timeout=self.timeout, max_retries=0, num_retries=0, **kwargs,
                )
                return await _with_timeout(coro, self.timeout + 5.0)

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

    def estimate(
        self, comparisons: Sequence[Comparison], concurrency: int = 64, output_tokens: int | None = None,
        latency: float = 2.0, sample: int = 256,
    ) -> dict[str, Any]:
        """Estimate tokens, dollars and seconds before anything is spent (litellm.token_counter on a sample)."""
        litellm = _litellm()

        n = len(comparisons)
        if n == 0:
            return super().estimate(comparisons)
        picked = np.random.default_rng(0).choice(n, size=min(n, sample), replace=False)
        counts = [litellm.token_counter(model=self.model, messages=self.messages(comparisons[i], False)) for i in picked]
        prompt_tokens = int(round(float(np.mean(counts)) * n))
        completion_tokens = n * (output_tokens if output_tokens is not None else ASSUMED_OUTPUT_TOKENS[self.answer_format])
        seconds = n * latency / max(concurrency, 1)
        if self.limiter.rpm:
            seconds = max(seconds, n * 60.0 / self.limiter.rpm)
        if self.limiter.tpm:
            seconds = max(seconds, (prompt_tokens + completion_tokens) * 60.0 / self.limiter.tpm)
        return {"judge": self.name, "calls": n, "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "cost": self._cost(prompt_tokens, completion_tokens), "seconds": seconds,
                "price_known": self._price_known()}

    def _price_known(self) -> bool:
        """Whether dollars can be computed: ``cost_per_token`` given or the model in litellm's offline cost map."""
        if self.cost_per_token is not None:
            return True
        try:
            _litellm().cost_per_token(self.model, 1, 1)
        except Exception:  # noqa: BLE001 -- litellm raises several types for unmapped models
            return False
        return True


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
                "cost": sum(p["cost"] for p in parts), "seconds": max(seconds) if seconds else None, "judges": parts}


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
