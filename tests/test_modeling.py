from __future__ import annotations

import numpy as np
import pytest

from zelo_hf.modeling.loading import ZERANK_CHAT_TEMPLATE, load_reranker
from zelo_hf.modeling.saving import write_sentence_transformers_files
from zelo_hf.modeling.scoring import ranking, rerank, score_pairs

pytestmark = pytest.mark.usefixtures("single_thread")


QUERIES = ["the cat", "what is the capital of france", "vitamin d"]
DOCS = ["a dog sat on the mat today", "paris is the capital", "the stock market fell sharply on monday morning"]


def save_reranker(path, tmp_path, name):
    model, tok = load_reranker(path)
    out = tmp_path / name
    model.save_pretrained(out)
    tok.save_pretrained(out)
    write_sentence_transformers_files(model, out)
    return str(out)


@pytest.mark.parametrize(("fixture", "head"), [("tiny_bert_path", "classification"), ("tiny_qwen3_path", "causal")])
def test_cross_encoder_gives_the_same_scores(tmp_path, request, fixture, head):
    from sentence_transformers import CrossEncoder

    saved = save_reranker(request.getfixturevalue(fixture), tmp_path, head)
    model, tok = load_reranker(saved)
    assert model.config.zelo_head == head
    ours = score_pairs(model, tok, QUERIES, DOCS, batch_size=2)
    theirs = CrossEncoder(saved, device="cpu").predict(list(zip(QUERIES, DOCS)), batch_size=2)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_causal_head_reads_yes_logit_after_zerank_chat(tiny_qwen3_path):
    import torch

    model, tok = load_reranker(tiny_qwen3_path)
    assert tok.chat_template == ZERANK_CHAT_TEMPLATE and tok.padding_side == "left"
    text = tok.apply_chat_template(
        [{"role": "system", "content": "q"}, {"role": "user", "content": "d"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert text == "<|im_start|>system\nq<|im_end|>\n<|im_start|>user\nd<|im_end|>\n<|im_start|>assistant\n"
    ids = tok(text, add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        expected = model(**ids).logits[0, -1, tok.convert_tokens_to_ids("Yes")].item()
    assert rerank(model, "q", ["d"], tokenizer=tok)[0] == pytest.approx(expected, abs=1e-5)


def test_rerank_keeps_order_and_ranking_sorts(tiny_bert_path):
    model, tok = load_reranker(tiny_bert_path)
    scores = rerank(model, QUERIES[0], DOCS, batch_size=1, tokenizer=tok)
    single = [rerank(model, QUERIES[0], [d], tokenizer=tok)[0] for d in DOCS]
    np.testing.assert_allclose(scores, single, atol=1e-5)
    ranked = rerank(model, QUERIES[0], DOCS, tokenizer=tok, return_documents=True)
    np.testing.assert_allclose([r["score"] for r in ranked], sorted(scores.tolist(), reverse=True), atol=1e-5)
    assert ranked[0]["text"] == DOCS[int(np.argmax(scores))]
    assert ranking(np.array([1.0, 3.0, 2.0])) == [
        {"corpus_id": 1, "score": 3.0},
        {"corpus_id": 2, "score": 2.0},
        {"corpus_id": 0, "score": 1.0},
    ]


def test_errors_name_the_field(tiny_bert_path):
    model, tok = load_reranker(tiny_bert_path)
    with pytest.raises(ValueError, match="`tokenizer` is required"):
        rerank(model, "q", ["d"])
    with pytest.raises(ValueError, match="same length"):
        score_pairs(model, tok, ["q"], ["a", "b"])
    with pytest.raises(ValueError, match="`head` must be one of"):
        load_reranker(tiny_bert_path, head="pooling")
    with pytest.raises(ValueError, match="'Yes'.*not in the vocabulary"):
        load_reranker(tiny_bert_path, head="causal")


def test_scores_through_a_ddp_style_wrapper(tiny_bert_path):
    import torch

    from zelo_hf.modeling.encoding import encode_pointwise
    from zelo_hf.modeling.scoring import forward_scores

    class Wrapper(torch.nn.Module):  # DDP and DeepSpeed engines expose the model as `.module`, not `.config`
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, **kwargs):
            return self.module(**kwargs)

    model, tok = load_reranker(tiny_bert_path)
    batch = encode_pointwise(tok, QUERIES, DOCS, "classification", 64, 16)
    with torch.no_grad():
        torch.testing.assert_close(forward_scores(Wrapper(model), batch), forward_scores(model, batch))


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_first_token_last_layer_gives_the_full_forward_scores(tiny_bert_path, attn):
    """Inference runs BERT's last layer at [CLS] only: same scores as the full layer, padding included."""
    import torch
    from transformers.models.bert.modeling_bert import BertLayer

    from zelo_hf.modeling.encoding import encode_pointwise
    from zelo_hf.modeling.scoring import first_token_last_layer, forward_scores

    model, tok = load_reranker(tiny_bert_path, attn_implementation=attn)
    model.eval()
    queries = ["cat on the mat", "stock market", "proteins", "capital of france"]
    docs = ["the cat sat on the mat " * k for k in (1, 3, 6, 9)]  # different lengths: padded batch
    batch = encode_pointwise(tok, queries, docs, "classification", 96, 16)
    assert (batch["attention_mask"] == 0).any()
    with torch.inference_mode():
        full = forward_scores(model, batch).numpy()
        with first_token_last_layer(model):
            assert type(model.bert.encoder.layer[-1]).__name__ == "_FirstTokenLayer"
            fast = forward_scores(model, batch).numpy()
    assert isinstance(model.bert.encoder.layer[-1], BertLayer)  # restored
    np.testing.assert_allclose(fast, full, atol=1e-6)
    np.testing.assert_allclose(score_pairs(model, tok, queries, docs, batch_size=4, max_length=96,
                                           max_query_length=16), full, atol=1e-6)  # fmt: skip


def test_first_token_last_layer_leaves_training_and_other_models_alone(tiny_bert_path, tiny_qwen3_path):
    from zelo_hf.modeling.scoring import first_token_last_layer

    model, _ = load_reranker(tiny_bert_path)
    model.train()
    with first_token_last_layer(model):
        assert type(model.bert.encoder.layer[-1]).__name__ == "BertLayer"
    causal, _ = load_reranker(tiny_qwen3_path)
    before = list(causal.modules())
    with first_token_last_layer(causal.eval()):
        assert list(causal.modules()) == before
