"""Tokens and dollars of an LLM judge's calls: the per-document token budget (documents are cut so every prompt
fits, issue #10), the batch API's token prices, and the dry-run estimate (tokens, dollars online and through the
batch API, seconds) before anything is spent. The online price of one answered call is ``LiteLLMJudge.cost``."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache, partial
from typing import TYPE_CHECKING, Any

import numpy as np

from .prompts import build_messages
from .retry import litellm_module
from .votes import Comparison

if TYPE_CHECKING:  # pragma: no cover
    from .litellm_judge import LiteLLMJudge

# Typical answer lengths, for the dry-run estimate (the score format lets the model reason briefly).
ASSUMED_OUTPUT_TOKENS = {"score": 60, "verdict": 1, "logprobs": 1}


_QUERY_ALLOWANCE = 128  # tokens kept for each query when a document budget is derived from the context window
_MIN_DOC_TOKENS = 16


def _known_context_window(model: str) -> int | None:
    try:
        return litellm_module().get_model_info(model).get("max_input_tokens") or None
    except Exception:  # noqa: BLE001 -- a model litellm does not know (e.g. a local server's)
        return None


@lru_cache(maxsize=1 << 15)
def truncate_tokens(model: str, text: str, budget: int) -> str:
    litellm = litellm_module()
    ids = litellm.encode(model=model, text=text)
    if len(ids) <= budget:
        return text
    return litellm.decode(model=model, tokens=list(ids[: max(budget - 3, 1)])) + " [...]"


def derived_doc_budget(model: str, context_window: int | None, max_tokens: int, answer_format: str) -> int | None:
    """Tokens per document: half of what the context leaves after the answer, the prompt template and two queries,
    with a 10 % margin for tokenizers that count more than litellm's (a local model's own tokenizer is unknown to
    it); None when the context window is unknown (no cut)."""
    window = context_window or _known_context_window(model)
    if not window:
        return None
    empty = build_messages("", "", "", "", answer_format)  # the cross-query template: the longer one
    template = litellm_module().token_counter(model=model, messages=empty)
    room = window - max_tokens - template - 2 * _QUERY_ALLOWANCE
    budget = int(0.9 * room) // 2
    if budget < _MIN_DOC_TOKENS:
        raise ValueError(
            f"context_window={window} leaves {budget} tokens per document for {model} (max_tokens="
            f"{max_tokens}, prompt template {template} tokens, {_QUERY_ALLOWANCE} per query): pass a larger "
            f"`context_window` (--context_window), a smaller `max_tokens`, or `max_doc_tokens` (--max_doc_tokens)."
        )
    return budget


def batch_token_prices(judge: LiteLLMJudge) -> tuple[float, float]:
    """Dollars per (input, output) token through the batch API: litellm's batch prices, else half the online."""
    if judge.cost_per_token is not None:
        return 0.5 * judge.cost_per_token[0], 0.5 * judge.cost_per_token[1]
    try:
        info = litellm_module().get_model_info(judge.model)
    except Exception:  # noqa: BLE001 -- unmapped model
        judge.cost(0, 0)  # warns once that costs are recorded as 0
        return 0.0, 0.0
    online = (info.get("input_cost_per_token") or 0.0, info.get("output_cost_per_token") or 0.0)
    batch = (info.get("input_cost_per_token_batches"), info.get("output_cost_per_token_batches"))
    return tuple(b if b is not None else 0.5 * o for b, o in zip(batch, online))


def estimate_calls(judge: LiteLLMJudge, comparisons: Sequence[Comparison], concurrency: int = 64,
                   output_tokens: int | None = None, latency: float = 2.0) -> dict[str, Any]:
    """Tokens, dollars (online and batch) and seconds before anything is spent.

    Each distinct text is counted once (litellm's tokenizer for the model; documents capped at the token
    budget) and a prompt is the template plus its texts; each call is priced on its own, as it is billed (the
    summed tokens priced as one call would cross tiered prices such as Gemini's >200k-token tier).
    """
    n = len(comparisons)
    if n == 0:
        return {"judge": judge.name, "calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost": 0.0,
                "batch_cost": 0.0, "seconds": None, "price_known": price_known(judge)}
    prompt = prompt_token_counts(judge, comparisons)
    completion = output_tokens if output_tokens is not None else ASSUMED_OUTPUT_TOKENS[judge.answer_format]
    cost = _price_calls(judge, prompt, completion)
    prompt_tokens, completion_tokens = int(prompt.sum()), n * completion
    seconds = n * latency / max(concurrency, 1)
    if judge.limiter.rpm:
        seconds = max(seconds, n * 60.0 / judge.limiter.rpm)
    if judge.limiter.tpm:
        seconds = max(seconds, (prompt_tokens + completion_tokens) * 60.0 / judge.limiter.tpm)
    batch_cost, batch_source = _batch_cost(judge, cost, prompt_tokens, completion_tokens)
    return {"judge": judge.name, "calls": n, "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "cost": cost, "batch_cost": batch_cost, "batch_price": batch_source, "seconds": seconds,
            "price_known": price_known(judge), "max_doc_tokens": judge.doc_token_budget()}


def prompt_token_counts(judge: LiteLLMJudge, comparisons: Sequence[Comparison]) -> np.ndarray:
    """Prompt tokens of each comparison's call: template + query(ies) + both documents (capped at the budget).

    Each distinct text is tokenized once and looked up for the rest (a document sits in ~degree pairs).
    """
    litellm = litellm_module()
    n, budget = len(comparisons), judge.doc_token_budget()
    template = {cross: litellm.token_counter(model=judge.model, messages=build_messages(
        "", "", "", "" if cross else None, judge.answer_format)) for cross in (False, True)}
    columns = {name: [getattr(c, name) for c in comparisons] for name in ("query", "query_b", "doc_a", "doc_b")}
    counts = _text_token_counts(judge.model, {t for texts in columns.values() for t in texts if t is not None})
    counts[None] = 0

    def column(name: str) -> np.ndarray:
        return np.fromiter(map(counts.__getitem__, columns[name]), dtype=np.int64, count=n)

    docs = column("doc_a") + column("doc_b") if budget is None else \
        np.minimum(column("doc_a"), budget) + np.minimum(column("doc_b"), budget)
    cross = np.fromiter((q is not None for q in columns["query_b"]), dtype=bool, count=n)
    return np.where(cross, template[True], template[False]) + column("query") + column("query_b") + docs


def _price_calls(judge: LiteLLMJudge, prompt: np.ndarray, completion: int) -> float:
    """The sum of each call's own price. Prices linear over the calls' range (no tier crossed among them) are
    summed in one step; otherwise each distinct prompt length is priced on its own."""
    values, counts = np.unique(prompt, return_counts=True)
    probes = np.unique(np.quantile(values, [0.0, 0.25, 0.5, 0.75, 1.0], method="nearest"))
    priced = np.array([judge.cost(int(v), completion) for v in probes])
    if len(probes) > 1:
        slope = (priced[-1] - priced[0]) / float(probes[-1] - probes[0])
        line = priced[0] + slope * (values - probes[0])
        if np.allclose(priced, priced[0] + slope * (probes - probes[0]), rtol=1e-9, atol=1e-15):
            return float((line * counts).sum())
    return float(sum(judge.cost(int(v), completion) * k for v, k in zip(values, counts)))


def _batch_cost(judge: LiteLLMJudge, cost: float, prompt_tokens: int, completion_tokens: int) -> tuple[float, str]:
    """The bill through the provider's batch API: litellm's batch prices when it has them, else 50 %."""
    if judge.cost_per_token is None:
        try:
            info = litellm_module().get_model_info(judge.model)
            prices = info.get("input_cost_per_token_batches"), info.get("output_cost_per_token_batches")
        except Exception:  # noqa: BLE001 -- unmapped model
            prices = (None, None)
        if None not in prices:
            return prompt_tokens * prices[0] + completion_tokens * prices[1], "litellm batch prices"
    return 0.5 * cost, "50% of the online price"


def price_known(judge: LiteLLMJudge) -> bool:
    """Whether dollars can be computed: ``cost_per_token`` given or the model in litellm's offline cost map."""
    if judge.cost_per_token is not None:
        return True
    try:
        litellm_module().cost_per_token(judge.model, 1, 1)
    except Exception:  # noqa: BLE001 -- litellm raises several types for unmapped models
        return False
    return True


_TOKEN_COUNTS: dict[Any, dict[str, int]] = {}  # per tokenizer: text -> tokens (judges sharing one count once)


def _text_token_counts(model: str, texts: set[str]) -> dict[str | None, int]:
    """Tokens of each distinct text by litellm's tokenizer for ``model`` (the dry run counts each text once)."""
    encode = partial(litellm_module().encode, model=model)
    try:
        from litellm.utils import select_tokenizer

        chosen = select_tokenizer(model=model)
        key: Any = (chosen["type"], id(chosen["tokenizer"]))
    except Exception:  # noqa: BLE001 -- an older / newer litellm: memoise per model
        key = model
    memo = _TOKEN_COUNTS.setdefault(key, {})
    if len(memo) > 1_000_000:
        memo.clear()
    for text in texts - memo.keys():
        memo[text] = len(encode(text=text))
    return {t: memo[t] for t in texts}
