"""The zembed pipeline (``recipes/zembed.py``, ``zelo zembed``): distil a bi-encoder (SentenceTransformer) from a
reranker's scores or a zELO label set (ZELO.md, step 8).

The teacher (a pointwise reranker, e.g. the output of ``recipes/zerank.py``) scores every candidate of every
training query; the student learns to reproduce those scores with one of two sentence-transformers losses:

* ``margin_mse``: (query, positive, negative) triples with the teacher's score margin as the label
  (``MarginMSELoss``; Hofstaetter et al. 2020, https://huggingface.co/papers/2010.02666). The positive is drawn
  from the teacher's top ``positive_pool`` documents and the negative from the rest of the list.
* ``kl_div``: (query, positive, negative_1..n) rows with the teacher scores of all ``n + 1`` documents as labels;
  the student's softmax over its similarities is pulled to the teacher's (``DistillKLDivLoss``,
  https://huggingface.co/papers/2010.11386).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import sentence_transformers
from datasets import Dataset
from sentence_transformers import (
    SentenceTransformer,
    SentenceTransformerTrainer,
    SentenceTransformerTrainingArguments,
    losses,
)
from trl import ModelConfig, TrlParser

from .. import hub  # hub.push_folder looked up at call time: the one upload call, patched by offline tests
from ..candidates import bm25_candidates
from ..data import load_retrieval_data, select_queries
from ..evaluation.reports import card_eval_results, result_row, results_to_markdown
from ..evaluation.reranking import evaluate_reranker
from ..evaluation.scorers import as_score_fn
from ..hub import load_dataset_any, load_split, render_model_card
from ..schema import LABEL_COLUMNS, require_columns
from ..utils import get_logger, producing_command, resolve_model_name

logger = get_logger(__name__)

LOSSES = ("margin_mse", "kl_div")
HELP = "Distil a bi-encoder (zembed) from a zELO reranker's scores or a label set; evaluated before and after."


@dataclass
class DistillArguments:
    """What to distil from: teacher, candidate lists, loss and how training rows are drawn."""
    teacher_model: str = field(
        default="outputs/zerank-demo/pointwise/model", metadata={"help": "Reranker (CrossEncoder) giving the scores."}
    )
    teacher_labels: str | None = field(
        default=None,
        metadata={
            "help": "A zELO label set (`zelo fit`/`zelo calibrate` output or a zerank run's `calibration` folder; "
            "folder or Hub id) as the teacher: its calibrated scores (`score`, else `elo`) over its own queries' "
            "documents are distilled directly, no reranker pass. The evaluation queries must not be among them."
        },
    )
    dataset_name: str = field(default="scifact", metadata={"help": "Bundled name, local BEIR folder or Hub id."})
    dataset_split: str = field(default="train", metadata={"help": "Qrels split of the training queries."})
    num_train_queries: int | None = field(default=None, metadata={"help": "Training queries (None: all)."})
    eval_dataset_name: str | None = field(default=None, metadata={"help": "Evaluation data (default: dataset_name)."})
    eval_split: str = field(default="test", metadata={"help": "Qrels split of the evaluation queries."})
    num_eval_queries: int | None = field(default=None, metadata={"help": "Evaluation queries (None: all left)."})
    query_seed: int = field(default=0, metadata={"help": "Seed of query sampling and of the training rows."})
    top_k: int = field(default=30, metadata={"help": "BM25 candidates per query (teacher-scored)."})
    eval_top_k: int = field(default=100, metadata={"help": "BM25 candidates per evaluation query."})
    loss: str = field(default="margin_mse", metadata={"help": f"Distillation loss, one of {LOSSES}."})
    triples_per_query: int = field(default=8, metadata={"help": "margin_mse: (pos, neg) triples per query."})
    positive_pool: int = field(default=3, metadata={"help": "margin_mse: positives come from the teacher's top-n."})
    num_negatives: int = field(default=7, metadata={"help": "kl_div: negatives per row."})
    temperature: float = field(default=1.0, metadata={"help": "kl_div: softmax temperature (teacher and student)."})
    candidates_path: str | None = field(
        default=None,
        metadata={"help": "Reuse a zerank run's candidates folder (splits train/eval) instead of running BM25."},
    )
    teacher_batch_size: int = field(default=64, metadata={"help": "Batch size of the teacher's scoring."})
    max_seq_length: int | None = field(default=None, metadata={"help": "Student max tokens (None: model's)."})
    eval_batch_size: int = field(default=64, metadata={"help": "Batch size of the before/after evaluation."})
    evaluate_teacher: bool = field(default=True, metadata={"help": "Also report the teacher reranker's metrics."})

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"`loss` must be one of {LOSSES} (got loss={self.loss!r}).")
        if self.loss == "kl_div" and self.num_negatives >= self.top_k:
            raise ValueError(
                f"`num_negatives` must be < top_k (got num_negatives={self.num_negatives}, top_k={self.top_k}): "
                f"lower num_negatives or raise top_k."
            )
        if self.positive_pool < 1 or self.positive_pool >= self.top_k:
            raise ValueError(
                f"`positive_pool` must be in [1, top_k) (got positive_pool={self.positive_pool}, top_k={self.top_k})."
            )


def teacher_scores(candidates, teacher: Any, batch_size: int = 64, max_length: int | None = None) -> list[list[float]]:
    """The teacher's score of every candidate, one list per query aligned with ``docs`` (one batched pass)."""
    score_fn = as_score_fn(teacher, batch_size=batch_size, kind="cross", max_length=max_length)
    queries = [row["query"] for row in candidates for _ in row["docs"]]
    docs = [doc for row in candidates for doc in row["docs"]]
    flat = np.asarray(score_fn(queries, docs), dtype=np.float64)
    bounds = np.cumsum([0] + [len(row["docs"]) for row in candidates])
    return [flat[a:b].tolist() for a, b in zip(bounds[:-1], bounds[1:])]


def margin_mse_rows(
    queries: list[str], docs: list[list[str]], scores: list[list[float]], triples_per_query: int, positive_pool: int,
    seed: int = 0,
) -> dict[str, list]:
    """``query, positive, negative, label`` columns: teacher-top positives, lower negatives, label = score margin."""
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {"query": [], "positive": [], "negative": [], "label": []}
    for query, row_docs, row_scores in zip(queries, docs, scores):
        s = np.asarray(row_scores, dtype=np.float64)
        if len(s) < 2:
            continue
        order = np.argsort(-s, kind="stable")
        pool = min(positive_pool, len(s) - 1)
        pos = order[rng.integers(0, pool, size=triples_per_query)]
        # negatives are drawn below the positive's rank so the margin is >= 0 (ties give margin 0)
        rank_of_pos = np.argsort(order)[pos]
        neg = order[rank_of_pos + 1 + (rng.random(triples_per_query) * (len(s) - 1 - rank_of_pos)).astype(int)]
        out["query"] += [query] * triples_per_query
        out["positive"] += [row_docs[i] for i in pos]
        out["negative"] += [row_docs[i] for i in neg]
        out["label"] += (s[pos] - s[neg]).tolist()
    return out


def kl_div_rows(
    queries: list[str], docs: list[list[str]], scores: list[list[float]], num_negatives: int, seed: int = 0
) -> dict[str, list]:
    """``query, positive, negative_1..n, label`` columns: the teacher's top document and ``n`` others, with scores."""
    rng = np.random.default_rng(seed)
    neg_cols = [f"negative_{i + 1}" for i in range(num_negatives)]
    out: dict[str, list] = {"query": [], "positive": [], **{c: [] for c in neg_cols}, "label": []}
    for query, row_docs, row_scores in zip(queries, docs, scores):
        s = np.asarray(row_scores, dtype=np.float64)
        if len(s) <= num_negatives:
            logger.warning("query %r has %d candidates (< %d + 1): skipped", query[:40], len(s), num_negatives)
            continue
        order = np.argsort(-s, kind="stable")
        neg = rng.choice(order[1:], size=num_negatives, replace=False)
        out["query"].append(query)
        out["positive"].append(row_docs[order[0]])
        for col, i in zip(neg_cols, neg):
            out[col].append(row_docs[i])
        out["label"].append([float(s[order[0]])] + s[neg].tolist())
    return out


def label_set_teacher(source: str):
    """``(candidates, scores)`` from a label set: per query ``query_id``, ``query``, ``doc_ids``, ``docs`` and the
    calibrated ``score`` list (``elo`` for an uncalibrated set), aligned with ``docs``."""
    labels = load_dataset_any(source, split="train")
    column = "score" if "score" in labels.column_names else "elo"
    require_columns(labels.column_names, (*LABEL_COLUMNS, column), f"`teacher_labels={source!r}`",
                    "pass a label set written by `zelo fit` / `zelo calibrate` (or a zerank run's `calibration` folder).")
    scores = [[float(v) for v in row] for row in labels[column]]
    for qid, values, docs in zip(labels["query_id"], scores, labels["docs"]):
        if len(values) != len(docs) or not np.isfinite(values).all():
            raise ValueError(f"`teacher_labels` query {qid!r}: `{column}` must be finite, one per document.")
    return labels.select_columns(list(LABEL_COLUMNS)), scores


def distillation_dataset(candidates, scores: list[list[float]], args: DistillArguments):
    """The student's training set (a ``datasets.Dataset``) for ``args.loss``."""
    queries, docs = list(candidates["query"]), list(candidates["docs"])
    if args.loss == "margin_mse":
        rows = margin_mse_rows(queries, docs, scores, args.triples_per_query, args.positive_pool, args.query_seed)
    else:
        rows = kl_div_rows(queries, docs, scores, args.num_negatives, args.query_seed)
    if not rows["query"]:
        raise ValueError(
            f"no training rows for loss={args.loss!r}: every query has too few candidates (top_k={args.top_k})."
        )
    return Dataset.from_dict(rows)


def distillation_loss(model, args: DistillArguments):
    """The sentence-transformers loss object for ``args.loss``."""
    if args.loss == "margin_mse":
        return losses.MarginMSELoss(model)
    return losses.DistillKLDivLoss(model, temperature=args.temperature)


def load_student(model_name_or_path: str, max_seq_length: int | None = None):
    """A SentenceTransformer student; a plain transformers checkpoint gets mean pooling (sentence-transformers' rule)."""
    model = SentenceTransformer(model_name_or_path)
    if max_seq_length is not None:
        model.max_seq_length = max_seq_length
    return model


def train_student(model, train_dataset, args: DistillArguments, training_args):
    """Fit the student with ``SentenceTransformerTrainer``; returns the trainer (its state holds the loss log)."""
    trainer = SentenceTransformerTrainer(
        model=model, args=training_args, train_dataset=train_dataset, loss=distillation_loss(model, args)
    )
    trainer.train()
    return trainer


def zembed_candidates(args: DistillArguments):
    """``(train, eval, eval_qrels)``: candidate sets of the training and held-out queries (BM25 or a zerank run's)."""
    eval_name = args.eval_dataset_name or args.dataset_name
    eval_data = load_retrieval_data(eval_name, args.eval_split)
    if args.candidates_path:
        return load_split(args.candidates_path, "train"), load_split(args.candidates_path, "eval"), eval_data.qrels

    train_data = load_retrieval_data(args.dataset_name, args.dataset_split)
    train_ids = select_queries(train_data, args.num_train_queries, args.query_seed)
    same = eval_name == args.dataset_name and args.eval_split == args.dataset_split
    eval_ids = select_queries(eval_data, args.num_eval_queries, args.query_seed + 2, set(train_ids) if same else set())
    train = bm25_candidates(train_data, k=args.top_k, query_ids=train_ids)
    evaluation = bm25_candidates(eval_data, k=args.eval_top_k, query_ids=eval_ids)
    return train, evaluation, eval_data.qrels


def evaluate_student(model, candidates, qrels, args: DistillArguments, name: str, eval_name: str):
    """Bi-encoder reranking of the held-out candidates (cosine) -> one result row."""
    result = evaluate_reranker(candidates, qrels, scorer=model, batch_size=args.eval_batch_size)
    return result_row(name, eval_name, args.eval_split, result)


def run_zembed(args: DistillArguments, training_args, model_args) -> dict[str, Any]:
    """Teacher scores -> distillation rows -> SentenceTransformerTrainer -> before/after evaluation -> save (+ push)."""
    if not 0 < training_args.num_train_epochs:
        raise ValueError(f"`num_train_epochs` must be > 0 (got {training_args.num_train_epochs}).")
    train, evaluation, qrels = zembed_candidates(args)
    eval_name = args.eval_dataset_name or args.dataset_name
    teacher = resolve_model_name(args.teacher_model)
    if args.teacher_labels:
        train, scores = label_set_teacher(args.teacher_labels)
        leaked = sorted(set(train["query_id"]) & set(evaluation["query_id"]))
        if leaked:
            raise ValueError(
                f"`teacher_labels` holds {len(leaked)} evaluation queries (e.g. {leaked[:3]}): evaluate on other "
                "queries (candidates_path of the run that wrote the labels, or another eval_split)."
            )
    else:
        scores = teacher_scores(train, teacher, batch_size=args.teacher_batch_size)
    dataset = distillation_dataset(train, scores, args)
    student_path = resolve_model_name(model_args.model_name_or_path)
    student = load_student(student_path, args.max_seq_length)
    rows = [result_row("bm25", eval_name, args.eval_split, evaluate_reranker(evaluation, qrels))]
    rows.append(evaluate_student(student, evaluation, qrels, args, "student (before)", eval_name))
    trainer = train_student(student, dataset, args, training_args)
    rows.append(evaluate_student(student, evaluation, qrels, args, "zembed (after)", eval_name))
    if args.evaluate_teacher:
        teacher_result = evaluate_reranker(evaluation, qrels, scorer=teacher, kind="cross", batch_size=args.eval_batch_size)
        rows.append(result_row("teacher reranker", eval_name, args.eval_split, teacher_result))
    output_dir = Path(training_args.output_dir) / "model"
    student.save(str(output_dir))
    save_zembed_card(output_dir, args, training_args, model_args, rows, len(dataset), len(train), len(evaluation))
    if training_args.push_to_hub and training_args.process_index == 0:

        if not training_args.hub_model_id:
            raise ValueError("push_to_hub=True needs `hub_model_id` (got None): pass --hub_model_id you/zembed-demo.")
        hub.push_folder(output_dir, training_args.hub_model_id, repo_type="model", private=training_args.hub_private_repo)
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return {"rows": rows, "train_rows": len(dataset), "losses": losses, "output_dir": str(output_dir)}


LOSS_DESCRIPTIONS = {
    "margin_mse": "MSE between the student's and the teacher's score margins over (query, positive, negative) "
    "triples, MarginMSELoss",
    "kl_div": "KL divergence between the student's and the teacher's softmax over each query's candidates, "
    "DistillKLDivLoss",
}


def save_zembed_card(output_dir, args: DistillArguments, training_args, model_args, rows, num_rows, n_train, n_eval):
    """Write our card (``zelo_hf/templates/zembed.md``) as the model's README.md, replacing sentence-transformers' one."""

    repo_id = training_args.hub_model_id or f"{Path(output_dir).parent.name}"
    base = model_args.model_name_or_path
    card_data = {
        "library_name": "sentence-transformers",
        "pipeline_tag": "sentence-similarity",
        "tags": ["zelo", "zembed", "sentence-transformers", "feature-extraction", "distillation"],
        "model_name": repo_id,
        "eval_results": card_eval_results([r for r in rows if r["model"] == "zembed (after)"], "zembed (after)"),
    }
    if base and not str(base).startswith(("/", ".")) and "/" in str(base):
        card_data["base_model"] = base
    card = render_model_card(
        "zembed.md",
        card_data=card_data,
        model_name=repo_id,
        repo_id=repo_id,
        teacher_model=args.teacher_labels or args.teacher_model,
        teacher_url=_hub_url(args.teacher_labels or args.teacher_model),
        teacher_is_labels=bool(args.teacher_labels),
        base_model=base,
        top_k=args.top_k,
        eval_top_k=args.eval_top_k,
        num_train_queries=n_train,
        num_eval_queries=n_eval,
        dataset_name=args.dataset_name,
        dataset_split=args.dataset_split,
        eval_dataset_name=args.eval_dataset_name or args.dataset_name,
        eval_split=args.eval_split,
        loss_name=args.loss,
        loss_description=LOSS_DESCRIPTIONS[args.loss],
        results_table=results_to_markdown(rows, columns=["model", "ndcg@10", "recall@100", "mrr@10", "queries"]),
        num_rows=num_rows,
        num_train_epochs=training_args.num_train_epochs,
        learning_rate=training_args.learning_rate,
        batch_size=training_args.per_device_train_batch_size,
        example_query="which documents answer this query?",
        example_doc="a candidate document",
        command=producing_command(),
        st_version=sentence_transformers.__version__,
    )
    card.save(str(Path(output_dir) / "README.md"))


def _hub_url(name: str) -> str:
    return name if Path(name).exists() or "/" not in name else f"https://huggingface.co/{name}"


def own_option_fields() -> set[str]:
    """The options this pipeline adds (``DistillArguments``): ``zelo zembed --help`` lists them first."""
    return {f.name for f in fields(DistillArguments)}


def make_parser(subparsers: argparse._SubParsersAction | None = None, prog: str | None = None) -> TrlParser:
    """YAML ``--config`` sets values, command-line flags override them."""
    dataclass_types = (DistillArguments, SentenceTransformerTrainingArguments, ModelConfig)
    if subparsers is not None:
        return subparsers.add_parser("zembed", help=HELP, dataclass_types=dataclass_types)
    return TrlParser(dataclass_types, prog=prog)


def main(script_args: DistillArguments, training_args, model_args: ModelConfig) -> dict[str, Any]:
    """Distil, evaluate, save (and push); prints the before/after table on the main process."""
    result = run_zembed(script_args, training_args, model_args)
    if training_args.process_index == 0:
        print(results_to_markdown(result["rows"], columns=["model", "ndcg@10", "recall@100", "mrr@10", "queries"]))
        print(f"saved to {result['output_dir']}")
    return result
