"""zerank stages 1-5 in pipeline order: candidates, preferences (graphs + judging), the pairwise small model and
the queries it judges, labels (the per-query fit) and cross-query calibration. Each ``stage_*`` writes its artifact
into ``stage_dir`` and returns the summary stored in its marker (``zelo_hf.stages``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datasets import DatasetDict

from ..adaptive import judge_candidates
from ..calibration import calibrate_label_set, sample_cross_query_pairs
from ..candidates import first_stage_candidates
from ..data import load_retrieval_data, plan_queries
from ..evaluation.metrics import cross_query_auc
from ..evaluation.reranking import label_run
from ..hub import has_split, load_dataset_any, load_split, save_dataset_folder
from ..judging.factory import build_judge, judge_cache_path
from ..judging.local import PairwiseModelJudge
from ..judging.preference_set import save_preference_set
from ..label_sets import label_summary, save_label_set
from ..labeling import label_preferences
from ..preference_tables import concat_preference_sets, load_preference_set
from ..stages import read_marker
from ..trainer import PairwiseConfig
from ..training import sub_config
from ..utils import get_logger, resolve_model_name
from .pairwise import save_pairwise_model, train_pairwise_model
from .zerank_args import ZerankArguments
from .zerank_training import training_summary

logger = get_logger(__name__)


def build_candidates(args: ZerankArguments, data, query_ids: list[str], top_k: int):
    """First-stage candidate set (design.md schema, with ``grades`` from the split's qrels) of ``query_ids``, by the
    body of ``zelo candidates``."""
    model = resolve_model_name(args.first_stage_model) if args.first_stage != "bm25" else None
    return first_stage_candidates(data, args.first_stage, k=top_k, query_ids=query_ids, model=model)


def settings_judge(args: ZerankArguments):
    """The judge of the settings, from the one factory (``zelo_hf.judging.factory.build_judge``)."""
    specs = [{"model": "simulated", "noise_sd": args.simulated_noise}] if args.judge == "simulated" else args.judge_models
    qrels = load_retrieval_data(args.dataset_name, args.dataset_split).qrels
    return build_judge(specs, qrels=qrels, seed=args.query_seed)


def stage_candidates(args: ZerankArguments, stage_dir: Path) -> dict[str, Any]:
    """Candidate sets of the judged, pairwise-judged and evaluation queries (splits train / pairwise / eval)."""
    train_data = load_retrieval_data(args.dataset_name, args.dataset_split)
    eval_data = load_retrieval_data(args.eval_dataset_name or args.dataset_name, args.eval_split)
    plan = plan_queries(args, train_data, eval_data)
    splits = {"train": build_candidates(args, train_data, plan.train, args.top_k)}
    if plan.pairwise:
        splits["pairwise"] = build_candidates(args, train_data, plan.pairwise, args.top_k)
    splits["eval"] = build_candidates(args, eval_data, plan.eval, args.eval_top_k)
    # an intermediate artifact (not pushed): no card
    save_dataset_folder(DatasetDict(splits), stage_dir)
    return {name: len(ds) for name, ds in splits.items()}


def stage_preferences(args: ZerankArguments, output_dir: Path, stage_dir: Path, split: str = "train", judge=None):
    """Judge the comparison graphs of one candidate split and write the preference set (parquet + card)."""
    candidates = load_split(output_dir / "candidates", split)
    if judge is None:
        judge = settings_judge(args)
    cache = judge_cache_path(args.judge_cache, stage_dir)
    result = judge_candidates(candidates, judge, rounds=args.judge_rounds, budget=args.judge_budget,
                              first_degree=args.judge_first_degree, degree=args.graph_degree, seed=args.query_seed,
                              cache=cache, concurrency=args.judge_max_concurrency)  # the body of `zelo judge`
    save_preference_set(result, stage_dir, judge=judge, source=args.dataset_name)
    raise_if_stopped(result.summary)
    return brief_summary(result.summary)


def raise_if_stopped(summary: dict[str, Any]) -> None:
    """Fail the stage when a judge stopped early (a dead key, a stalled provider): its failed pairs are recorded,
    nothing downstream may use them."""
    stopped = summary.get("stopped_judges")
    if stopped:
        raise RuntimeError(f"judging stopped early for {sorted(stopped)}: {stopped}. Fix the cause, then rerun the same "
                           "command: answered pairs are cached and re-bill nothing.")


def brief_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """The scalar entries of a judging summary (pair counts, tokens, dollars) for the stage marker."""
    return {k: v for k, v in summary.items() if isinstance(v, (int, float, str, bool)) or v is None}


def stage_pairwise_model(args: ZerankArguments, training_args, output_dir: Path, stage_dir: Path) -> dict[str, Any]:
    """Train the pairwise small model on the judged preferences (every process takes part)."""
    config = sub_config(
        training_args,
        PairwiseConfig,
        stage_dir / "trainer",
        num_train_epochs=args.pairwise_num_train_epochs,
        learning_rate=args.pairwise_learning_rate,
        per_device_train_batch_size=args.pairwise_per_device_train_batch_size,
        max_length=args.pairwise_max_length,
        hub_model_id=args.pairwise_model_repo_id,
        architecture=args.pairwise_architecture,
        **{name: value for name, value in (("temperature", args.pairwise_temperature),
                                           ("pair_weighting", args.pairwise_pair_weighting)) if value is not None},
    )
    run = train_pairwise_model(load_preference_set(output_dir / "preferences"),
                               resolve_model_name(args.pairwise_model_name_or_path), config, None,
                               args.pairwise_eval_query_fraction, args.query_seed + 4,
                               dataset_name=args.preference_set_repo_id,
                               dev_fraction=args.dev_query_fraction)  # the body of `zelo pairwise`
    save_pairwise_model(run, stage_dir / "model", args.preference_set_repo_id)  # the card shows both evaluations
    return {"rows": run.train_rows, "held_out_rows": run.eval_rows, "agreement": run.after.get("eval_agreement"),
            "base_agreement": run.before.get("base_agreement"),
            "confident_pairs": run.after.get("eval_confident_pairs"), **training_summary(run.trainer, run.result)}


def check_pairwise_agreement(summary: dict[str, Any], threshold: float) -> None:
    """Refuse to let a pairwise model judge queries when its held-out agreement with the judges is too low (also when
    it could not be measured); ``threshold`` 0 turns the check off, with a warning."""
    agreement = summary.get("agreement")
    if threshold <= 0:
        logger.warning("pairwise_min_agreement=0: the pairwise model judges queries whatever its agreement (%s).",
                       agreement)
        return
    if agreement is None or not agreement >= threshold:
        raise ValueError(
            f"the pairwise model's held-out agreement with the judges is {agreement} on "
            f"{summary.get('confident_pairs')} confident pairs (|p - 0.5| >= 0.3; base model: "
            f"{summary.get('base_agreement')}), below pairwise_min_agreement={threshold}: it would label training "
            "data near chance. Train it longer (pairwise_num_train_epochs, pairwise_learning_rate), judge more "
            "queries with the LLMs, or lower pairwise_min_agreement if you accept it."
        )


def stage_pairwise_preferences(
    args: ZerankArguments, training_args, output_dir: Path, stage_dir: Path
) -> dict[str, Any]:
    """The pairwise model judges the graphs of the further queries (ZELO.md step 4: ~1000x cheaper than the LLMs)."""
    check_pairwise_agreement(read_marker(output_dir / "pairwise")["summary"], args.pairwise_min_agreement)
    judge = PairwiseModelJudge(
        str(output_dir / "pairwise" / "model"), batch_size=args.eval_batch_size, max_length=args.pairwise_max_length,
        max_query_length=training_args.max_query_length,  # as the pairwise model was trained
    )
    return stage_preferences(args, output_dir, stage_dir, split="pairwise", judge=judge)


def concat_preferences(output_dir: Path, extra: tuple[str, ...] = ()):
    """The LLM-judged preferences plus, when the pairwise stage ran, the pairwise-model-judged ones, plus the
    preference sets of the ``extra`` stage folders (the reranker-in-the-loop round's): ``PreferenceTables`` (ids +
    each text once) for ``label_preferences``, or, with a stage folder of texts inline, the joined rows."""
    names = ["preferences", *(n for n in ("pairwise_preferences", *extra) if has_split(output_dir / n, "train"))]
    return concat_preference_sets([load_preference_set(output_dir / name, join=False) for name in names])


def stage_labels(args: ZerankArguments, output_dir: Path, stage_dir: Path, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """Per-query Thurstone (or Bradley-Terry) fit of all preferences (and those of the ``extra`` stages) -> label set
    (parquet + card)."""
    labels = label_preferences(
        concat_preferences(output_dir, extra), model=args.link, output_dir=stage_dir,
        source=args.preference_set_repo_id, degree=args.graph_degree,
    )
    return label_summary(labels)


def stage_calibration(args: ZerankArguments, output_dir: Path, stage_dir: Path, labels_dir: str = "labels",
                      pairs_from: str | None = None) -> dict[str, Any]:
    """Cross-query comparisons (judged by the judge) -> per-query offsets -> calibrated, comparable scores.

    ``labels_dir`` is the label set calibrated; the cross-query pairs are drawn from the within-query scores of
    ``pairs_from`` (default: the same label set). A later round recalibrates its refitted labels with the first
    round's pairs (``pairs_from="labels"``): the same pairs, answered from the judgment cache, bill nothing.
    """
    labels = load_split(output_dir / labels_dir, "train")
    card = {"source": args.preference_set_repo_id, "degree": args.graph_degree,
            "pretty_name": "zELO label set (calibrated)"}
    if args.calibration_cycles <= 0:
        logger.warning("calibration_cycles=0: scores are not calibrated across queries (offset 0, score = elo).")
        calibrated = labels.map(_zero_offset, desc="No calibration")
        save_label_set(calibrated, stage_dir, model=args.link, calibration=None, **card)
        return {**label_summary(calibrated), **label_calibration(calibrated, args)}
    drawn_from = load_split(output_dir / pairs_from, "train") if pairs_from else labels
    pairs = sample_cross_query_pairs(drawn_from, n_cycles=args.calibration_cycles, seed=args.query_seed)
    cache = judge_cache_path(args.judge_cache, output_dir / "calibration")  # one cache for every calibration round
    result = judge_candidates(pairs, settings_judge(args), cache=cache, concurrency=args.judge_max_concurrency)
    anchors = load_dataset_any(args.calibration_anchors) if args.calibration_anchors else None
    info = {"cross_pairs": len(result.preferences), **brief_summary(result.summary)}
    calibrated, fit = calibrate_label_set(labels, result.preferences, stage_dir, anchors=anchors, model=args.link,
                                          details=info, **card)  # the body of `zelo calibrate`
    info["connected"] = bool(fit.connected)
    return {**label_summary(calibrated), **info, **label_calibration(calibrated, args)}


def label_calibration(labels, args: ZerankArguments) -> dict[str, Any]:
    """Pooled AUC (one global threshold across queries) of the uncalibrated ``elo`` and the calibrated ``score``
    against the judged queries' qrels, when the split has them (the simulated judge's case; LLM-judged queries
    usually have none)."""
    qrels = load_retrieval_data(args.dataset_name, args.dataset_split).qrels
    judged = {str(q): qrels[str(q)] for q in labels["query_id"] if str(q) in qrels}
    if len(judged) < len(labels) or "score" not in labels.column_names:
        return {}
    try:
        return {"pooled_auc_elo": cross_query_auc(label_run(labels, "elo"), judged),
                "pooled_auc_calibrated": cross_query_auc(label_run(labels, "score"), judged)}
    except ValueError:  # no relevant (or no non-relevant) labelled document: nothing to measure
        return {}


def _zero_offset(row: dict) -> dict:
    return {"offset": 0.0, "score": list(row["elo"])}
