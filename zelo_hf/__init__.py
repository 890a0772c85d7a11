"""zelo-hf: train rerankers and embedders with the zELO method, Hugging Face Hub-native.

Names are imported lazily so ``import zelo_hf`` (and the ``zelo`` CLI) stays fast and
``fit_scores`` works without importing torch.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

# litellm fetches its cost map from the network at import unless told otherwise (offline by default).
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # data and Hub
    "RetrievalData": "data",
    "load_retrieval_data": "data",
    "bundled_path": "data",
    "save_dataset_folder": "hub",
    "push_folder": "hub",
    # sparse comparison graphs
    "sample_cycle_graph": "graphs",
    "dense_graph": "graphs",
    "is_connected": "graphs",
    "graph_diameter": "graphs",
    "comparison_graph": "graphs",
    "candidate_pairs": "graphs",
    # Thurstone / Bradley-Terry fit and labeling
    "fit_scores": "thurstone",
    "fit_scores_batched": "thurstone",
    "FitResult": "thurstone",
    "fit_scores_flat": "thurstone",
    "fit_scores_grouped": "thurstone",
    "BatchFitResult": "thurstone",
    "objective": "thurstone",
    "thurstone_map": "labeling",
    "group_preferences": "grouping",
    "label_preferences": "labeling",
    "label_grouped": "labeling",
    "flatten_labels": "labeling",
    "save_label_set": "label_sets",
    "label_summary": "label_sets",
    # simulated judgments (tests, benchmarks, demos)
    "simulate_probs": "simulate",
    "latent_scores": "simulate",
    "simulate_queries": "simulate",
    # cross-query calibration
    "sample_cross_query_pairs": "calibration",
    "fit_query_offsets": "calibration",
    "calibrate_labels": "calibration",
    "OffsetResult": "calibration",
    # candidates, judges, preference sets, per-rater calibration
    "bm25_candidates": "candidates",
    "embedder_candidates": "candidates",
    "reciprocal_rank_fusion": "candidates",
    "LiteLLMJudge": "judging.litellm_judge",
    "EnsembleJudge": "judging.base",
    "SimulatedJudge": "judging.local",
    "PairwiseModelJudge": "judging.local",
    "Vote": "judging.votes",
    "Comparison": "judging.votes",
    "JudgmentCache": "judging.cache",
    "judge_pairs": "judging.preferences",
    "build_pairs": "judging.pairs",
    "save_preference_set": "judging.preference_set",
    "load_preference_set": "preference_tables",
    "PreferenceTables": "preference_tables",
    "build_judge": "judging.factory",
    "adaptive_judge": "adaptive",
    "select_pairs": "adaptive",
    "pair_utility": "adaptive",
    "fit_raters": "raters",
    "RaterFit": "raters",
    # evaluation
    "evaluate_run": "evaluation.metrics",
    "evaluate_reranker": "evaluation.reranking",
    "rerank_candidates": "evaluation.reranking",
    "first_stage_run": "evaluation.reranking",
    "make_mteb_task": "evaluation.mteb_tasks",
    "run_mteb": "evaluation.mteb_tasks",
    "results_to_markdown": "evaluation.reports",
    "card_eval_rows": "evaluation.reports",
    # recipes' library side
    "run_zerank": "pipelines.zerank",
    "ZerankArguments": "pipelines.zerank_args",
    "run_pairwise": "pipelines.pairwise",
    "PairwiseArguments": "pipelines.pairwise",
    "run_zembed": "pipelines.zembed",
    "DistillArguments": "pipelines.zembed",
    "StageRunner": "stages",
    "resolve_model_name": "utils",
    "load_split": "hub",
    "select_queries": "data",
    "plot_score_distributions": "plotting",
    # models and trainers
    "rerank": "modeling.scoring",
    "load_reranker": "modeling.loading",
    "score_pairs": "modeling.scoring",
    "RerankerScorer": "modeling.scoring",
    "ranking": "modeling.scoring",
    "PairwiseScorer": "modeling.scoring",
    "BiEncoderPairwiseScorer": "modeling.scoring",
    "load_pairwise_scorer": "modeling.scoring",
    "PairwiseCollator": "trainer",
    "PointwiseCollator": "trainer",
    "PairwiseConfig": "trainer",
    "PairwiseTrainer": "trainer",
    "PointwiseConfig": "trainer",
    "PointwiseTrainer": "trainer",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from .data import RetrievalData, bundled_path, load_retrieval_data  # noqa: F401


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'zelo_hf' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
