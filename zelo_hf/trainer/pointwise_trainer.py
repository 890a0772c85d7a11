"""The pointwise reranker (ZELO.md step 7): regress calibrated zELO scores, plus baselines for ablations.

Input rows follow ``flatten_labels`` (``query_id``, ``query``, ``doc_id``, ``doc``, ``score``); the ``binary``
and ``contrastive`` baselines read a 0/1 ``label`` column instead (e.g. ``grade > 0``). ``loss_type`` picks the loss
and the target column through ``losses.POINTWISE_LOSSES``; ``target_transform`` only changes the ``score`` targets.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..modeling.scoring import forward_scores
from ..schema import check_numbers, check_texts, require_columns
from ..utils import get_logger
from .base_trainer import RerankerTrainer, card_values
from .collators import PointwiseCollator
from .losses import POINTWISE_LOSSES, transform_targets
from .metrics import pointwise_metrics
from .pointwise_config import PointwiseConfig

logger = get_logger(__name__)


def add_targets(batch: dict[str, list], column: str, transform: dict[str, Any], query_ids: dict):
    """Batched map: ``labels`` (the transformed target) and ``query_index`` (for per-query metrics)."""
    targets = transform_targets(np.asarray(batch[column], dtype=np.float64), **transform)
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
    """A ``transformers.Trainer`` for (query, document) -> score, trained with the loss of ``args.loss_type``.

    Args: those of :class:`RerankerTrainer`, with ``args`` a :class:`PointwiseConfig` and flat label sets
    (``query``, ``doc``, ``score`` or ``label``, ``query_id``) as datasets.
    """

    config_class = PointwiseConfig
    collator_class = PointwiseCollator
    _task = "pointwise"
    _template_file = "reranker.md"

    def _prepare_dataset(self, dataset, args: PointwiseConfig, split: str, model):
        """Validate (raises before training), fit/apply the target transform, group for contrastive training."""
        column = POINTWISE_LOSSES[args.loss_type].column
        fix = "pass `flatten_labels` output (score) or a 0/1 `label` column for the binary/contrastive baselines."
        require_columns(dataset.column_names, ["query", "doc", column], f"{split} dataset", fix)
        check_texts(dataset, ["query", "doc"], f"{split} dataset")
        values = check_numbers(dataset, column, f"{split} dataset")
        if split == "train" and args.loss_type == "contrastive":
            return make_groups(dataset, column, args.num_negatives, args.seed)
        if split == "train":
            _fit_target_transform(model, args, values)
        transform = _saved_transform(model.config) if column == "score" else {"transform": "raw"}
        if args.loss_type == "soft_bce":
            _check_probabilities(transform_targets(values, **transform), split, column)
        keys = dataset["query_id"] if "query_id" in dataset.column_names else dataset["query"]
        query_ids = {k: i for i, k in enumerate(dict.fromkeys(map(str, keys)))}
        kwargs = {"column": column, "transform": transform, "query_ids": query_ids}
        return dataset.map(add_targets, batched=True, fn_kwargs=kwargs, desc=f"Preparing targets ({split})")

    def compute_loss(self, model, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch=None):
        """The loss of ``args.loss_type``; flat eval batches of the contrastive baseline are scored with binary BCE."""
        scores = forward_scores(model, inputs)
        loss_type = self.args.loss_type
        if loss_type == "contrastive" and "group_size" not in inputs:
            loss_type = "binary"  # flat (query, doc, label) eval rows: no groups to take a softmax over
        loss = POINTWISE_LOSSES[loss_type].loss(scores, inputs, self.args)
        return (loss, {"scores": scores}) if return_outputs else loss

    @staticmethod
    def _metrics(eval_pred) -> dict[str, float]:
        labels, query_index = eval_pred.label_ids
        return pointwise_metrics(np.asarray(eval_pred.predictions), labels, query_index)

    def hyperparameters(self) -> dict[str, Any]:
        """The shared hyper-parameters, ``loss_type`` and the knobs of that loss (its ``POINTWISE_LOSSES`` entry)."""
        own = POINTWISE_LOSSES[self.args.loss_type].knobs
        return {**super().hyperparameters(), **card_values(self.args, ["loss_type", *own])}


def _fit_target_transform(model, args: PointwiseConfig, values: np.ndarray) -> None:
    """Record the transform on the model config so it is saved with the weights (undo standardize: s * std + mean)."""
    transform = args.target_transform if POINTWISE_LOSSES[args.loss_type].column == "score" else "raw"
    mean, std = (float(values.mean()), float(values.std())) if transform == "standardize" else (0.0, 1.0)
    if std <= 0:
        raise ValueError(f"`target_transform='standardize'` needs varying targets (got std={std}): use 'raw'.")
    model.config.zelo_target_transform = transform
    model.config.zelo_target_mean, model.config.zelo_target_std = mean, std
    if transform == "sigmoid":
        model.config.zelo_target_temperature = args.temperature


def _saved_transform(cfg) -> dict[str, Any]:
    """The target transform recorded on the model config (fitted on the training set), as `transform_targets` kwargs."""
    return {
        "transform": getattr(cfg, "zelo_target_transform", "raw"),
        "mean": getattr(cfg, "zelo_target_mean", 0.0),
        "std": getattr(cfg, "zelo_target_std", 1.0),
        "temperature": getattr(cfg, "zelo_target_temperature", 1.0),
    }


def _check_probabilities(targets: np.ndarray, split: str, column: str) -> None:
    bad = (targets < 0) | (targets > 1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{split} dataset: `loss_type='soft_bce'` needs targets in [0, 1] (got {float(targets[first])!r} from "
            f"`{column}` at row {first}): pass target_transform='sigmoid'."
        )
