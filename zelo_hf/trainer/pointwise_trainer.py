"""The pointwise reranker (ZELO.md step 7): regress calibrated zELO scores, plus baselines for ablations.

Input rows follow ``flatten_labels`` (``query_id``, ``query``, ``doc_id``, ``doc``, ``score``); the ``binary``
and ``contrastive`` baselines read a 0/1 ``label`` column instead (e.g. ``grade > 0``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..modeling import forward_scores
from ..utils import get_logger
from .collators import PointwiseCollator
from .losses import binary_bce_loss, info_nce_loss, mse_loss, sigmoid_target_bce_loss, transform_targets
from .pointwise_config import PointwiseConfig
from .utils import RerankerTrainer, check_columns, check_numbers, check_texts, pointwise_metrics

logger = get_logger(__name__)


def add_targets(batch: dict[str, list], column: str, transform: str, mean: float, std: float, query_ids: dict):
    """Batched map: ``labels`` (the transformed target) and ``query_index`` (for per-query metrics)."""
    targets = transform_targets(np.asarray(batch[column], dtype=np.float64), transform, mean, std)
    keys = batch["query_id"] if "query_id" in batch else batch["query"]
    return {"labels": targets.tolist(), "query_index": [query_ids[str(k)] for k in keys]}


def make_groups(dataset, label_column: str, num_negatives: int, seed: int):
    """Contrastive rows: ``{"query", "docs": [positive, *num_negatives negatives of the same query]}``.

    Negatives are sampled (with replacement when a query has fewer) with a fixed seed; a positive whose query has
    no negative cannot form a group and is skipped, with a warning that counts them.
    """
    from datasets import Dataset

    rng = np.random.default_rng(seed)
    keys = dataset["query_id"] if "query_id" in dataset.column_names else dataset["query"]
    labels = np.asarray(dataset[label_column], dtype=np.float64)
    queries, docs = dataset["query"], dataset["doc"]
    by_query: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        by_query.setdefault(str(key), []).append(i)
    rows, skipped = {"query": [], "docs": []}, 0
    for idx in by_query.values():
        idx = np.asarray(idx)
        pos, neg = idx[labels[idx] > 0], idx[labels[idx] <= 0]
        if len(neg) == 0:
            skipped += len(pos)
            continue
        for p in pos:
            picks = rng.choice(neg, size=num_negatives, replace=len(neg) < num_negatives)
            rows["query"].append(queries[p])
            rows["docs"].append([docs[p]] + [docs[j] for j in picks])
    if skipped:
        logger.warning("contrastive: %d positive(s) skipped, their queries have no negative (label <= 0).", skipped)
    if not rows["query"]:
        raise ValueError(
            f"contrastive: no (positive, negatives) group could be formed from `{label_column}`: "
            "each query needs a row with label > 0 and one with label <= 0."
        )
    return Dataset.from_dict(rows)


class PointwiseTrainer(RerankerTrainer):
    """A ``transformers.Trainer`` for (query, document) -> score, trained with the objective of ``args.loss_type``.

    Args:
        model: a model name/path (loaded with ``args.head``) or a model from ``zelo_hf.modeling.load_reranker``.
        args: a :class:`PointwiseConfig`.
        train_dataset, eval_dataset: flat label sets (``query``, ``doc``, ``score`` or ``label``, ``query_id``).
        processing_class: the tokenizer (required with a loaded model).
        peft_config: a ``peft.LoraConfig``; the classification head is added to ``modules_to_save``.
    """

    _task = "pointwise"
    _card_template = "reranker.md"

    def __init__(
        self,
        model,
        args: PointwiseConfig | None = None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        peft_config=None,
        compute_metrics=None,
        callbacks=None,
        optimizers=(None, None),
        dataset_name: str | None = None,
    ):
        args = args or PointwiseConfig(output_dir="pointwise-model")
        model, processing_class = self._load_model(model, args, processing_class, peft_config)
        self.dataset_name = dataset_name
        self.target_column = "label" if args.loss_type in ("binary", "contrastive") else "score"
        if train_dataset is not None:
            train_dataset = self._prepare_dataset(train_dataset, args, "train", model=model)
        if isinstance(eval_dataset, dict):
            eval_dataset = {k: self._prepare_dataset(v, args, f"eval[{k}]", model) for k, v in eval_dataset.items()}
        elif eval_dataset is not None:
            eval_dataset = self._prepare_dataset(eval_dataset, args, "eval", model=model)
        collator = PointwiseCollator(processing_class, model.config.zelo_head, args.max_length, args.max_query_length)
        super().__init__(
            model=model,
            args=args,
            data_collator=collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            compute_metrics=compute_metrics or self._metrics,
            callbacks=callbacks,
            optimizers=optimizers,
        )

    def _prepare_dataset(self, dataset, args: PointwiseConfig, split: str, model):
        """Validate (raises before training), fit/apply the target transform, group for contrastive training."""
        column = self.target_column
        fix = "pass `flatten_labels` output (score) or a 0/1 `label` column for the binary/contrastive baselines."
        check_columns(dataset, ["query", "doc", column], split, fix)
        check_texts(dataset, ["query", "doc"], split)
        values = check_numbers(dataset, column, split)
        if split == "train" and args.loss_type == "contrastive":
            return make_groups(dataset, column, args.num_negatives, args.seed)
        if split == "train":
            self._fit_target_transform(model, args, values)
        cfg = model.config
        keys = dataset["query_id"] if "query_id" in dataset.column_names else dataset["query"]
        query_ids = {k: i for i, k in enumerate(dict.fromkeys(map(str, keys)))}
        transform = getattr(cfg, "zelo_target_transform", "raw") if args.loss_type == "mse" else "raw"
        kwargs = {
            "column": column,
            "transform": transform,
            "mean": getattr(cfg, "zelo_target_mean", 0.0),
            "std": getattr(cfg, "zelo_target_std", 1.0),
            "query_ids": query_ids,
        }
        return dataset.map(add_targets, batched=True, fn_kwargs=kwargs, desc=f"Preparing targets ({split})")

    @staticmethod
    def _fit_target_transform(model, args: PointwiseConfig, values: np.ndarray) -> None:
        """Record the transform on the model config so it is saved with the weights (undo: s * std + mean)."""
        mean, std = (float(values.mean()), float(values.std())) if args.target_transform == "standardize" else (0, 1)
        if std <= 0:
            raise ValueError(f"`target_transform='standardize'` needs varying targets (got std={std}): use 'raw'.")
        model.config.zelo_target_transform = args.target_transform if args.loss_type == "mse" else "raw"
        model.config.zelo_target_mean, model.config.zelo_target_std = mean, std

    def compute_loss(self, model, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch=None):
        """The configured objective; flat eval batches of the contrastive baseline are scored with binary BCE."""
        scores = forward_scores(model, inputs)
        args = self.args
        if "group_size" in inputs:
            loss = info_nce_loss(scores.view(-1, int(inputs["group_size"])), args.temperature)
        elif args.loss_type in ("binary", "contrastive"):
            loss = binary_bce_loss(scores, inputs["labels"])
        elif args.target_transform == "sigmoid":
            loss = sigmoid_target_bce_loss(scores, inputs["labels"], args.temperature)
        else:
            loss = mse_loss(scores, inputs["labels"])
        return (loss, {"scores": scores}) if return_outputs else loss

    @staticmethod
    def _metrics(eval_pred) -> dict[str, float]:
        labels, query_index = eval_pred.label_ids
        return pointwise_metrics(np.asarray(eval_pred.predictions), labels, query_index)
