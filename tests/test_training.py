"""The one training step (``zelo_hf.training.build_trainer``) that ``zelo train-*`` and the recipes' stages share."""

from __future__ import annotations

import torch
from trl import ModelConfig

from zelo_hf.trainer import PointwiseConfig
from zelo_hf.training import build_trainer


class FakeTrainer:
    def __init__(self, model, **kwargs):
        self.model, self.kwargs = model, kwargs
        self.draw = torch.rand(1).item()  # what a fresh scoring head would draw when the model loads


def test_model_config_is_folded_the_same_way_for_the_cli_and_the_recipe(tmp_path):
    """TRL's ModelConfig reaches model_init_kwargs (the recipe dropped it when the config had any), the config's own
    values win, no LoRA without use_peft, and the seed is set before the model loads (same head every run)."""
    config = PointwiseConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, seed=3,
                             model_init_kwargs={"revision": "v2"})
    model_args = ModelConfig(model_name_or_path="m", dtype="float32", attn_implementation="eager", model_revision="v1")
    trainer = build_trainer(FakeTrainer, "m", config, model_args, train_dataset=[1], dataset_name="me/labels")
    assert config.model_init_kwargs == {"revision": "v2", "dtype": "float32", "attn_implementation": "eager"}
    assert trainer.model == "m" and trainer.kwargs["peft_config"] is None and trainer.kwargs["dataset_name"] == "me/labels"
    again = build_trainer(FakeTrainer, "m", config, None, train_dataset=[1])
    assert again.draw == trainer.draw
    model_args.use_peft = True
    assert build_trainer(FakeTrainer, "m", config, model_args).kwargs["peft_config"] is not None
