"""Local judges: free, vectorised over a whole batch, never cached.

* :class:`SimulatedJudge` -- graded qrels + the ZELO.md noise model, deterministic per pair (offline tests, demos).
* :class:`PairwiseModelJudge` -- the distilled pairwise small model (``zelo_hf.modeling.scoring.load_pairwise_scorer``:
  a cross-encoder reading (query, A, B) or a bi-encoder judge).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..modeling.encoding import DEFAULT_MAX_QUERY_LENGTH
from .base import Judge
from .votes import Comparison, Vote, digest

LOCAL_CHUNK = 4096  # comparisons per vectorised call from judge_pairs


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

    chunk_size = LOCAL_CHUNK

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

    def _votes(self, comparisons: Sequence[Comparison]) -> list[Vote]:
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
        keys = [digest(self.seed, self.name, c.query_id, c.query_b_id, c.doc_a_id, c.doc_b_id) for c in comparisons]
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

    async def acompare_many(self, comparisons: Sequence[Comparison], concurrency: int = 64) -> list[Vote]:
        return self._votes(comparisons)

    def describe(self) -> dict[str, Any]:
        return super().describe() | {"noise_sd": self.noise_sd, "uniform_rate": self.uniform_rate}


class PairwiseModelJudge(Judge):
    """A judge backed by the local pairwise small model (ZELO.md step 4), batched on CPU or GPU.

    Args:
        model_path_or_scorer: a folder / Hub id of a trained pairwise judge (a cross-encoder or a bi-encoder, see
            ``zelo_hf.modeling.scoring.load_pairwise_scorer``), or a loaded scorer (anything with
            ``predict(queries, docs_a, docs_b, batch_size)``).
        batch_size: pairs per forward pass.
        max_length: tokens per (query, doc A, doc B) input, when loading a cross-encoder from a path.
        max_query_length: queries are cut to this many tokens (use the value the model was trained with).

    No swap coin is needed: ``PairwiseScorer.predict`` scores both orders and antisymmetrises, and a bi-encoder
    judge's logit is a difference of two scores.
    """

    chunk_size = LOCAL_CHUNK
    swap = False

    def __init__(self, model_path_or_scorer: Any, batch_size: int = 32, max_length: int | None = None,
                 name: str | None = None, max_query_length: int = DEFAULT_MAX_QUERY_LENGTH):
        if isinstance(model_path_or_scorer, str | os.PathLike):
            from ..modeling.scoring import load_pairwise_scorer

            self.scorer = load_pairwise_scorer(
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
        self._lock = threading.Lock()

    def _votes(self, comparisons: Sequence[Comparison]) -> list[Vote]:
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
        with self._lock:
            p = np.asarray(self.scorer.predict(queries, docs_a, docs_b, batch_size=self.batch_size), dtype=np.float64)
        latency = (time.perf_counter() - start) / len(comparisons)
        bad = ~np.isfinite(p)
        return [
            Vote(judge=self.name, score=None if b else float(2 * x - 1), prob_a=None if b else float(x),
                 swapped=False, latency=latency, error="non-finite model output" if b else None)
            for x, b in zip(p, bad)
        ]

    async def acompare_many(self, comparisons: Sequence[Comparison], concurrency: int = 64) -> list[Vote]:
        """On a worker thread (LLM calls of the same run keep flowing), one forward pass at a time."""
        return await asyncio.to_thread(self._votes, comparisons)

