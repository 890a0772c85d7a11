"""The pairwise small model (ZELO.md step 4): distil the LLM judges' soft preferences with BCE.

Input rows follow the preference-set schema (``query``, ``doc_a``, ``doc_b``, ``prob_a``; other columns are
ignored). The trained model judges new comparison graphs through :class:`zelo_hf.modeling.PairwiseScorer`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..modeling import forward_scores
from .collators import PairwiseCollator
from .losses import soft_bce_loss
from .pairwise_config import PairwiseConfig
from .utils import RerankerTrainer, check_columns, check_numbers, check_texts, pairwise_metrics

TEXT_COLUMNS = ["query", "doc_a", "doc_b"]


def swap_pairs(batch: dict[str, list], prob_column: str = "prob_a") -> dict[str, list]:
    """Batched map: every pair followed by its swap (q, B, A, 1 - p); other columns are repeated as they are."""
    out: dict[str, list] = {}
    for name, values in batch.items():
        if name == "doc_a":
            other = batch["doc_b"]
        elif name == "doc_b":
            other = batch["doc_a"]
        elif name == prob_column:
            other = [1.0 - p for p in values]
        else:
            other = values
        out[name] = [v for pair in zip(values, other) for v in pair]
    return out


class PairwiseTrainer(RerankerTrainer):
    """A ``transformers.Trainer`` for (query, A, B) -> logit(A more relevant), trained against soft ``prob_a``.

    Args:
        model: a model name/path (loaded with ``args.head``) or a model from ``zelo_hf.modeling.load_reranker``.
        args: a :class:`PairwiseConfig`.
        train_dataset, eval_dataset: preference sets (``query``, ``doc_a``, ``doc_b``, ``prob_a``).
        processing_class: the tokenizer (required with a loaded model).
        peft_config: a ``peft.LoraConfig``; the classification head is added to ``modules_to_save``.
    """

    _task = "pairwise"
    _card_template = "pairwise.md"

    def __init__(
        self,
        model,
        args: PairwiseConfig | None = None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        peft_config=None,
        compute_metrics=None,
        callbacks=None,
        optimizers=(None, None),
        dataset_name: str | None = None,
    ):
        args = args or PairwiseConfig(output_dir="pairwise-model")
        model, processing_class = self._load_model(model, args, processing_class, peft_config)
        self.dataset_name = dataset_name
        if train_dataset is not None:
            train_dataset = self._prepare_dataset(train_dataset, args, "train", symmetrize=args.symmetrize)
        if isinstance(eval_dataset, dict):
            eval_dataset = {k: self._prepare_dataset(v, args, f"eval[{k}]") for k, v in eval_dataset.items()}
        elif eval_dataset is not None:
            eval_dataset = self._prepare_dataset(eval_dataset, args, "eval")
        collator = PairwiseCollator(processing_class, model.config.zelo_head, args.max_length, args.max_query_length)
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

    @staticmethod
    def _prepare_dataset(dataset, args: PairwiseConfig, split: str, symmetrize: bool = False):
        """Validate the preference set (raises before training) and add the swapped pairs."""
        check_columns(dataset, [*TEXT_COLUMNS, "prob_a"], split, "pass a preference set (zelo judge) or rename.")
        check_texts(dataset, TEXT_COLUMNS, split)
        check_numbers(dataset, "prob_a", split, low=0.0, high=1.0)
        if symmetrize:
            dataset = dataset.map(swap_pairs, batched=True, desc=f"Adding swapped pairs ({split})")
        return dataset

    def compute_loss(self, model, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch=None):
        """BCE-with-logits of f(q, A, B) against the soft ``prob_a`` (``labels``)."""
        logits = forward_scores(model, inputs)
        loss = soft_bce_loss(logits, inputs["labels"])
        return (loss, {"logits": logits}) if return_outputs else loss

    @staticmethod
    def _metrics(eval_pred) -> dict[str, float]:
        logits = np.asarray(eval_pred.predictions)
        labels = eval_pred.label_ids[0] if isinstance(eval_pred.label_ids, tuple) else eval_pred.label_ids
        return pairwise_metrics(logits, np.asarray(labels))
