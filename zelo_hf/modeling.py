"""Reranker models: two scoring heads, loading/saving that sentence-transformers understands, fast inference.

Heads (``head=``):

- ``"classification"``: ``AutoModelForSequenceClassification`` with ``num_labels=1`` (BERT/MiniLM encoders, or
  decoders such as Qwen3 with a ``score`` layer on the last non-pad token). The score is the raw logit. Saved
  models carry ``"sentence_transformers": {"activation_fn": "torch.nn.modules.linear.Identity"}`` in
  ``config.json`` so ``CrossEncoder(path).predict`` returns the same raw logit (its default would be a sigmoid).
- ``"causal"`` (zerank style, ZELO.md step 7): a causal LM reads the chat
  ``<|im_start|>system\\n{query}<|im_end|>\\n<|im_start|>user\\n{document}<|im_end|>\\n<|im_start|>assistant\\n``
  and the score is the logit of the ``"Yes"`` token at the last position. Saved models also get the
  sentence-transformers module files (``modules.json``: ``Transformer(text-generation)`` + ``LogitScore`` with
  ``true_token_id`` = "Yes" and no false token, Identity activation, and ``add_generation_prompt`` in the
  Transformer's ``processing_kwargs``), and a chat template that maps the ``query``/``document`` roles
  sentence-transformers (>= 5.4) gives a pair onto ``system``/``user``. ``CrossEncoder(path)`` then scores
  exactly like :func:`rerank`.

Pairwise models (``task="pairwise"``) use the same heads on (query, document A, document B) and output the logit
that A is more relevant; :class:`PairwiseScorer` turns them into antisymmetrised probabilities.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .utils import get_logger

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
PAIRWISE_CHAT_FORMAT = "Document A:\n{doc_a}\n\nDocument B:\n{doc_b}"


# ----------------------------------------------------------------------------------------------- loading


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
            f"model has no `zelo_head` in its config (got {head!r}): load it with `zelo_hf.modeling.load_reranker`."
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


# ----------------------------------------------------------------------------------------------- saving


def write_sentence_transformers_files(model, output_dir: str | Path, max_length: int | None = None) -> None:
    """Write what ``CrossEncoder(output_dir)`` needs to score like this toolkit (see the module docstring)."""
    output_dir = Path(output_dir)
    head = model_head(model)
    version = _st_version()
    st_config = {
        "__version__": version,
        "activation_fn": IDENTITY_ACTIVATION,
        "default_prompt_name": None,
        "model_type": "CrossEncoder",
        "prompts": {},
    }
    (output_dir / "config_sentence_transformers.json").write_text(json.dumps(st_config, indent=2))
    if head != "causal":
        return  # plain sequence-classification folder; config.json already holds the Identity activation
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.base.modules.transformer.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_LogitScore",
            "type": "sentence_transformers.cross_encoder.modules.logit_score.LogitScore",
        },
    ]
    transformer = {
        "transformer_task": "text-generation",
        "modality_config": {
            "text": {"method": "forward", "method_output_name": "logits"},
            "message": {"method": "forward", "method_output_name": "logits", "format": "flat"},
        },
        "module_output_name": "causal_logits",
        "processing_kwargs": {"chat_template": {"add_generation_prompt": True}},
    }
    if max_length:
        transformer["max_seq_length"] = max_length
    logit = {
        "true_token_id": model.config.zelo_true_token_id,
        "false_token_id": None,
        "module_input_name": "causal_logits",
    }
    (output_dir / "modules.json").write_text(json.dumps(modules, indent=2))
    (output_dir / "sentence_bert_config.json").write_text(json.dumps(transformer, indent=2))
    (output_dir / "1_LogitScore").mkdir(exist_ok=True)
    (output_dir / "1_LogitScore" / "config.json").write_text(json.dumps(logit, indent=2))


def _st_version() -> dict[str, str]:
    import transformers

    try:
        import sentence_transformers

        st = sentence_transformers.__version__
    except ImportError:  # pragma: no cover - a hard dependency, but saving must not need it
        st = "unknown"
    return {"sentence_transformers": st, "transformers": transformers.__version__, "pytorch": torch.__version__}


# ----------------------------------------------------------------------------------------------- encoding


def truncate_texts(tokenizer, texts: list[str], max_tokens: int | list[int]) -> tuple[list[str], list[int | None]]:
    """Cut each text to its first ``max_tokens`` tokens at a token boundary of the original string.

    Returns the texts and their token counts after the cut (``None`` for texts too short to need counting).
    Cutting the string (not the ids) keeps the final tokenization to one call of the tokenizer, exactly as
    sentence-transformers encodes an uncut pair. A text of ``b`` UTF-8 bytes has at most ``b + 1`` tokens
    (byte-level BPE, WordPiece, SentencePiece's leading piece), so only longer texts are tokenized here.
    """
    limits = [max_tokens] * len(texts) if isinstance(max_tokens, int) else list(max_tokens)
    out, lengths = list(texts), [None] * len(texts)
    todo = [i for i, (t, lim) in enumerate(zip(texts, limits)) if len(t.encode("utf-8")) + 1 > lim]
    if not todo:
        return out, lengths
    enc = tokenizer([texts[i] for i in todo], add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    for i, offsets in zip(todo, enc["offset_mapping"]):
        limit = max(int(limits[i]), 0)
        if len(offsets) > limit:
            out[i] = texts[i][: offsets[limit - 1][1]] if limit > 0 else ""
        lengths[i] = min(len(offsets), limit)
    return out, lengths


def _chat_texts(tokenizer, systems: list[str], users: list[str]) -> list[str]:
    conversations = [
        [{"role": "system", "content": s}, {"role": "user", "content": u}] for s, u in zip(systems, users)
    ]
    return tokenizer.apply_chat_template(conversations, tokenize=False, add_generation_prompt=True)


def _chat_overhead(tokenizer, queries: list[str], n_docs: int = 1) -> list[int]:
    """Token count of each rendered prompt with empty document slot(s)."""
    users = [PAIRWISE_CHAT_FORMAT.format(doc_a="", doc_b="")] * len(queries) if n_docs == 2 else [""] * len(queries)
    texts = _chat_texts(tokenizer, queries, users)
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def _tensors(tokenizer, *texts, **kwargs):
    return tokenizer(*texts, padding=True, return_tensors="pt", **kwargs)


def encode_pointwise(tokenizer, queries, docs, head: str, max_length: int, max_query_length: int):
    """Tokenize (query, document) pairs; only documents are truncated, queries are cut to ``max_query_length``."""
    queries, _ = truncate_texts(tokenizer, list(queries), max_query_length)
    docs = list(docs)
    if head == "causal":
        budgets = [max_length - n for n in _chat_overhead(tokenizer, queries)]
        docs, _ = truncate_texts(tokenizer, docs, budgets)
        return _tensors(tokenizer, _chat_texts(tokenizer, queries, docs), add_special_tokens=False)
    return _tensors(tokenizer, queries, docs, truncation="only_second", max_length=max_length)


def encode_pairwise(tokenizer, queries, docs_a, docs_b, head: str, max_length: int, max_query_length: int):
    """Tokenize (query, A, B): ``[CLS] q [SEP] a [SEP] b [SEP]`` for encoders, a chat prompt for the causal head.

    Each document gets half of the tokens left after the query, so neither is cut away entirely.
    """
    queries, _ = truncate_texts(tokenizer, list(queries), max_query_length)
    if head == "causal":
        overhead = _chat_overhead(tokenizer, queries, n_docs=2)
    else:
        joiner = f" {tokenizer.sep_token} " if tokenizer.sep_token else "\n\n"
        fixed = tokenizer.num_special_tokens_to_add(pair=True) + (1 if tokenizer.sep_token else 2)
        q_lens = [len(ids) for ids in tokenizer(queries, add_special_tokens=False)["input_ids"]]
        overhead = [n + fixed for n in q_lens]
    budgets = [(max_length - n) // 2 for n in overhead]
    docs_a, _ = truncate_texts(tokenizer, list(docs_a), budgets)
    docs_b, _ = truncate_texts(tokenizer, list(docs_b), budgets)
    if head == "causal":
        users = [PAIRWISE_CHAT_FORMAT.format(doc_a=a, doc_b=b) for a, b in zip(docs_a, docs_b)]
        return _tensors(tokenizer, _chat_texts(tokenizer, queries, users), add_special_tokens=False)
    seconds = [a + joiner + b for a, b in zip(docs_a, docs_b)]
    return _tensors(tokenizer, queries, seconds, truncation="only_second", max_length=max_length)


# ----------------------------------------------------------------------------------------------- scoring


def forward_scores(model, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """One score per row: the head's logit (classification) or the "Yes" logit at the last position (causal)."""
    model_inputs = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    if model_head(model) == "causal":
        logits = model(**model_inputs, logits_to_keep=1).logits
        return logits[:, -1, model_config(model).zelo_true_token_id].float()
    return model(**model_inputs).logits.squeeze(-1).float()


def check_lengths(max_length: int, max_query_length: int) -> None:
    """Queries are cut to ``max_query_length``; the rest of ``max_length`` must leave room for the document(s)."""
    if max_query_length >= max_length - 8:
        raise ValueError(
            f"`max_query_length` must leave room for documents (got max_query_length={max_query_length}, "
            f"max_length={max_length}): pass e.g. max_query_length={max(max_length // 4, 1)}."
        )


def default_max_length(tokenizer, model=None, cap: int = 512) -> int:
    """The tokenizer's ``model_max_length`` (or the model's positions), capped at ``cap``."""
    limit = getattr(tokenizer, "model_max_length", None) or cap
    if model is not None:
        limit = min(limit, getattr(model.config, "max_position_embeddings", limit) or limit)
    return int(min(limit, cap))


def _autocast(device: torch.device):
    use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else torch.autocast(device.type, enabled=False)


class _FirstTokenLayer(torch.nn.Module):
    """The last layer of a BERT classifier, computed at the first ([CLS]) position only.

    ``BertForSequenceClassification`` reads nothing but that position's final state (pooler -> classifier), so
    the other positions' queries, attention outputs and feed-forward passes of the last layer are wasted work:
    keys and values still come from every token, and the [CLS] arithmetic is the full layer's. On a 6-layer
    MiniLM at 256 tokens this skips ~14% of the forward FLOPs (``eval/bench_train.py`` measures the effect).
    """

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, hidden_states, attention_mask=None, *args, **kwargs):
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
        from transformers.models.bert.modeling_bert import eager_attention_forward

        attention = self.layer.attention.self
        first = hidden_states[:, :1]
        heads = (hidden_states.shape[0], -1, attention.num_attention_heads, attention.attention_head_size)
        query = attention.query(first).view(heads).transpose(1, 2)
        key = attention.key(hidden_states).view(heads).transpose(1, 2)
        value = attention.value(hidden_states).view(heads).transpose(1, 2)
        if attention_mask is not None and attention_mask.dim() == 4 and attention_mask.shape[-2] > 1:
            attention_mask = attention_mask[:, :, :1, :]  # the mask row of the one query kept
        interface = ALL_ATTENTION_FUNCTIONS.get_interface(
            attention.config._attn_implementation, eager_attention_forward
        )
        context, _ = interface(attention, query, key, value, attention_mask, dropout=0.0, scaling=attention.scaling)
        context = context.reshape(first.shape[0], 1, -1).contiguous()
        return self.layer.feed_forward_chunk(self.layer.attention.output(context, first))


@contextlib.contextmanager
def first_token_last_layer(model):
    """Inference on a plain BERT classifier runs its last layer at [CLS] only (see :class:`_FirstTokenLayer`);
    any other model is left as it is."""
    from transformers.models.bert.modeling_bert import BertForSequenceClassification, BertLayer

    eligible = (
        type(model) is BertForSequenceClassification
        and not model.training
        and model.bert.pooler is not None
        and not model.config.is_decoder
        and not getattr(model.config, "chunk_size_feed_forward", 0)
        and isinstance(model.bert.encoder.layer[-1], BertLayer)
    )
    if not eligible:
        yield
        return
    layers = model.bert.encoder.layer
    last = layers[-1]
    layers[-1] = _FirstTokenLayer(last)
    try:
        yield
    finally:
        layers[-1] = last


@torch.inference_mode()
def score_pairs(
    model,
    tokenizer,
    queries: list[str],
    docs: list[str],
    batch_size: int = 32,
    max_length: int | None = None,
    max_query_length: int = 64,
) -> np.ndarray:
    """Scores of many (query, document) pairs at once (evaluation): length-sorted batches, original order out."""
    if len(queries) != len(docs):
        raise ValueError(f"`queries` and `docs` must have the same length (got {len(queries)} and {len(docs)}).")
    head = model_head(model)
    max_length = max_length or default_max_length(tokenizer, model)
    check_lengths(max_length, max_query_length)
    device = next(model.parameters()).device
    order = np.argsort([-(len(q) + len(d)) for q, d in zip(queries, docs)], kind="stable")
    was_training = model.training
    model.eval()
    out = np.empty(len(queries), dtype=np.float32)
    with _autocast(device), first_token_last_layer(model):
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = encode_pointwise(
                tokenizer, [queries[i] for i in idx], [docs[i] for i in idx], head, max_length, max_query_length
            )
            out[idx] = forward_scores(model, batch.to(device)).cpu().numpy()
    model.train(was_training)
    return out


def rerank(
    model,
    query: str,
    docs: list[str],
    batch_size: int = 32,
    max_length: int | None = None,
    return_documents: bool = False,
    tokenizer=None,
) -> np.ndarray | list[dict[str, Any]]:
    """Score ``docs`` for one ``query``; scores come back in the original order.

    ``model`` is a model from :func:`load_reranker` (pass ``tokenizer``) or a path/name (loaded here).
    With ``return_documents=True`` returns :func:`ranking` instead: dicts sorted by descending score.
    """
    if isinstance(model, (str, Path)):
        model, tokenizer = load_reranker(str(model))
    if tokenizer is None:
        raise ValueError("`tokenizer` is required when `model` is a loaded model: pass the one from load_reranker.")
    scores = score_pairs(model, tokenizer, [query] * len(docs), list(docs), batch_size, max_length)
    return ranking(scores, docs) if return_documents else scores


def ranking(scores: np.ndarray, docs: list[str] | None = None) -> list[dict[str, Any]]:
    """``[{"corpus_id", "score"(, "text")}]`` sorted by descending score (ties keep the input order)."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    rows = [{"corpus_id": int(i), "score": float(scores[i])} for i in order]
    if docs is not None:
        for row in rows:
            row["text"] = docs[row["corpus_id"]]
    return rows


class PairwiseScorer:
    """P(document A is more relevant than B) from a trained pairwise model (ZELO.md step 4).

    ``predict`` antisymmetrises: ``p = (sigmoid(f(q, A, B)) + 1 - sigmoid(f(q, B, A))) / 2``, so
    ``predict(q, A, B) == 1 - predict(q, B, A)`` exactly and the model's position bias cancels, as the LLM judges'
    random order swaps do.
    """

    def __init__(
        self,
        model_name_or_path,
        tokenizer=None,
        device: str | None = None,
        max_length: int | None = None,
        max_query_length: int = 64,
        dtype: str | None = None,
    ):
        if isinstance(model_name_or_path, (str, Path)):
            model_name_or_path, tokenizer = load_reranker(str(model_name_or_path), task="pairwise", dtype=dtype)
        if tokenizer is None:
            raise ValueError("`tokenizer` is required when passing a loaded model to PairwiseScorer.")
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model_name_or_path.to(device).eval()
        self.tokenizer = tokenizer
        self.head = model_head(self.model)
        self.max_length = max_length or default_max_length(tokenizer, self.model)
        self.max_query_length = max_query_length
        check_lengths(self.max_length, self.max_query_length)

    @torch.inference_mode()
    def logits(self, queries: list[str], docs_a: list[str], docs_b: list[str], batch_size: int = 32) -> np.ndarray:
        """Raw logits f(q, A, B) in the input order (length-sorted batches)."""
        device = next(self.model.parameters()).device
        order = np.argsort([-(len(a) + len(b)) for a, b in zip(docs_a, docs_b)], kind="stable")
        out = np.empty(len(queries), dtype=np.float32)
        with _autocast(device), first_token_last_layer(self.model):
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                batch = encode_pairwise(
                    self.tokenizer,
                    [queries[i] for i in idx],
                    [docs_a[i] for i in idx],
                    [docs_b[i] for i in idx],
                    self.head,
                    self.max_length,
                    self.max_query_length,
                )
                out[idx] = forward_scores(self.model, batch.to(device)).cpu().numpy()
        return out

    def predict(self, queries: list[str], docs_a: list[str], docs_b: list[str], batch_size: int = 32) -> np.ndarray:
        """Antisymmetrised P(A wins) for each (query, A, B)."""
        if not (len(queries) == len(docs_a) == len(docs_b)):
            raise ValueError(
                f"`queries`, `docs_a`, `docs_b` must have equal lengths (got {len(queries)}, {len(docs_a)}, "
                f"{len(docs_b)})."
            )
        forward = torch.sigmoid(torch.from_numpy(self.logits(queries, docs_a, docs_b, batch_size)))
        backward = torch.sigmoid(torch.from_numpy(self.logits(queries, docs_b, docs_a, batch_size)))
        return ((forward + 1.0 - backward) / 2.0).numpy().astype(np.float64)
