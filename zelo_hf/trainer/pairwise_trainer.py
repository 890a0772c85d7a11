"""The pairwise small model (ZELO.md step 4): distil the LLM judges' soft preferences with BCE.

Input rows follow the preference-set schema (``query``, ``doc_a``, ``doc_b``, ``prob_a``; other columns are
ignored). The trained model judges new comparison graphs through :class:`zelo_hf.modeling.scoring.PairwiseScorer`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..modeling.scoring import forward_scores
from ..schema import check_numbers, check_texts, require_columns
from .base_trainer import RerankerTrainer, card_values
from .collators import PairwiseCollator
from .losses import soft_bce_loss
from .metrics import pairwise_metrics
from .pairwise_config import PairwiseConfig

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

    Args: those of :class:`RerankerTrainer`, with ``args`` a :class:`PairwiseConfig` and preference sets
    (``query``, ``doc_a``, ``doc_b``, ``prob_a``) as datasets.
    """

    config_class = PairwiseConfig
    collator_class = PairwiseCollator
    _task = "pairwise"
    _template_file = "pairwise.md"

    def _prepare_dataset(self, dataset, args: PairwiseConfig, split: str, model):
        """Validate the preference set (raises before training); the training split gets the swapped pairs."""
        require_columns(dataset.column_names, [*TEXT_COLUMNS, "prob_a"], f"{split} dataset",
                        "pass a preference set (zelo judge) or rename.")
        check_texts(dataset, TEXT_COLUMNS, f"{split} dataset")
        check_numbers(dataset, "prob_a", f"{split} dataset", low=0.0, high=1.0)
        if split == "train" and args.symmetrize:
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

    def hyperparameters(self) -> dict[str, Any]:
        """The shared hyper-parameters and ``symmetrize``."""
        return {**super().hyperparameters(), **card_values(self.args, ["symmetrize"])}
