"""``zelo fit``: a judged preference set -> a label set with Thurstone scores (ZELO.md step 5)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from trl import TrlParser

from ..label_sets import label_summary
from ..labeling import label_preferences
from ..preference_tables import load_preference_set
from ..thurstone import DEFAULT_PRIOR_SD, FIT_MODELS

HELP = "Fit Thurstone / Bradley-Terry scores per query from a preference set -> a label set."


@dataclass
class FitArguments:
    """Arguments of ``zelo fit``."""

    input: str = field(metadata={"help": "Flat preference set: a dataset folder, a .parquet/.jsonl file or a Hub id."})
    output_dir: str = field(metadata={"help": "Folder for the label set (data/train-*.parquet + README.md card)."})
    model: str = field(
        default="thurstone",
        metadata={"help": "F in P(a beats b) = F(s_a - s_b).", "choices": list(FIT_MODELS)},
    )
    prior_sd: float = field(default=DEFAULT_PRIOR_SD, metadata={"help": "Sd of the Gaussian prior on scores."})
    degree: int | None = field(
        default=None, metadata={"help": "Graph degree used for judging (recorded in the card)."}
    )
    num_proc: int | None = field(default=None, metadata={"help": "Processes for the Datasets map."})
    batch_size: int = field(default=1000, metadata={"help": "Queries per vectorised fit."})
    drop_failed: bool = field(default=False, metadata={"help": "Drop pairs without prob_a (all votes failed)."})
    compute_se: bool = field(default=True, metadata={"help": "Compute exact standard errors (elo_se)."})
    split: str = field(default="train", metadata={"help": "Split of the input dataset."})
    push_to_hub: str | None = field(default=None, metadata={"help": "Also upload the folder to this dataset repo."})


def make_parser():
    return TrlParser((FitArguments,))


def main(args: FitArguments) -> int:
    pairs = load_preference_set(args.input, split=args.split, join=False)  # a set with ids: grouped without texts
    labels = label_preferences(
        pairs,
        model=args.model,
        prior_sd=args.prior_sd,
        num_proc=args.num_proc,
        batch_size=args.batch_size,
        drop_failed=args.drop_failed,
        compute_se=args.compute_se,
        output_dir=args.output_dir,
        push_to_hub=args.push_to_hub,
        source=args.input,
        degree=args.degree,
    )
    print(json.dumps(label_summary(labels) | {"output_dir": args.output_dir}))
    return 0
