"""The dataset contracts (zelo_hf.schema): one column checker, the text/number checks, the features; and the one
reranker scorer every evaluation path uses (zelo_hf.modeling.scoring.RerankerScorer, issue #9)."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import Dataset

from zelo_hf.schema import (
    CROSS_FIT_COLUMNS,
    CROSS_QUERY_COLUMNS,
    PAIR_COLUMNS,
    PREFERENCE_COLUMNS,
    candidate_features,
    check_numbers,
    check_probabilities,
    check_texts,
    preference_features,
    require_columns,
)


def test_the_column_checker_names_the_dataset_the_columns_and_the_fix():
    with pytest.raises(ValueError, match=r"the label set lacks columns: missing column\(s\) \['elo'\] \(has \['docs', "
                                         r"'query_id'\]\): pass a label set"):
        require_columns(["query_id", "docs"], ("query_id", "docs", "elo"), "the label set", "pass a label set.")
    with pytest.raises(ValueError, match="see the schema in docs/design.md"):  # the default fix
        require_columns([], ("query_id",), "the pairs")
    require_columns(["query_id", "x"], ("query_id",), "the pairs")  # extra columns are fine


def test_cross_query_names_are_two_distinct_contracts():
    """Once one name for two things: the columns a cross-query pair adds vs what the calibration fit reads."""
    assert CROSS_QUERY_COLUMNS == ("query_b_id", "query_b")
    assert set(CROSS_FIT_COLUMNS) <= set(PREFERENCE_COLUMNS) | set(CROSS_QUERY_COLUMNS)
    assert PREFERENCE_COLUMNS == (*PAIR_COLUMNS, "prob_a")


def test_features_follow_the_columns():
    assert list(preference_features()) == [*PREFERENCE_COLUMNS, "votes"]
    assert list(preference_features(cross=True))[-2:] == list(CROSS_QUERY_COLUMNS)
    assert "grades" in candidate_features(grades=True) and "grades" not in candidate_features()


def test_text_and_number_checks():
    ds = Dataset.from_dict({"query": ["q", " "], "prob_a": [0.2, 1.5], "p": ["0.7", None]})
    with pytest.raises(ValueError, match=r"train dataset: `query` is empty or not a string in 1 row\(s\) \(first: row 1"):
        check_texts(ds, ["query"], "train dataset")
    with pytest.raises(ValueError, match=r"`prob_a` must be finite in \[0.0, 1.0\] \(got 1.5 at row 1"):
        check_numbers(ds, "prob_a", "train dataset", low=0.0, high=1.0)
    assert np.allclose(check_numbers(ds.select([0]), "prob_a", "x"), [0.2])
    with pytest.raises(ValueError, match=r"`p` must hold numbers in \[0, 1\].*not '0.7'"):
        check_probabilities(ds, "p", "the anchors")


def test_one_reranker_scorer(tiny_bert_path):
    from zelo_hf.evaluation.scorers import as_score_fn
    from zelo_hf.modeling.encoding import DEFAULT_MAX_QUERY_LENGTH, query_budget
    from zelo_hf.modeling.loading import load_reranker
    from zelo_hf.modeling.scoring import RerankerScorer, score_pairs

    assert query_budget(None) == DEFAULT_MAX_QUERY_LENGTH and query_budget(64) == 32 and query_budget(64, 10) == 10
    model, tok = load_reranker(tiny_bert_path)
    queries, docs = ["a query", "another query"], ["a document about it", "something else entirely"]
    scorer = as_score_fn((model, tok), batch_size=4, max_length=64)
    assert isinstance(scorer, RerankerScorer) and scorer.max_query_length == 32
    expected = score_pairs(model, tok, queries, docs, 4, 64, max_query_length=32)
    assert np.allclose(scorer(queries, docs), expected, atol=1e-6)
    from_path = RerankerScorer(tiny_bert_path, batch_size=4, max_length=64)
    assert np.allclose(from_path(queries, docs), expected, atol=1e-5)
    with pytest.raises(ValueError, match="`tokenizer` is required"):
        RerankerScorer(model)
