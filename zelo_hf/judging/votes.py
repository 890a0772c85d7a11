"""Votes and comparisons: what a judge is asked (:class:`Comparison`) and what it answers (:class:`Vote`).

A vote whose call failed has ``error`` set and ``prob_a=None``: a failed call is a failed vote, never a tie.
:func:`combine_votes` turns several votes on one pair into one soft label (failed votes left out).
:func:`digest` is the one hash behind swap coins, simulated noise and cache keys (its bytes must never change:
cached answers are keyed on it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any

import numpy as np


@dataclass
class Vote:
    """One judge's answer on one pair, in the canonical (A, B) order whatever order the judge saw.

    ``score`` is the parsed answer in the *presented* order (first shown = Document A of the prompt);
    ``prob_a`` is P(A more relevant than B) after undoing the swap; ``swapped`` says B was shown first.
    ``cost`` sums every billed attempt (re-asked unreadable answers included). ``error`` set => ``prob_a`` is None.
    """

    judge: str
    raw_answer: str | None = None
    score: float | None = None
    prob_a: float | None = None
    swapped: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    latency: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.prob_a is not None

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _VOTE_FIELDS}  # dataclasses.asdict deep-copies: 20x slower

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Vote:
        return cls(**{k: v for k, v in data.items() if k in _VOTE_FIELDS})


_VOTE_FIELDS = tuple(f.name for f in fields(Vote))


@dataclass
class Comparison:
    """One pair to judge: ``doc_a`` vs ``doc_b`` for ``query`` (cross-query when ``query_b`` is set: B answers it).

    The ids travel with the texts through every judge (an ensemble included): the simulated judge reads only them.
    """

    query: str
    doc_a: str
    doc_b: str
    query_b: str | None = None
    query_id: str | None = None
    doc_a_id: str | None = None
    doc_b_id: str | None = None
    query_b_id: str | None = None


def combine_votes(votes: Sequence[Vote], combine: str = "mean") -> float | None:
    """One soft label from several votes (failed votes are left out); None when every vote failed."""
    if combine not in ("mean", "median"):
        raise ValueError(f"`combine` must be 'mean' or 'median' (got combine={combine!r}).")
    probs = [v.prob_a for v in votes if v.ok]
    if not probs:
        return None
    return float(np.mean(probs) if combine == "mean" else np.median(probs))


@lru_cache(maxsize=1 << 16)
def _json_text(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def digest(*parts: Any) -> bytes:
    """sha256 of ``json.dumps(parts)``, byte for byte (cache keys must not change), with each text's JSON encoding
    memoised: a document sits in ~degree pairs per judge, and encoding it again was the dry run's hot spot."""
    encoded = [_json_text(p) if isinstance(p, str) else json.dumps(p, ensure_ascii=False, default=str) for p in parts]
    return hashlib.sha256(("[" + ", ".join(encoded) + "]").encode("utf-8")).digest()
