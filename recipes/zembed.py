"""zembed: distil a bi-encoder (SentenceTransformer) from a zELO reranker's scores (ZELO.md step 8).

    accelerate launch --config_file recipes/accelerate_configs/cpu.yaml recipes/zembed.py --config recipes/configs/zembed-demo.yaml

The teacher reranker scores each training query's first-stage candidates; the student learns those scores with
MarginMSE (``loss: margin_mse``) or KL-divergence distillation (``loss: kl_div``); both are evaluated before and
after on held-out queries. The logic lives in ``zelo_hf.distill``.
"""

from __future__ import annotations

from sentence_transformers import SentenceTransformerTrainingArguments
from trl import ModelConfig, TrlParser

from zelo_hf.distill import DistillArguments, run_zembed
from zelo_hf.evaluation import results_to_markdown


def main(script_args: DistillArguments, training_args: SentenceTransformerTrainingArguments, model_args: ModelConfig):
    """Distil, evaluate, save (and push); prints the before/after table on the main process."""
    result = run_zembed(script_args, training_args, model_args)
    if training_args.process_index == 0:
        print(results_to_markdown(result["rows"], columns=["model", "ndcg@10", "recall@100", "mrr@10", "queries"]))
        print(f"saved to {result['output_dir']}")
    return result


def make_parser() -> TrlParser:
    """YAML ``--config`` sets values, command-line flags override them."""
    return TrlParser((DistillArguments, SentenceTransformerTrainingArguments, ModelConfig))


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config())
