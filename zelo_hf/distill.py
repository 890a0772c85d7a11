"""zembed: distil a bi-encoder (SentenceTransformer) from a reranker's scores (ZELO.md, step 8).

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

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .utils import get_logger

logger = get_logger(__name__)

LOSSES = ("margin_mse", "kl_div")


@dataclass
class DistillArguments:
    """What to distil from: teacher, candidate lists, loss and how training rows are drawn."""

    teacher_model: str = field(
        default="outputs/zerank-demo/pointwise/model", metadata={"help": "Reranker (CrossEncoder) giving the scores."}
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
    teacher_batch_size: int = field(default=64, metadata={"help": "Batch size of the teacher's scoring."})
    max_seq_length: int | None = field(default=None, metadata={"help": "Student max tokens (None: model's)."})
    eval_batch_size: int = field(default=64, metadata={"help": "Batch size of the before/after evaluation."})

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
    from .evaluation import as_score_fn

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


def distillation_dataset(candidates, scores: list[list[float]], args: DistillArguments):
    """The student's training set (a ``datasets.Dataset``) for ``args.loss``."""
    from datasets import Dataset

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
    from sentence_transformers import losses

    if args.loss == "margin_mse":
        return losses.MarginMSELoss(model)
    return losses.DistillKLDivLoss(model, temperature=args.temperature)


def load_student(model_name_or_path: str, max_seq_length: int | None = None):
    """A SentenceTransformer student; a plain transformers checkpoint gets mean pooling (sentence-transformers' rule)."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_name_or_path)
    if max_seq_length is not None:
        model.max_seq_length = max_seq_length
    return model


def train_student(model, train_dataset, args: DistillArguments, training_args):
    """Fit the student with ``SentenceTransformerTrainer``; returns the trainer (its state holds the loss log)."""
    from sentence_transformers import SentenceTransformerTrainer

    trainer = SentenceTransformerTrainer(
        model=model, args=training_args, train_dataset=train_dataset, loss=distillation_loss(model, args)
    )
    trainer.train()
    return trainer
