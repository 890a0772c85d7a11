"""How a failed LLM call is read and retried (issue #10): error kinds, the fix each fatal kind needs, backoff.

Fatal kinds (:data:`FATAL_KINDS`: bad key, unknown model, quota, server down) cannot heal by retrying: they feed
the judge's :class:`zelo_hf.judging.limits.CircuitBreaker`. Congestion (timeouts, 429s) and transient errors
(5xx, dropped connections) are retried with exponential backoff and jitter, longer when a 429 says Retry-After.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import socket
import time

from ..utils import redact


def litellm_module():
    """litellm, imported on first use (it is slow to import) and told not to print its help banner on errors."""
    import litellm

    litellm.suppress_debug_info = True
    return litellm


def retry_after(exc: BaseException | None) -> float | None:
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


def backoff(attempt: int, initial: float, cap: float, asked: float | None) -> float:
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
FIXES = {
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
    litellm = litellm_module()
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
    if _QUOTA.search(text) and retry_after(exc) is None:  # a per-minute quota says when to come back
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


class CallFailed(Exception):
    """A failed HTTP call, with its :func:`classify_error` kind (the original error is its ``__cause__``)."""

    def __init__(self, kind: str, fix: str = ""):
        super().__init__(kind)
        self.kind, self.fix = kind, fix

    def __str__(self) -> str:
        cause = self.__cause__
        return f"{type(cause).__name__}: {cause}" if cause is not None else self.kind


async def with_timeout(coro, seconds: float):
    """A hard deadline on top of the HTTP client's own timeout (``asyncio.timeout`` avoids wait_for's extra task)."""
    if hasattr(asyncio, "timeout"):  # Python >= 3.11
        async with asyncio.timeout(seconds):
            return await coro
    return await asyncio.wait_for(coro, seconds)

