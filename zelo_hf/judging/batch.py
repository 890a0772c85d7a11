"""The provider batch path (``zelo judge --batch``): half price, results within 24 h (issue #10).

Two protocols, one dispatch (:func:`protocol_for`): OpenAI files + batches (here, all through litellm's files and
batches API) and Anthropic Message Batches (:mod:`zelo_hf.judging.batch_anthropic`). What they share lives here:
batch ids are recorded in the judgment cache the moment they are created -- id and the (key, swapped) of every
request -- so a restart polls them instead of submitting the same requests again (resume re-bills nothing);
requests are split at the provider's request and size limits; every vote is assembled the same way (same parsing,
swap undone, billed at the batch price); failed and expired requests are failed votes with the reason; an
unreadable answer is not re-asked inside a batch (the next run asks it online or in a new batch).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..utils import redact
from .pricing import batch_token_prices
from .prompts import ParseError, parse_answer
from .retry import (
    FIXES,
    RETRIED_KINDS,
    CallFailed,
    JudgeStopped,
    backoff,
    classify_error,
    litellm_module,
    retry_after,
    with_timeout,
)
from .votes import Comparison, Vote

if TYPE_CHECKING:  # pragma: no cover
    from .litellm_judge import LiteLLMJudge
    from .preferences import LeafRun

BATCH_LIMITS = (50_000, 200 * 1024 * 1024)  # OpenAI Batch API: requests and bytes per input file
BATCH_PROVIDERS = ("openai", "anthropic")
_FINAL = ("completed", "failed", "expired", "cancelled")
LOCAL_KWARGS = ("mock_response",)  # litellm-side test switches, never sent to a provider

Requests = list[tuple[str, bool]]  # a batch's record in the cache: (key, swapped) of every request


@dataclass(frozen=True)
class BatchProtocol:
    """A provider's batch API, as the shared submit / resume / poll / store loop calls it."""

    limits: Callable[[], tuple[int, int]]  # requests and bytes per batch (read at call time: tests lower them)
    request: Callable[[LiteLLMJudge, Comparison, bool, str], dict[str, Any]]  # one request (judge, pair, swapped, key)
    submit: Callable[[LiteLLMJudge, list[dict[str, Any]]], Awaitable[str]]  # the new batch's id
    poll: Callable[[LiteLLMJudge, str], Awaitable[tuple[str | None, Any]]]  # (final status or None, the batch)
    results: Callable[[LiteLLMJudge, Any, Requests], Awaitable[dict[str, Vote]]]  # votes of a finished batch by key


def batch_provider(model: str) -> tuple[str, str]:
    """``(the provider's own model name, provider)`` of a model whose provider has a batch API here."""
    name, provider, _, _ = litellm_module().get_llm_provider(model)
    if provider not in BATCH_PROVIDERS:
        raise ValueError(
            f"--batch sends the pairs through a provider's batch API: OpenAI Batch (openai/... judges, or an "
            f"OpenAI-compatible batch endpoint) or Anthropic Message Batches (anthropic/... judges) (got {model!r}, "
            f"provider {provider!r}): judge it online (drop --batch), or use an openai/... or anthropic/... judge."
        )
    return name, provider


def protocol_for(judge: LiteLLMJudge) -> BatchProtocol:
    """The batch protocol of the judge's provider (the one dispatch by provider)."""
    if batch_provider(judge.model)[1] == "anthropic":
        from .batch_anthropic import ANTHROPIC  # it imports the shared parts from here

        return ANTHROPIC
    return OPENAI


def check_batch(judge: LiteLLMJudge) -> None:
    """Fail before anything is sent when ``judge`` cannot batch (its provider, or a missing Anthropic key)."""
    if batch_provider(judge.model)[1] == "anthropic":
        from .batch_anthropic import api_key

        api_key()


# ---------------------------------------------------------------- the shared loop


async def run_provider_batches(runs: list[LeafRun], pairs: list[Comparison], cache, poll_interval: float,
                                timeout: float) -> None:
    """The missing votes of LLM judges through their provider's batch API (half price), judges side by side."""
    await asyncio.gather(*(_batch_judge(run, pairs, cache, poll_interval, timeout) for run in runs))


async def _batch_judge(run: LeafRun, pairs: list[Comparison], cache, poll_interval: float, timeout: float) -> None:
    """Resume this judge's open batches, submit the requests in none of them, poll, store every result."""
    judge, protocol = run.judge, protocol_for(run.judge)
    groups = {run.keys[idx[0]]: idx for idx in run.call_groups()}
    open_batches = cache.open_batches(judge.name)
    in_flight = {key for requests in open_batches.values() for key, _ in requests}
    run.batch = {"resumed": len(open_batches), "submitted": 0, "batch_ids": list(open_batches)}
    try:
        todo = [(key, idx) for key, idx in groups.items() if key not in in_flight]
        for chunk in _batch_chunks(judge, protocol, pairs, todo):
            batch_id = await protocol.submit(judge, [body for body, _ in chunk])
            requests = [record for _, record in chunk]
            cache.add_batch(batch_id, judge.name, requests)  # committed before polling: a restart resumes it
            open_batches[batch_id] = requests
            run.batch["batch_ids"].append(batch_id)
            run.batch["submitted"] += len(chunk)
            run.called += len(chunk)
            run.requests += len(chunk)
        results, still_open = await _collect_batches(judge, protocol, cache, open_batches, poll_interval, timeout)
    except Exception as exc:  # noqa: BLE001 -- a dead key or server: every request not answered fails with the reason
        still_open, reason = {}, f"batch API failed: {judge._error_text(exc)}"
        results = cache.get_many(groups)  # what finished batches stored before the failure
    else:
        reason = None
    _place_votes(run, pairs, groups, results, still_open, reason, timeout)


def _place_votes(run: LeafRun, pairs: list[Comparison], groups: dict[str, list[int]], results: dict[str, Vote],
                 still_open: dict[str, Requests], reason: str | None, timeout: float) -> None:
    """Every pair of the run gets its batch vote, or a failed vote saying why there is none."""
    judge = run.judge
    unfinished = {key: batch_id for batch_id, requests in still_open.items() for key, _ in requests}
    for key, idx in groups.items():
        vote = results.get(key)
        if vote is None:
            error = reason or (f"batch {unfinished[key]} not finished after {timeout:g} s: rerun the same command to "
                               "collect it (it is not submitted again)" if key in unfinished else "no batch result")
            vote = Vote(judge=judge.name, swapped=judge.swap_for(pairs[idx[0]]), error=redact(error)[:500])
        else:
            run.bought.append(vote)
        for i in idx:
            run.votes[i] = vote


def _batch_chunks(judge: LiteLLMJudge, protocol: BatchProtocol, pairs: list[Comparison],
                  todo: list[tuple[str, list[int]]]) -> Iterator[list[tuple[dict[str, Any], tuple[str, bool]]]]:
    """Batches of ``(request, (key, swapped))``, split at the provider's request and size limits."""
    max_requests, max_bytes = protocol.limits()
    chunk: list[tuple[dict[str, Any], tuple[str, bool]]] = []
    size = 0
    for key, idx in todo:
        c = pairs[idx[0]]
        swapped = judge.swap_for(c)
        body = protocol.request(judge, c, swapped, key)
        length = len(json.dumps(body, ensure_ascii=False).encode("utf-8")) + 1  # a newline or a comma
        if chunk and (len(chunk) >= max_requests or size + length > max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append((body, (key, swapped)))
        size += length
    if chunk:
        yield chunk


async def _collect_batches(judge: LiteLLMJudge, protocol: BatchProtocol, cache, open_batches: dict[str, Requests],
                           poll_interval: float, timeout: float) -> tuple[dict[str, Vote], dict[str, Requests]]:
    """Poll until every batch is final (or ``timeout``); each finished batch's results are cached at once.

    Returns ``(votes by key, batches still open)``.
    """
    deadline = time.monotonic() + timeout
    pending, results = dict(open_batches), {}
    while pending:
        for batch_id in list(pending):
            status, batch = await protocol.poll(judge, batch_id)
            if status is None:
                continue
            requests = pending.pop(batch_id)
            votes = await protocol.results(judge, batch, requests)
            votes.update((key, failed_vote(judge, swapped, f"batch {batch_id} ended {status} without a result for "
                                                             "this request"))
                         for key, swapped in requests if key not in votes)
            cache.put_many(list(votes.items()))
            cache.close_batch(batch_id, status)
            results.update(votes)
        if pending and time.monotonic() + poll_interval > deadline:
            break
        if pending:
            await asyncio.sleep(poll_interval)
    return results, pending


# ---------------------------------------------------------------- votes (every provider)


def failed_vote(judge: LiteLLMJudge, swapped: bool, reason: str) -> Vote:
    """A failed batch request: the reason kept (redacted, cut to 500 characters); asked again on the next run."""
    return Vote(judge=judge.name, swapped=swapped, error=redact(reason)[:500])


def answer_vote(judge: LiteLLMJudge, swapped: bool, text: str | None, prompt_tokens: int, completion_tokens: int,
                logprobs: Any = None) -> Vote:
    """The vote of one answered batch request: billed at the batch price, parsed as online, the swap undone. An
    unreadable answer is a failed vote here: a batch cannot re-ask, the next run does."""
    prices = batch_token_prices(judge)
    vote = Vote(judge=judge.name, swapped=swapped, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                cost=prompt_tokens * prices[0] + completion_tokens * prices[1], raw_answer=redact(text or "")[:2000])
    try:
        vote.score, p_first = parse_answer(text or "", judge.answer_format, logprobs)
    except ParseError as exc:
        vote.error = redact(f"unparseable answer (batch: asked again on the next run): {exc}")[:500]
        return vote
    vote.prob_a = 1.0 - p_first if swapped else p_first
    return vote


async def with_batch_retries(judge: LiteLLMJudge, call: Callable[[float], Awaitable[Any]]) -> Any:
    """``call(seconds)`` -- one batch API call given its timeout -- with the judge's retry rules; fatal errors feed
    the breaker and are raised at once (as :class:`CallFailed`, with the fix)."""
    seconds = max(judge.timeout, 300.0)  # uploads and downloads of up to 256 MB
    for attempt in range(judge.max_retries + 1):
        if judge.stopped:
            raise JudgeStopped(judge.stopped)
        try:
            result = await with_timeout(call(seconds), seconds + 5.0)
        except Exception as exc:
            kind = classify_error(exc)
            judge.breaker.record(kind, exc)
            if kind not in RETRIED_KINDS or attempt == judge.max_retries:
                raise CallFailed(kind, FIXES.get(kind, "")) from exc
            await asyncio.sleep(backoff(attempt, judge.retry_wait[0], judge.retry_wait[1], retry_after(exc)))
            continue
        judge.breaker.record("ok")
        return result
    raise AssertionError("unreachable")  # the loop returns or raises


# ---------------------------------------------------------------- OpenAI files + batches (all through litellm)


def batch_line(judge: LiteLLMJudge, c: Comparison, swapped: bool, key: str) -> dict[str, Any]:
    """One JSONL line of a batch input file: the very request :meth:`LiteLLMJudge.judge_one` would send."""
    body: dict[str, Any] = {"model": judge.batch_model(), "messages": judge.messages(c, swapped),
                            "temperature": judge.temperature, "max_tokens": judge.max_tokens}
    if judge.answer_format == "logprobs":
        body.update(logprobs=True, top_logprobs=5)
    body.update({k: v for k, v in judge.litellm_kwargs.items() if k not in LOCAL_KWARGS})
    return {"custom_id": key, "method": "POST", "url": "/v1/chat/completions", "body": body}


async def _submit_openai(judge: LiteLLMJudge, lines: list[dict[str, Any]]) -> str:
    data = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode("utf-8")
    uploaded = await batch_api(judge, "acreate_file", file=("zelo-judge.jsonl", data), purpose="batch")
    batch = await batch_api(judge, "acreate_batch", completion_window="24h", endpoint="/v1/chat/completions",
                            input_file_id=uploaded.id, metadata={"source": "zelo judge --batch"})
    return batch.id


async def _poll_openai(judge: LiteLLMJudge, batch_id: str) -> tuple[str | None, Any]:
    batch = await batch_api(judge, "aretrieve_batch", batch_id=batch_id)
    return (batch.status if batch.status in _FINAL else None), batch


async def _openai_results(judge: LiteLLMJudge, batch: Any, requests: Requests) -> dict[str, Vote]:
    """Votes of a finished batch: its output and error files (a request in neither is failed by the caller)."""
    swapped = dict(requests)
    votes: dict[str, Vote] = {}
    for file_id in (batch.output_file_id, batch.error_file_id):
        if not file_id:
            continue
        content = await batch_api(judge, "afile_content", file_id=file_id)
        for raw in content.content.decode("utf-8").splitlines():
            line = json.loads(raw) if raw.strip() else {}
            if line.get("custom_id") in swapped:
                votes[line["custom_id"]] = batch_vote(judge, line, swapped[line["custom_id"]])
    return votes


def batch_vote(judge: LiteLLMJudge, line: dict[str, Any], swapped: bool) -> Vote:
    """The vote of one OpenAI batch output / error line (see :func:`answer_vote`)."""
    response = line.get("response") or {}
    body = response.get("body") or {}
    if line.get("error") or response.get("status_code") != 200:
        error = line.get("error") or body.get("error") or {}
        status = response.get("status_code") or error.get("code")
        return failed_vote(judge, swapped, f"batch request failed ({status}): {error.get('message') or error}")
    usage = body.get("usage") or {}
    choice = (body.get("choices") or [{}])[0]
    return answer_vote(judge, swapped, (choice.get("message") or {}).get("content"),
                       int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0),
                       choice.get("logprobs"))


async def batch_api(judge: LiteLLMJudge, name: str, **kwargs: Any) -> Any:
    """One call of litellm's OpenAI files / batches API (``acreate_file``, ``acreate_batch``, ``aretrieve_batch``,
    ``afile_content``) with the judge's retry rules (:func:`with_batch_retries`)."""
    call = getattr(litellm_module(), name)
    auth = {"api_key": judge._call_kwargs()["api_key"]} if "api_key" in judge._call_kwargs() else {}
    return await with_batch_retries(judge, lambda seconds: call(custom_llm_provider="openai", api_base=judge.api_base,
                                                                timeout=seconds, **auth, **kwargs))


OPENAI = BatchProtocol(limits=lambda: BATCH_LIMITS, request=batch_line, submit=_submit_openai, poll=_poll_openai,
                       results=_openai_results)
