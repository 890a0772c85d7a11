"""Configuration of :class:`~zelo_hf.trainer.ZembedTrainer` (a :class:`BaseConfig`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .base_config import BaseConfig
from .losses import PAIR_WEIGHTINGS, ZEMBED_LOSSES

# dev metrics by the unit of the loss's targets: name -> greater is better (the first is the default)
SELECTION_METRICS = {"document": {"label_ndcg@10": True}, "pair": {"bce": False, "agreement": True, "accuracy": True}}


@dataclass
class ZembedConfig(BaseConfig):
    r"""Configuration of the query-side zembed bi-encoder trained on zELO label sets (ZELO.md step 8).

    The document tower stays the base model (frozen; its embeddings are computed once, so an existing index of the
    corpus stays valid) and the query tower learns the label set's within-query ranking.

    Parameters:
        > Objective

        loss_type (`str`, defaults to `"listwise_kl"`): `"listwise_kl"`: KL divergence between the softmax of the
            calibrated scores (`score` column, divided by `teacher_temperature`) and the softmax of the student's
            cosine similarities (divided by `temperature`) over each query's labelled documents; `"contrastive"`:
            the same softmax cross-entropy against the binary `labels` column (uniform over the positives, the
            multi-positive InfoNCE baseline); `"pairwise_bce"`: the pairwise judge on a bi-encoder (ZELO.md step
            4), soft BCE of `(cos(q, A) - cos(q, B)) / temperature` against the judges' `prob_a` on grouped
            preferences (`pair_a`, `pair_b`, `prob_a` per query; :func:`zelo_hf.grouping.group_preferences`).
        temperature (`float`, defaults to `0.05`): of the student's cosine similarities (MultipleNegativesRanking
            uses 0.05 too).
        teacher_temperature (`float`, defaults to `0.1`): of the calibrated scores. Thurstone scores of a query
            span about 1-2 units, so temperature 1 gives a near-uniform teacher that teaches the student to flatten
            its ranking; 0.1 keeps the label set's order sharp.

        > Data

        max_query_length (`int`, defaults to `64`): query tokens.
        document_batch_size (`int`, defaults to `64`): batch size of the one pass that embeds the documents.
        selection_metric (`str`, *optional*): computed on `eval_dataset` (dev queries of the training data, never
            the held-out evaluation queries) before training and after every epoch; the best state, the untrained
            base included, is the one kept (`keep_best`). Defaults to `"label_ndcg@10"` (the student's ranking of
            each query's documents against its zELO scores) and, for `"pairwise_bce"`, to `"bce"` (the soft labels'
            cross-entropy on the dev pairs, lower is better; `"agreement"` and `"accuracy"` saturate on easy data).
        keep_best (`bool`, defaults to `True`): restore the best-scoring state at the end of training.

    Defaults that differ from `TrainingArguments`: those of :class:`BaseConfig` (`learning_rate=2e-5`,
    `logging_steps=10`, `remove_unused_columns=False`), `num_train_epochs=4`,
    `per_device_train_batch_size=16` (queries), `eval_strategy="epoch"` (when there is an `eval_dataset`),
    `save_strategy="no"`, `weight_decay=0.01`.
    """

    loss_type: str = field(
        default="listwise_kl",
        metadata={"help": "Objective: 'listwise_kl' (zELO scores) or 'contrastive' (binary labels).",
                  "choices": list(ZEMBED_LOSSES)},
    )
    temperature: float = field(default=0.05, metadata={"help": "Softmax temperature of the student's cosines."})
    teacher_temperature: float = field(default=0.1, metadata={"help": "Softmax temperature of the zELO scores."})
    pair_weighting: str = field(
        default="uniform",
        metadata={"help": "loss_type='pairwise_bce': weigh each pair's BCE 'uniform'ly or by the judges' 'confidence' "
                  "|2p - 1|.", "choices": list(PAIR_WEIGHTINGS)},
    )
    document_batch_size: int = field(default=64, metadata={"help": "Batch size of the document embedding pass."})
    selection_metric: str | None = field(
        default=None,
        metadata={"help": "Dev metric that picks the kept state (epoch 0 = the base); default: 'label_ndcg@10', "
                  "'bce' (lower is better) for loss_type='pairwise_bce'."},
    )
    keep_best: bool = field(default=True, metadata={"help": "Restore the best dev state at the end of training."})
    # TrainingArguments defaults that change
    num_train_epochs: float = field(default=4.0, metadata={"help": "Total number of training epochs."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Queries per device per step."})
    eval_strategy: str = field(default="epoch", metadata={"help": "When the dev metric is computed."})
    save_strategy: str = field(default="no", metadata={"help": "Checkpoints (the best state is kept in memory)."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})

    def __post_init__(self):
        if self.loss_type not in ZEMBED_LOSSES:
            raise ValueError(f"`loss_type` must be one of {tuple(ZEMBED_LOSSES)} (got loss_type={self.loss_type!r}).")
        for name in ("temperature", "teacher_temperature"):
            if getattr(self, name) <= 0:
                raise ValueError(f"`{name}` must be > 0 (got {name}={getattr(self, name)}): e.g. 0.05.")
        if self.pair_weighting not in PAIR_WEIGHTINGS:
            raise ValueError(f"`pair_weighting` must be one of {PAIR_WEIGHTINGS} (got pair_weighting="
                             f"{self.pair_weighting!r}).")
        allowed = tuple(SELECTION_METRICS[ZEMBED_LOSSES[self.loss_type].unit])
        self.selection_metric = self.selection_metric or allowed[0]
        if self.selection_metric not in allowed:
            raise ValueError(
                f"`selection_metric` must be one of {allowed} with loss_type={self.loss_type!r} (got "
                f"{self.selection_metric!r}): the dev metrics its training data supports without qrels."
            )
        super().__post_init__()
