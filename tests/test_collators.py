from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from zelo_hf.modeling.loading import load_tokenizer
from zelo_hf.trainer.collators import PairwiseCollator, PointwiseCollator

pytestmark = pytest.mark.usefixtures("single_thread")


def ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_pointwise_collator_truncates_documents_only(tiny_bert_path):
    tok = AutoTokenizer.from_pretrained(tiny_bert_path)
    cls, sep, pad = tok.cls_token_id, tok.sep_token_id, tok.pad_token_id
    q, d = ids(tok, "the cat sat"), ids(tok, "a dog barked at the mailman in the morning")
    collator = PointwiseCollator(tok, "classification", max_length=10, max_query_length=8)
    batch = collator(
        [
            {
                "query": "the cat sat",
                "doc": "a dog barked at the mailman in the morning",
                "labels": 1.5,
                "query_index": 0,
            },
            {"query": "the cat sat", "doc": "a dog", "labels": -1.0, "query_index": 0},
        ]
    )
    first = [cls, *q, sep, *d[: 10 - len(q) - 3], sep]
    second = [cls, *q, sep, *d[:2], sep]
    assert batch["input_ids"].tolist() == [first, second + [pad] * (len(first) - len(second))]
    assert batch["token_type_ids"].tolist()[1] == [0] * (len(q) + 2) + [1] * 3 + [0] * (len(first) - len(second))
    assert torch.equal(batch["labels"], torch.tensor([1.5, -1.0]))
    assert torch.equal(batch["query_index"], torch.tensor([0, 0]))


def test_query_cut_to_max_query_length(tiny_bert_path):
    tok = AutoTokenizer.from_pretrained(tiny_bert_path)
    collator = PointwiseCollator(tok, "classification", max_length=32, max_query_length=2)
    batch = collator([{"query": "the cat sat on the mat", "doc": "dog", "labels": 0.0}])
    q = ids(tok, "the cat sat on the mat")[:2]
    assert batch["input_ids"].tolist() == [
        [tok.cls_token_id, *q, tok.sep_token_id, *ids(tok, "dog"), tok.sep_token_id]
    ]


def test_pairwise_collator_splits_budget_between_documents(tiny_bert_path):
    tok = AutoTokenizer.from_pretrained(tiny_bert_path)
    cls, sep = tok.cls_token_id, tok.sep_token_id
    long = "a dog barked at the mailman in the morning"
    batch = PairwiseCollator(tok, "classification", max_length=16, max_query_length=8)(
        [{"query": "the cat", "doc_a": long, "doc_b": long, "prob_a": 0.75}]
    )
    q, d = ids(tok, "the cat"), ids(tok, long)
    budget = (16 - len(q) - 4) // 2
    assert batch["input_ids"].tolist() == [[cls, *q, sep, *d[:budget], sep, *d[:budget], sep]]
    assert batch["labels"].tolist() == [0.75]


def test_causal_collator_left_pads_and_keeps_chat_suffix(tiny_qwen3_path):
    tok = load_tokenizer(tiny_qwen3_path, "causal")
    collator = PointwiseCollator(tok, "causal", max_length=40, max_query_length=8)
    long = "the stock market fell sharply on monday " * 5
    batch = collator([{"query": "paris", "doc": long, "labels": 1.0}, {"query": "paris", "doc": "a", "labels": 0.0}])
    suffix = ids(tok, "<|im_end|>\n<|im_start|>assistant\n")
    assert batch["input_ids"].shape[1] == 40
    for row, mask in zip(batch["input_ids"].tolist(), batch["attention_mask"].tolist()):
        assert row[-len(suffix) :] == suffix and mask[-1] == 1
    assert batch["attention_mask"][1, 0] == 0  # the short row is left-padded


def test_grouped_rows_flatten_query_major(tiny_bert_path):
    tok = AutoTokenizer.from_pretrained(tiny_bert_path)
    collator = PointwiseCollator(tok, "classification", max_length=32, max_query_length=8)
    batch = collator([{"query": "cat", "docs": ["cat", "dog"]}, {"query": "dog", "docs": ["dog", "cat"]}])
    assert batch["input_ids"].shape[0] == 4 and int(batch["group_size"]) == 2
    with pytest.raises(ValueError, match="same size"):
        collator([{"query": "cat", "docs": ["cat", "dog"]}, {"query": "dog", "docs": ["dog"]}])
