"""Any scorer as ``fn(queries, docs) -> scores``: a model path, a ``CrossEncoder``, a ``SentenceTransformer``, a
zELO reranker (scored by :class:`zelo_hf.modeling.scoring.RerankerScorer`), an object with ``predict`` or a callable."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..modeling.scoring import RerankerScorer

ScoreFn = Callable[[list[str], list[str]], "np.ndarray | Sequence[float]"]


def _is_bi_encoder_folder(path: Path) -> bool:
    """A sentence-transformers bi-encoder folder has a ``modules.json`` with a Pooling module."""
    modules = path / "modules.json"
    if not modules.exists():
        return False
    return any(t in m.get("type", "") for m in json.loads(modules.read_text()) for t in ("Pooling", "Router"))


def resolve_kind(model: str | Path, kind: str = "auto") -> str:
    """``kind`` checked; ``"auto"`` is ``"bi"`` for a folder with a sentence-transformers Pooling/Router module."""
    if kind not in ("auto", "cross", "bi"):
        raise ValueError(f"`kind` must be 'auto', 'cross' or 'bi' (got kind={kind!r}).")
    if kind == "auto":
        kind = "bi" if Path(model).is_dir() and _is_bi_encoder_folder(Path(model)) else "cross"
    return kind


def load_scorer(model: str | Path, kind: str = "auto", max_length: int | None = None, device: str | None = None):
    """Load a model path or Hub name as a ``CrossEncoder`` (``kind="cross"``) or ``SentenceTransformer`` (``"bi"``).

    ``kind="auto"`` picks the bi-encoder when the folder has a sentence-transformers Pooling module.
    """
    kind = resolve_kind(model, kind)
    from sentence_transformers import CrossEncoder, SentenceTransformer

    if kind == "bi":
        encoder = SentenceTransformer(str(model), device=device)
        if max_length is not None:
            encoder.max_seq_length = max_length
        return encoder
    return CrossEncoder(str(model), max_length=max_length, device=device)


def _cross_encoder_fn(model, batch_size: int) -> ScoreFn:
    def score(queries: list[str], docs: list[str]) -> np.ndarray:
        pairs = list(zip(queries, docs))
        # Identity activation: raw logits rank the same as sigmoid outputs and keep score resolution.
        import torch

        out = model.predict(
            pairs,
            batch_size=batch_size,
            show_progress_bar=False,
            activation_fn=torch.nn.Identity(),
            convert_to_numpy=True,
        )
        return np.asarray(out, dtype=np.float64).reshape(len(pairs), -1)[:, 0]

    return score


def _bi_encoder_fn(model, batch_size: int) -> ScoreFn:
    def score(queries: list[str], docs: list[str]) -> np.ndarray:
        # Encode each distinct text once: a candidate set repeats every query ~100 times.
        uq, q_idx = np.unique(np.asarray(queries, dtype=object), return_inverse=True)
        ud, d_idx = np.unique(np.asarray(docs, dtype=object), return_inverse=True)
        kwargs = {"batch_size": batch_size, "show_progress_bar": False, "normalize_embeddings": True}
        # encode_query / encode_document: an asymmetric (Router) model such as zembed routes each side to its tower
        q_emb = np.asarray(model.encode_query(list(uq), convert_to_numpy=True, **kwargs), dtype=np.float64)
        d_emb = np.asarray(model.encode_document(list(ud), convert_to_numpy=True, **kwargs), dtype=np.float64)
        return np.einsum("ij,ij->i", q_emb[q_idx], d_emb[d_idx])

    return score


def _callable_fn(fn: Callable, batch_size: int) -> ScoreFn:
    def score(queries: list[str], docs: list[str]) -> np.ndarray:
        out = []
        for start in range(0, len(queries), batch_size):
            chunk = np.asarray(fn(queries[start : start + batch_size], docs[start : start + batch_size]), dtype=float)
            if chunk.shape != (len(queries[start : start + batch_size]),):
                raise ValueError(
                    f"`scorer` must return one score per (query, doc) pair (got shape {chunk.shape} for "
                    f"{len(queries[start : start + batch_size])} pairs): return a 1-d list or array."
                )
            out.append(chunk)
        return np.concatenate(out) if out else np.zeros(0)

    return score


def as_score_fn(scorer: Any, batch_size: int = 32, kind: str = "auto", max_length: int | None = None) -> ScoreFn:
    """Turn a scorer into ``fn(queries, docs) -> scores`` over aligned lists of (query, document) pairs.

    ``scorer`` is a model path or name (see :func:`load_scorer`), a sentence-transformers ``CrossEncoder``
    (raw logits), a ``SentenceTransformer`` bi-encoder (cosine of normalised embeddings), the toolkit's reranker
    as a ``(model, tokenizer)`` tuple from ``zelo_hf.modeling.loading.load_reranker`` (scored by
    :class:`~zelo_hf.modeling.scoring.RerankerScorer` at ``max_length``, as training saw it), an object with a
    ``predict(pairs)`` method, or a callable
    ``(queries, docs) -> scores`` (called in chunks of ``batch_size``).
    """
    from sentence_transformers import CrossEncoder, SentenceTransformer

    if isinstance(scorer, (str, Path)):
        scorer = load_scorer(scorer, kind=kind, max_length=max_length)
    if isinstance(scorer, tuple) and len(scorer) == 2 and hasattr(scorer[0], "config"):
        return RerankerScorer(scorer[0], scorer[1], batch_size=batch_size, max_length=max_length)
    if isinstance(scorer, SentenceTransformer):
        return _bi_encoder_fn(scorer, batch_size)
    if isinstance(scorer, CrossEncoder):
        return _cross_encoder_fn(scorer, batch_size)
    if hasattr(scorer, "predict"):
        return _callable_fn(lambda qs, ds: scorer.predict(list(zip(qs, ds))), batch_size)
    if callable(scorer):
        return _callable_fn(scorer, batch_size)
    raise TypeError(
        f"`scorer` must be a model path, a CrossEncoder, a SentenceTransformer, an object with `predict(pairs)` or "
        f"a callable (queries, docs) -> scores (got {type(scorer).__name__})."
    )
