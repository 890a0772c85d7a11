"""Streaming `group_preferences` (issue #12) gives exactly the output of the one-frame pandas version it replaced."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from datasets import Dataset

from zelo_hf.grouping import group_preferences
from zelo_hf.schema import PREFERENCE_COLUMNS
from zelo_hf.simulate import simulate_queries


# ---------------------------------------------------------------- the implementation before #12, kept as the reference
def _check_unique_text(df, key, text, what):
    counts = df.groupby(key, sort=False)[text].nunique()
    bad = counts[counts > 1]
    if len(bad):
        raise ValueError(f"{what} {bad.index[0]!r} has {bad.iloc[0]} different texts in the preference set")


def _documents(pairs):
    sides = []
    for k, side in enumerate(("a", "b")):
        part = pairs[["query_id", f"doc_{side}_id", f"doc_{side}"]].set_axis(["query_id", "doc_id", "doc"], axis=1)
        sides.append(part.assign(order=2 * np.arange(len(pairs)) + k))
    docs = pd.concat(sides).sort_values("order", kind="stable").drop(columns="order")
    docs = docs.drop_duplicates(["query_id", "doc_id", "doc"])
    _check_unique_text(docs, ["query_id", "doc_id"], "doc", "(query_id, doc_id)")
    docs = docs.drop_duplicates(["query_id", "doc_id"]).reset_index(drop=True)
    docs["idx"] = docs.groupby("query_id", sort=False).cumcount()
    return docs


def reference_group_preferences(pref_ds, drop_failed=False):
    pairs = pref_ds.select_columns(list(PREFERENCE_COLUMNS)).to_pandas()
    if drop_failed:
        pairs = pairs[~pairs["prob_a"].isna()].reset_index(drop=True)
    _check_unique_text(pairs, ["query_id"], "query", "query_id")
    docs = _documents(pairs)
    for side in ("a", "b"):
        index = docs[["query_id", "doc_id", "idx"]].set_axis(["query_id", f"doc_{side}_id", f"pair_{side}"], axis=1)
        pairs = pairs.merge(index, on=["query_id", f"doc_{side}_id"], how="left", validate="many_to_one")
    per_query = pairs.groupby("query_id", sort=False).agg(
        query=("query", "first"), pair_a=("pair_a", list), pair_b=("pair_b", list), prob_a=("prob_a", list)
    )
    per_doc = docs.groupby("query_id", sort=False).agg(doc_ids=("doc_id", list), docs=("doc", list))
    grouped = per_query.join(per_doc).reset_index()
    return Dataset.from_pandas(grouped[["query_id", "query", "doc_ids", "docs", "pair_a", "pair_b", "prob_a"]])


# ---------------------------------------------------------------------------------------------------------------- data
def flat_pairs(n_queries=9, seed=0, shared_docs=True):
    """Queries of different sizes; doc ids shared across queries (one corpus) but texts per (query, doc) pair."""
    sizes = np.random.default_rng(seed).integers(2, 14, n_queries)
    sim = simulate_queries(n_queries, sizes, degree=4, seed=seed)
    rows = []
    for q in range(n_queries):
        _, edges, probs = sim.query(q)
        doc = (lambda i: f"d{i}") if shared_docs else (lambda i, q=q: f"d{q}-{i}")
        for (a, b), p in zip(edges, probs):
            rows.append({"query_id": f"q{q}", "query": f"query {q}", "doc_a_id": doc(a), "doc_a": f"text {a}",
                         "doc_b_id": doc(b), "doc_b": f"text {b}", "prob_a": float(p), "votes": []})  # fmt: skip
    return Dataset.from_list(rows)


def assert_same(expected, got):
    # pandas 3 makes string columns large_string; the streamed version keeps the input's string type
    assert str(expected.features).replace("large_string", "string") == str(got.features)
    assert expected.to_dict() == got.to_dict()


@pytest.mark.parametrize("window_rows", [7, 40, 1 << 20])
def test_streamed_grouping_equals_the_pandas_version(window_rows):
    flat = flat_pairs()
    assert_same(reference_group_preferences(flat), group_preferences(flat, window_rows=window_rows))


@pytest.mark.parametrize("window_rows", [7, 40, 1 << 20])
def test_interleaved_queries_are_ordered_by_first_appearance(window_rows, monkeypatch):
    import zelo_hf.grouping as grouping

    sorts = []
    order = grouping._first_appearance_order
    monkeypatch.setattr(grouping, "_first_appearance_order", lambda *a: sorts.append(1) or order(*a))
    shuffled = flat_pairs(seed=1).shuffle(seed=3)  # every query's pairs scattered over the whole set
    assert_same(reference_group_preferences(shuffled), group_preferences(shuffled, window_rows=window_rows))
    assert len(sorts) == (window_rows < len(shuffled))  # beyond one window: sorted by first appearance first


def test_failed_pairs_kept_or_dropped_as_before():
    flat = flat_pairs(seed=2).map(lambda r, i: {"prob_a": None} if i % 17 == 3 else {}, with_indices=True)
    assert_same(reference_group_preferences(flat), group_preferences(flat, window_rows=10))
    with pytest.warns(UserWarning, match=r"dropping \d+ pair"):
        dropped = group_preferences(flat, window_rows=10, drop_failed=True)
    assert_same(reference_group_preferences(flat, drop_failed=True), dropped)


def test_large_results_go_to_an_arrow_file_small_ones_stay_in_memory(tmp_path):
    flat = flat_pairs(n_queries=12, seed=4)
    assert not group_preferences(flat).cache_files  # one window: in memory, as before
    path = tmp_path / "grouped.arrow"
    on_disk = group_preferences(flat, window_rows=16, cache_file_name=str(path))
    assert on_disk.cache_files[0]["filename"] == str(path)
    assert_same(reference_group_preferences(flat), on_disk)


def test_two_file_backed_results_in_one_process_stay_apart():
    """Each file-backed result gets its own temporary file: a second grouping must not rewrite the file under the
    first (label_preferences joins the label columns onto the grouped set, so labels keep reading it)."""
    first_flat, second_flat = flat_pairs(n_queries=12, seed=7), flat_pairs(n_queries=9, seed=8)
    first = group_preferences(first_flat, window_rows=16)
    expected = first.to_list()
    second = group_preferences(second_flat, window_rows=16)
    assert first.cache_files[0]["filename"] != second.cache_files[0]["filename"]
    assert first.to_list() == expected
    assert_same(reference_group_preferences(second_flat), second)


def test_streaming_input_grouped_by_query(tmp_path):
    flat = flat_pairs(seed=5)
    streamed = group_preferences(flat.to_iterable_dataset(num_shards=3), window_rows=11)
    assert_same(reference_group_preferences(flat), streamed)
    with pytest.raises(ValueError, match="streaming preference set is not ordered by query.*without `streaming=True`"):
        group_preferences(flat.shuffle(seed=0).to_iterable_dataset(), window_rows=11)


def test_errors_name_the_id_in_any_window():
    flat = flat_pairs(seed=6, shared_docs=False)
    clash = flat.map(lambda r, i: {"doc_b": "another text"} if i == 30 else {}, with_indices=True)
    key = (clash[30]["query_id"], clash[30]["doc_b_id"])
    for window_rows in (8, 1 << 20):
        with pytest.raises(ValueError, match=re.escape(f"(query_id, doc_id) {key!r} has 2 different texts")):
            group_preferences(clash, window_rows=window_rows)
    renamed = flat.map(lambda r, i: {"query": "other"} if i == 25 else {}, with_indices=True)
    with pytest.raises(ValueError, match=rf"query_id '{flat[25]['query_id']}' has 2 different texts"):
        group_preferences(renamed, window_rows=8)
    no_id = flat.map(lambda r, i: {"doc_a_id": None} if i == 12 else {}, with_indices=True)
    with pytest.raises(ValueError, match=r"row 12 has no `doc_a_id` \(null\).*fix or drop"):
        group_preferences(no_id, window_rows=5)
    cross = flat.add_column("query_b_id", [None] * 20 + ["q99"] + [None] * (len(flat) - 21))
    with pytest.raises(ValueError, match=r"row 20 is a cross-query pair.*query_b_id='q99'"):
        group_preferences(cross, window_rows=5)
