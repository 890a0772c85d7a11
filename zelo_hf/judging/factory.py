"""The one way to build a judge from settings (:func:`build_judge`, used by ``zelo judge`` and the recipes) and
the one default place for its judgment cache (:func:`judge_cache_path`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .base import EnsembleJudge, Judge
from .litellm_judge import LiteLLMJudge
from .local import PairwiseModelJudge, SimulatedJudge


def build_judge(specs: Sequence[str | dict[str, Any]], qrels: dict | None = None, seed: int = 0,
                combine: str = "mean", llm_defaults: dict[str, Any] | None = None) -> Judge:
    """The judge of ``specs`` (see :func:`judge_from_config`): one spec -> that judge; several -> an ensemble (the
    paper's GPT + Claude + Gemini) combined by ``combine``.

    ``llm_defaults`` (e.g. ``api_base``, ``rpm``, ``timeout``; None values ignored) are the settings of LLM judges
    given as plain model strings; a mapping spec carries its own.
    """
    if isinstance(specs, str | dict):
        specs = [specs]
    if not specs:
        raise ValueError("no judge given (got an empty list): pass e.g. ['simulated'] or ['openai/gpt-4.1-mini'].")
    defaults = {k: v for k, v in (llm_defaults or {}).items() if v is not None}
    judges = []
    for spec in specs:
        if isinstance(spec, str) and spec != "simulated" and not spec.startswith("pairwise:"):
            spec = {"model": spec, **defaults}
        judges.append(judge_from_config(spec, seed=seed, qrels=qrels))
    return judges[0] if len(judges) == 1 else EnsembleJudge(judges, combine=combine)


def judge_cache_path(cache: str | Path | None, output_dir: str | Path) -> Path:
    """``cache`` when given, else ``<output_dir>.judgments.sqlite``: next to the folder the judged pairs are written
    to, never inside it (the folder is replaced on a rerun and pushed to the Hub; the cache is neither)."""
    return Path(cache) if cache else Path(f"{str(output_dir).rstrip('/')}.judgments.sqlite")


def judge_from_config(spec: str | dict[str, Any], seed: int = 0, qrels: dict | None = None) -> Judge:
    """A judge from a CLI/YAML spec: ``"simulated"``, ``"pairwise:<path>"``, a litellm model string, or a dict
    ``{model: ..., api_base: ..., rpm: ..., tpm: ..., ...}`` of :class:`LiteLLMJudge` (or ``{type: simulated, ...}``).
    """
    if isinstance(spec, str):
        spec = {"model": spec}
    spec = dict(spec)
    kind = spec.pop("type", None) or ("simulated" if spec.get("model") == "simulated" else None)
    if kind == "simulated":
        spec.pop("model", None)
        if not qrels:
            raise ValueError("the simulated judge needs graded qrels: pass --data <dataset> or candidates with `grades`.")
        return SimulatedJudge(qrels, seed=spec.pop("seed", seed), **spec)
    model = spec.pop("model", None)
    if not model:
        raise ValueError(f"a judge spec needs `model` (got {spec!r}): e.g. {{model: openai/gpt-4.1-mini, rpm: 500}}.")
    if kind == "pairwise" or model.startswith("pairwise:"):
        return PairwiseModelJudge(model.split(":", 1)[1] if model.startswith("pairwise:") else model, **spec)
    if isinstance(spec.get("retry_wait"), list):
        spec["retry_wait"] = tuple(spec["retry_wait"])
    if isinstance(spec.get("cost_per_token"), list):
        spec["cost_per_token"] = tuple(spec["cost_per_token"])
    return LiteLLMJudge(model, seed=spec.pop("seed", seed), **spec)

