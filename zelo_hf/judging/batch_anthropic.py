"""Anthropic Message Batches for ``zelo judge --batch`` (issue #10): half price, most batches done within an hour.

The shared submit / resume / poll / store loop is :mod:`zelo_hf.judging.batch`; this module is the protocol:
``POST /v1/messages/batches`` with ``requests: [{custom_id, params: {model, max_tokens, system, messages,
temperature}}]``, then ``GET /v1/messages/batches/{id}`` until ``processing_status`` is ``ended``, then the JSONL
results (``{custom_id, result: {type: succeeded | errored | canceled | expired, message | error}}``).

None of the three calls goes through litellm (1.106.2), for these reasons (checked against the local stub):

* submitting: ``litellm.acreate_batch(custom_llm_provider="anthropic")`` raises BadRequestError ("LiteLLM doesn't
  support custom_llm_provider=anthropic for 'create_batch'"; its Anthropic batches config raises
  NotImplementedError for creation);
* polling: ``litellm.aretrieve_batch`` works but returns an OpenAI-shaped batch without ``results_url`` and raises a
  bare ``httpx.HTTPStatusError`` without Anthropic's error message (a rejected key reads "Client error '401
  Unauthorized'"; a 5xx cannot be told from a bad request, so it would not be retried);
* results: ``litellm.afile_content`` (the batch id as file id) downloaded the results twice per call in a judge run
  (two GETs of the whole file, up to 256 MB each) and ignores ``results_url``.

So :func:`_request` speaks the HTTP API with ``httpx`` (litellm's own dependency): ``judge.api_base`` (else
``ANTHROPIC_API_BASE`` / ``ANTHROPIC_BASE_URL``, else https://api.anthropic.com, as litellm resolves it), the
``x-api-key`` header from ``ANTHROPIC_API_KEY`` and ``anthropic-version: 2023-06-01``; its errors are raised as
litellm's (:func:`_api_error`), so the judge's retry rules and circuit breaker treat them as online errors. litellm
still prices the tokens (:func:`zelo_hf.judging.pricing.batch_token_prices`).

Cache keys are sha256 hex (64 characters): they fit Anthropic's ``custom_id`` pattern ``^[a-zA-Z0-9_-]{1,64}$`` as
they are; any other key is mapped by :func:`custom_id`, a pure function of the key, so the batch's record in the
cache (its keys) is the mapping. Anthropic returns no token log-probabilities: a ``logprobs`` judge is refused by
``LiteLLMJudge.check``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import TYPE_CHECKING, Any

from .batch import LOCAL_KWARGS, BatchProtocol, Requests, answer_vote, failed_vote, with_batch_retries
from .retry import litellm_module
from .votes import Comparison, Vote

if TYPE_CHECKING:  # pragma: no cover
    from .litellm_judge import LiteLLMJudge

BATCH_LIMITS = (100_000, 256 * 1024 * 1024)  # Anthropic Message Batches: requests and bytes per batch
ANTHROPIC_VERSION = "2023-06-01"
_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_STOPPED = {"canceled": "the batch was canceled before this request ran",
            "expired": "the batch ended (24 h) before this request ran"}


def api_key() -> str:
    """``ANTHROPIC_API_KEY`` from the environment (never from arguments: keys stay out of configs and logs)."""
    key = (os.environ.get("ANTHROPIC_API_KEY") or "").strip()
    if not key:
        raise ValueError("--batch with an anthropic/... judge needs ANTHROPIC_API_KEY (got it unset or empty): "
                         "export ANTHROPIC_API_KEY=<your key>, or judge online (drop --batch).")
    return key


def api_base(judge: LiteLLMJudge) -> str:
    """The API root (the paths add ``/v1/messages/batches``), resolved as litellm resolves it; a trailing ``/v1``
    (an OpenAI habit) is dropped rather than doubled."""
    base = judge.api_base or os.environ.get("ANTHROPIC_API_BASE") or os.environ.get("ANTHROPIC_BASE_URL") \
        or "https://api.anthropic.com"
    base = base.rstrip("/")
    return base[: -len("/v1")] if base.endswith("/v1") else base


def custom_id(key: str) -> str:
    """The request's ``custom_id``: the cache key when it fits Anthropic's pattern, else its sha256 hex."""
    return key if _CUSTOM_ID.match(key) else hashlib.sha256(key.encode("utf-8")).hexdigest()


def batch_request(judge: LiteLLMJudge, c: Comparison, swapped: bool, key: str) -> dict[str, Any]:
    """One request of a Message Batch: the prompt :meth:`LiteLLMJudge.judge_one` would send, in Anthropic's shape
    (the system prompt in ``params.system``)."""
    messages = judge.messages(c, swapped)
    params: dict[str, Any] = {
        "model": judge.batch_model(), "max_tokens": judge.max_tokens,
        "system": "\n\n".join(m["content"] for m in messages if m["role"] == "system"),
        "messages": [m for m in messages if m["role"] != "system"], "temperature": judge.temperature,
    }
    params.update({k: v for k, v in judge.litellm_kwargs.items() if k not in LOCAL_KWARGS})
    return {"custom_id": custom_id(key), "params": params}


async def _submit(judge: LiteLLMJudge, requests: list[dict[str, Any]]) -> str:
    """Create the batch; its id."""
    return (await _request(judge, "POST", _batches_url(judge), json={"requests": requests})).json()["id"]


async def _poll(judge: LiteLLMJudge, batch_id: str) -> tuple[str | None, Any]:
    """``("ended", batch)`` once the batch has ended (its results are ready), else ``(None, batch)``."""
    batch = (await _request(judge, "GET", f"{_batches_url(judge)}/{batch_id}")).json()
    return ("ended" if batch.get("processing_status") == "ended" else None), batch


async def _results(judge: LiteLLMJudge, batch: dict[str, Any], requests: Requests) -> dict[str, Vote]:
    """Votes of an ended batch, from the JSONL at its ``results_url`` (a request missing there is failed by the
    caller)."""
    url = batch.get("results_url") or f"{_batches_url(judge)}/{batch['id']}/results"
    content = (await _request(judge, "GET", url)).text
    by_id = {custom_id(key): (key, swapped) for key, swapped in requests}
    votes: dict[str, Vote] = {}
    for raw in content.splitlines():
        line = json.loads(raw) if raw.strip() else {}
        if line.get("custom_id") in by_id:
            key, swapped = by_id[line["custom_id"]]
            votes[key] = result_vote(judge, line.get("result") or {}, swapped)
    return votes


def result_vote(judge: LiteLLMJudge, result: dict[str, Any], swapped: bool) -> Vote:
    """The vote of one result line (see :func:`zelo_hf.judging.batch.answer_vote`)."""
    kind = result.get("type")
    if kind == "succeeded":
        message = result.get("message") or {}
        usage = message.get("usage") or {}
        text = "".join(block.get("text", "") for block in message.get("content") or [] if block.get("type") == "text")
        return answer_vote(judge, swapped, text, int(usage.get("input_tokens") or 0),
                           int(usage.get("output_tokens") or 0))
    if kind == "errored":
        error = (result.get("error") or {}).get("error") or result.get("error") or {}
        return failed_vote(judge, swapped, f"batch request failed ({error.get('type')}): {error.get('message')}")
    return failed_vote(judge, swapped, f"batch request {kind}: {_STOPPED.get(kind, 'no answer')}; the next run asks "
                                       "it again")


# ---------------------------------------------------------------- HTTP


def _batches_url(judge: LiteLLMJudge) -> str:
    return f"{api_base(judge)}/v1/messages/batches"


async def _request(judge: LiteLLMJudge, method: str, url: str, **kwargs: Any) -> Any:
    """One Anthropic API request (``httpx``) with the judge's retry rules; its failures raised as litellm's errors
    (see :func:`_api_error`), so the retry rules and the circuit breaker read them as they read online errors."""
    import httpx

    headers = {"x-api-key": api_key(), "anthropic-version": ANTHROPIC_VERSION}

    async def attempt(seconds: float) -> httpx.Response:
        try:
            async with httpx.AsyncClient(timeout=seconds) as client:
                response = await client.request(method, url, headers=headers, **kwargs)
        except httpx.TimeoutException as exc:
            raise TimeoutError(f"Anthropic API: no answer within {seconds:g} s") from exc
        except httpx.TransportError as exc:  # refused (read as a server down), reset, garbled: retried
            raise litellm_module().APIConnectionError(message=f"Anthropic API: {type(exc).__name__}: {exc}",
                                                      llm_provider="anthropic", model=judge.model) from exc
        if response.status_code // 100 != 2:
            raise _api_error(judge, response)
        return response

    return await with_batch_retries(judge, attempt)


def _api_error(judge: LiteLLMJudge, response: Any) -> Exception:
    """A non-2xx answer as a ``litellm.APIError`` with the status, Anthropic's ``error.type: message`` and the
    headers (a 429's ``retry-after`` is honoured): 401 is a rejected key (not retried), 429 / 5xx / 529 are retried."""
    try:
        error = response.json().get("error") or {}
        detail = f"{error.get('type')}: {error.get('message')}"
    except (ValueError, AttributeError):
        detail = response.text[:300]
    exc = litellm_module().APIError(status_code=response.status_code, llm_provider="anthropic", model=judge.model,
                                    message=f"Anthropic {response.status_code}: {detail}")
    exc.litellm_response_headers = response.headers
    return exc


ANTHROPIC = BatchProtocol(limits=lambda: BATCH_LIMITS, request=batch_request, submit=_submit, poll=_poll,
                          results=_results)
