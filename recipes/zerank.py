"""The zELO reranker pipeline end to end, with resumable stages (ZELO.md; recipes/README.md has the launch lines).

    accelerate launch --config_file recipes/accelerate_configs/cpu.yaml recipes/zerank.py --config recipes/configs/demo.yaml

Stages (each under ``output_dir/<stage>/``, skipped on a rerun when complete with the same settings): candidates ->
preferences (graphs + judging) -> [pairwise model -> pairwise preferences] -> labels (Thurstone fit) -> calibration
-> pointwise reranker -> evaluation (BM25 / base / trained) -> push. The logic lives in ``zelo_hf.pipeline``.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # litellm must not fetch its cost map at import

from trl import ModelConfig, TrlParser  # noqa: E402

from zelo_hf.pipeline import ZerankArguments, run_zerank  # noqa: E402
from zelo_hf.trainer import PointwiseConfig  # noqa: E402


def main(script_args: ZerankArguments, training_args: PointwiseConfig, model_args: ModelConfig) -> dict:
    """Run (or resume) the pipeline; returns the evaluation rows and which stages ran or were skipped."""
    return run_zerank(script_args, training_args, model_args)


def make_parser() -> TrlParser:
    """YAML ``--config`` sets values, command-line flags override them."""
    return TrlParser((ZerankArguments, PointwiseConfig, ModelConfig))


if __name__ == "__main__":
    parser = make_parser()
    script_args, training_args, model_args = parser.parse_args_and_config()
    main(script_args, training_args, model_args)
