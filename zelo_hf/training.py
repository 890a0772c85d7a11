"""The one training step of ``zelo train-pointwise`` / ``zelo train-pairwise`` and of the recipes' training stages:
TRL's ``ModelConfig`` folded into the trainer config (``model_init_kwargs``), the one LoRA path
(:func:`zelo_hf.trainer.lora.get_lora_config`), the seed set before the model (and its fresh scoring head) loads, and
the trainer built (trl ``scripts/sft.py`` does the same in its ``main``)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from transformers import set_seed

from .trainer.lora import get_lora_config


def model_init_kwargs(model_args, training_args) -> None:
    """Fold TRL's ModelConfig (dtype, attention, revision) into ``training_args.model_init_kwargs``; values already
    in ``training_args.model_init_kwargs`` win."""
    kwargs = {
        "revision": model_args.model_revision,
        "dtype": model_args.dtype,
        "attn_implementation": model_args.attn_implementation,
    }
    kwargs = {k: v for k, v in kwargs.items() if v is not None and v != "main"}
    if isinstance(training_args.model_init_kwargs, dict):
        kwargs.update(training_args.model_init_kwargs)
    training_args.model_init_kwargs = kwargs or training_args.model_init_kwargs


def build_trainer(trainer_cls, model: Any, training_args, model_args=None, train_dataset=None, eval_dataset=None,
                  dataset_name: str | None = None):
    """``trainer_cls(model, ...)`` with ``model_args`` (a TRL ``ModelConfig`` or None) folded in and LoRA when
    ``model_args.use_peft``; ``training_args.seed`` is set first, so a fresh head is the same on every run."""
    if model_args is not None:
        model_init_kwargs(model_args, training_args)
    set_seed(training_args.seed)
    return trainer_cls(
        model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        peft_config=get_lora_config(model_args),
        dataset_name=dataset_name,
    )


def sub_config(config, cls, output_dir: str | Path, **overrides: Any):
    """A trainer config of class ``cls`` sharing ``config``'s common settings (device, precision, seed, logging) that
    ``cls`` has, e.g. a stage's own trainer inside a recipe run; never saves checkpoints or uploads by itself."""
    shared = ("seed", "bf16", "fp16", "use_cpu", "report_to", "logging_steps", "dataloader_num_workers", "head",
              "max_query_length", "gradient_accumulation_steps", "lr_scheduler_type", "warmup_steps", "weight_decay",
              "model_init_kwargs", "disable_tqdm", "ddp_backend")
    known = {f.name for f in fields(cls)}
    kwargs = {name: getattr(config, name) for name in shared if hasattr(config, name) and name in known}
    if getattr(config, "gradient_checkpointing", False):
        kwargs["gradient_checkpointing"] = True
    kwargs.update(output_dir=str(output_dir), save_strategy="no", push_to_hub=False, **overrides)
    return cls(**kwargs)
