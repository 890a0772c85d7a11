"""Bad input gets one clear error naming the field, the value and the fix (issue #11), never a silent guess."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datasets import Dataset

from zelo_hf.data import load_beir_folder, load_retrieval_data
from zelo_hf.grouping import group_preferences
from zelo_hf.hub import load_dataset_any


def beir_folder(path: Path, corpus: list[dict], queries=None, qrels: str | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    queries = [{"_id": "q1", "text": "how do wings lift"}] if queries is None else queries
    (path / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    if qrels is not None:
        (path / "qrels").mkdir(exist_ok=True)
        (path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels)
    return path


DOCS = [{"_id": "d1", "title": "", "text": "aircraft wing lift"}, {"_id": "d2", "title": "", "text": "cake recipe"}]


# ------------------------------------------------------------------------------------------------ BEIR folders
def test_duplicate_document_id_is_refused(tmp_path):
    corpus = [*DOCS, {"_id": "d1", "title": "", "text": "chocolate cake recipe"}]
    folder = beir_folder(tmp_path / "beir", corpus, qrels="q1\td1\t2\n")
    with pytest.raises(ValueError, match=r"document `_id`='d1' appears twice \(record 3.*unique `_id`"):
        load_beir_folder(folder)


def test_qrels_pointing_outside_the_corpus_is_refused(tmp_path):
    folder = beir_folder(tmp_path / "beir", DOCS, qrels="q1\td1\t2\nq1\td9\t1\n")
    with pytest.raises(ValueError, match=r"1 qrels line\(s\) name a document not in the corpus.*corpus-id='d9'"):
        load_beir_folder(folder)


def test_a_hub_corpus_keeps_the_first_of_repeated_ids_and_drops_dangling_qrels(monkeypatch, caplog):
    import datasets

    from zelo_hf.data import load_beir_hub

    tables = {"corpus": [*DOCS, {"_id": "d1", "title": "", "text": "chocolate cake"}], "queries": [{"_id": "q1",
              "text": "wings"}], "default": [{"query-id": "q1", "corpus-id": c, "score": 1} for c in ("d1", "d9")]}

    def fake_load(repo, config, split=None, revision=None):
        ds = Dataset.from_list(tables[config])
        return ds if split else datasets.DatasetDict({"test": ds})

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    with caplog.at_level("WARNING", logger="zelo_hf"):
        data = load_beir_hub("me/beir")
    assert data.corpus["d1"]["text"] == "aircraft wing lift" and data.qrels == {"q1": {"d1": 1}}
    assert "1 repeated document `_id`(s) (first: 'd1'): keeping each id's first text" in caplog.text
    assert "1 qrels line(s) name a document not in the corpus (first: query-id='q1', corpus-id='d9')" in caplog.text


def test_corpus_line_without_id(tmp_path):
    folder = beir_folder(tmp_path / "beir", [DOCS[0], {"title": "", "text": "no id"}], qrels="q1\td1\t2\n")
    with pytest.raises(ValueError, match=r"corpus.jsonl: record 2 has no `_id` \(got keys \['text', 'title'\]\)"):
        load_beir_folder(folder)


def test_empty_jsonl_in_a_beir_folder(tmp_path):
    folder = beir_folder(tmp_path / "beir", DOCS, queries=[])
    with pytest.raises(ValueError, match=r"queries.jsonl is empty \(no JSON lines\)"):
        load_beir_folder(folder)


def test_non_integer_grade(tmp_path):
    folder = beir_folder(tmp_path / "beir", DOCS, qrels="q1\td1\thigh\n")
    with pytest.raises(ValueError, match=r"test.tsv:2: `score` must be an integer grade \(got 'high'\)"):
        load_beir_folder(folder)


# ------------------------------------------------------------------------------------------- paths and files
def test_empty_jsonl_input(tmp_path):
    (tmp_path / "pairs.jsonl").write_text("")
    with pytest.raises(ValueError, match=r"pairs.jsonl is empty \(0 bytes\)"):
        load_dataset_any(tmp_path / "pairs.jsonl")


def test_empty_dataset_folder_names_it(tmp_path):
    from zelo_hf.hub import save_dataset_folder

    save_dataset_folder(Dataset.from_dict({"query_id": [], "prob_a": []}), tmp_path / "cross")
    with pytest.raises(ValueError, match=r"cross has no rows in split 'train'"):
        load_dataset_any(tmp_path / "cross")


def test_empty_cross_pairs_without_columns_and_malformed_json(tmp_path):
    from zelo_hf.hub import save_dataset_folder

    save_dataset_folder(Dataset.from_list([]), tmp_path / "cross")  # DatasetGenerationError before
    with pytest.raises(ValueError, match=r"cross has no rows in split 'train'"):
        load_dataset_any(tmp_path / "cross")
    (tmp_path / "pairs.jsonl").write_text('{"a": 1}\n{"a": "x", \n')
    with pytest.raises(ValueError, match=r"pairs.jsonl cannot be read as a dataset \(.*write one JSON object per line"):
        load_dataset_any(tmp_path / "pairs.jsonl")


def test_mistyped_local_path_is_never_sent_to_the_hub(tmp_path, monkeypatch):
    import datasets

    (tmp_path / "out" / "preferences").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail(f"sent to load_dataset: {a}"))
    for typo in ("out/prefrences", "./out/prefrences", str(tmp_path / "out" / "prefrences")):
        with pytest.raises(FileNotFoundError, match=r"path does not exist .*did you mean .*out/preferences"):
            load_dataset_any(typo)
    with pytest.raises(FileNotFoundError, match=r"`source`: path does not exist"):
        load_retrieval_data("out/scifcat")


# ----------------------------------------------------------------------------------------- preference sets
def pairs(probs, ids=(("d1", "d2"),) * 2):
    rows = [{"query_id": "q", "query": "query", "doc_a_id": a, "doc_a": f"text {a}", "doc_b_id": b,
             "doc_b": f"text {b}", "prob_a": p} for (a, b), p in zip(ids, probs)]  # fmt: skip
    rows.append({"query_id": "q", "query": "query", "doc_a_id": "d2", "doc_a": "text d2", "doc_b_id": "d3",
                 "doc_b": "text d3", "prob_a": probs[0]})  # fmt: skip
    return Dataset.from_list(rows)


def test_probabilities_written_as_strings():
    with pytest.raises(ValueError, match=r"`prob_a` must hold numbers .*got type string, e.g. prob_a='0.7'.*not '0.7'"):
        group_preferences(pairs(["0.7", "0.6"]))


def test_contradictory_repeated_pair_is_refused():
    with pytest.raises(ValueError, match=r"pair \('d1', 'd2'\) appears 2 times with contradictory labels"):
        group_preferences(pairs([0.9, 0.1]))
    with pytest.raises(ValueError, match=r"contradictory labels"):  # the same verdict with a and b swapped
        group_preferences(pairs([0.9, 0.9], ids=(("d1", "d2"), ("d2", "d1"))))


def test_agreeing_repeated_pair_is_kept_with_a_warning():
    with pytest.warns(UserWarning, match=r"1 repeated pair\(s\) kept as separate observations"):
        grouped = group_preferences(pairs([0.8, 0.7]))
    assert grouped[0]["prob_a"] == pytest.approx([0.8, 0.7, 0.8])


# ------------------------------------------------------------------------------------------------ label sets
@pytest.mark.parametrize("bad", [1e12, float("inf"), float("nan")])
def test_absurd_or_non_finite_training_target(bad):
    from zelo_hf.commands.train_pointwise import check_target_scale

    rows = Dataset.from_dict({"query": ["q", "q"], "doc": ["a", "b"], "score": [0.5, bad]})
    with pytest.raises(ValueError, match=r"train dataset: `score` must be finite with \|score\| <= 10000 \(got .* at "
                       r"row 1"):  # fmt: skip
        check_target_scale(rows, "train")


# ----------------------------------------------------------------------------------------- cross-query pairs
def test_cross_pairs_with_string_or_out_of_range_probabilities():
    from zelo_hf.calibration import calibrate_labels

    labels = Dataset.from_dict({"query_id": ["q1", "q2"], "doc_ids": [["a"], ["b"]], "elo": [[0.0], [0.0]]})
    cross = {"query_id": ["q1"], "doc_a_id": ["a"], "query_b_id": ["q2"], "doc_b_id": ["b"]}
    with pytest.raises(ValueError, match=r"`prob_a` must hold numbers in \[0, 1\] \(got type string, e.g. prob_a='0.7'"):
        calibrate_labels(labels, Dataset.from_dict(cross | {"prob_a": ["0.7"]}))
    with pytest.raises(ValueError, match=r"`prob_a` must be in \[0, 1\] \(got 1.5 at row 0\)"):
        calibrate_labels(labels, Dataset.from_dict(cross | {"prob_a": [1.5]}))
    empty = Dataset.from_dict({k: [] for k in [*cross, "prob_a"]})
    with pytest.raises(ValueError, match=r"the cross-query preference set has no rows"):
        calibrate_labels(labels, empty)
