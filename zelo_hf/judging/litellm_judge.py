"""The LLM judge: any litellm model string (``openai/...``, ``anthropic/...``, ``gemini/...`` or an OpenAI-compatible
server through ``api_base``), asked one pair per request.

Async, rate-limited (requests and tokens per minute), per-call timeouts, retries with exponential backoff and
jitter (longer when a 429 says Retry-After) on 429 / 5xx / timeouts / dropped connections, unreadable answers
re-asked (with a correction) then recorded as failed, position-bias swap seeded per pair and undone. Issue #10:
fatal errors (bad key, unknown model, quota, server down) are not retried and stop the judge after a few in a row
(:class:`zelo_hf.judging.limits.CircuitBreaker`, one line on stderr), a stalled provider is paused then stopped,
timeouts and 429s lower the requests in flight (AIMD), and documents are cut to a token budget so every prompt fits.
The dry-run bill is :mod:`zelo_hf.judging.estimate`; the provider batch path is :mod:`zelo_hf.judging.batch`.

Secrets come only from the environment (litellm reads ``OPENAI_API_KEY`` etc.); every answer and error kept
in a vote goes through :func:`zelo_hf.utils.redact`.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from typing import Any

from ..utils import get_logger, redact
from .base import Judge
from .batch import batch_provider, check_batch
from .limits import AdaptiveConcurrency, CircuitBreaker, RateLimiter
from .pricing import derived_doc_budget, estimate_calls, truncate_tokens
from .prompts import ANSWER_FORMATS, PROMPT_VERSION, ParseError, build_messages, parse_answer, reask_messages
from .retry import (
    FIXES,
    RETRIED_KINDS,
    CallFailed,
    JudgeStopped,
    backoff,
    classify_error,
    litellm_module,
    provider_message,
    retry_after,
    with_timeout,
)
from .votes import Comparison, Vote

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
logger = get_logger(__name__)

DEFAULT_MAX_TOKENS = {"score": 256, "verdict": 4, "logprobs": 1}
# OpenAI-compatible local servers usually want no key, but the openai SDK refuses to start without one.
_PLACEHOLDER_KEY = "no-key-needed"
_SECRET_KWARGS = ("api_key", "api_token", "token", "azure_ad_token", "aws_secret_access_key")


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

    chunk_size = 1  # one pair per request: each answer is cached as it arrives
    batchable = True

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

    def messages(self, c: Comparison, swapped: bool) -> list[dict[str, str]]:
        doc_a, doc_b = self.documents_as_sent(c)
        first, second = (doc_b, doc_a) if swapped else (doc_a, doc_b)
        query, query_b = (c.query_b, c.query) if swapped and c.query_b is not None else (c.query, c.query_b)
        return build_messages(query, first, second, query_b, self.answer_format)

    # ---------------------------------------------------------------- per-document token budget (issue #10)

    def doc_token_budget(self) -> int | None:
        """Tokens per document: ``max_doc_tokens``, else derived from the context window (None: no cut)."""
        if self._doc_budget == "unset":
            self._doc_budget = self.max_doc_tokens if self.max_doc_tokens is not None else derived_doc_budget(self.model, self.context_window, self.max_tokens, self.answer_format)
        return self._doc_budget

    def fit_document(self, text: str) -> str:
        """``text`` cut to :meth:`doc_token_budget` tokens (unchanged when it fits)."""
        budget = self.doc_token_budget()
        if budget is None or 4 * len(text) <= budget or len(text.encode("utf-8")) <= budget:  # a token is >= 1 byte
            return text
        cut = truncate_tokens(self.model, text, budget)
        if not self._warned_cut and cut != text:
            logger.warning("%s: documents longer than %d tokens are cut to fit the context (max_doc_tokens).",
                           self.name, budget)
            self._warned_cut = True
        return cut

    # ---------------------------------------------------------------- the Judge interface

    def cache_identity(self) -> tuple:
        settings = (self.answer_format, self.temperature, self.max_tokens, sorted(self.litellm_kwargs.items()))
        return self.model, self.prompt_version, settings

    def documents_as_sent(self, c: Comparison) -> tuple[str, str]:
        # Keyed on the documents as sent: an uncut document keeps the key it always had (cached answers stay valid).
        return self.fit_document(c.doc_a), self.fit_document(c.doc_b)

    def check(self, batch: bool = False) -> None:
        self.doc_token_budget()
        if self.answer_format == "logprobs" and _provider(self.model) == "anthropic":
            raise ValueError(
                f"answer_format='logprobs' reads the A/B token log-probabilities, which Anthropic does not return "
                f"(got model={self.model!r}, answer_format='logprobs'): use answer_format='score' or 'verdict' "
                "(--answer_format score)."
            )
        if batch:
            check_batch(self)

    async def aflush(self) -> None:
        await flush_litellm_logging()

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"model": self.model, "answer_format": self.answer_format,
                                     "prompt_version": self.prompt_version, "temperature": self.temperature}

    def estimate(self, comparisons: Sequence[Comparison], concurrency: int = 64, output_tokens: int | None = None,
                 latency: float = 2.0, **kwargs: Any) -> dict[str, Any]:
        """Tokens, dollars (online and batch) and seconds before anything is spent (see :func:`estimate_calls`)."""
        return estimate_calls(self, comparisons, concurrency, output_tokens, latency)

    def batch_model(self) -> str:
        """The provider's own model name for batch request bodies (OpenAI Batch or Anthropic Message Batches)."""
        return batch_provider(self.model)[0]

    # ---------------------------------------------------------------- calls

    async def acompare_many(self, comparisons: Sequence[Comparison], concurrency: int = 64) -> list[Vote]:
        semaphore = asyncio.Semaphore(concurrency)

        async def one(c: Comparison) -> Vote:
            async with semaphore:
                return await self.judge_one(c)

        return list(await asyncio.gather(*(one(c) for c in comparisons)))

    async def judge_one(self, c: Comparison, swapped: bool | None = None) -> Vote:
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
        if isinstance(exc, CallFailed) and exc.fix:  # the fix first: the error is cut at 500 characters
            cause = exc.__cause__
            return redact(f"{type(cause).__name__}: {exc.fix}. Provider: {provider_message(cause)}")
        return redact(str(exc) if isinstance(exc, CallFailed) else f"{type(exc).__name__}: {exc}")

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
            except CallFailed as failed:
                if failed.kind not in RETRIED_KINDS or attempt == self.max_retries:
                    raise
                asked = retry_after(failed.__cause__)
                await asyncio.sleep(backoff(attempt, self.retry_wait[0], self.retry_wait[1], asked))
        raise AssertionError("unreachable")  # the loop returns or raises

    async def _attempt(self, messages: list[dict[str, str]], kwargs: dict[str, Any]):
        """One HTTP request in one AIMD slot; its outcome goes to the breaker and the concurrency limit.

        The breaker is asked once the slot is ours: a request that waited for a slot while the judge stopped (or
        paused) is not sent."""
        litellm = litellm_module()
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
                response = await with_timeout(coro, self.timeout + 5.0)
                outcome = "ok"
            except Exception as exc:
                kind = classify_error(exc)
                outcome = "congested" if kind in ("timeout", "rate_limit") else "neutral"
                self.breaker.record(kind, exc, probe)
                raise CallFailed(kind, self._fix(kind)) from exc
        finally:
            self.slots.release(epoch, outcome)
        self.breaker.record("ok", None, probe)
        return response

    def _fix(self, kind: str) -> str:
        """What to do about a failed call, in the pair's error text (empty for the retried, passing kinds)."""
        if kind == "context":
            return self._context_fix()
        if kind == "unreachable":  # which server, so a one-pair run says it too (not only the stop line)
            base = self.api_base or os.environ.get("OPENAI_BASE_URL") or os.environ.get("OPENAI_API_BASE")
            return FIXES[kind] + (redact(f" (api_base={base})") if base else "")
        return ""

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
        vote.cost += self.cost(prompt_tokens, completion_tokens, response)

    def cost(self, prompt_tokens: int, completion_tokens: int, response: Any = None) -> float:
        litellm = litellm_module()

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



def _provider(model: str) -> str | None:
    """litellm's provider of ``model`` (None when it cannot tell: the call itself then fails with the fix)."""
    try:
        return litellm_module().get_llm_provider(model)[1]
    except Exception:  # noqa: BLE001 -- litellm raises BadRequestError for a model string without a provider
        return None


def _answer(response: Any) -> tuple[str | None, Any]:
    """The answer text and the first choice's logprobs (when returned) of a chat completion."""
    choices = getattr(response, "choices", None) or []
    if not choices:
        return None, None
    message = getattr(choices[0], "message", None)
    return getattr(message, "content", None), getattr(choices[0], "logprobs", None)

