from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from test_pointwise_trainer import toy_rows

from zelo_hf.modeling.loading import load_reranker
from zelo_hf.modeling.scoring import score_pairs
from zelo_hf.trainer import PointwiseConfig, PointwiseTrainer

pytestmark = pytest.mark.usefixtures("single_thread")


def lora_trainer(tmp_path, model_path, target_modules, **kwargs):
    defaults = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=8,
        learning_rate=5e-3,
        max_steps=8,
        max_length=48,
        max_query_length=16,
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    args = PointwiseConfig(**{**defaults, **kwargs})
    peft_config = LoraConfig(r=4, lora_alpha=8, target_modules=target_modules)
    data = Dataset.from_dict(toy_rows())
    return PointwiseTrainer(model_path, args=args, train_dataset=data, peft_config=peft_config), data


def test_lora_trains_and_saves_the_classification_head(tmp_path, tiny_bert_path):
    trainer, data = lora_trainer(tmp_path, tiny_bert_path, ["query", "value"], gradient_checkpointing=True)
    trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert any("classifier" in n for n in trainable) and any("lora_" in n for n in trainable)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    assert all(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters() if n in before)
    trainer.save_model(str(tmp_path / "adapter"))
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()

    queries, docs = data["query"][:6], data["doc"][:6]
    expected = score_pairs(trainer.model, trainer.processing_class, queries, docs)
    loaded, tok = load_reranker(str(tmp_path / "adapter"))
    np.testing.assert_allclose(score_pairs(loaded, tok, queries, docs), expected, atol=1e-5)


def test_merge_lora_gives_a_plain_cross_encoder(tmp_path, tiny_qwen3_path):
    from sentence_transformers import CrossEncoder

    trainer, data = lora_trainer(tmp_path, tiny_qwen3_path, ["q_proj", "v_proj"], merge_lora=True, max_steps=4)
    trainer.train()
    queries, docs = data["query"][:6], data["doc"][:6]
    expected = score_pairs(trainer.model, trainer.processing_class, queries, docs)
    trainer.save_model(str(tmp_path / "merged"))
    assert (tmp_path / "merged" / "adapter" / "adapter_config.json").is_file()
    assert not (tmp_path / "merged" / "adapter_config.json").exists()
    ce = CrossEncoder(str(tmp_path / "merged"), device="cpu")
    np.testing.assert_allclose(ce.predict(list(zip(queries, docs))), expected, atol=1e-5)


def test_lora_without_a_findable_head_errors(tmp_path, tiny_bert_path):
    from zelo_hf.trainer.lora import classification_head_names

    with pytest.raises(ValueError, match="cannot find the classification head"):
        classification_head_names(torch.nn.Linear(2, 2))


def test_one_lora_path_from_trl_model_config(caplog):
    """The CLI and the recipes build LoRA with `get_lora_config`: TRL's ModelConfig fields, all-linear by default, no
    task type (the reranker's head decides what is trained), and a warning for a task type it ignores."""
    from trl import ModelConfig

    from zelo_hf.trainer import get_lora_config

    assert get_lora_config(ModelConfig()) is None and get_lora_config(None) is None
    config = get_lora_config(ModelConfig(use_peft=True, lora_r=4, lora_alpha=8, lora_target_modules=["query"]))
    assert isinstance(config, LoraConfig) and config.task_type is None
    assert (config.r, config.lora_alpha, set(config.target_modules)) == (4, 8, {"query"})  # a name, not a regex
    assert get_lora_config(ModelConfig(use_peft=True)).target_modules == "all-linear"
    with caplog.at_level("WARNING"):
        assert get_lora_config(ModelConfig(use_peft=True, lora_task_type="SEQ_CLS")).task_type is None
    assert "`lora_task_type='SEQ_CLS'` is ignored" in caplog.text
