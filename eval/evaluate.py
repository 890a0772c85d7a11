"""Evaluate a reranker (or an embedder) reranking a BM25 first stage; print JSON and a markdown table.

    python eval/evaluate.py --data cranfield --model outputs/zerank/pointwise/model --depth 100
    python eval/evaluate.py --data scifact --model sentence-transformers/all-MiniLM-L6-v2 --kind bi --mteb
    python eval/evaluate.py --mteb_task SciFact --model cross-encoder/ms-marco-MiniLM-L6-v2   # online: MTEB by name

``--data`` is a bundled name (``scifact``, ``cranfield``), a local BEIR folder or a Hub dataset id. Without
``--model`` only the first stage is scored. ``--mteb`` also runs the same evaluation through MTEB (a custom task
over the local data, ``top_ranked`` = the BM25 candidates) and adds its row. Metrics are pytrec_eval's (trec_eval
semantics: linear gains); see ``zelo_hf/evaluation/``.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@dataclass
class EvaluateArguments:
    """What to evaluate and how (every field is a flag or a YAML key of ``--config``)."""

    data: str | None = field(default=None, metadata={"help": "Bundled name, BEIR folder or Hub dataset id."})
    split: str = field(default="test", metadata={"help": "Qrels split to evaluate."})
    model: str | None = field(default=None, metadata={"help": "Model path or name; none: first stage only."})
    kind: str = field(
        default="auto", metadata={"help": "'cross', 'bi' or 'auto'.", "choices": ["auto", "cross", "bi"]}
    )
    first_stage: str = field(default="bm25", metadata={"help": "First stage.", "choices": ["bm25"]})
    depth: int = field(default=100, metadata={"help": "First-stage top-k reranked per query."})
    num_queries: int | None = field(default=None, metadata={"help": "Only the first N queries (sorted ids)."})
    query_split: str | None = field(
        default=None,
        metadata={"help": "Evaluate the held-out (`test`) queries of a committed split (zelo_hf/bundled/splits/"
                  "<name>.json; with --num_queries, its first N) instead of the split's sorted ids."},
    )
    base_model: str | None = field(
        default=None,
        metadata={"help": "Also score the base model the way it was trained (a bi-encoder by cosine, a cross-encoder "
                  "by its head): the row a trained model must beat."},
    )
    random_orderings: int = field(default=10, metadata={"help": "Random orderings reported (mean and sd)."})
    metrics: list[str] = field(
        default_factory=lambda: ["ndcg@10", "recall@100", "mrr@10"], metadata={"help": "Metrics (name@k)."}
    )
    batch_size: int = field(default=64, metadata={"help": "Scoring batch size."})
    max_length: int | None = field(default=None, metadata={"help": "Max tokens per (query, document) input."})
    mteb: bool = field(default=False, metadata={"help": "Also evaluate through an MTEB custom task."})
    mteb_task: str | None = field(
        default=None, metadata={"help": "An MTEB task name (needs the Hub) instead of --data."}
    )
    output: str | None = field(default=None, metadata={"help": "Write the JSON results here."})

    def __post_init__(self):
        if (self.data is None) == (self.mteb_task is None):
            raise ValueError(
                f"pass exactly one of `--data` and `--mteb_task` (got data={self.data!r}, mteb_task={self.mteb_task!r})."
            )
        if self.mteb_task and not self.model:
            raise ValueError(f"`--mteb_task {self.mteb_task}` needs `--model`: the model to evaluate.")
        if self.depth < 1:
            raise ValueError(f"`depth` must be >= 1 (got depth={self.depth}): e.g. --depth 100.")


def _local(args: EvaluateArguments) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from zelo_hf.candidates import bm25_candidates
    from zelo_hf.data import load_retrieval_data
    from zelo_hf.evaluation.metrics import evaluate_run
    from zelo_hf.evaluation.mteb_tasks import make_mteb_task, mteb_metrics, run_mteb, top_ranked_from_candidates
    from zelo_hf.evaluation.reports import result_row, seed_row
    from zelo_hf.evaluation.reranking import evaluate_reranker, random_run
    from zelo_hf.evaluation.scorers import load_scorer

    data = load_retrieval_data(args.data, args.split)
    query_ids = _query_ids(args, data)
    data = data.subset(query_ids)
    candidates = bm25_candidates(data, k=args.depth)
    name = Path(str(args.data)).name
    first = evaluate_reranker(candidates, data.qrels, metrics=args.metrics)
    rows = [result_row(f"{args.first_stage} top-{args.depth}", name, args.split, first, kind="first_stage")]
    if args.random_orderings:
        shuffles = [evaluate_run(random_run(candidates, s), data.qrels, args.metrics)
                    for s in range(args.random_orderings)]
        row = seed_row("random order", "random", shuffles, seeds=list(range(args.random_orderings)))
        rows.append({"dataset": name, "split": args.split, **row})
    if args.base_model:
        base = _scorer(args.base_model, _base_kind(args.base_model), args)
        result = evaluate_reranker(candidates, data.qrels, base, args.metrics, batch_size=args.batch_size)
        rows.append(result_row(f"{args.base_model} (base)", name, args.split, result, kind="base"))
    if args.model:
        model = _scorer(args.model, args.kind, args)
        result = evaluate_reranker(candidates, data.qrels, model, args.metrics, batch_size=args.batch_size)
        rows.append(result_row(args.model, name, args.split, result, kind="trained",
                               first_stage=f"{args.first_stage}@{args.depth}"))
        if args.mteb:
            task = make_mteb_task(data, top_ranked=top_ranked_from_candidates(candidates))
            mteb_model = load_scorer(args.model, kind=args.kind, max_length=args.max_length)  # MTEB needs an ST model
            scores = run_mteb(mteb_model, task, split=args.split, batch_size=args.batch_size)
            mteb_row = {
                "model": f"{args.model} (MTEB)",
                "dataset": name,
                "split": args.split,
                "queries": len(query_ids),
            }
            rows.append(
                {**mteb_row, **mteb_metrics(scores, args.metrics), "first_stage": f"{args.first_stage}@{args.depth}"}
            )
    return rows, {"data": args.data, "queries": len(query_ids)}


def _query_ids(args: EvaluateArguments, data) -> list[str]:
    if args.query_split:
        from zelo_hf.data import load_query_split

        return [q for q in load_query_split(args.query_split)["test"] if q in data.qrels][: args.num_queries]
    return sorted(q for q in data.qrels if q in data.queries)[: args.num_queries]


def _scorer(model: str, kind: str, args: EvaluateArguments):
    """Scored as the recipe scores: a bi-encoder by cosine, any other model by the one reranker scorer
    (``RerankerScorer``: the zELO reranker's own tokenization and head)."""
    from zelo_hf.evaluation.scorers import load_scorer, resolve_kind
    from zelo_hf.modeling.scoring import RerankerScorer
    from zelo_hf.utils import resolve_model_name

    if resolve_kind(resolve_model_name(model), kind) == "bi":
        return load_scorer(model, kind="bi", max_length=args.max_length)
    return RerankerScorer(resolve_model_name(model), batch_size=args.batch_size, max_length=args.max_length)


def _base_kind(model: str) -> str:
    """A base is scored the way it was trained: 'bi' for a sentence-transformers bi-encoder, else its own head."""
    from zelo_hf.modeling.loading import base_kind
    from zelo_hf.utils import resolve_model_name

    return "bi" if base_kind(resolve_model_name(model)) == "bi" else "cross"


def _mteb_by_name(args: EvaluateArguments) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """An MTEB task by name: bi-encoders retrieve from the full corpus, cross-encoders rerank a BM25 top-k."""
    import mteb
    from sentence_transformers import CrossEncoder

    from zelo_hf.candidates import bm25_candidates
    from zelo_hf.evaluation.mteb_tasks import add_first_stage, mteb_metrics, retrieval_data_from_mteb, run_mteb
    from zelo_hf.evaluation.scorers import load_scorer

    model = load_scorer(args.model, kind=args.kind, max_length=args.max_length)
    task = mteb.get_task(args.mteb_task, eval_splits=[args.split])
    first_stage = None
    if isinstance(model, CrossEncoder):
        data = retrieval_data_from_mteb(task, args.split)
        add_first_stage(task, bm25_candidates(data, k=args.depth), args.split)
        first_stage = f"{args.first_stage}@{args.depth}"
    scores = run_mteb(model, task, split=args.split, batch_size=args.batch_size)
    row = {"model": args.model, "dataset": args.mteb_task, "split": args.split, **mteb_metrics(scores, args.metrics)}
    return [{**row, "first_stage": first_stage or "full corpus"}], {"mteb_task": args.mteb_task}


def main(args: EvaluateArguments) -> dict[str, Any]:
    from zelo_hf.evaluation.reports import card_eval_rows, results_to_markdown
    from zelo_hf.utils import producing_command

    rows, info = _mteb_by_name(args) if args.mteb_task else _local(args)
    results = {"command": producing_command(), **info, "rows": rows, "card_rows": card_eval_rows(rows, args.metrics)}
    print(json.dumps(results, indent=1))
    print()
    print(results_to_markdown(rows))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(results, indent=1))
    return results


def make_parser():
    from trl import TrlParser

    return TrlParser((EvaluateArguments,))


if __name__ == "__main__":
    (evaluate_args,) = make_parser().parse_args_and_config()
    main(evaluate_args)
    sys.exit(0)
