"""``zelo calibrate``: cross-query calibration of a label set (ZELO.md step 6).

Two steps around judging: ``--sample_pairs`` writes the cross-query pairs to judge; then, given the judged
pairs (``--cross_pairs``, and optionally relevance ``--anchors``), it writes the calibrated label set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from trl import TrlParser

from ..calibration import calibrate_label_set, sample_cross_query_pairs
from ..hub import load_dataset_any, render_step_card, save_dataset_folder
from ..thurstone import DEFAULT_PRIOR_SD, FIT_MODELS

HELP = "Fit per-query offsets from cross-query comparisons so scores compare across queries."


@dataclass
class CalibrateArguments:
    """Arguments of ``zelo calibrate``."""

    labels: str = field(metadata={"help": "Label set from `zelo fit`: a folder, a .parquet/.jsonl file or a Hub id."})
    output_dir: str = field(metadata={"help": "Folder for the cross-query pairs (--sample_pairs) or calibrated set."})
    sample_pairs: bool = field(default=False, metadata={"help": "Only write the cross-query pairs to judge."})
    n_cycles: int = field(default=4, metadata={"help": "Random cycles over queries (each query: 2*n_cycles pairs)."})
    pairs_per_edge: int = field(default=1, metadata={"help": "Document pairs per pair of queries."})
    seed: int = field(default=0, metadata={"help": "Random seed for --sample_pairs."})
    cross_pairs: str | None = field(default=None, metadata={"help": "Judged cross-query pairs (fit mode)."})
    anchors: str | None = field(
        default=None,
        metadata={"help": "Optional relevance votes (query_id, doc_id, prob_relevant): score 0 = boundary."},
    )
    model: str = field(
        default="thurstone",
        metadata={"help": "F, as used for the within-query fit.", "choices": list(FIT_MODELS)},
    )
    prior_sd: float = field(default=DEFAULT_PRIOR_SD, metadata={"help": "Sd of the Gaussian prior on offsets."})
    split: str = field(default="train", metadata={"help": "Split of the input datasets."})
    push_to_hub: str | None = field(default=None, metadata={"help": "Also upload the calibrated set to this repo."})


def make_parser():
    return TrlParser((CalibrateArguments,))


def main(args: CalibrateArguments) -> int:
    labels = load_dataset_any(args.labels, split=args.split)
    if args.sample_pairs:
        pairs = sample_cross_query_pairs(labels, args.n_cycles, args.pairs_per_edge, seed=args.seed)
        card = render_step_card(
            "zELO cross-query pairs to judge",
            "Document pairs across queries (doc_a answers query, doc_b answers query_b) for `zelo judge --pairs`; "
            "the judged set is the `--cross_pairs` input of `zelo calibrate`.",
            ["reranking", "calibration"],
            {"labels": f"`{args.labels}`", "n_cycles": args.n_cycles, "pairs_per_edge": args.pairs_per_edge,
             "seed": args.seed, "queries": len(labels), "pairs": len(pairs)},
        )  # fmt: skip
        save_dataset_folder(pairs, args.output_dir, card)
        print(json.dumps({"queries": len(labels), "cross_pairs": len(pairs), "output_dir": args.output_dir}))
        return 0
    if args.cross_pairs is None:
        raise ValueError(
            "`--cross_pairs` is required to fit offsets (got None): judge the pairs written by "
            "`zelo calibrate --sample_pairs` and pass them, or add --sample_pairs to write them first."
        )
    cross = load_dataset_any(args.cross_pairs, split=args.split)
    anchors = load_dataset_any(args.anchors, split=args.split) if args.anchors else None
    _, result = calibrate_label_set(labels, cross, args.output_dir, anchors=anchors, model=args.model,
                                    prior_sd=args.prior_sd, push_to_hub=args.push_to_hub, source=args.labels)
    print(json.dumps(result.summary() | {"output_dir": args.output_dir}))
    return 0
