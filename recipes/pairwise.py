"""The pairwise small model on its own (ZELO.md step 4): preference set -> PairwiseTrainer -> eval -> push.

    accelerate launch --config_file recipes/accelerate_configs/cpu.yaml recipes/pairwise.py --config recipes/configs/pairwise-demo.yaml

The model reads (query, document A, document B) and is trained with binary cross-entropy against the judges' soft
label ``prob_a``; the held-out queries' pairs measure its agreement with the judges before and after training.
"""

from __future__ import annotations

from trl import ModelConfig, TrlParser

from zelo_hf.pipeline import PairwiseArguments, run_pairwise
from zelo_hf.trainer import PairwiseConfig


def main(script_args: PairwiseArguments, training_args: PairwiseConfig, model_args: ModelConfig) -> dict:
    """Train and evaluate; prints the held-out metrics before and after on the main process."""
    result = run_pairwise(script_args, training_args, model_args)
    if training_args.process_index == 0:
        keys = sorted(k for k in result["after"] if k.startswith("eval_") and "runtime" not in k and "per_second" not in k)
        print("| metric | before | after |\n|---|---|---|")
        for key in keys:
            before = result["before"].get("base_" + key[5:], float("nan"))
            print(f"| {key[5:]} | {before:.4f} | {result['after'][key]:.4f} |")
        print(f"saved to {result['output_dir']}")
    return result


def make_parser() -> TrlParser:
    """YAML ``--config`` sets values, command-line flags override them."""
    return TrlParser((PairwiseArguments, PairwiseConfig, ModelConfig))


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
