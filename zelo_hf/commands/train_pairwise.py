"""``zelo train-pairwise``: distil the LLM judges into a small pairwise model (BCE on soft ``prob_a``).

    zelo train-pairwise --dataset_name outputs/preferences --model_name_or_path cross-encoder/ms-marco-MiniLM-L6-v2 \\
        --output_dir outputs/pairwise --num_train_epochs 2
    zelo train-pairwise --config recipes/configs/pairwise.yaml --learning_rate 3e-5   # YAML + flag overrides
"""

from __future__ import annotations

from trl import ModelConfig, TrlParser

from ..trainer.base_config import own_option_names
from ..trainer.pairwise_config import PairwiseConfig
from ..trainer.pairwise_trainer import PairwiseTrainer
from .train_pointwise import TrainScriptArguments, run

HELP = "Train the pairwise small model (BCE on soft labels) on a preference set."

__all__ = ["TrainScriptArguments", "make_parser", "main"]


def own_option_fields() -> set[str]:
    return own_option_names(TrainScriptArguments, PairwiseConfig)


def make_parser():
    return TrlParser((TrainScriptArguments, PairwiseConfig, ModelConfig))


def main(script_args, training_args, model_args):
    """Train a :class:`~zelo_hf.trainer.PairwiseTrainer`; also importable by recipes."""
    return run(PairwiseTrainer, script_args, training_args, model_args)
