"""Scoring with a reranker: the heads' forward pass, [CLS]-only last layer, ``score_pairs`` and the one scorer
``RerankerScorer`` (what the recipe, ``eval/evaluate.py`` and the ablation's cross-encoder arm score with),
``rerank`` / ``ranking`` for one query, and ``PairwiseScorer`` for pairwise models."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .encoding import (
    DEFAULT_MAX_QUERY_LENGTH,
    check_lengths,
    default_max_length,
    encode_pairwise,
    encode_pointwise,
    query_budget,
)
from .loading import load_reranker, model_config, model_head


def forward_scores(model, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """One score per row: the head's logit (classification) or the "Yes" logit at the last position (causal)."""
    model_inputs = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    if model_head(model) == "causal":
        logits = model(**model_inputs, logits_to_keep=1).logits
        return logits[:, -1, model_config(model).zelo_true_token_id].float()
    return model(**model_inputs).logits.squeeze(-1).float()


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
    max_query_length: int | None = None,
) -> np.ndarray:
    """Scores of many (query, document) pairs at once (evaluation): length-sorted batches, original order out.
    ``max_query_length`` defaults to :func:`zelo_hf.modeling.encoding.query_budget` of ``max_length``."""
    if len(queries) != len(docs):
        raise ValueError(f"`queries` and `docs` must have the same length (got {len(queries)} and {len(docs)}).")
    head = model_head(model)
    max_query_length = query_budget(max_length, max_query_length)
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


class RerankerScorer:
    """The one scorer of a zELO reranker: ``scorer(queries, docs) -> scores`` over aligned (query, document) lists,
    tokenized the way training saw them (the recipe's evaluation, ``eval/evaluate.py`` and ``eval/ablation.py``).

    ``model`` is a folder / Hub name (loaded here, on CUDA when there is one; ``seed`` fixes the initialisation of a
    fresh scoring head, so an untrained base scores reproducibly) or a loaded model with its ``tokenizer``.
    ``max_query_length`` defaults to :func:`zelo_hf.modeling.encoding.query_budget` of ``max_length``.
    """

    def __init__(self, model, tokenizer=None, batch_size: int = 32, max_length: int | None = None,
                 max_query_length: int | None = None, seed: int = 0):
        if isinstance(model, (str, Path)):
            torch.manual_seed(seed)
            model, tokenizer = load_reranker(str(model))
            if torch.cuda.is_available():
                model = model.to("cuda")
        if tokenizer is None:
            raise ValueError("`tokenizer` is required when `model` is a loaded model: pass the one from load_reranker.")
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.max_length, self.max_query_length = max_length, query_budget(max_length, max_query_length)

    def __call__(self, queries: list[str], docs: list[str]) -> np.ndarray:
        out = score_pairs(self.model, self.tokenizer, list(queries), list(docs), self.batch_size, self.max_length,
                          max_query_length=self.max_query_length)
        return np.asarray(out, dtype=np.float64)


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
        max_query_length: int = DEFAULT_MAX_QUERY_LENGTH,
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


PAIRWISE_BI_ENCODER_FILE = "zelo_pairwise.json"  # marks a bi-encoder pairwise judge's folder (and its temperature)


class BiEncoderPairwiseScorer:
    """P(document A is more relevant than B) from a pairwise judge trained on a bi-encoder (``zelo pairwise`` with
    ``architecture: bi_encoder``): ``sigmoid((cos(q, A) - cos(q, B)) / temperature)``.

    The logit is a difference of two scores, so ``predict(q, A, B) == 1 - predict(q, B, A)`` exactly and no order
    swap is needed; every distinct query and document of a batch is encoded once (a comparison graph repeats each
    text in many pairs). ``model`` is the saved folder / Hub id (its ``zelo_pairwise.json`` holds the temperature) or
    a loaded ``SentenceTransformer`` with ``temperature``; texts are encoded as the model was saved (``encode_query``
    / ``encode_document``, its ``max_seq_length``).
    """

    def __init__(self, model, temperature: float | None = None, device: str | None = None):
        from sentence_transformers import SentenceTransformer

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if isinstance(model, (str, Path)):
            temperature = temperature or read_pairwise_file(str(model))["temperature"]
            model = SentenceTransformer(str(model), device=device)
        if temperature is None or not temperature > 0:
            raise ValueError(f"`temperature` must be > 0 (got {temperature}): pass the one the judge was trained with.")
        self.model, self.temperature = model.eval(), float(temperature)

    def logits(self, queries: list[str], docs_a: list[str], docs_b: list[str], batch_size: int = 32) -> np.ndarray:
        """``(cos(q, A) - cos(q, B)) / temperature`` in the input order."""
        q_index, q_emb = self._encode(queries, self.model.encode_query, batch_size)
        d_index, d_emb = self._encode([*docs_a, *docs_b], self.model.encode_document, batch_size)
        q = q_emb[[q_index[t] for t in queries]]
        a, b = d_emb[[d_index[t] for t in docs_a]], d_emb[[d_index[t] for t in docs_b]]
        return (((q * a).sum(1) - (q * b).sum(1)) / self.temperature).astype(np.float32)

    @staticmethod
    def _encode(texts: list[str], encode, batch_size: int) -> tuple[dict[str, int], np.ndarray]:
        unique = list(dict.fromkeys(texts))
        if not unique:
            return {}, np.zeros((0, 1), dtype=np.float32)
        emb = encode(unique, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                     show_progress_bar=False)
        return {t: i for i, t in enumerate(unique)}, np.asarray(emb, dtype=np.float32)

    def predict(self, queries: list[str], docs_a: list[str], docs_b: list[str], batch_size: int = 32) -> np.ndarray:
        """P(A wins) for each (query, A, B)."""
        if not (len(queries) == len(docs_a) == len(docs_b)):
            raise ValueError(
                f"`queries`, `docs_a`, `docs_b` must have equal lengths (got {len(queries)}, {len(docs_a)}, "
                f"{len(docs_b)})."
            )
        return 1.0 / (1.0 + np.exp(-self.logits(queries, docs_a, docs_b, batch_size).astype(np.float64)))


def read_pairwise_file(model_name_or_path: str) -> dict[str, Any]:
    """The ``zelo_pairwise.json`` of a bi-encoder pairwise judge (a folder or a Hub id), or ``{}`` when it has none."""
    import json

    local = Path(model_name_or_path) / PAIRWISE_BI_ENCODER_FILE
    if Path(model_name_or_path).is_dir():
        return json.loads(local.read_text()) if local.exists() else {}
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import EntryNotFoundError

    try:
        return json.loads(Path(hf_hub_download(model_name_or_path, PAIRWISE_BI_ENCODER_FILE)).read_text())
    except EntryNotFoundError:
        return {}


def load_pairwise_scorer(model_name_or_path, max_length: int | None = None,
                         max_query_length: int = DEFAULT_MAX_QUERY_LENGTH, **kwargs):
    """The scorer of a trained pairwise judge: :class:`BiEncoderPairwiseScorer` for a folder / Hub id with a
    ``zelo_pairwise.json`` (a bi-encoder judge encodes as it was saved; the lengths are the cross-encoder's), else
    :class:`PairwiseScorer` (a cross-encoder reading (query, A, B))."""
    spec = read_pairwise_file(str(model_name_or_path))
    if spec.get("architecture") == "bi_encoder":
        return BiEncoderPairwiseScorer(str(model_name_or_path), temperature=spec["temperature"], **kwargs)
    return PairwiseScorer(model_name_or_path, max_length=max_length, max_query_length=max_query_length, **kwargs)
