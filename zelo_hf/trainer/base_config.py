"""The base configurations of the trainers, as trl's ``_BaseConfig``: :class:`BaseConfig` (every zELO trainer,
zembed included) and :class:`RerankerConfig` (the cross-encoders: pairwise and pointwise)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import ClassVar

import torch
from transformers import TrainingArguments

from ..modeling.encoding import DEFAULT_MAX_QUERY_LENGTH, check_lengths


@dataclass
class BaseConfig(TrainingArguments):
    r"""The ``TrainingArguments`` defaults every zELO trainer changes, and the query length they all cut to.

    Parameters:
        max_query_length (`int`, defaults to `64`): queries are cut to this many tokens.

    Defaults that differ from `TrainingArguments`: `learning_rate=2e-5`, `logging_steps=10`,
    `remove_unused_columns=False` (the collators tokenize the text columns per batch).
    """

    max_query_length: int = field(
        default=DEFAULT_MAX_QUERY_LENGTH, metadata={"help": "Queries are cut to this many tokens."}
    )
    learning_rate: float = field(default=2e-5, metadata={"help": "The initial learning rate for AdamW."})
    logging_steps: float = field(default=10, metadata={"help": "Log every X update steps."})
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep the text columns: the collator tokenizes them per batch."}
    )


@dataclass
class RerankerConfig(BaseConfig):
    r"""What :class:`PairwiseConfig` and :class:`PointwiseConfig` share: the scoring head, lengths, LoRA merging.

    Parameters:
        > Model

        head (`str`, defaults to `"auto"`): `"classification"`, `"causal"` (zerank "Yes" logit) or `"auto"`.
        model_init_kwargs (`dict`, *optional*): passed to `from_pretrained` when the model is a name.
        merge_lora (`bool`, defaults to `False`): write a merged plain model on the final save.

        > Data

        max_length (`int`, defaults to `512`), max_query_length (`int`, defaults to `64`): only documents are
            truncated; the query is cut to `max_query_length` tokens.

    Defaults that differ from `TrainingArguments`: those of :class:`BaseConfig`, `bf16=None` (on where CUDA supports
    bf16) and `label_names` (each subclass's `default_label_names`).
    """

    default_label_names: ClassVar[tuple[str, ...]] = ("labels",)

    head: str = field(
        default="auto",
        metadata={
            "help": "Scoring head: 'classification' (AutoModelForSequenceClassification, num_labels=1), 'causal' "
            "(zerank style: logit of 'Yes' after a system=query/user=document chat) or 'auto' (causal for "
            "*ForCausalLM checkpoints, else classification).",
            "choices": ["auto", "classification", "causal"],
        },
    )
    max_length: int = field(default=512, metadata={"help": "Maximum tokens per input; only documents are truncated."})
    model_init_kwargs: dict | str | None = field(
        default=None,
        metadata={
            "help": 'Keyword arguments (a dict, or a JSON string on the command line) for `from_pretrained` when the '
            'model is a name, e.g. \'{"dtype": "bfloat16"}\'.'
        },
    )
    merge_lora: bool = field(
        default=False,
        metadata={
            "help": "With a LoRA adapter: the final save writes the merged plain model to output_dir (loadable by "
            "CrossEncoder) and the adapter to output_dir/adapter."
        },
    )
    bf16: bool | None = field(
        default=None, metadata={"help": "bf16 mixed precision; None turns it on where CUDA supports bf16."}
    )

    def __post_init__(self):
        check_lengths(self.max_length, self.max_query_length)
        if self.bf16 is None:
            self.bf16 = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
        if self.ddp_backend is None and _deepspeed_without_cuda():
            # accelerate's PartialState finds no backend for DeepSpeed on CPU and falls back to one process per rank
            # (DeepSpeed then rejects the batch size); gloo is what DeepSpeed's CPU accelerator initialises anyway.
            self.ddp_backend = "gloo"
        if self.label_names is None:
            self.label_names = list(self.default_label_names)
        super().__post_init__()


def _deepspeed_without_cuda() -> bool:
    launched = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true" and "LOCAL_RANK" in os.environ
    return launched and not torch.cuda.is_available()


def own_option_names(*dataclass_types) -> set[str]:
    """The options zELO adds on top of ``TrainingArguments``: every field of ``dataclass_types`` (script arguments,
    configs) that ``TrainingArguments`` lacks. ``zelo <command> --help`` lists them first, in their own group."""
    base = {f.name for f in fields(TrainingArguments)}
    return {f.name for cls in dataclass_types for f in fields(cls)} - base
