"""Datasets-map labeling: grouping flat preferences, the batched Thurstone map, flattening."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import Dataset
from scipy.stats import spearmanr

from zelo_hf.grouping import group_preferences
from zelo_hf.labeling import flatten_labels, label_grouped, label_preferences, thurstone_map
from zelo_hf.simulate import simulate_queries
from zelo_hf.thurstone import fit_scores


def preference_set(n_queries=4, n_docs=12, degree=4, seed=0):
    """A flat preference set judged by simulated judges, plus the truth per query."""
    sim = simulate_queries(n_queries, n_docs, degree, seed=seed)
    rows, truth = [], {}
    for q in range(n_queries):
        latent, edges, probs = sim.query(q)
        truth[f"q{q}"] = {f"d{q}-{i}": latent[i] for i in range(len(latent))}
        for (a, b), p in zip(edges, probs):
            rows.append({"query_id": f"q{q}", "query": f"query {q}", "doc_a_id": f"d{q}-{a}", "doc_a": f"doc {q} {a}",
                         "doc_b_id": f"d{q}-{b}", "doc_b": f"doc {q} {b}", "prob_a": float(p)})  # fmt: skip
    return Dataset.from_list(rows), truth


def test_group_preferences_builds_the_grouped_schema():
    flat, truth = preference_set()
    grouped = group_preferences(flat)
    assert grouped.column_names == ["query_id", "query", "doc_ids", "docs", "pair_a", "pair_b", "prob_a"]
    assert grouped["query_id"] == ["q0", "q1", "q2", "q3"]
    row = grouped[1]
    assert sorted(row["doc_ids"]) == sorted(truth["q1"]) and len(row["pair_a"]) == 24
    assert row["doc_ids"][:2] == [flat[24]["doc_a_id"], flat[24]["doc_b_id"]]  # order of first appearance
    pairs = flat.filter(lambda r: r["query_id"] == "q1")
    for k, pair in enumerate(pairs):
        assert row["doc_ids"][row["pair_a"][k]] == pair["doc_a_id"]
        assert row["docs"][row["pair_b"][k]] == pair["doc_b"]
        assert row["prob_a"][k] == pytest.approx(pair["prob_a"])


def test_grouping_errors_name_the_column_or_id():
    flat, _ = preference_set(n_queries=1)
    with pytest.raises(ValueError, match=r"missing column\(s\) \['prob_a'\]"):
        group_preferences(flat.remove_columns("prob_a"))
    clash = flat.map(lambda r, i: {"doc_a": "another text"} if i == 3 else {}, with_indices=True)
    with pytest.raises(ValueError, match=r"\('q0', 'd0-\d+'\).*different texts"):
        group_preferences(clash)
    cross = flat.add_column("query_b_id", ["q0"] * (len(flat) - 1) + ["q9"])
    with pytest.raises(ValueError, match=r"cross-query pair \(query_id='q0', query_b_id='q9'\).*calibrate"):
        group_preferences(cross)
    assert len(group_preferences(flat.add_column("query_b_id", [None] * len(flat)))) == 1
    renamed = flat.map(lambda r, i: {"query": "other"} if i == 0 else {}, with_indices=True)
    with pytest.raises(ValueError, match="query_id 'q0' has 2 different texts"):
        group_preferences(renamed)


def test_failed_pairs_are_never_dropped_silently():
    flat, _ = preference_set(n_queries=2)
    broken = flat.map(lambda r, i: {"prob_a": None} if i == 30 else {}, with_indices=True)
    with pytest.raises(ValueError, match=r"query_id='q1'.*non-finite prob_a.*re-judge"):
        label_preferences(broken)
    with pytest.warns(UserWarning, match="dropping 1 pair"):
        labels = label_preferences(broken, drop_failed=True)
    assert sum(len(p) for p in labels["pair_a"]) == len(flat) - 1


def test_thurstone_map_matches_the_single_query_fit_and_recovers_truth():
    flat, truth = preference_set(n_queries=3, n_docs=40, degree=8)
    labels = group_preferences(flat).map(thurstone_map, batched=True, batch_size=2, fn_kwargs={"model": "thurstone"})
    for row in labels:
        edges = np.stack([row["pair_a"], row["pair_b"]], axis=1)
        single = fit_scores(edges, row["prob_a"], len(row["doc_ids"]), return_result=True)
        np.testing.assert_allclose(row["elo"], single.scores, atol=1e-9)
        np.testing.assert_allclose(row["elo_se"], single.se, rtol=1e-7)
        assert row["converged"] and row["connected"] and row["iterations"] == single.iterations
        latent = [truth[row["query_id"]][d] for d in row["doc_ids"]]
        assert spearmanr(row["elo"], latent).statistic > 0.9


def test_label_preferences_with_two_processes_equals_one():
    flat, _ = preference_set(n_queries=4, n_docs=10)
    one = label_preferences(flat, num_proc=1, batch_size=2)
    two = label_preferences(flat, num_proc=2, batch_size=2)
    np.testing.assert_allclose(np.concatenate(one["elo"]), np.concatenate(two["elo"]), atol=1e-12)


def test_label_grouped_equals_the_map_that_keeps_every_column():
    """label_preferences maps the label columns alone and joins them onto the grouped set: the same rows, columns
    (in order), types and values as ``grouped.map(thurstone_map)``, for one process and for two."""
    grouped = group_preferences(preference_set(n_queries=5, n_docs=10)[0])
    plain = grouped.map(thurstone_map, batched=True, batch_size=2)
    for num_proc in (None, 2):
        joined = label_grouped(grouped, num_proc=num_proc, batch_size=2)
        assert joined.features == plain.features and len(joined) == len(plain)
        assert joined.to_list() == plain.to_list()


@pytest.mark.parametrize(
    "change,match",
    [
        ({"doc_ids": ["a", "a", "c"]}, r"query_id='q'.*'a' appears twice"),
        ({"pair_a": [0, 5]}, r"query_id='q': pair \(5, 2\) is out of range for 3"),
        ({"pair_b": [1, 1]}, r"query_id='q'.*compares a document with itself"),
        ({"prob_a": [0.5, float("nan")]}, r"query_id='q'.*non-finite"),
        ({"doc_ids": ["a"], "docs": ["x"], "pair_a": [], "pair_b": [], "prob_a": []}, "query_id='q' has 1 document"),
    ],
)
def test_thurstone_map_errors_name_the_query(change, match):
    batch = {"query_id": ["q"], "query": ["?"], "doc_ids": [["a", "b", "c"]], "docs": [["x", "y", "z"]],
             "pair_a": [[0, 1]], "pair_b": [[1, 2]], "prob_a": [[0.7, 0.4]]}  # fmt: skip
    batch |= {k: [v] for k, v in change.items()}
    with pytest.raises(ValueError, match=match):
        thurstone_map(batch)


def test_flatten_labels_one_row_per_document():
    flat, _ = preference_set(n_queries=2, n_docs=6)
    labels = label_preferences(flat)
    points = flatten_labels(labels)
    assert points.column_names == ["query_id", "query", "doc_id", "doc", "score"] and len(points) == 12
    assert points["score"] == [s for row in labels["elo"] for s in row]
    assert points["doc_id"][6] == labels[1]["doc_ids"][0] and points["query"][6] == "query 1"
    calibrated = labels.map(lambda r: {"score": [s + 10 for s in r["elo"]]})
    assert flatten_labels(calibrated)["score"][0] == pytest.approx(labels[0]["elo"][0] + 10)
    with pytest.raises(ValueError, match=r"missing column\(s\) \['nope'\]"):
        flatten_labels(labels, score_column="nope")


# ----------------------------------------------------------------------------------------------- issue #12
def _grouped_batch(**change):
    """Three grouped queries; doc ids repeat across queries (real corpora do), so the duplicate check sorts."""
    batch = {"query_id": ["q0", "q1", "q2"], "query": ["?"] * 3, "doc_ids": [["a", "b", "c"]] * 3,
             "docs": [["x", "y", "z"]] * 3, "pair_a": [[0, 1]] * 3, "pair_b": [[1, 2]] * 3,
             "prob_a": [[0.7, 0.4]] * 3}  # fmt: skip
    for key, (q, value) in change.items():
        batch[key] = [value if i == q else v for i, v in enumerate(batch[key])]
    return batch


@pytest.mark.parametrize(
    "change,match",
    [
        ({"doc_ids": (1, ["a", "b", "a"])}, r"query_id='q1': doc_id 'a' appears twice in doc_ids: each document once"),
        ({"doc_ids": (2, ["a", "c", "c"])}, r"query_id='q2': doc_id 'c' appears twice.*re-run `group_preferences`"),
        ({"doc_ids": (1, ["a", None, "c"])}, r"query_id='q1': doc_ids holds a missing \(null\) id"),
        ({"pair_a": (1, [0, 5])}, r"query_id='q1': pair \(5, 2\) is out of range for 3 doc_ids: pair_a / pair_b"),
        ({"pair_b": (2, [1, -1])}, r"query_id='q2': pair \(1, -1\) is out of range"),
        ({"pair_b": (1, [1, 1])}, r"query_id='q1'.*compares a document with itself"),
        ({"prob_a": (2, [0.5, None])}, r"query_id='q2'.*non-finite prob_a.*re-judge"),
        ({"prob_a": (0, [0.5, 1.5])}, r"query_id='q0'.*outside \[0, 1\]"),
        ({"prob_a": (1, [0.5])}, r"`pair_a`, `pair_b` and `prob_a` must have equal lengths per query"),
        ({"pair_a": (1, [0, None])}, r"query_id='q1': `pair_a` must hold integer indices into doc_ids"),
        ({"pair_a": (2, None)}, r"query_id='q2': `pair_a` is missing \(null\)"),
        ({"doc_ids": (0, ["a"]), "docs": (0, ["x"]), "pair_a": (0, []), "pair_b": (0, []), "prob_a": (0, [])},
         "query_id='q0' has 1 document"),
    ],
)  # fmt: skip
def test_vectorised_validation_keeps_every_message(change, match):
    batch = _grouped_batch(**change)
    with pytest.raises(ValueError, match=match):
        thurstone_map(batch)  # a plain dict of lists
    with pytest.raises(ValueError, match=match):  # a Dataset.map batch: read as Arrow
        Dataset.from_dict(batch).map(thurstone_map, batched=True)


def test_repeated_ids_are_found_per_query_for_any_id_type():
    import pyarrow as pa

    from zelo_hf.labeling import _repeated_id

    sizes = np.array([3, 2, 3])  # ids repeat across queries (never a duplicate) and within the last one
    for values in (["x", "y", "z", "x", "y", "p", "q", "p"], [7, 8, 9, 7, 8, 1, 2, 1]):
        assert _repeated_id(pa.array(values), sizes) == (2, 2)
        assert _repeated_id(pa.array(values[:5]), sizes[:2]) == (-1, -1)
        assert _repeated_id(pa.array(values[-1:] + values).slice(1), sizes) == (2, 2)  # an offset into the buffers


def test_validation_names_missing_columns_and_wrong_types():
    with pytest.raises(ValueError, match=r"missing column\(s\) \['pair_b'\]"):
        thurstone_map({k: v for k, v in _grouped_batch().items() if k != "pair_b"})
    with pytest.raises(ValueError, match=r"`pair_a` must hold one list per query \(got type int64\)"):
        thurstone_map(_grouped_batch() | {"pair_a": [0, 1, 2]})


def test_map_over_arrow_batches_keeps_the_label_schema():
    flat, _ = preference_set(n_queries=5, n_docs=9)
    grouped = group_preferences(flat)
    labels = grouped.map(thurstone_map, batched=True, batch_size=2)
    assert labels.features["elo"] == labels.features["elo_se"]
    assert str(labels.features["elo"]) == "List(Value('float64'))"
    assert {k: str(labels.features[k]) for k in ("converged", "iterations", "log_likelihood")} == {
        "converged": "Value('bool')", "iterations": "Value('int64')", "log_likelihood": "Value('float64')"}  # fmt: skip
    as_arrow = grouped.with_format("arrow").map(thurstone_map, batched=True, batch_size=2)
    np.testing.assert_array_equal(np.concatenate(labels["elo"]), np.concatenate(as_arrow.with_format(None)["elo"]))
    assert labels.select_columns(grouped.column_names).to_dict() == grouped.to_dict()  # inputs pass through


def test_sharded_label_set_round_trips_and_summary_reads_offsets(tmp_path):
    from datasets import load_dataset

    from zelo_hf.label_sets import label_summary, save_label_set

    flat, _ = preference_set(n_queries=6, n_docs=10)
    labels = label_preferences(flat)
    folder = save_label_set(labels, tmp_path / "labels", max_shard_size=labels.data.nbytes // 3)
    shards = sorted(p.name for p in (folder / "data").glob("*.parquet"))
    assert len(shards) >= 3 and shards[0] == f"train-00000-of-{len(shards):05d}.parquet"
    back = load_dataset(str(folder), split="train")
    assert back["query_id"] == labels["query_id"] and back["elo"] == labels["elo"]
    summary = label_summary(labels)
    assert summary["n_docs"] == 60 and summary["n_pairs"] == sum(len(p) for p in labels["pair_a"])
    assert summary["converged_pct"] == 100.0
    assert summary["mean_iterations"] == pytest.approx(np.mean(labels["iterations"]))
    one = save_label_set(labels, tmp_path / "one")  # small sets stay one file, as before
    assert [p.name for p in (one / "data").glob("*.parquet")] == ["train-00000-of-00001.parquet"]
