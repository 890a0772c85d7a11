"""Trainers for zELO models, on TRL's layout: a config/trainer pair of files per model (the pairwise judge distiller,
the pointwise reranker, the zembed query tower) over ``base_config`` (``BaseConfig``, ``RerankerConfig``) and
``base_trainer`` (``RerankerTrainer``); ``losses`` (pure losses and the ``loss_type`` tables), ``metrics``,
``collators`` and ``lora`` (the one LoRA path, ``get_lora_config``)."""

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
