"""Disk size of a preference set with each text once (issue #12) against the inline layout (texts in every row).

    python eval/preference_set_size.py --config recipes/configs/demo.yaml

Builds the run's candidates and judges their graphs as its preferences stage does (``stage_candidates`` and
``stage_preferences``, the simulated judge of the demo: no LLM, no network), writes the preference set both ways and
prints the parquet bytes of each and their ratio as JSON.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def parquet_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*.parquet"))


def main(argv: list[str]) -> dict:
    from transformers import TrainingArguments
    from trl import ModelConfig, TrlParser

    from zelo_hf.hub import load_split, save_dataset_folder
    from zelo_hf.pipelines.zerank_args import ZerankArguments
    from zelo_hf.pipelines.zerank_stages import stage_candidates, stage_preferences
    from zelo_hf.preference_tables import load_preference_set

    parser = TrlParser((ZerankArguments, TrainingArguments, ModelConfig))
    args, _, _ = parser.parse_args_and_config(argv, fail_with_unknown_args=False)[:3]
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp)
        (run / "candidates").mkdir()
        stage_candidates(args, run / "candidates")
        (run / "preferences").mkdir()
        stage_preferences(args, run, run / "preferences")
        joined = load_preference_set(run / "preferences")
        inline = save_dataset_folder(joined, run / "inline")  # the layout before #12
        assert load_split(inline, "train").to_dict() == joined.to_dict()
        once, before = parquet_bytes(run / "preferences"), parquet_bytes(inline)
    return {"pairs": len(joined), "queries": len(set(joined["query_id"])), "graph_degree": args.graph_degree,
            "inline_bytes": before, "texts_once_bytes": once, "ratio": round(before / once, 2)}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
