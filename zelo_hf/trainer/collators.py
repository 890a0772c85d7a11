"""Data collators: tokenize raw text per batch (dynamic padding), truncating documents only.

The query is kept whole up to ``max_query_length`` tokens; the documents share what is left of ``max_length``.
Tokenizing in the collator (not in a ``datasets.map``) pads each batch to its own longest row and keeps the
datasets small and readable (text columns), as sentence-transformers' ``CrossEncoderDataCollator`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..modeling.encoding import encode_pairwise, encode_pointwise


def _column(features: list[dict[str, Any]], name: str, dtype=torch.float32) -> torch.Tensor:
    return torch.tensor([f[name] for f in features], dtype=dtype)


@dataclass
class PairwiseCollator:
    """``{"query", "doc_a", "doc_b", "prob_a"}`` rows -> model inputs + ``labels`` (= soft ``prob_a``)."""

    tokenizer: Any
    head: str
    max_length: int
    max_query_length: int = 64

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = encode_pairwise(
            self.tokenizer,
            [f["query"] for f in features],
            [f["doc_a"] for f in features],
            [f["doc_b"] for f in features],
            self.head,
            self.max_length,
            self.max_query_length,
        )
        batch = dict(batch)
        batch["labels"] = _column(features, "prob_a")
        return batch


@dataclass
class PointwiseCollator:
    """Flat ``{"query", "doc", "labels"(, "query_index")}`` rows -> model inputs + ``labels``.

    Grouped rows (contrastive mode: ``{"query", "docs": [positive, *negatives]}``) are flattened query-major, so
    the scores reshape to ``(n_groups, group_size)`` with the positive first; ``group_size`` is returned.
    """

    tokenizer: Any
    head: str
    max_length: int
    max_query_length: int = 64

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if "docs" in features[0]:
            return self._grouped(features)
        batch = dict(self._encode([f["query"] for f in features], [f["doc"] for f in features]))
        batch["labels"] = _column(features, "labels")
        if "query_index" in features[0]:
            batch["query_index"] = _column(features, "query_index", torch.long)
        return batch

    def _grouped(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        sizes = {len(f["docs"]) for f in features}
        if len(sizes) != 1:
            raise ValueError(f"contrastive groups must all have the same size (got sizes {sorted(sizes)}).")
        queries = [f["query"] for f in features for _ in f["docs"]]
        docs = [d for f in features for d in f["docs"]]
        batch = dict(self._encode(queries, docs))
        batch["group_size"] = torch.tensor(sizes.pop())
        return batch

    def _encode(self, queries: list[str], docs: list[str]):
        return encode_pointwise(self.tokenizer, queries, docs, self.head, self.max_length, self.max_query_length)
