"""``zelo graph``: the pairs to judge for a candidate set (sparse comparison graphs, ZELO.md step 2)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from trl import TrlParser

from ..graphs import candidate_pairs
from ..hub import load_dataset_any, render_step_card, save_dataset_folder

HELP = "Sample sparse comparison graphs (unions of random Hamiltonian cycles) for candidate lists."


@dataclass
class GraphArguments:
    """Arguments of ``zelo graph``."""

    input: str = field(metadata={"help": "Candidate set: a dataset folder, a .parquet/.jsonl file or a Hub id."})
    output_dir: str = field(metadata={"help": "Folder for the pairs to judge (data/train-*.parquet)."})
    degree: int = field(default=8, metadata={"help": "Comparisons per document (even; dense graph for small lists)."})
    seed: int = field(default=0, metadata={"help": "Random seed (same seed and input -> same pairs)."})
    split: str = field(default="train", metadata={"help": "Split of the input dataset."})


def make_parser():
    return TrlParser((GraphArguments,))


def main(args: GraphArguments) -> int:
    candidates = load_dataset_any(args.input, split=args.split)
    pairs = candidate_pairs(candidates, degree=args.degree, seed=args.seed)
    card = render_step_card(
        "zELO comparison pairs to judge", "Within-query document pairs from sparse comparison graphs, for `zelo judge "
        "--pairs`.", ["reranking", "comparison-graph"],
        {"candidates": f"`{args.input}`", "degree": args.degree, "seed": args.seed, "queries": len(candidates),
         "pairs": len(pairs)},
    )  # fmt: skip
    save_dataset_folder(pairs, args.output_dir, card)
    print(json.dumps({"queries": len(candidates), "pairs": len(pairs), "output_dir": args.output_dir}))
    return 0
