"""The one LoRA path of the trainers: the config from TRL's ``ModelConfig`` and the wrapping of a reranker.

The CLI (``zelo train-*``), the recipes and ``eval/`` all build their ``peft.LoraConfig`` with
:func:`get_lora_config`; the trainers wrap the model with :func:`attach_lora`.
"""

from __future__ import annotations

import dataclasses

import torch

from ..utils import get_logger

logger = get_logger(__name__)

TRL_DEFAULT_TASK_TYPE = "CAUSAL_LM"  # trl's ModelConfig.lora_task_type default


def get_lora_config(model_args):
    """The ``peft.LoraConfig`` of TRL's ``ModelConfig`` (``--use_peft --lora_r ...``), or None without ``use_peft``.

    TRL's ``get_peft_config`` fitted to a reranker: ``lora_target_modules`` defaults to ``"all-linear"`` (peft knows
    no default modules for most architectures), one module name stays a name (not a regex), and the config has no
    ``task_type``, so peft wraps the model as a
    plain ``PeftModel`` whatever its head; :func:`attach_lora` adds a classification head to ``modules_to_save``.
    """
    if model_args is None or not getattr(model_args, "use_peft", False):
        return None
    from trl import get_peft_config

    task_type = getattr(model_args, "lora_task_type", None)
    if task_type not in (None, TRL_DEFAULT_TASK_TYPE):
        logger.warning(
            "`lora_task_type=%r` is ignored: the reranker's head (`head`) decides what is trained and saved.", task_type
        )
    config = get_peft_config(model_args)
    return dataclasses.replace(config, task_type=None, target_modules=_target_modules(config.target_modules))


def _target_modules(value):
    """``ModelConfig`` turns a one-entry ``lora_target_modules`` into a bare string, which peft reads as a regex
    matched against the full module path (``query`` then matches nothing): a plain name goes back into a list."""
    if value is None:
        return "all-linear"
    if isinstance(value, str) and value != "all-linear" and value.isidentifier():
        return [value]
    return value


def classification_head_names(model) -> list[str]:
    """Top-level module name(s) of a sequence-classification head (``classifier`` for BERT, ``score`` for Qwen3)."""
    names = [name for name in ("classifier", "score") if isinstance(getattr(model, name, None), torch.nn.Module)]
    if not names:
        raise ValueError(
            f"cannot find the classification head of {type(model).__name__} (looked for `classifier`, `score`): "
            "pass a peft_config whose `modules_to_save` names it."
        )
    return names


def attach_lora(model, peft_config, head: str, zero3: bool = False):
    """Wrap ``model`` with peft; a classification head is trained and saved with the adapter (``modules_to_save``).

    Without it the freshly initialised head would stay random and be missing from the saved adapter (the
    known pitfall). The causal head reads the pretrained LM head's "Yes" row, which LoRA's updates steer.
    """
    from peft import get_peft_model

    if head == "classification":
        names = classification_head_names(model)
        peft_config.modules_to_save = sorted(set(peft_config.modules_to_save or []) | set(names))
    # ZeRO-3 gathers parameters in the dtype of the first one: keep adapters in the base dtype (trl#6089).
    return get_peft_model(model, peft_config, autocast_adapter_dtype=not zero3)
