"""zerank's reranker-in-the-loop round (issue #13; the pair choice is ``zelo_hf.loop``): the first trained model scores
the training queries' candidates, the pairs where it and the labels disagree at the top go to the judges, and the
labels are refit, recalibrated and the model retrained on them. Its stages, after the first training:

* ``loop_preferences``: the chosen pairs, judged (through the same judgment cache) -> a preference set;
* ``loop_labels``: the per-query fit of every preference so far (first round + pairwise model + loop);
* ``loop_calibration``: the refit labels' offsets from the first round's cross-query pairs (drawn from the first
  labels, so the same pairs: answered from the cache, billed once);
* ``loop_zembed`` or ``loop_pointwise``: the loop model retrained on them, with the same seeds and dev queries.
"""

from __future__ import annotations

from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

from sentence_transformers import SentenceTransformer

from ..hub import load_split
from ..judging.factory import judge_cache_path
from ..judging.preference_set import save_preference_set
from ..judging.preferences import judge_pairs
from ..loop import judged_pairs, loop_pairs
from ..modeling.scoring import RerankerScorer
from ..preference_tables import pair_rows
from ..stages import StageRunner
from .zembed import teacher_scores
from .zerank_args import ZerankArguments
from .zerank_stages import (
    brief_summary,
    concat_preferences,
    raise_if_stopped,
    settings_judge,
    stage_calibration,
    stage_labels,
)
from .zerank_training import document_index, scoring_lengths, stage_pointwise, stage_zembed

LOOP_SETTINGS = ("loop_pairs_per_query", "loop_top_k", "loop_selection", "loop_stage_model")


def loop_model_stage(args: ZerankArguments) -> str:
    """The stage folder of the model retrained by the loop round (``loop_zembed`` or ``loop_pointwise``)."""
    return f"loop_{args.loop_stage_model}"


def run_loop(runner: StageRunner, args: ZerankArguments, training_args, model_args, output_dir: Path,
             judge_cfg: dict[str, Any], train_cfg: dict[str, Any]) -> str:
    """Run (or resume) the round's stages after the first training; returns the retrained model's stage name."""
    model = args.loop_stage_model
    settings = {name: getattr(args, name) for name in LOOP_SETTINGS}
    runner.run("loop_preferences", {**settings, **judge_cfg},
               partial(stage_loop_preferences, args, training_args, output_dir),
               depends=("preferences", "calibration", model))
    runner.run("loop_labels", {"link": args.link}, partial(stage_labels, args, output_dir, extra=("loop_preferences",)),
               depends=("loop_preferences",))
    calib_cfg = {"cycles": args.calibration_cycles, "anchors": args.calibration_anchors, **judge_cfg}
    runner.run("loop_calibration", calib_cfg,
               partial(stage_calibration, args, output_dir, labels_dir="loop_labels", pairs_from="labels"),
               depends=("labels", "loop_labels"))
    stage = loop_model_stage(args)
    train = stage_zembed if model == "zembed" else stage_pointwise
    depends = ("candidates", "zembed", "loop_calibration") if model == "zembed" else ("loop_calibration",)
    reuse = {"index_from": "zembed"} if model == "zembed" else {}  # the documents embedded once, in the first round
    runner.run(stage, train_cfg[model], partial(train, args, training_args, model_args, output_dir,
                                                labels_dir="loop_calibration", **reuse),
               depends=depends, main_only=False)
    return stage


def first_model_scores(args: ZerankArguments, training_args, output_dir: Path, labels) -> list[list[float]]:
    """The first round's model (its first seed) scores every candidate of the label set's queries (zembed: its query
    tower against the document embeddings its stage saved, so no document is embedded again)."""
    folder = output_dir / args.loop_stage_model / "model"
    if args.loop_stage_model == "zembed":
        model = SentenceTransformer(str(folder), device="cpu" if training_args.use_cpu else None)
        index = document_index(output_dir / "zembed", model, [d for docs in labels["docs"] for d in docs],
                               args.eval_batch_size)
        run = index.run(model, labels)
        return [[run[str(q)][str(d)] for d in ids] for q, ids in zip(labels["query_id"], labels["doc_ids"])]
    scorer = RerankerScorer(str(folder), batch_size=args.eval_batch_size, **scoring_lengths(args, training_args))
    return teacher_scores(labels, scorer, batch_size=args.eval_batch_size)


def stage_loop_preferences(args: ZerankArguments, training_args, output_dir: Path, stage_dir: Path) -> dict[str, Any]:
    """Judge the pairs where the first model and the calibrated labels disagree most (never a judged pair)."""
    labels = load_split(output_dir / "calibration", "train")
    scores = first_model_scores(args, training_args, output_dir, labels)
    judged = judged_pairs(pair_rows(concat_preferences(output_dir)))
    pairs = loop_pairs(labels, scores, judged, args.loop_pairs_per_query, top_k=args.loop_top_k,
                       selection=args.loop_selection, seed=args.query_seed)
    if not pairs:
        raise ValueError(
            f"the reranker-in-the-loop round found no pair to judge (loop_selection={args.loop_selection!r}, "
            f"loop_top_k={args.loop_top_k}): the {args.loop_stage_model} model's top-{args.loop_top_k} agrees with "
            "the labels' on every training query. Turn the round off (--loop_pairs_per_query 0) or raise loop_top_k."
        )
    judge = settings_judge(args)
    result = judge_pairs(pairs, judge, seed=args.query_seed, cache=judge_cache_path(args.judge_cache, stage_dir),
                         concurrency=args.judge_max_concurrency)
    save_preference_set(result, stage_dir, judge=judge, source=args.dataset_name)
    raise_if_stopped(result.summary)
    per_query = Counter(c.query_id for c in pairs)
    return {"loop_pairs": len(pairs), "queries_with_pairs": len(per_query), "queries": len(labels),
            "max_pairs_per_query": max(per_query.values()), "first_round_pairs": sum(len(s) for s in judged.values()),
            **brief_summary(result.summary)}
