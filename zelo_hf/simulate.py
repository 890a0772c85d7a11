"""Simulated judges for tests, benchmarks and demos (ZELO.md, "the founders' observed judge noise").

A judge asked "is A more relevant than B?" behaves like ``sigmoid(s_A - s_B + N(0, noise_sd^2))``, and with
probability ``uniform_rate`` answers at random (a ``U(0, 1)`` probability). Latent scores span about +-2 so
differences span about +-4. Everything is vectorised over flat arrays, so many queries are simulated in one
call by giving global item indices (see :func:`simulate_queries`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from .graphs import comparison_graph

__all__ = ["latent_scores", "simulate_probs", "simulate_queries", "SimulatedQueries"]


def _rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def latent_scores(
    size: int | tuple[int, ...], seed: int | np.random.Generator | None = None, low: float = -2.0, high: float = 2.0
) -> np.ndarray:
    """True relevance scores ``U(low, high)`` (default +-2, so pairwise differences span about +-4)."""
    return _rng(seed).uniform(low, high, size=size)


def simulate_probs(
    latent: np.ndarray,
    edges: np.ndarray,
    rng: int | np.random.Generator | None = None,
    noise_sd: float = 0.2,
    uniform_rate: float = 0.02,
    n_votes: int = 1,
    binary: bool = False,
) -> np.ndarray:
    """Soft labels ``P(A beats B)`` for each edge ``(a, b)`` from simulated judges.

    Args:
        latent: true scores, indexed by the edge endpoints (a flat array over many queries works: use global indices).
        edges: ``(m, 2)`` integer pairs.
        rng: seed or generator.
        noise_sd: standard deviation of the Gaussian noise added to the score difference.
        uniform_rate: probability that a vote is a uniformly random probability.
        n_votes: independent votes per pair; the label is their mean (an ensemble of judges).
        binary: votes are 0/1 draws with the judge's probability instead of the probability itself.

    Returns:
        ``float64`` array of shape ``(m,)`` in ``[0, 1]``.
    """
    if n_votes < 1:
        raise ValueError(f"`n_votes` must be >= 1 (got n_votes={n_votes}): pass 1 for a single judge.")
    if not 0.0 <= uniform_rate <= 1.0:
        raise ValueError(f"`uniform_rate` must be in [0, 1] (got uniform_rate={uniform_rate}): e.g. 0.02.")
    rng = _rng(rng)
    latent = np.asarray(latent, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    diff = latent[edges[:, 0]] - latent[edges[:, 1]]
    shape = (n_votes, len(diff))
    votes = expit(diff + rng.normal(0.0, noise_sd, size=shape))
    random = rng.random(shape) < uniform_rate
    votes = np.where(random, rng.random(shape), votes)
    if binary:
        votes = (rng.random(shape) < votes).astype(np.float64)
    return votes.mean(axis=0)


@dataclass
class SimulatedQueries:
    """Many simulated queries in flat (global-index) form, the input layout of ``fit_scores_flat``.

    Attributes:
        latent: true scores of all items, query after query.
        sizes: number of items per query.
        edges: ``(m, 2)`` global item indices of the judged pairs.
        probs: ``(m,)`` soft labels ``P(A beats B)``.
        offsets: true per-query offsets added to ``latent`` (zeros unless requested).
    """

    latent: np.ndarray
    sizes: np.ndarray
    edges: np.ndarray
    probs: np.ndarray
    offsets: np.ndarray

    @property
    def starts(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)

    def query(self, q: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(latent, local edges, probs)`` of query ``q``."""
        start, size = self.starts[q], self.sizes[q]
        mask = (self.edges[:, 0] >= start) & (self.edges[:, 0] < start + size)
        return self.latent[start : start + size], self.edges[mask] - start, self.probs[mask]


def simulate_queries(
    n_queries: int,
    n_docs: int | np.ndarray = 100,
    degree: int = 8,
    seed: int | np.random.Generator | None = None,
    offset_sd: float = 0.0,
    **judge_kwargs,
) -> SimulatedQueries:
    """Simulate ``n_queries`` queries: latent scores ``U(-2, 2)``, a comparison graph each, judged pairs.

    ``n_docs`` is one size for all queries or an array of sizes. With ``offset_sd > 0`` each query's latent
    scores are shifted by a true offset ``N(0, offset_sd^2)`` (for cross-query calibration tests); within-query
    labels do not depend on it. ``judge_kwargs`` go to :func:`simulate_probs`.
    """
    rng = _rng(seed)
    sizes = np.broadcast_to(np.asarray(n_docs, dtype=np.int64), (n_queries,)).copy()
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    offsets = rng.normal(0.0, offset_sd, size=n_queries) if offset_sd > 0 else np.zeros(n_queries)
    latent = latent_scores(int(sizes.sum()), rng)
    edges = np.concatenate([comparison_graph(int(n), degree, rng) + s for n, s in zip(sizes, starts)])
    probs = simulate_probs(latent, edges, rng, **judge_kwargs)
    latent = latent + np.repeat(offsets, sizes)
    return SimulatedQueries(latent=latent, sizes=sizes, edges=edges, probs=probs, offsets=offsets)
