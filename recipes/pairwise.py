"""The pairwise small model on its own (ZELO.md step 4): preference set -> PairwiseTrainer -> eval -> push.

    accelerate launch --config_file recipes/accelerate_configs/cpu.yaml recipes/pairwise.py --config recipes/configs/pairwise-demo.yaml
    zelo pairwise --config recipes/configs/pairwise-demo.yaml        # the same, one process

The model reads (query, document A, document B) and is trained with binary cross-entropy against the judges' soft
label ``prob_a``; the held-out queries' pairs measure its agreement with the judges before and after training. The
logic lives in ``zelo_hf.pipelines.pairwise``.
"""

from __future__ import annotations

from zelo_hf.pipelines.pairwise import main, make_parser
from zelo_hf.utils import closing_distributed

if __name__ == "__main__":
    with closing_distributed():
        main(*make_parser().parse_args_and_config())
