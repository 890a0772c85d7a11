"""Preference sets: candidates -> sparse comparison graphs -> judged pairs (ZELO.md steps 2-3).

:func:`judge_pairs` builds each query's comparison graph over its candidates (or takes a pre-built pairs dataset,
e.g. cross-query pairs), sends every pair to every judge (through the cache, with a concurrency limit), and returns
the flat preference set -- one row per pair, the soft label ``prob_a`` and every vote -- plus a summary (counts,
tokens, dollars, per-judge agreement, intransitive triangles). A pair whose votes all failed is *not* in the
preference set: it is listed in ``result.failed`` and in the summary, never written as a tie.
:func:`save_preference_set` writes the Hub-ready folder (parquet + card) and optionally pushes it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .judges import Comparison, EnsembleJudge, Judge, LiteLLMJudge, Vote, combine_votes, flush_litellm_logging, redact
from .utils import get_logger, producing_command, scrub_paths

logger = get_logger(__name__)

PAIR_COLUMNS = ("query_id", "query", "doc_a_id", "doc_a", "doc_b_id", "doc_b")
CROSS_COLUMNS = ("query_b_id", "query_b")
_BATCH = 4096  # votes per vectorised batch of a local judge


@dataclass
class JudgingResult:
    """What :func:`judge_pairs` returns; unpacks as ``preferences, summary = judge_pairs(...)``."""

    preferences: Any  # datasets.Dataset (None for a dry run)
    summary: dict[str, Any]
    failed: Any = None  # datasets.Dataset of pairs whose votes all failed (None for a dry run)
    pairs: list[Comparison] = field(default_factory=list, repr=False)

    def __iter__(self):
        return iter((self.preferences, self.summary))


def _query_seed(seed: int, query_id: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{query_id}".encode()).digest()[:8], "little")


def build_pairs(candidates: Any, degree: int = 8, seed: int = 0) -> list[Comparison]:
    """The comparison graph of every query in a candidate set (``zelo_hf.graphs.comparison_graph``), as pairs.

    Each query's graph is seeded by (seed, query_id), so it does not depend on the order or subset of queries.
    """
    from .graphs import comparison_graph

    missing = [c for c in ("query_id", "query", "doc_ids", "docs") if c not in candidates.column_names]
    if missing:
        raise ValueError(f"the candidate set lacks column(s) {missing} (has {candidates.column_names}): "
                         "build it with zelo_hf.candidates (e.g. `zelo candidates`).")
    pairs: list[Comparison] = []
    columns = candidates.select_columns(["query_id", "query", "doc_ids", "docs"])
    for batch in columns.iter(batch_size=256):  # row by row, datasets' formatting was 5 s of a 809-query dry run
        for qid, query, ids, docs in zip(batch["query_id"], batch["query"], batch["doc_ids"], batch["docs"]):
            qid, n = str(qid), len(ids)
            if n < 2:
                logger.warning("query %s has %d candidate(s): nothing to compare, skipped.", qid, n)
                continue
            edges = comparison_graph(n, degree, _query_seed(seed, qid))
            pairs += [Comparison(query, docs[a], docs[b], None, qid, str(ids[a]), str(ids[b])) for a, b in edges]
    return pairs


def pairs_from_dataset(pairs: Any) -> list[Comparison]:
    """Comparisons from a pairs dataset (preference-set columns; ``query_b``/``query_b_id`` for cross-query pairs)."""
    missing = [c for c in PAIR_COLUMNS if c not in pairs.column_names]
    if missing:
        raise ValueError(f"the pairs dataset lacks column(s) {missing} (has {pairs.column_names}): it needs "
                         f"{list(PAIR_COLUMNS)} (+ {list(CROSS_COLUMNS)} for cross-query pairs).")
    cols = pairs.select_columns([c for c in PAIR_COLUMNS + CROSS_COLUMNS if c in pairs.column_names]).to_dict()
    n = len(cols["query_id"])
    qb, qbid = cols.get("query_b", [None] * n), cols.get("query_b_id", [None] * n)
    return [
        Comparison(cols["query"][i], cols["doc_a"][i], cols["doc_b"][i], qb[i], str(cols["query_id"][i]),
                   str(cols["doc_a_id"][i]), str(cols["doc_b_id"][i]), None if qbid[i] is None else str(qbid[i]))
        for i in range(n)
    ]


def _to_comparisons(data: Any, degree: int, seed: int) -> list[Comparison]:
    from datasets import Dataset

    if isinstance(data, list) and data and isinstance(data[0], Comparison):
        return data
    if isinstance(data, list):
        data = Dataset.from_list(data)
    if not isinstance(data, Dataset):
        raise TypeError(f"`data` must be a datasets.Dataset (candidate set or pairs) or a list of rows/Comparisons "
                        f"(got {type(data).__name__}); load one with zelo_hf.hub.load_dataset_any.")
    return build_pairs(data, degree, seed) if "doc_ids" in data.column_names else pairs_from_dataset(data)


@dataclass
class _LeafRun:
    """Bookkeeping of one judge over all pairs."""

    judge: Judge
    votes: list[Vote | None]
    keys: list[Any]  # cache keys (with a cache), else hashable pair contents: equal keys share one call
    cached: int = 0
    called: int = 0
    not_asked: int = 0  # pairs left after the judge stopped (failed at once, no request sent)
    requests: int = 0  # HTTP requests sent in this run (retries and re-asks included; batch: requests submitted)
    batch: dict[str, Any] | None = None  # batch ids, submitted and resumed counts (``batch=True``)
    bought: list[Vote] = field(default_factory=list)  # one entry per call made in this run (duplicates share it)


def _call_groups(run: _LeafRun) -> list[list[int]]:
    """Pair indices still to judge, grouped by key (a repeated pair is asked once)."""
    groups: dict[Any, list[int]] = {}
    for i, vote in enumerate(run.votes):
        if vote is None:
            groups.setdefault(run.keys[i] if run.keys[i] is not None else ("pair", i), []).append(i)
    return list(groups.values())


async def _run_calls(runs: list[_LeafRun], pairs: list[Comparison], cache, concurrency: int, progress: bool) -> None:
    """Every missing vote of every judge, each judge through its own pool of ``concurrency`` workers (so one judge
    slowed by its rate limit, its adaptive concurrency or a pause never holds the others' workers); each answer is
    cached at once. Once a judge stops (see ``LiteLLMJudge.stopped``) its remaining pairs fail without a request."""
    from tqdm.auto import tqdm

    work = [(run, _call_groups(run)) for run in runs]
    total = sum(len(groups) for _, groups in work)
    if not total:
        return
    bar = tqdm(total=total, desc="judging", disable=not progress, unit="call")

    async def worker(run: _LeafRun, todo) -> None:
        for idx in todo:  # one shared iterator per judge: each call taken exactly once
            vote = await _one_call(run, pairs[idx[0]], cache, run.keys[idx[0]])
            for i in idx:
                run.votes[i] = vote
            bar.update(1)

    before = [getattr(run.judge, "requests_sent", 0) for run in runs]
    try:
        await asyncio.gather(*(worker(run, todo) for run, groups in work for todo in [iter(groups)]
                               for _ in range(min(concurrency, len(groups)))))
    finally:
        bar.close()
        for run, start in zip(runs, before):
            run.requests += getattr(run.judge, "requests_sent", 0) - start
    if any(isinstance(run.judge, LiteLLMJudge) for run in runs):
        await flush_litellm_logging()


async def _one_call(run: _LeafRun, pair: Comparison, cache, key: Any) -> Vote:
    stopped = getattr(run.judge, "stopped", None)
    if stopped:
        run.not_asked += 1
        return Vote(judge=run.judge.name, error=f"not asked: {stopped}"[:500])
    vote = await run.judge.acompare_comparison(pair)
    if cache is not None and key is not None:
        cache.put(key, vote)
    run.called += 1
    run.bought.append(vote)
    return vote


def _prepare_runs(judge: Judge, pairs: list[Comparison], cache) -> list[_LeafRun]:
    runs = []
    for leaf in judge.leaves():
        votes: list[Vote | None] = [None] * len(pairs)
        keys: list[Any] = [None] * len(pairs)
        run = _LeafRun(leaf, votes, keys)
        if leaf.cacheable and cache is not None:
            keys[:] = [leaf.cache_key(c, leaf.swap_for(c)) for c in pairs]
            hits = cache.get_many(k for k in keys if k is not None)
            for i, key in enumerate(keys):
                if key in hits:
                    votes[i] = hits[key]
            run.cached = sum(v is not None for v in votes)
        elif leaf.cacheable:  # no cache: the pair's contents merge repeated pairs into one call (no sha256 needed)
            keys[:] = [(c.query, c.query_b, c.doc_a, c.doc_b) for c in pairs]
        runs.append(run)
    return runs


def _run_batches(runs: list[_LeafRun], pairs: list[Comparison], progress: bool) -> list[_LeafRun]:
    """Judges with a vectorised path vote on the whole set in large batches; returns the others."""
    from tqdm.auto import tqdm

    rest = []
    for run in runs:
        if run.judge.judge_batch(pairs[:0]) is None:
            rest.append(run)
            continue
        for start in tqdm(range(0, len(pairs), _BATCH), desc=f"judging ({run.judge.name})", disable=not progress):
            run.votes[start : start + _BATCH] = run.judge.judge_batch(pairs[start : start + _BATCH])
        run.called = len(pairs)
        run.bought = list(run.votes)
    return rest


def judge_pairs(
    data: Any,
    judge: Judge,
    degree: int = 8,
    seed: int = 0,
    cache: Any = None,
    concurrency: int = 64,
    max_pairs: int | None = None,
    progress: bool = True,
    dry_run: bool = False,
    combine: str | None = None,
    batch: bool = False,
    batch_poll_interval: float = 30.0,
    batch_timeout: float = 25 * 3600.0,
) -> JudgingResult:
    """Judge every comparison pair of a candidate set (or a pairs dataset) and return the preference set.

    Args:
        data: a candidate set (``query_id, query, doc_ids, docs``; the comparison graph is built per query) or a
            pairs dataset (``query_id, query, doc_a_id, doc_a, doc_b_id, doc_b`` [+ ``query_b_id, query_b``]).
        judge: any :class:`zelo_hf.judges.Judge`; an :class:`EnsembleJudge` keeps each member's vote.
        degree: comparisons per document (ZELO.md: 8); ignored for a pairs dataset.
        seed: seeds each query's graph (with its query_id).
        cache: a :class:`zelo_hf.cache.JudgmentCache` or a path to one: answered calls are never asked again.
        concurrency: calls in flight at most per judge (rate limits are per judge too, see
            ``LiteLLMJudge(rpm=, tpm=)``; an LLM judge lowers its own limit on timeouts and 429s).
        max_pairs: judge only the first ``max_pairs`` pairs (a warning says how many were left out).
        progress: show a progress bar.
        dry_run: spend nothing and write nothing (an existing cache is only read); the summary holds the estimated
            calls, tokens, dollars (online and batch) and seconds.
        combine: ``"mean"``/``"median"`` of the votes (default: the ensemble's own setting, else mean).
        batch: send the LLM judges' uncached pairs through the provider's batch API (OpenAI files + batches; half
            price, results within 24 h). Needs ``cache``: batch ids are stored there, so a rerun after a crash or
            ``batch_timeout`` polls the same batches (nothing is submitted twice). Failed and expired requests are
            failed votes with the reason; an unreadable answer is not re-asked inside a batch (the next run asks).
        batch_poll_interval, batch_timeout: seconds between polls, and before giving up polling for this run.

    Returns:
        :class:`JudgingResult` (``preferences, summary = ...``) with ``failed``: the pairs whose votes all failed.
    """
    from .cache import JudgmentCache

    started = time.perf_counter()
    pairs = _to_comparisons(data, degree, seed)
    if max_pairs is not None and len(pairs) > max_pairs:
        logger.warning("max_pairs=%d: judging %d of %d pairs.", max_pairs, max_pairs, len(pairs))
        pairs = pairs[:max_pairs]
    if concurrency < 1:
        raise ValueError(f"`concurrency` must be >= 1 (got concurrency={concurrency}): e.g. 64.")
    if batch and cache is None and not dry_run:
        raise ValueError("batch=True needs a judgment cache (got cache=None): pass cache=<path>; the batch ids are "
                         "stored there so a restart resumes polling instead of submitting again.")
    for leaf in judge.leaves():
        if isinstance(leaf, LiteLLMJudge):  # bad settings fail here, before anything is sent
            leaf.doc_token_budget()
            if batch and not dry_run:
                leaf.batch_model()
    owned = isinstance(cache, str | Path)  # opened here from a path: closed here (the WAL is folded back)
    if owned:  # a dry run writes nothing: it reads an existing cache, creates none
        cache = JudgmentCache(cache) if not dry_run else JudgmentCache(cache, readonly=True) if Path(cache).exists() \
            else None
    try:
        runs = _prepare_runs(judge, pairs, cache)
        if dry_run:
            return JudgingResult(None, _dry_run_summary(runs, pairs, concurrency), None, pairs)
        options = {"poll_interval": batch_poll_interval, "timeout": batch_timeout} if batch else None
        _run_all(runs, pairs, cache, concurrency, progress, options)
    finally:
        if owned and cache is not None:
            cache.close()
    combine = combine or (judge.combine if isinstance(judge, EnsembleJudge) else "mean")
    preferences, failed, probs = _assemble(pairs, runs, combine)
    summary = _summary(runs, pairs, probs, judge, degree, seed, time.perf_counter() - started, failed)
    return JudgingResult(preferences, summary, failed, pairs)


# ---------------------------------------------------------------- provider batch APIs (zelo judge --batch)

BATCH_LIMITS = (50_000, 200 * 1024 * 1024)  # OpenAI Batch API: requests and bytes per input file
_FINAL = ("completed", "failed", "expired", "cancelled")


async def _run_provider_batches(runs: list[_LeafRun], pairs: list[Comparison], cache, poll_interval: float,
                                timeout: float) -> None:
    """The missing votes of LLM judges through their provider's batch API (half price), judges side by side."""
    await asyncio.gather(*(_batch_judge(run, pairs, cache, poll_interval, timeout) for run in runs))
    await flush_litellm_logging()


async def _batch_judge(run: _LeafRun, pairs: list[Comparison], cache, poll_interval: float, timeout: float) -> None:
    """Resume this judge's open batches, submit the requests in none of them, poll, store every result."""
    judge = run.judge
    groups = {run.keys[idx[0]]: idx for idx in _call_groups(run)}
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
        line = judge.batch_line(c, swapped, key)
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
    uploaded = await judge.batch_api("acreate_file", file=("zelo-judge.jsonl", data), purpose="batch")
    batch = await judge.batch_api("acreate_batch", completion_window="24h", endpoint="/v1/chat/completions",
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
            batch = await judge.batch_api("aretrieve_batch", batch_id=batch_id)
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
        content = await judge.batch_api("afile_content", file_id=file_id)
        for raw in content.content.decode("utf-8").splitlines():
            line = json.loads(raw) if raw.strip() else {}
            if line.get("custom_id") in swapped:
                votes[line["custom_id"]] = judge.batch_vote(line, swapped[line["custom_id"]])
    for key, was_swapped in requests:
        if key not in votes:
            votes[key] = Vote(judge=judge.name, swapped=was_swapped,
                              error=f"batch {batch.id} ended {batch.status} without a result for this request")
    return votes


def _run_all(runs: list[_LeafRun], pairs: list[Comparison], cache, concurrency: int, progress: bool,
             batch: dict[str, float] | None) -> None:
    remaining = _run_batches(runs, pairs, progress)
    batched = [r for r in remaining if batch is not None and isinstance(r.judge, LiteLLMJudge)]
    online = [r for r in remaining if r not in batched]

    async def both() -> None:
        await asyncio.gather(_run_calls(online, pairs, cache, concurrency, progress),
                             _run_provider_batches(batched, pairs, cache, **batch) if batched else asyncio.sleep(0))

    coro = both()
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # no loop running: the normal case (scripts, the CLI)
        asyncio.run(coro)
    else:  # inside Jupyter / an async app: asyncio.run is not allowed, run the calls on a worker thread's loop
        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(asyncio.run, coro).result()


def _row(c: Comparison, prob: float | None, votes: list[Vote]) -> dict[str, Any]:
    return {"query_id": c.query_id, "query": c.query, "doc_a_id": c.doc_a_id, "doc_a": c.doc_a,
            "doc_b_id": c.doc_b_id, "doc_b": c.doc_b, "prob_a": prob, "votes": [v.to_dict() for v in votes],
            "query_b_id": c.query_b_id, "query_b": c.query_b}


def _assemble(pairs: list[Comparison], runs: list[_LeafRun], combine: str):
    from datasets import Dataset, Features, Value

    vote_features = {"judge": Value("string"), "raw_answer": Value("string"), "score": Value("float64"),
                     "prob_a": Value("float64"), "swapped": Value("bool"), "prompt_tokens": Value("int64"),
                     "completion_tokens": Value("int64"), "cost": Value("float64"), "latency": Value("float64"),
                     "error": Value("string")}
    cross = any(c.query_b is not None for c in pairs)
    columns = list(PAIR_COLUMNS) + ["prob_a", "votes"] + (list(CROSS_COLUMNS) if cross else [])
    features = Features({c: Value("float64") if c == "prob_a" else [vote_features] if c == "votes"
                         else Value("string") for c in columns})
    ok_rows, failed_rows, probs = [], [], []
    for i, c in enumerate(pairs):
        votes = [run.votes[i] for run in runs]
        prob = combine_votes(votes, combine)
        probs.append(prob)
        row = {k: v for k, v in _row(c, prob, votes).items() if k in columns}
        (ok_rows if prob is not None else failed_rows).append(row)
    def make(rows: list[dict[str, Any]]):
        return Dataset.from_dict({c: [r[c] for r in rows] for c in columns}, features=features)

    return make(ok_rows), make(failed_rows), probs


def _judge_summary(run: _LeafRun) -> dict[str, Any]:
    ok = np.array([v.ok for v in run.votes], dtype=bool)
    unique = list({id(v): v for v in run.votes}.values())  # a repeated pair shares one call: bill it once
    out = {
        "votes": int(ok.sum()), "failed_votes": int((~ok).sum()), "cached": run.cached, "calls": run.called,
        "requests": run.requests, "not_asked": run.not_asked,
        "prompt_tokens": sum(v.prompt_tokens for v in unique),
        "completion_tokens": sum(v.completion_tokens for v in unique),
        "cost": float(sum(v.cost for v in unique)), "cost_this_run": float(sum(v.cost for v in run.bought)),
    }
    stopped = getattr(run.judge, "stopped", None)
    return out | ({"stopped": stopped} if stopped else {}) | ({"batch": run.batch} if run.batch is not None else {})


def _summary(runs, pairs, probs, judge, degree, seed, seconds, failed) -> dict[str, Any]:
    from .raters import agreement_by_judge, intransitive_triangle_rate

    per_judge = {run.judge.name: _judge_summary(run) for run in runs}
    prob_arr = np.array([np.nan if p is None else p for p in probs], dtype=np.float64)
    names = [run.judge.name for run in runs for v in run.votes if v.ok]
    vote_p = [v.prob_a for run in runs for v in run.votes if v.ok]
    ref = [prob_arr[i] for run in runs for i, v in enumerate(run.votes) if v.ok]
    agreement = agreement_by_judge(names, np.array(vote_p), np.array(ref)) if len(runs) > 1 and vote_p else {}
    for name, value in agreement.items():
        per_judge[name]["agreement_with_ensemble"] = value
    judged = ~np.isnan(prob_arr)
    items: dict[tuple[str, str], int] = {}
    a = [items.setdefault((c.query_id, c.doc_a_id), len(items)) for c in pairs]
    b = [items.setdefault((c.query_b_id or c.query_id, c.doc_b_id), len(items)) for c in pairs]
    triangles = intransitive_triangle_rate(np.array(a)[judged], np.array(b)[judged], prob_arr[judged], len(items)) \
        if judged.any() else 0.0
    partial = sum(1 for i in range(len(pairs)) if judged[i] and any(not r.votes[i].ok for r in runs))
    return {
        "judge": judge.name, "judges": [r.judge.name for r in runs], "pairs": len(pairs), "judged": int(judged.sum()),
        "failed": int((~judged).sum()), "partially_failed": partial, "queries": len({c.query_id for c in pairs}),
        "degree": degree, "seed": seed, "calls": sum(r.called for r in runs), "cached": sum(r.cached for r in runs),
        "requests": sum(r.requests for r in runs),
        "stopped_judges": {name: j["stopped"] for name, j in per_judge.items() if "stopped" in j},
        "prompt_tokens": sum(j["prompt_tokens"] for j in per_judge.values()),
        "completion_tokens": sum(j["completion_tokens"] for j in per_judge.values()),
        "cost": float(sum(j["cost"] for j in per_judge.values())),
        "cost_this_run": float(sum(j["cost_this_run"] for j in per_judge.values())),
        "intransitive_triangle_rate": triangles, "seconds": seconds, "per_judge": per_judge,
        "failed_pairs": [{"query_id": r["query_id"], "doc_a_id": r["doc_a_id"], "doc_b_id": r["doc_b_id"],
                          "query_b_id": r.get("query_b_id"), "errors": [v["error"] for v in r["votes"]]}
                         for r in failed],
    }


def _dry_run_summary(runs: list[_LeafRun], pairs: list[Comparison], concurrency: int) -> dict[str, Any]:
    estimates = []
    for run in runs:
        missing = [pairs[i] for i, v in enumerate(run.votes) if v is None]
        unique = list({run.keys[i] or i: pairs[i] for i, v in enumerate(run.votes) if v is None}.values())
        est = run.judge.estimate(unique, concurrency=concurrency)
        est.update(cached=run.cached, pairs_missing=len(missing))
        estimates.append(est)
    seconds = [e["seconds"] for e in estimates if e["seconds"] is not None]
    return {"dry_run": True, "pairs": len(pairs), "queries": len({c.query_id for c in pairs}),
            "calls": sum(e["calls"] for e in estimates), "cached": sum(r.cached for r in runs),
            "prompt_tokens": sum(e["prompt_tokens"] for e in estimates),
            "completion_tokens": sum(e["completion_tokens"] for e in estimates),
            "cost": float(sum(e["cost"] for e in estimates)),
            "batch_cost": float(sum(e.get("batch_cost", e["cost"]) for e in estimates)),
            "seconds": max(seconds) if seconds else None,
            "per_judge": {e["judge"]: e for e in estimates}}


def _judge_descriptions(judge: Judge) -> list[dict[str, Any]]:
    out = []
    for leaf in judge.leaves():
        desc = {"name": leaf.name, "type": type(leaf).__name__}
        for attr in ("model", "answer_format", "prompt_version", "temperature", "noise_sd", "uniform_rate"):
            if hasattr(leaf, attr):
                desc[attr] = getattr(leaf, attr)
        out.append(desc)
    return out


def save_preference_set(
    result: JudgingResult,
    output_dir: str | Path,
    judge: Judge | None = None,
    push_to_hub: str | None = None,
    private: bool | None = None,
    source: str | None = None,
) -> Path:
    """Write the preference set (``data/train-*.parquet``), the failed pairs (``failed_pairs.jsonl``), the summary
    (``judging_summary.json``) and the card (``README.md``); push the folder to ``push_to_hub`` when given.

    The folder loads back with ``datasets.load_dataset(output_dir)``.
    """
    from .hub import push_folder, render_dataset_card, save_dataset_folder
    from .prompts import PROMPT_VERSION, SYSTEM_PROMPT, build_messages

    if result.preferences is None:
        raise ValueError("`result` is a dry run (no preferences): run judge_pairs with dry_run=False first.")
    summary = result.summary
    judges = _judge_descriptions(judge) if judge is not None else [{"name": n} for n in summary["judges"]]
    example = build_messages("{query}", "{document A}", "{document B}")[1]["content"]
    card = render_dataset_card(
        "preference_set.md",
        # No `configs:` block: datasets (5.2) keys its cache on that block's unresolved `data/train-*` pattern, so
        # two folders with the same name loaded each other's rows; the data/<split>-*.parquet layout is inferred.
        card_data={"tags": ["zelo", "reranking", "pairwise-preferences", "llm-as-a-judge"]},
        summary=summary, judges=judges, prompt_version=PROMPT_VERSION, system_prompt=SYSTEM_PROMPT,
        user_prompt=example, command=producing_command(), source=source,
        uses_llm=any("LiteLLM" in j.get("type", "") for j in judges),
    )
    out = save_dataset_folder(result.preferences, output_dir, card)
    with open(out / "failed_pairs.jsonl", "w", encoding="utf-8") as f:
        for row in result.failed or []:
            f.write(scrub_paths(redact(json.dumps(row, ensure_ascii=False))) + "\n")
    summary_text = scrub_paths(redact(json.dumps(summary, indent=2, default=float)))  # tracebacks name local files
    (out / "judging_summary.json").write_text(summary_text, encoding="utf-8")
    if push_to_hub:
        push_folder(out, push_to_hub, repo_type="dataset", private=private)
    return out


__all__ = ["judge_pairs", "build_pairs", "pairs_from_dataset", "save_preference_set", "JudgingResult"]
