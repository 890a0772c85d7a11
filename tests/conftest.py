"""Tests are offline: no Hub, no LLM API, no telemetry."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "disabled"
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

import pytest  # noqa: E402

# Tiny models for the trainer/modeling tests (issue #4): built from configs with a tokenizer trained on the fly,
# saved once per session; tests load them from the saved folder (never downloaded).
_TINY_CORPUS = [
    "the cat sat on the mat",
    "a dog barked at the mailman in the morning",
    "proteins fold into three dimensional structures",
    "vitamin d deficiency is linked to bone loss",
    "the stock market fell sharply on monday",
    "neural rerankers score query document pairs",
    "Yes No Yes No yes no relevant irrelevant",
    "what is the capital of france paris is the capital",
    "query document relevance ranking retrieval search",
    "apple banana cherry grape lemon mango orange pear",
] * 4


def _train_tokenizer(kind: str):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    if kind == "wordpiece":
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        # The vocabulary is built, not trained: the WordPiece trainer breaks frequency ties differently in every
        # process (Rust hash order), which made tiny-model numbers differ between sessions. Whole words, every
        # character and every "##" continuation character, sorted: the same ids everywhere.
        words = sorted({w for line in _TINY_CORPUS for w in line.lower().split()})
        chars = sorted({c for w in words for c in w} | set("abcdefghijklmnopqrstuvwxyz0123456789.,;:'-()"))
        vocab = specials + chars + [f"##{c}" for c in chars] + [w for w in words if len(w) > 1]
        tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
        )
        tok.decoder = decoders.WordPiece()
        return tok
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_TINY_CORPUS + ["Yes", "No"] * 20, trainer)
    return tok


@pytest.fixture(scope="session")
def tiny_bert_path(tmp_path_factory):
    """A 2-layer BERT (hidden 32) with a num_labels=1 head and a WordPiece tokenizer, saved to a tmp dir."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("tiny-bert")
    tok = PreTrainedTokenizerFast(
        tokenizer_object=_train_tokenizer("wordpiece"),
        unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
        model_max_length=128, model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
        max_position_embeddings=128, num_labels=1, pad_token_id=tok.pad_token_id,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,  # tiny models learn noisily enough without it
    )
    BertForSequenceClassification(config).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_qwen3_path(tmp_path_factory):
    """A 2-layer Qwen3 causal LM (hidden 32) with a byte-level BPE tokenizer (has "Yes"), saved to a tmp dir."""
    import torch
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    path = tmp_path_factory.mktemp("tiny-qwen3")
    tok = PreTrainedTokenizerFast(
        tokenizer_object=_train_tokenizer("bpe"), eos_token="<|im_end|>", pad_token="<|endoftext|>",
        model_max_length=256,
    )
    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, max_position_embeddings=256, tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None,
    )
    Qwen3ForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture
def single_thread():
    """Tiny models train several times faster on one thread than on two contended ones (restored afterwards)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
