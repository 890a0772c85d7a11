"""The provider batch path (``zelo judge --batch``): OpenAI files + batches, half price, results within 24 h.

Batch ids are recorded in the judgment cache the moment they are created -- id and the (key, swapped) of every
request -- so a restart polls them instead of submitting the same requests again (resume re-bills nothing).
Failed and expired requests are failed votes with the reason; an unreadable answer is not re-asked inside a batch
(the next run asks it online or in a new batch).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

from ..utils import redact
from .pricing import batch_token_prices
from .prompts import ParseError, parse_answer
from .retry import (
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
_FINAL = ("completed", "failed", "expired", "cancelled")
_LOCAL_KWARGS = ("mock_response",)  # litellm-side test switches, never sent to a provider


async def run_provider_batches(runs: list[LeafRun], pairs: list[Comparison], cache, poll_interval: float,
                                timeout: float) -> None:
    """The missing votes of LLM judges through their provider's batch API (half price), judges side by side."""
    await asyncio.gather(*(_batch_judge(run, pairs, cache, poll_interval, timeout) for run in runs))


async def _batch_judge(run: LeafRun, pairs: list[Comparison], cache, poll_interval: float, timeout: float) -> None:
    """Resume this judge's open batches, submit the requests in none of them, poll, store every result."""
    judge = run.judge
    groups = {run.keys[idx[0]]: idx for idx in run.call_groups()}
    open_batches = cache.open_batches(judge.name)
    in_flight = {key for requests in open_batches.values() for key, _ in requests}
    run.batch = {"resumed": len(open_batches), "submitted": 0, "batch_ids": list(open_batches)}
    results: dict[str, Vote] = {}
    try:
        todo = [(key, idx) for key, idx in groups.items() if key not in in_flight]
        for lines in _batch_chunks(judge, pairs, todo):
            batch_id = await _submit_batch(judge, lines)
            requests = [(line["custom_id"], swapped) for line, swapped in lines]
            cache.add_batch(batch_id, judge.name, requests)  # committed before polling: a restart resumes it
            open_batches[batch_id] = requests
            run.batch["batch_ids"].append(batch_id)
            run.batch["submitted"] += len(lines)
            run.called += len(lines)
            run.requests += len(lines)
        results, still_open = await _collect_batches(judge, cache, open_batches, poll_interval, timeout)
    except Exception as exc:  # noqa: BLE001 -- a dead key or server: every request not answered fails with the reason
        still_open, reason = {}, f"batch API failed: {type(exc).__name__}: {exc}"
        results = cache.get_many(groups)  # what finished batches stored before the failure
    else:
        reason = None
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


def _batch_chunks(judge: LiteLLMJudge, pairs: list[Comparison], todo: list[tuple[str, list[int]]]):
    """Batch input lines ``(line, swapped)``, split at the provider's request and size limits."""
    chunk: list[tuple[dict[str, Any], bool]] = []
    size = 0
    for key, idx in todo:
        c = pairs[idx[0]]
        swapped = judge.swap_for(c)
        line = batch_line(judge, c, swapped, key)
        length = len(json.dumps(line, ensure_ascii=False).encode("utf-8")) + 1
        if chunk and (len(chunk) >= BATCH_LIMITS[0] or size + length > BATCH_LIMITS[1]):
            yield chunk
            chunk, size = [], 0
        chunk.append((line, swapped))
        size += length
    if chunk:
        yield chunk


async def _submit_batch(judge: LiteLLMJudge, lines: list[tuple[dict[str, Any], bool]]) -> str:
    data = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line, _ in lines).encode("utf-8")
    uploaded = await batch_api(judge, "acreate_file", file=("zelo-judge.jsonl", data), purpose="batch")
    batch = await batch_api(judge, "acreate_batch", completion_window="24h", endpoint="/v1/chat/completions",
                                  input_file_id=uploaded.id, metadata={"source": "zelo judge --batch"})
    return batch.id


async def _collect_batches(judge: LiteLLMJudge, cache, open_batches: dict[str, list[tuple[str, bool]]],
                           poll_interval: float, timeout: float):
    """Poll until every batch is final (or ``timeout``); each finished batch's results are cached at once.

    Returns ``(votes by key, batches still open)``.
    """
    deadline = time.monotonic() + timeout
    pending, results = dict(open_batches), {}
    while pending:
        for batch_id in list(pending):
            batch = await batch_api(judge, "aretrieve_batch", batch_id=batch_id)
            if batch.status not in _FINAL:
                continue
            votes = await _batch_results(judge, batch, pending.pop(batch_id))
            cache.put_many(list(votes.items()))
            cache.close_batch(batch_id, batch.status)
            results.update(votes)
        if pending and time.monotonic() + poll_interval > deadline:
            break
        if pending:
            await asyncio.sleep(poll_interval)
    return results, pending


async def _batch_results(judge: LiteLLMJudge, batch: Any, requests: list[tuple[str, bool]]) -> dict[str, Vote]:
    """Votes of a finished batch: its output and error files; a request in neither (expired, cancelled) fails."""
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
    for key, was_swapped in requests:
        if key not in votes:
            votes[key] = Vote(judge=judge.name, swapped=was_swapped,
                              error=f"batch {batch.id} ended {batch.status} without a result for this request")
    return votes


def batch_line(judge: LiteLLMJudge, c: Comparison, swapped: bool, key: str) -> dict[str, Any]:
    """One JSONL line of a batch input file: the very request :meth:`LiteLLMJudge.judge_one` would send."""
    body: dict[str, Any] = {"model": judge.batch_model(), "messages": judge.messages(c, swapped),
                            "temperature": judge.temperature, "max_tokens": judge.max_tokens}
    if judge.answer_format == "logprobs":
        body.update(logprobs=True, top_logprobs=5)
    body.update({k: v for k, v in judge.litellm_kwargs.items() if k not in _LOCAL_KWARGS})
    return {"custom_id": key, "method": "POST", "url": "/v1/chat/completions", "body": body}


def batch_vote(judge: LiteLLMJudge, line: dict[str, Any], swapped: bool) -> Vote:
    """The vote of one batch output / error line (same parsing and swap handling as online; billed at the batch
    price). An unreadable answer is a failed vote here: a batch cannot re-ask, the next run does."""
    vote = Vote(judge=judge.name, swapped=swapped)
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
    prices = batch_token_prices(judge)
    vote.cost = vote.prompt_tokens * prices[0] + vote.completion_tokens * prices[1]
    choice = (body.get("choices") or [{}])[0]
    text = (choice.get("message") or {}).get("content")
    vote.raw_answer = redact(text or "")[:2000]
    try:
        vote.score, p_first = parse_answer(text or "", judge.answer_format, choice.get("logprobs"))
    except ParseError as exc:
        vote.error = redact(f"unparseable answer (batch: asked again on the next run): {exc}")[:500]
        return vote
    vote.prob_a = 1.0 - p_first if swapped else p_first
    return vote


async def batch_api(judge: LiteLLMJudge, name: str, **kwargs: Any) -> Any:
    """One call of litellm's files / batches API (``acreate_file``, ``acreate_batch``, ``aretrieve_batch``,
    ``afile_content``) with the judge's retry rules; fatal errors feed the breaker and are raised at once."""
    call = getattr(litellm_module(), name)
    auth = {"api_key": judge._call_kwargs()["api_key"]} if "api_key" in judge._call_kwargs() else {}
    for attempt in range(judge.max_retries + 1):
        if judge.stopped:
            raise JudgeStopped(judge.stopped)
        try:
            seconds = max(judge.timeout, 300.0)  # uploads and downloads of up to 200 MB
            result = await with_timeout(call(custom_llm_provider="openai", api_base=judge.api_base,
                                              timeout=seconds, **auth, **kwargs), seconds + 5.0)
        except Exception as exc:
            kind = classify_error(exc)
            judge.breaker.record(kind, exc)
            if kind not in RETRIED_KINDS or attempt == judge.max_retries:
                raise CallFailed(kind) from exc
            await asyncio.sleep(backoff(attempt, judge.retry_wait[0], judge.retry_wait[1], retry_after(exc)))
            continue
        judge.breaker.record("ok")
        return result
    raise AssertionError("unreachable")  # the loop returns or raises
