"""Preference sets: candidates -> sparse comparison graphs -> judged pairs (ZELO.md steps 2-3).

:func:`judge_pairs` builds each query's comparison graph over its candidates (or takes a pre-built pairs dataset,
e.g. cross-query pairs), sends every pair to every judge (through the cache, with a concurrency limit), and returns
the flat preference set -- one row per pair, the soft label ``prob_a`` and every vote -- plus a summary (counts,
tokens, dollars, per-judge agreement, intransitive triangles). A pair whose votes all failed is *not* in the
preference set: it is listed in ``result.failed`` and in the summary, never written as a tie.
The set is assembled and saved by :mod:`zelo_hf.judging.preference_set`.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..utils import get_logger
from .base import Judge
from .batch import run_provider_batches
from .cache import JudgmentCache, call_keys
from .pairs import to_comparisons
from .preference_set import assemble, dry_run_summary, summary_of
from .votes import Comparison, Vote, combine_votes

logger = get_logger(__name__)


@dataclass
class JudgingResult:
    """What :func:`judge_pairs` returns; unpacks as ``preferences, summary = judge_pairs(...)``."""

    preferences: Any  # datasets.Dataset (None for a dry run)
    summary: dict[str, Any]
    failed: Any = None  # datasets.Dataset of pairs whose votes all failed (None for a dry run)
    pairs: list[Comparison] = field(default_factory=list, repr=False)

    def __iter__(self):
        return iter((self.preferences, self.summary))


@dataclass
class LeafRun:
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

    def call_groups(self) -> list[list[int]]:
        """Pair indices still to judge, grouped by key (a repeated pair is asked once)."""
        groups: dict[Any, list[int]] = {}
        for i, vote in enumerate(self.votes):
            if vote is None:
                groups.setdefault(self.keys[i] if self.keys[i] is not None else ("pair", i), []).append(i)
        return list(groups.values())


def _prepare_runs(judge: Judge, pairs: list[Comparison], cache) -> list[LeafRun]:
    """One run per leaf judge, its cached votes already in place."""
    runs = []
    for leaf in judge.leaves():
        keys = call_keys(leaf, pairs, cached=cache is not None)
        run = LeafRun(leaf, [None] * len(pairs), keys)
        if cache is not None and leaf.cache_identity() is not None:
            hits = cache.get_many(k for k in keys if k is not None)
            run.votes = [hits.get(k) for k in keys]
            run.cached = sum(v is not None for v in run.votes)
        runs.append(run)
    return runs


async def _run_calls(runs: list[LeafRun], pairs: list[Comparison], cache, concurrency: int, progress: bool) -> None:
    """Every missing vote of every judge, each judge through its own pool of workers (so one judge slowed by its
    rate limit, its adaptive concurrency or a pause never holds the others' workers); each call sends
    ``judge.chunk_size`` pairs and its answers are cached at once. Once a judge stops (``judge.stopped``) its
    remaining pairs fail without a request."""
    from tqdm.auto import tqdm

    work = [(run, run.call_groups()) for run in runs]
    total = sum(len(groups) for _, groups in work)
    if not total:
        return
    bar = tqdm(total=total, desc="judging", disable=not progress, unit="call")

    async def worker(run: LeafRun, todo) -> None:
        while chunk := list(itertools.islice(todo, run.judge.chunk_size)):  # a shared iterator: each call taken once
            votes = await _call(run, [pairs[idx[0]] for idx in chunk], cache, [run.keys[idx[0]] for idx in chunk])
            for idx, vote in zip(chunk, votes):
                for i in idx:
                    run.votes[i] = vote
            bar.update(len(chunk))

    def workers(run: LeafRun, groups: list) -> int:
        return min(concurrency, -(-len(groups) // max(run.judge.chunk_size, 1)))

    before = [run.judge.requests_sent for run in runs]
    try:
        await asyncio.gather(*(worker(run, todo) for run, groups in work for todo in [iter(groups)]
                               for _ in range(workers(run, groups))))
    finally:
        bar.close()
        for run, start in zip(runs, before):
            run.requests += run.judge.requests_sent - start


async def _call(run: LeafRun, chunk: list[Comparison], cache, keys: list[Any]) -> list[Vote]:
    stopped = run.judge.stopped
    if stopped:
        run.not_asked += len(chunk)
        return [Vote(judge=run.judge.name, error=f"not asked: {stopped}"[:500]) for _ in chunk]
    votes = await run.judge.acompare_many(chunk)
    if cache is not None:
        cache.put_many([(key, vote) for key, vote in zip(keys, votes) if key is not None])
    run.called += len(chunk)
    run.bought += votes
    return votes


def _run_all(runs: list[LeafRun], pairs: list[Comparison], cache, concurrency: int, progress: bool,
             batch: dict[str, float] | None) -> None:
    """Online calls and provider batches side by side, in one event loop (a worker thread's inside Jupyter)."""
    batched = [r for r in runs if batch is not None and r.judge.batchable]
    online = [r for r in runs if r not in batched]

    async def both() -> None:
        await asyncio.gather(_run_calls(online, pairs, cache, concurrency, progress),
                             run_provider_batches(batched, pairs, cache, **batch) if batched else asyncio.sleep(0))
        for run in runs:  # one at a time: litellm's logging queue is global
            await run.judge.aflush()

    coro = both()
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # no loop running: the normal case (scripts, the CLI)
        asyncio.run(coro)
    else:  # inside Jupyter / an async app: asyncio.run is not allowed, run the calls on a worker thread's loop
        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(asyncio.run, coro).result()


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
        judge: any :class:`zelo_hf.judging.base.Judge`; an :class:`EnsembleJudge` keeps each member's vote.
        degree: comparisons per document (ZELO.md: 8); ignored for a pairs dataset.
        seed: seeds each query's graph (with its query_id).
        cache: a :class:`zelo_hf.judging.cache.JudgmentCache` or a path to one: answered calls are never asked again.
        concurrency: calls in flight at most per judge (rate limits are per judge too, see
            ``LiteLLMJudge(rpm=, tpm=)``; an LLM judge lowers its own limit on timeouts and 429s).
        max_pairs: judge only the first ``max_pairs`` pairs (a warning says how many were left out).
        progress: show a progress bar.
        dry_run: spend nothing and write nothing (an existing cache is only read); the summary holds the estimated
            calls, tokens, dollars (online and batch) and seconds.
        combine: ``"mean"``/``"median"`` of the votes (default: the ensemble's own setting, else mean).
        batch: send the LLM judges' uncached pairs through the provider's batch API (OpenAI files + batches or
            Anthropic Message Batches; half price, results within 24 h). Needs ``cache``: batch ids are stored there, so a rerun after a crash or
            ``batch_timeout`` polls the same batches (nothing is submitted twice). Failed and expired requests are
            failed votes with the reason; an unreadable answer is not re-asked inside a batch (the next run asks).
        batch_poll_interval, batch_timeout: seconds between polls, and before giving up polling for this run.

    Returns:
        :class:`JudgingResult` (``preferences, summary = ...``) with ``failed``: the pairs whose votes all failed.
    """
    started = time.perf_counter()
    pairs = to_comparisons(data, degree, seed)
    if max_pairs is not None and len(pairs) > max_pairs:
        logger.warning("max_pairs=%d: judging %d of %d pairs.", max_pairs, max_pairs, len(pairs))
        pairs = pairs[:max_pairs]
    if concurrency < 1:
        raise ValueError(f"`concurrency` must be >= 1 (got concurrency={concurrency}): e.g. 64.")
    if batch and cache is None and not dry_run:
        raise ValueError("batch=True needs a judgment cache (got cache=None): pass cache=<path>; the batch ids are "
                         "stored there so a restart resumes polling instead of submitting again.")
    combine = combine or judge.combine
    combine_votes([], combine)  # a bad `combine` fails here, not after the judging was paid for
    for leaf in judge.leaves():  # bad settings fail here, before anything is sent
        leaf.check(batch=batch and not dry_run)
    owned = isinstance(cache, str | Path)  # opened here from a path: closed here (the WAL is folded back)
    if owned:  # a dry run writes nothing: it reads an existing cache, creates none
        cache = JudgmentCache(cache) if not dry_run else JudgmentCache(cache, readonly=True) if Path(cache).exists() \
            else None
    try:
        runs = _prepare_runs(judge, pairs, cache)
        if dry_run:
            return JudgingResult(None, dry_run_summary(runs, pairs, concurrency), None, pairs)
        options = {"poll_interval": batch_poll_interval, "timeout": batch_timeout} if batch else None
        _run_all(runs, pairs, cache, concurrency, progress, options)
    finally:
        if owned and cache is not None:
            cache.close()
    preferences, failed, probs = assemble(pairs, runs, combine)
    summary = summary_of(runs, pairs, probs, judge, degree, seed, time.perf_counter() - started, failed)
    return JudgingResult(preferences, summary, failed, pairs)


