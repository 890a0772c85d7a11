"""Configuration of :class:`~zelo_hf.trainer.PairwiseTrainer` (a :class:`RerankerConfig`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .base_config import RerankerConfig


@dataclass
class PairwiseConfig(RerankerConfig):
    r"""Configuration for the pairwise small model that distils the LLM judges (ZELO.md step 4).

    The model reads (query, document A, document B) and outputs the logit that A is more relevant; the loss is
    BCE-with-logits against the soft ``prob_a`` of the preference set.

    Parameters:
        > Model

        head (`str`, defaults to `"auto"`): `"classification"`, `"causal"` (zerank "Yes" logit) or `"auto"`.
        model_init_kwargs (`dict`, *optional*): passed to `from_pretrained` when the model is a name.
        merge_lora (`bool`, defaults to `False`): write a merged plain model on the final save.

        > Data

        max_length (`int`, defaults to `512`): tokens per (query, A, B) input; the documents share what is left
            after the query, so neither is truncated away.
        max_query_length (`int`, defaults to `64`): the query is cut to this many tokens.
        symmetrize (`bool`, defaults to `True`): also train on every pair swapped, (q, B, A) with `1 - prob_a`,
            so the model learns the order symmetry the judges' random swaps give.

    Defaults that differ from `TrainingArguments`: `learning_rate=2e-5`, `logging_steps=10`,
    `bf16=None` (on when CUDA supports bf16), `remove_unused_columns=False` (the collator reads the text columns),
    `label_names=["labels"]`.
    """

    symmetrize: bool = field(
        default=True, metadata={"help": "Train on both orders: (q, A, B, p) and (q, B, A, 1 - p)."}
    )
