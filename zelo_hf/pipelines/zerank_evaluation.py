"""zerank stages 8-9: every system on the same held-out queries and candidates (the first stage, random orderings,
the base model the way it was trained, each trained model over its seeds), the zembed card, and the push of every
artifact through the one upload call."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from sentence_transformers import SentenceTransformer

from .. import hub  # hub.push_folder looked up at call time: the one upload call, patched by offline tests
from ..data import load_retrieval_data
from ..evaluation.metrics import DEFAULT_METRICS, evaluate_run
from ..evaluation.reports import results_to_markdown, seed_row
from ..evaluation.reranking import evaluate_reranker, random_run
from ..hub import load_split, render_model_card
from ..modeling.loading import base_kind
from ..modeling.scoring import RerankerScorer
from ..plotting import plot_metrics, plot_score_distributions
from ..stages import read_marker, write_json_atomic
from ..utils import get_logger, producing_command, resolve_model_name
from .zerank_args import ZerankArguments
from .zerank_loop import loop_model_stage
from .zerank_training import scoring_lengths, seed_model_dir

logger = get_logger(__name__)


def stage_evaluation(args: ZerankArguments, training_args, model_args, output_dir: Path, stage_dir: Path):
    """Every system on the same held-out queries and candidates: the first stage, random orderings, the base model
    the way it was trained, and each trained model (mean and sd over its seeds)."""
    candidates = load_split(output_dir / "candidates", "eval")
    qrels = load_retrieval_data(args.eval_dataset_name or args.dataset_name, args.eval_split).qrels
    metrics = eval_metrics(args)
    lengths = scoring_lengths(args, training_args)
    first = evaluate_reranker(candidates, qrels, metrics=metrics, return_run=True)
    rows = [seed_row(args.first_stage, "first_stage", [first], qrels=qrels)]
    shuffles = [_with_run(random_run(candidates, s), qrels, metrics) for s in range(args.random_orderings)]
    if shuffles:
        rows.append(seed_row("random order", "random", shuffles, seeds=list(range(args.random_orderings)), qrels=qrels))
    if args.evaluate_base_model:
        rows.append(_base_row(args, model_args, output_dir, candidates, qrels, metrics, lengths))
    evaluate = (candidates, qrels, metrics, lengths)
    row, cross = trained_row(args, output_dir, "pointwise", MODEL_NAMES["pointwise"], *evaluate)
    rows.append(row)
    if args.zembed:
        rows.append(trained_row(args, output_dir, "zembed", MODEL_NAMES["zembed"], *evaluate)[0])
    if args.loop_pairs_per_query:
        added = read_marker(output_dir / "loop_preferences")["summary"]["loop_pairs"]
        name = f"{MODEL_NAMES[args.loop_stage_model]} + loop round (+{added} {args.loop_selection} pairs)"
        rows.append(trained_row(args, output_dir, loop_model_stage(args), name, *evaluate)[0])
    table = results_to_markdown(rows, columns=report_columns(args))
    (stage_dir / "results.md").write_text(table + "\n")
    if args.zembed:
        save_zembed_query_card(args, training_args, model_args, output_dir, table, len(candidates))
    write_json_atomic(stage_dir / "results.json", {"rows": rows, "metrics": list(metrics)})
    if args.plot:
        _plot(output_dir, stage_dir, rows, np.concatenate([list(r.values()) for r in cross[0]["run"].values()]))
    return {"rows": rows}


MODEL_NAMES = {"pointwise": "zELO reranker (cross-encoder, MSE)", "zembed": "zembed (query-side bi-encoder, listwise KL)"}


def trained_row(args, output_dir: Path, stage: str, name: str, candidates, qrels, metrics, lengths):
    """``(row, per-seed results)`` of the models of a training stage (``pointwise``, ``zembed``, ``loop_*``) over the
    seeds its marker lists: zembed's runs were written by its stage; a pointwise reranker scores the candidates here."""
    seeds = read_marker(output_dir / stage)["summary"]["seeds"]
    if stage.endswith("zembed"):
        results = [_with_run(_read_run(output_dir / stage / "runs" / f"seed-{s}.json"), qrels, metrics) for s in seeds]
    else:
        results = [evaluate_reranker(candidates, qrels, metrics=metrics, batch_size=10**9, return_run=True,
                                     scorer=RerankerScorer(str(seed_model_dir(output_dir / stage, seeds, seed)),
                                                           batch_size=args.eval_batch_size, **lengths))
                   for seed in seeds]
    return seed_row(name, "trained", results, seeds=seeds, qrels=qrels), results


def save_zembed_query_card(args, training_args, model_args, output_dir: Path, table: str, n_eval: int) -> None:
    """The zembed model's card (zelo_hf/templates/zembed_query.md) with the evaluation table of every system."""
    summary = read_marker(output_dir / "zembed")["summary"]
    seeds = summary["seeds"]
    base = model_args.model_name_or_path
    repo_id = "zembed"
    card_data = {"library_name": "sentence-transformers", "pipeline_tag": "sentence-similarity",
                 "tags": ["zelo", "zembed", "sentence-transformers", "feature-extraction"]}
    if base and "/" in str(base) and not Path(str(base)).exists():
        card_data["base_model"] = base
    card = render_model_card(
        "zembed_query.md", card_data=card_data, model_name=repo_id, repo_id=repo_id, base_model=base,
        teacher_temperature=args.zembed_teacher_temperature, temperature=0.05, dev_queries=summary["dev_queries"],
        train_queries=summary["train_queries"], seeds=seeds, label_set=args.label_set_repo_id or "a local label set",
        eval_description=f"Reranking the {args.first_stage} top-{args.eval_top_k} of {n_eval} held-out queries of "
        f"`{args.eval_dataset_name or args.dataset_name}` (`{args.eval_split}`); pytrec_eval, linear gains.",
        results_table=table, num_train_epochs=args.zembed_num_train_epochs, learning_rate=args.zembed_learning_rate,
        batch_size=args.zembed_batch_size, kept_epoch=summary["per_seed"][str(seeds[0])]["kept_epoch"],
        command=producing_command(),
    )
    card.save(str(output_dir / "zembed" / "model" / "README.md"))


def eval_metrics(args: ZerankArguments) -> tuple[str, ...]:
    """NDCG@10, recall at the depth actually reranked, MRR@10."""
    return ("ndcg@10", f"recall@{args.eval_top_k}", "mrr@10")


def report_columns(args: ZerankArguments) -> list[str]:
    return ["model", "kind", "ndcg@10", "ndcg@10_sd", "seeds", *eval_metrics(args)[1:], "pooled_auc", "queries"]


def _with_run(run, qrels, metrics) -> dict[str, Any]:

    return {**evaluate_run(run, qrels, metrics), "run": run}


def _read_run(path: Path) -> dict[str, dict[str, float]]:
    return json.loads(Path(path).read_text())


def _base_row(args, model_args, output_dir: Path, candidates, qrels, metrics, lengths) -> dict[str, Any]:

    base = resolve_model_name(model_args.model_name_or_path)
    kind = base_kind(base)
    if kind == "bi" and args.zembed and not args.zembed_model_name_or_path:
        result = _with_run(_read_run(output_dir / "zembed" / "runs" / "base.json"), qrels, metrics)
    elif kind == "bi":
        encoder = SentenceTransformer(base, device="cpu")
        result = evaluate_reranker(candidates, qrels, scorer=encoder, metrics=metrics, batch_size=args.eval_batch_size,
                                   return_run=True)
    else:
        scorer = RerankerScorer(base, batch_size=args.eval_batch_size, **lengths)
        result = evaluate_reranker(candidates, qrels, scorer=scorer, metrics=metrics, batch_size=10**9,
                                   return_run=True)
    names = {"bi": "bi-encoder cosine", "cross": "its own cross-encoder head", "causal": "zerank 'Yes' logit"}
    return seed_row(f"base model untrained ({names[kind]})", "base", [result], qrels=qrels)


def _plot(output_dir: Path, stage_dir: Path, rows: list[dict[str, Any]], reranker_scores) -> None:

    labels = load_split(output_dir / "calibration", "train")
    elo = np.concatenate([np.asarray(e, dtype=float) for e in labels["elo"]])
    calibrated = np.concatenate([np.asarray(s, dtype=float) for s in labels["score"]])
    panels = {"Elo (Thurstone) scores": elo, "calibrated scores": calibrated, "reranker scores (eval)": reranker_scores}
    plot_score_distributions(panels, stage_dir / "score_distributions.png", title="zELO score distributions")
    plot_metrics(rows, list(DEFAULT_METRICS), stage_dir / "metrics.png")


def push_targets(args: ZerankArguments, training_args, output_dir: Path) -> list[tuple[Path, str, str]]:
    """``(folder, repo_id, repo_type)`` of every artifact that has a Hub id (a warning names those that do not)."""
    targets = [
        (output_dir / "preferences", args.preference_set_repo_id, "dataset", "preference_set_repo_id"),
        (output_dir / "calibration", args.label_set_repo_id, "dataset", "label_set_repo_id"),
        (output_dir / "pointwise" / "model", training_args.hub_model_id, "model", "hub_model_id"),
    ]
    if args.pairwise_model_name_or_path:
        targets.append((output_dir / "pairwise" / "model", args.pairwise_model_repo_id, "model", "pairwise_model_repo_id"))
    missing = [name for _, repo, _, name in targets if not repo]
    if missing:
        logger.warning("push_to_hub is on but %s unset: those artifacts stay local.", ", ".join(missing))
    return [(folder, repo, kind) for folder, repo, kind, _ in targets if repo]


def stage_push(args: ZerankArguments, training_args, output_dir: Path, stage_dir: Path) -> dict[str, Any]:
    """Upload every artifact with its card through the one upload call, ``zelo_hf.hub.push_folder``."""
    pushed = {}
    for folder, repo_id, repo_type in push_targets(args, training_args, output_dir):
        pushed[repo_id] = hub.push_folder(folder, repo_id, repo_type=repo_type, private=training_args.hub_private_repo)
    return {"pushed": pushed}
