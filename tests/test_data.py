from __future__ import annotations

import pytest

from zelo_hf.data import bundled_path, load_retrieval_data, read_qrels


def test_bundled_scifact_counts():
    data = load_retrieval_data("scifact", split="test")
    assert len(data.corpus) == 5183
    assert len(data.queries) == 1109
    assert len(data.qrels) == 300
    assert sum(len(v) for v in data.qrels.values()) == 339
    train = load_retrieval_data("scifact", split="train")
    assert len(train.qrels) == 809


def test_bundled_cranfield_graded():
    data = load_retrieval_data("cranfield")
    assert len(data.corpus) == 1400 and len(data.queries) == 225
    grades = [g for q in data.qrels.values() for g in q.values()]
    assert sorted(set(grades)) == [0, 1, 2, 3, 4]
    assert data.doc_text("1").startswith(data.corpus["1"]["title"])


def test_subset_and_errors(tmp_path):
    data = load_retrieval_data("cranfield")
    sub = data.subset(["1", "2"])
    assert list(sub.queries) == ["1", "2"] and set(sub.qrels) == {"1", "2"}
    with pytest.raises(KeyError, match="query_ids"):
        data.subset(["nope"])
    with pytest.raises(FileNotFoundError, match="split"):
        load_retrieval_data(bundled_path("cranfield"), split="train")
    with pytest.raises(FileNotFoundError, match="bundled dataset"):
        load_retrieval_data("no_such_thing")
    bad = tmp_path / "q.tsv"
    bad.write_text("qid\tdid\tscore\n1\t2\t1\n")
    with pytest.raises(ValueError, match="header"):
        read_qrels(bad)
