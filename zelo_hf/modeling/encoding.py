"""Tokenizing (query, document) and (query, document A, document B) inputs: queries cut to ``max_query_length``,
documents to what is left of ``max_length``; the lengths' checks and defaults."""

from __future__ import annotations

# The trainers' default query budget (tokens), also what scoring uses when no budget is given (one place, #9).
DEFAULT_MAX_QUERY_LENGTH = 64
PAIRWISE_CHAT_FORMAT = "Document A:\n{doc_a}\n\nDocument B:\n{doc_b}"


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


def query_budget(max_length: int | None, max_query_length: int | None = None) -> int:
    """Tokens a query may use: ``max_query_length`` when given, else ``DEFAULT_MAX_QUERY_LENGTH`` kept below half of a
    short ``max_length`` (so a short scoring length still leaves room for the document)."""
    if max_query_length is not None:
        return max_query_length
    return DEFAULT_MAX_QUERY_LENGTH if max_length is None else min(DEFAULT_MAX_QUERY_LENGTH, max_length // 2)
