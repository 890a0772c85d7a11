"""The judge interface (:class:`Judge`) and the ensemble of judges (:class:`EnsembleJudge`).

A judge implements ONE method, :meth:`Judge.acompare_many`: a batch of :class:`Comparison` in, one :class:`Vote`
per comparison out, in input order, with every id carried through. Everything else is declared, never probed:

* ``chunk_size``: how many comparisons :func:`zelo_hf.judging.preferences.judge_pairs` sends per call -- 1 for a
  paid judge (each answer is cached the moment it arrives), thousands for a vectorised local one;
* :meth:`cache_identity`: the judge's settings in the cache key (None: nothing is cached, the call is free);
  the key itself is built in one place, :func:`zelo_hf.judging.cache.cache_key`;
* ``batchable``: the judge can go through a provider's batch API (``zelo judge --batch``);
* :meth:`check`, :meth:`estimate`, :meth:`describe`, :meth:`aflush`: validation before anything is sent, the
  dry-run bill, the card's description, and background work to finish before an event loop closes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from .votes import Comparison, Vote, combine_votes, digest


class Judge:
    """Base class of every judge; subclasses implement :meth:`acompare_many`."""

    name: str = "judge"
    seed: int = 0
    swap: bool = True
    chunk_size: int = 1  # comparisons per acompare_many call from judge_pairs
    batchable: bool = False  # can use a provider batch API (zelo judge --batch)
    combine: str = "mean"  # how judge_pairs combines the leaves' votes (an ensemble sets its own)
    requests_sent: int = 0  # HTTP requests sent so far (local judges send none)
    stopped: str | None = None  # why the judge gave up (see CircuitBreaker); None while it can still judge

    async def acompare_many(self, comparisons: Sequence[Comparison], concurrency: int = 64) -> list[Vote]:
        """Judge a batch, at most ``concurrency`` calls in flight; votes in input order."""
        raise NotImplementedError(f"{type(self).__name__} must implement acompare_many(comparisons, concurrency).")

    def compare_many(self, comparisons: Sequence[Comparison], concurrency: int = 64) -> list[Vote]:
        """Synchronous :meth:`acompare_many` (not from inside a running event loop)."""
        return asyncio.run(self._compare_and_flush(list(comparisons), concurrency))

    async def _compare_and_flush(self, comparisons: list[Comparison], concurrency: int) -> list[Vote]:
        votes = await self.acompare_many(comparisons, concurrency)
        await asyncio.gather(*(leaf.aflush() for leaf in self.leaves()))
        return votes

    def leaves(self) -> list[Judge]:
        """The single judges that cast votes (an ensemble lists its members)."""
        return [self]

    def swap_for(self, c: Comparison) -> bool:
        """Whether to show B first: a coin seeded by (seed, judge, query, documents), so reruns agree (and hit cache)."""
        if not self.swap:
            return False
        return bool(digest(self.seed, self.name, c.query, c.query_b, c.doc_a, c.doc_b)[0] & 1)

    def cache_identity(self) -> tuple | None:
        """The judge's part of a cache key (model, prompt version, answer settings); None: votes are not cached."""
        return None

    def documents_as_sent(self, c: Comparison) -> tuple[str, str]:
        """Documents A and B as the judge sees them (an LLM judge cuts them to its token budget)."""
        return c.doc_a, c.doc_b

    def check(self, batch: bool = False) -> None:
        """Fail on bad settings before anything is sent (``batch``: the provider batch path will be used)."""

    async def aflush(self) -> None:
        """Finish background work this judge left in the running event loop (litellm's logging callbacks)."""

    def describe(self) -> dict[str, Any]:
        """What the preference set's card says about this judge."""
        return {"name": self.name, "type": type(self).__name__}

    def estimate(self, comparisons: Sequence[Comparison], concurrency: int = 64, **kwargs: Any) -> dict[str, Any]:
        """Dry-run estimate of the bill and time (free, local judges: zero cost)."""
        return {"judge": self.name, "calls": len(comparisons), "prompt_tokens": 0, "completion_tokens": 0,
                "cost": 0.0, "batch_cost": 0.0, "seconds": None}


class EnsembleJudge(Judge):
    """Several judges on every pair -> one soft label (mean or median of the successful votes).

    Every vote is kept by :func:`zelo_hf.judging.preferences.judge_pairs` (it judges with the members). Here a
    pair's summary vote is failed only when all its votes failed; otherwise it is labelled from the successful ones.
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

    async def acompare_many(self, comparisons: Sequence[Comparison], concurrency: int = 64) -> list[Vote]:
        """Summary votes (combined label, summed tokens and cost); the members see the comparisons unchanged."""
        per_judge = await asyncio.gather(*(j.acompare_many(comparisons, concurrency) for j in self.judges))
        return [self._summary_vote(list(votes)) for votes in zip(*per_judge)]

    def _summary_vote(self, votes: list[Vote]) -> Vote:
        prob = combine_votes(votes, self.combine)
        errors = [f"{v.judge}: {v.error}" for v in votes if not v.ok]
        return Vote(
            judge=self.name, raw_answer=None, score=None if prob is None else 2 * prob - 1, prob_a=prob,
            prompt_tokens=sum(v.prompt_tokens for v in votes), completion_tokens=sum(v.completion_tokens for v in votes),
            cost=sum(v.cost for v in votes), latency=max(v.latency for v in votes),
            error=None if prob is not None else "; ".join(errors),
        )

    def estimate(self, comparisons: Sequence[Comparison], concurrency: int = 64, **kwargs: Any) -> dict[str, Any]:
        parts = [j.estimate(comparisons, concurrency, **kwargs) for j in self.judges]
        seconds = [p["seconds"] for p in parts if p["seconds"] is not None]
        return {"judge": self.name, "calls": sum(p["calls"] for p in parts),
                "prompt_tokens": sum(p["prompt_tokens"] for p in parts),
                "completion_tokens": sum(p["completion_tokens"] for p in parts),
                "cost": sum(p["cost"] for p in parts), "batch_cost": sum(p.get("batch_cost", 0.0) for p in parts),
                "seconds": max(seconds) if seconds else None, "judges": parts}
