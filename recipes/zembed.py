"""zembed: distil a bi-encoder (SentenceTransformer) from a zELO reranker's scores (ZELO.md step 8).

    accelerate launch --config_file recipes/accelerate_configs/cpu.yaml recipes/zembed.py --config recipes/configs/zembed-demo.yaml
    zelo zembed --config recipes/configs/zembed-demo.yaml        # the same, one process

The teacher reranker scores each training query's first-stage candidates; the student learns those scores with
MarginMSE (``loss: margin_mse``) or KL-divergence distillation (``loss: kl_div``); both are evaluated before and
after on held-out queries. The logic lives in ``zelo_hf.pipelines.zembed``.
"""

from __future__ import annotations

from zelo_hf.pipelines.zembed import main, make_parser
from zelo_hf.utils import closing_distributed

if __name__ == "__main__":
    with closing_distributed():
        main(*make_parser().parse_args_and_config())
