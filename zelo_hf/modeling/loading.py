"""Loading a reranker: heads (``classification`` / ``causal``), tokenizers, adapters, ZeRO-3 whole-model loads;
what a base checkpoint was trained to score (``base_kind``)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import torch

from ..utils import get_logger

logger = get_logger(__name__)

HEADS = ("auto", "classification", "causal")
TRUE_TOKEN = "Yes"
IDENTITY_ACTIVATION = "torch.nn.modules.linear.Identity"
# ChatML as Qwen3 renders (system, user) + generation prompt; the query/document roles are the ones
# sentence-transformers assigns to the two halves of a pair, mapped to system/user like zerank does.
ZERANK_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% set role = {'query': 'system', 'document': 'user'}.get(message['role'], message['role']) %}"
    "<|im_start|>{{ role }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def resolve_head(config, head: str = "auto") -> str:
    """``"causal"`` or ``"classification"``; ``auto`` reads a saved ``zelo_head`` or the architecture."""
    if head not in HEADS:
        raise ValueError(f"`head` must be one of {HEADS} (got head={head!r}).")
    if head != "auto":
        return head
    saved = getattr(config, "zelo_head", None)
    if saved in HEADS[1:]:
        return saved
    archs = getattr(config, "architectures", None) or []
    return "causal" if archs and archs[0].endswith("ForCausalLM") else "classification"


def model_config(model):
    """The ``PretrainedConfig`` of a model, also through DDP / DeepSpeed (``.module``) and peft wrappers."""
    from transformers import PretrainedConfig

    # a DeepSpeedEngine has a `config` of its own (the DeepSpeed dict), so unwrap until a transformers config shows
    while not isinstance(getattr(model, "config", None), PretrainedConfig) and hasattr(model, "module"):
        model = model.module
    return model.config


def model_head(model) -> str:
    """The head recorded on a model loaded by :func:`load_reranker` (also through peft / DDP wrappers)."""
    head = getattr(model_config(model), "zelo_head", None)
    if head not in HEADS[1:]:
        raise ValueError(
            f"model has no `zelo_head` in its config (got {head!r}): load it with `zelo_hf.modeling.loading.load_reranker`."
        )
    return head


def check_num_labels(model_or_config) -> None:
    """A classification head must output one score: ``num_labels == 1`` (takes a model or its config)."""
    config = getattr(model_or_config, "config", model_or_config)
    num_labels = getattr(config, "num_labels", 1)
    if getattr(config, "zelo_head", "classification") == "classification" and num_labels != 1:
        raise ValueError(
            f"a reranker's classification head must have `num_labels=1` (got num_labels={num_labels}): load the "
            "base encoder (e.g. `BertModel` weights) so a fresh 1-output head is created, or pass a checkpoint "
            "trained as a regression cross-encoder."
        )


def load_tokenizer(name_or_path: str, head: str, **kwargs):
    """Tokenizer with a pad token; for the causal head, left padding and the zerank chat template."""
    from transformers import AutoTokenizer

    return prepare_tokenizer(AutoTokenizer.from_pretrained(name_or_path, **kwargs), head)


def prepare_tokenizer(tokenizer, head: str):
    """Set the pad token (eos/unk when missing) and, for the causal head, left padding and the chat template."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if head == "causal":
        tokenizer.padding_side = "left"  # the score is read at the last position, as LogitScore does
        if TRUE_TOKEN not in tokenizer.get_vocab():
            raise ValueError(
                f"the causal (zerank) head scores the logit of the token {TRUE_TOKEN!r}, which is not in the "
                f"vocabulary of {tokenizer.name_or_path!r}: use a tokenizer with a single 'Yes' token (e.g. Qwen3) "
                "or `head='classification'`."
            )
        tokenizer.chat_template = ZERANK_CHAT_TEMPLATE
    return tokenizer


def prepare_model_and_tokenizer(model, tokenizer, head: str = "auto", task: str = "pointwise"):
    """Record the head on an already-loaded model (``zelo_head``, token id, pad id) and prepare its tokenizer."""
    head = resolve_head(model.config, head)
    tokenizer = prepare_tokenizer(tokenizer, head)
    model.config.zelo_head = head
    model.config.zelo_task = getattr(model.config, "zelo_task", None) or task
    if head == "causal":
        model.config.zelo_true_token_id = tokenizer.convert_tokens_to_ids(TRUE_TOKEN)
    else:
        check_num_labels(model)
        model.config.sentence_transformers = {"activation_fn": IDENTITY_ACTIVATION}
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def _is_adapter(path: str) -> bool:
    return (Path(path) / "adapter_config.json").is_file()


def load_reranker(
    name_or_path: str,
    head: str = "auto",
    task: str = "pointwise",
    dtype: str | torch.dtype | None = None,
    attn_implementation: str | None = None,
    zero3_init: bool = False,
    **model_kwargs: Any,
):
    """Load ``(model, tokenizer)`` for a scoring head from a model name, a local folder or a saved LoRA adapter.

    A base encoder (e.g. ``BertModel`` weights) gets a fresh ``num_labels=1`` head; a checkpoint that already has
    a classification head with ``num_labels != 1`` is refused. ``dtype`` accepts ``"bfloat16"``/``"auto"``/...
    ``zero3_init=True`` lets an active DeepSpeed ZeRO-3 config partition the weights as they load (the trainers
    do); otherwise the whole model loads on this process alone, as scoring needs (see :func:`whole_model_here`).
    """
    if not zero3_init:
        with whole_model_here():
            return load_reranker(
                name_or_path, head, task, dtype=dtype, attn_implementation=attn_implementation, zero3_init=True,
                **model_kwargs,
            )
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    if _is_adapter(name_or_path):
        return _load_adapter(
            name_or_path, dtype=dtype, attn_implementation=attn_implementation, zero3_init=True, **model_kwargs
        )
    config = AutoConfig.from_pretrained(name_or_path)
    head = resolve_head(config, head)
    archs = getattr(config, "architectures", None) or []
    if head == "classification" and archs and archs[0].endswith("ForSequenceClassification"):
        check_num_labels(config)
    kwargs = {k: v for k, v in {"dtype": dtype, "attn_implementation": attn_implementation}.items() if v is not None}
    kwargs.update(model_kwargs)
    tokenizer = load_tokenizer(name_or_path, head)
    auto = AutoModelForCausalLM if head == "causal" else AutoModelForSequenceClassification
    if head == "classification":
        kwargs["num_labels"] = 1
    model = auto.from_pretrained(name_or_path, **kwargs)
    return prepare_model_and_tokenizer(model, tokenizer, head, task)


@contextlib.contextmanager
def whole_model_here():
    """Load models whole on this process, also while a ZeRO-3 ``TrainingArguments`` is alive.

    Under ZeRO-3, transformers' ``from_pretrained`` partitions weights with ``deepspeed.zero.Init``, a collective
    call: a scorer loaded on the main process alone (the pipeline's judging and evaluation stages) would wait
    forever for ranks parked at a barrier.
    """
    from transformers.integrations import deepspeed as hf_deepspeed

    ref = hf_deepspeed._hf_deepspeed_config_weak_ref  # transformers has no public getter for the object
    active = ref() if ref is not None else None
    if active is None:
        yield
        return
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed.set_hf_deepspeed_config(active)


def _load_adapter(path: str, **kwargs):
    """A LoRA adapter saved by the trainers: base model + adapter (with its trained head) + the zelo_* config."""
    from peft import PeftConfig, PeftModel

    saved = _read_json(Path(path) / "zelo_config.json")
    peft_config = PeftConfig.from_pretrained(path)
    head, task = saved.get("zelo_head", "auto"), saved.get("zelo_task", "pointwise")
    base, tokenizer = load_reranker(peft_config.base_model_name_or_path, head=head, task=task, **kwargs)
    for key, value in saved.items():
        setattr(base.config, key, value)
    if (Path(path) / "tokenizer_config.json").is_file():
        tokenizer = load_tokenizer(path, base.config.zelo_head)
    return PeftModel.from_pretrained(base, path), tokenizer


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def zelo_config(model) -> dict[str, Any]:
    """The ``zelo_*`` keys recorded on a model's config (head, task, token id, target transform)."""
    return {k: v for k, v in model.config.to_dict().items() if k.startswith("zelo_")}


def base_kind(model_path: str) -> str:
    """How a base checkpoint was trained to score: ``bi`` (a sentence-transformers bi-encoder: cosine), ``cross``
    (a sequence-classification head) or ``causal`` (a causal LM, scored by the zerank "Yes" logit)."""
    path = Path(model_path)
    if (path / "modules.json").exists():
        return "bi"
    config = path / "config.json"
    archs = json.loads(config.read_text()).get("architectures") or [] if config.exists() else []
    if any(a.endswith("ForCausalLM") for a in archs):
        return "causal"
    if any(a.endswith("ForSequenceClassification") for a in archs):
        return "cross"
    return "bi"  # a plain encoder: sentence-transformers' mean pooling, what it would be used as
