"""A preference set stores each text once (issue #12): pair rows with ids + `queries` / `documents` tables, joined
back on load, grouped without the join; folders written before (texts inline) load unchanged."""

from __future__ import annotations

from collections import Counter

import pyarrow.parquet as pq
import pytest
from datasets import Dataset, concatenate_datasets, load_dataset

from zelo_hf.grouping import group_preferences
from zelo_hf.hub import load_dataset_any, save_dataset_folder
from zelo_hf.judging.local import SimulatedJudge
from zelo_hf.judging.preference_set import save_preference_set
from zelo_hf.judging.preferences import judge_pairs
from zelo_hf.preference_tables import (
    PreferenceTables,
    concat_preference_sets,
    load_preference_set,
    write_preference_set,
)
from zelo_hf.schema import preference_features

N_QUERIES, N_DOCS, DEGREE = 4, 10, 4
QRELS = {f"q{q}": {f"d{(q * 3 + d) % 16}": (d * 7 + q) % 5 for d in range(N_DOCS)} for q in range(N_QUERIES)}


def doc_text(d: str) -> str:
    return f"the text of document {d}, long enough to matter"


@pytest.fixture
def candidates():
    """Documents shared across queries (one corpus, ids corpus-wide), as first-stage candidates are."""
    return Dataset.from_list([
        {"query_id": q, "query": f"the text of query {q}", "doc_ids": list(docs), "docs": [doc_text(d) for d in docs],
         "first_stage_scores": [float(N_DOCS - i) for i in range(N_DOCS)]}
        for q, docs in QRELS.items()
    ])  # fmt: skip


@pytest.fixture
def judged(candidates):
    return judge_pairs(candidates, SimulatedJudge(QRELS), degree=DEGREE, progress=False)


def parquet_strings(folder) -> Counter:
    """Every string value of every parquet file under ``folder`` (nested ones included), counted."""
    counts: Counter = Counter()
    for f in folder.rglob("*.parquet"):
        table = pq.read_table(f)
        for column in table.flatten().columns:
            if str(column.type) == "string":
                counts.update(v for v in column.to_pylist() if v is not None)
    return counts


def cross_set() -> Dataset:
    """Cross-query pairs (doc_b answers query_b), one of them a within-query row (query_b_id null)."""
    rows = [{"query_id": f"q{i % 3}", "query": f"query {i % 3}", "doc_a_id": f"d{i}", "doc_a": f"doc {i}",
             "doc_b_id": f"d{i + 5}", "doc_b": f"doc {i + 5}", "prob_a": 0.1 * i, "votes": [],
             "query_b_id": f"q{(i + 1) % 3}" if i else None, "query_b": f"query {(i + 1) % 3}" if i else None}
            for i in range(6)]  # fmt: skip
    return Dataset.from_list(rows, features=preference_features(cross=True))


def test_a_saved_set_holds_each_text_once(judged, tmp_path):
    out = save_preference_set(judged, tmp_path / "prefs")
    counts = parquet_strings(out)
    queries = set(judged.preferences["query"])
    docs = set(judged.preferences["doc_a"]) | set(judged.preferences["doc_b"])
    assert {t: counts[t] for t in queries | docs} == dict.fromkeys(queries | docs, 1)
    inline = parquet_strings(save_dataset_folder(judged.preferences, tmp_path / "inline"))  # the layout before
    assert inline["the text of query q0"] == N_DOCS * DEGREE // 2  # once per pair of its graph
    assert all(inline[doc_text(d)] == DEGREE * sum(d in docs for docs in QRELS.values()) for d in {"d0", "d5"})


def test_it_loads_back_joined_equal_row_by_row_to_the_inline_layout(judged, tmp_path):
    out = save_preference_set(judged, tmp_path / "prefs")
    for loaded in (load_preference_set(out), load_dataset_any(out), load_dataset_any(str(out))):
        assert loaded.features == judged.preferences.features
        assert loaded.to_dict() == judged.preferences.to_dict()
    cross = cross_set()
    write_preference_set(cross, tmp_path / "cross")
    assert sorted(p.name for p in (tmp_path / "cross").iterdir()) == ["data", "documents", "queries"]
    joined = load_preference_set(tmp_path / "cross")
    assert joined.features == cross.features and joined.to_dict() == cross.to_dict()


def test_an_old_inline_folder_still_loads(judged, tmp_path):
    old = save_dataset_folder(judged.preferences, tmp_path / "old")  # data/train-00000-of-00001.parquet, texts inline
    assert load_preference_set(old).to_dict() == judged.preferences.to_dict()
    as_is = load_preference_set(old, join=False)
    assert isinstance(as_is, Dataset) and as_is.to_dict() == judged.preferences.to_dict()
    assert group_preferences(as_is).to_dict() == group_preferences(judged.preferences).to_dict()


def test_a_pair_whose_id_has_no_text_is_an_error_naming_it(judged, tmp_path):
    out = save_preference_set(judged, tmp_path / "prefs")
    (shard,) = (out / "documents").glob("*.parquet")
    table = pq.read_table(shard)
    gone = table["doc_id"][0].as_py()
    pq.write_table(table.slice(1), shard)
    with pytest.raises(ValueError, match=rf"doc_[ab]_id='{gone}' has no text in the `documents` table"):
        load_preference_set(out)
    with pytest.raises(ValueError, match=rf"doc_[ab]_id='{gone}' has no text in the `documents` table"):
        group_preferences(load_preference_set(out, join=False))


@pytest.mark.parametrize("window_rows", [7, 1 << 20])
def test_grouping_from_ids_and_tables_equals_grouping_the_inline_rows(judged, tmp_path, window_rows):
    shuffled = judged.preferences.shuffle(seed=0)  # a query's pairs spread over windows
    write_preference_set(shuffled, tmp_path / "prefs")
    tables = load_preference_set(tmp_path / "prefs", join=False)
    assert isinstance(tables, PreferenceTables) and "query" not in tables.pairs.column_names
    expected = group_preferences(shuffled, window_rows=window_rows)
    got = group_preferences(tables, window_rows=window_rows)
    assert got.features == expected.features and got.to_dict() == expected.to_dict()


def test_each_config_loads_its_own_rows_from_two_folders_of_the_same_name(candidates, tmp_path):
    """Plain `datasets.load_dataset(folder, config)` (the card's configs, as the Hub reads them) with one cache: the
    card names every file, and a file's name carries its content hash."""
    cache = str(tmp_path / "hf-cache")
    for run, degree in (("run1", 2), ("run2", 4)):
        result = judge_pairs(candidates.select(range(degree // 2 + 1)), SimulatedJudge(QRELS), degree=degree,
                             progress=False)  # fmt: skip
        out = save_preference_set(result, tmp_path / run / "prefs")
        pairs = load_dataset(str(out), split="train", cache_dir=cache)
        queries = load_dataset(str(out), "queries", split="queries", cache_dir=cache)
        documents = load_dataset(str(out), "documents", split="documents", cache_dir=cache)
        assert pairs["doc_a_id"] == result.preferences["doc_a_id"]
        assert sorted(queries["query"]) == sorted(set(result.preferences["query"]))
        assert set(documents["doc"]) == set(result.preferences["doc_a"]) | set(result.preferences["doc_b"])


def test_the_hub_configs_give_the_same_tables_and_an_ids_only_file_loads_as_is(judged, tmp_path):
    from zelo_hf.preference_tables import _hub_companion_tables

    out = save_preference_set(judged, tmp_path / "prefs")
    tables = load_preference_set(out, join=False)
    from_configs = _hub_companion_tables(str(out))  # what a Hub id goes through: the card's configs
    assert [t.to_dict() for t in from_configs] == [tables.queries.to_dict(), tables.documents.to_dict()]
    ids = tmp_path / "cross.parquet"  # e.g. judged cross-query pairs a user wrote with ids only
    tables.pairs.to_parquet(str(ids))
    assert load_dataset_any(ids).to_dict() == tables.pairs.to_dict()


def test_ids_that_name_two_texts_are_saved_inline_with_a_warning(tmp_path):
    rows = Dataset.from_list([
        {"query_id": f"q{q}", "query": f"query {q}", "doc_a_id": "d0", "doc_a": f"text {q} 0", "doc_b_id": "d1",
         "doc_b": f"text {q} 1", "prob_a": 0.7, "votes": []} for q in range(2)
    ], features=preference_features())  # fmt: skip
    with pytest.warns(UserWarning, match=r"texts in every row: doc_id='d0' has 2 different texts"):
        assert write_preference_set(rows, tmp_path / "prefs") is None
    assert not (tmp_path / "prefs" / "documents").exists()
    assert load_dataset_any(tmp_path / "prefs").to_dict() == rows.to_dict()


def test_large_sets_are_written_in_shards_the_card_names(judged, tmp_path):
    out = save_preference_set(judged, tmp_path / "prefs", max_shard_size=300)
    shards = {name: sorted(p.name for p in (out / name).glob("*.parquet")) for name in ("data", "queries", "documents")}
    assert len(shards["data"]) > 1 and len(shards["documents"]) > 1
    card = (out / "README.md").read_text()
    assert all(f"{folder}/{name}" in card for folder, names in shards.items() for name in names)
    assert load_preference_set(out).to_dict() == judged.preferences.to_dict()
    save_preference_set(judged, out)  # rewritten in one shard each: no stale shard stays
    assert [len(list((out / name).glob("*.parquet"))) for name in ("data", "queries", "documents")] == [1, 1, 1]
    assert load_preference_set(out).to_dict() == judged.preferences.to_dict()


def test_sets_concatenate_with_their_tables_merged(candidates, tmp_path):
    first = judge_pairs(candidates.select([0, 1]), SimulatedJudge(QRELS), degree=2, progress=False)
    second = judge_pairs(candidates.select([2, 3]), SimulatedJudge(QRELS), degree=2, progress=False)
    for name, result in (("a", first), ("b", second)):
        write_preference_set(result.preferences, tmp_path / name)
    both = concat_preference_sets([load_preference_set(tmp_path / n, join=False) for n in "ab"])
    assert isinstance(both, PreferenceTables) and len(both.documents) == len(set(both.documents["doc_id"]))
    expected = concatenate_datasets([first.preferences, second.preferences])
    assert both.joined().to_dict() == expected.to_dict()
    assert group_preferences(both).to_dict() == group_preferences(expected).to_dict()
    other = second.preferences.map(lambda r: {"doc_a": r["doc_a"] + " (edited)", "doc_b": r["doc_b"] + " (edited)"})
    write_preference_set(other, tmp_path / "c")
    with pytest.raises(ValueError, match=r"disagree on a text: doc_id='d\d+' has 2 different texts"):
        concat_preference_sets([load_preference_set(tmp_path / n, join=False) for n in "bc"])


def test_a_pushed_dataset_replaces_the_repo_parquet_files(tmp_path, monkeypatch):
    """Content-named shards: an earlier push's files must not stay beside the new ones."""
    import huggingface_hub

    from zelo_hf.hub import push_folder

    calls = []

    class FakeApi:
        def create_repo(self, *args, **kwargs):
            pass

        def upload_folder(self, **kwargs):
            calls.append(kwargs)
            return "url"

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    push_folder(tmp_path, "me/prefs")
    push_folder(tmp_path, "me/model", repo_type="model")
    assert [c["delete_patterns"] for c in calls] == [["*.parquet"], None]


def test_the_id_index_finds_every_row_and_never_a_wrong_one(monkeypatch):
    import numpy as np
    import pyarrow as pa

    import zelo_hf.preference_tables as tables_module
    from zelo_hf.preference_tables import KeyIndex

    keys = pa.chunked_array([pa.array(["d17", ""]), pa.array(["x" * 5000, "y", "d1", "d7"])])
    asked = pa.array(["", None, "x" * 5000, "d7", "not there", "d17", "d1"])
    expected = [1, None, 2, 5, None, 0, 4]
    assert KeyIndex(keys).positions(asked).to_pylist() == expected
    assert KeyIndex(keys.cast(pa.large_string())).positions(asked.cast(pa.large_string())).to_pylist() == expected
    # every hash equal (the worst collision): the strings are compared, so rows stay right
    monkeypatch.setattr(tables_module, "_hash_strings", lambda values: np.zeros(len(values), np.uint64))
    assert KeyIndex(keys).positions(asked).to_pylist() == expected


def test_grouping_window_by_window_does_not_rehash_the_tables(judged, tmp_path, monkeypatch):
    """Arrow's index_in hashes its whole value set per call: per window that made grouping quadratic in the corpus."""
    import pyarrow.compute as pc

    save_preference_set(judged, tmp_path / "set")
    tables = load_preference_set(tmp_path / "set", join=False)
    calls = []
    index_in = pc.index_in
    monkeypatch.setattr(pc, "index_in", lambda *a, **k: calls.append(1) or index_in(*a, **k))
    grouped = group_preferences(tables, window_rows=7)
    assert calls == [] and len(grouped) == N_QUERIES
    inline = group_preferences(load_preference_set(tmp_path / "set"), window_rows=7)
    assert grouped.to_list() == inline.to_list()


def test_ids_get_the_documented_full_width_hash():
    """``sum((byte_j + 1) * B^j) * B + length`` mod 2^64, checked against Python integers on random ids of mixed
    lengths: the first version took B^j by integer division after the products wrapped, so its weights were under
    2^24 and 10M ids "d0".."d9999999" gave 20,736 collisions (each costs a full-table lookup)."""
    import numpy as np
    import pyarrow as pa

    from zelo_hf.preference_tables import _HASH_BASE, _hash_strings

    rng = np.random.default_rng(0)
    ids = ["", "d0", "x" * 300] + ["".join(map(chr, rng.integers(32, 127, rng.integers(1, 40)))) for _ in range(200)]
    base, mask = int(_HASH_BASE), (1 << 64) - 1

    def reference(text: str) -> int:
        h = sum((byte + 1) * pow(base, j, 1 << 64) for j, byte in enumerate(text.encode())) & mask
        return (h * base + len(text.encode())) & mask

    assert _hash_strings(pa.array(ids)).tolist() == [reference(t) for t in ids]
