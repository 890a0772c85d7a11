"""Trainers for zELO models: the pairwise judge distiller and the pointwise reranker (TRL-style pairs of files)."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BaseConfig": "base_config",
    "RerankerConfig": "base_config",
    "RerankerTrainer": "base_trainer",
    "get_lora_config": "lora",
    "PairwiseConfig": "pairwise_config",
    "PairwiseTrainer": "pairwise_trainer",
    "PointwiseConfig": "pointwise_config",
    "PointwiseTrainer": "pointwise_trainer",
    "ZembedConfig": "zembed_config",
    "ZembedTrainer": "zembed_trainer",
    "DocumentIndex": "zembed_trainer",
    "PairwiseCollator": "collators",
    "PointwiseCollator": "collators",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'zelo_hf.trainer' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value
