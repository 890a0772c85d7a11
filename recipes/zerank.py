"""The zELO reranker pipeline end to end, with resumable stages (ZELO.md; recipes/README.md has the launch lines).

    accelerate launch --config_file recipes/accelerate_configs/cpu.yaml recipes/zerank.py --config recipes/configs/demo.yaml
    zelo zerank --config recipes/configs/demo.yaml        # the same, one process

Stages (each under ``output_dir/<stage>/``, skipped on a rerun when complete with the same settings): candidates ->
preferences (graphs + judging) -> [pairwise model -> pairwise preferences] -> labels (Thurstone fit) -> calibration
-> pointwise reranker -> [zembed] -> evaluation (first stage / base / trained) -> push. The logic lives in
``zelo_hf.pipelines.zerank``.
"""

from __future__ import annotations

from zelo_hf.pipelines.zerank import main, make_parser
from zelo_hf.utils import closing_distributed

if __name__ == "__main__":
    with closing_distributed():
        main(*make_parser().parse_args_and_config())
