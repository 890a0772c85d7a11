"""`zelo judge --rounds R --budget B` (issue #13): adaptive rounds from the command line, and their errors."""

from __future__ import annotations

import json

import pytest
from datasets import Dataset, load_dataset

from zelo_hf.cli import main as zelo

N_QUERIES, N_DOCS = 3, 20


@pytest.fixture
def cands(tmp_path):
    path = tmp_path / "cands.parquet"
    Dataset.from_list([
        {"query_id": f"q{q}", "query": f"query {q}", "doc_ids": [f"q{q}d{i}" for i in range(N_DOCS)],
         "docs": [f"text {q} {i}" for i in range(N_DOCS)], "grades": [(i * 7 + q) % 4 for i in range(N_DOCS)]}
        for q in range(N_QUERIES)
    ]).to_parquet(str(path))
    return str(path)


def test_rounds_spend_the_budget_exactly(cands, tmp_path, capsys):
    out = tmp_path / "prefs"
    args = ["judge", "--candidates", cands, "--output_dir", str(out), "--rounds", "3", "--budget", "70",
            "--first_degree", "4", "--progress", "false"]
    assert zelo(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["pairs"] == summary["judged"] == N_QUERIES * 70
    assert summary["adaptive"]["pairs_per_round"] == [N_QUERIES * 40, N_QUERIES * 15, N_QUERIES * 15]
    prefs = load_dataset(str(out), split="train")
    per_query = {}
    for q, a, b in zip(prefs["query_id"], prefs["doc_a_id"], prefs["doc_b_id"]):
        per_query.setdefault(q, set()).add(frozenset((a, b)))
    assert {q: len(p) for q, p in per_query.items()} == {f"q{q}": 70 for q in range(N_QUERIES)}
    first = prefs.to_dict()
    assert zelo(args) == 0  # the same command again: the same pairs and labels
    assert load_dataset(str(out), split="train").to_dict() == first


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        (["--rounds", "0"], r"--rounds must be >= 1 \(got --rounds 0\): pass 1"),
        (["--rounds", "3"], r"--rounds 3 needs --budget \(comparisons per query in all rounds, got none\): e\.g\."),
        (["--budget", "70"], r"--budget is only used with --rounds > 1 \(got --budget 70 --rounds 1\): add e\.g\."),
        (["--rounds", "3", "--budget", "0"], r"--rounds 3 needs --budget >= 1 \(got --budget 0\)"),
        (["--rounds", "3", "--budget", "70", "--first_degree", "3"], r"needs an even --first_degree >= 2 \(got"),
        (["--rounds", "3", "--budget", "70", "--dry_run"], r"cannot be priced by --dry_run"),
        (["--rounds", "3", "--budget", "70", "--max_pairs", "5"], r"takes --budget, not --max_pairs \(got"),
        (["--rounds", "3", "--budget", "30"], r"`budget` must cover the first round \(got budget=30; query_id='q0' "
                                              r"has 20 documents"),
    ],
)
def test_bad_rounds_and_budget_are_clear(cands, tmp_path, flags, match):
    with pytest.raises(ValueError, match=match):
        zelo(["judge", "--candidates", cands, "--output_dir", str(tmp_path / "o"), "--progress", "false", *flags])


def test_rounds_need_candidates_not_pairs(tmp_path):
    with pytest.raises(ValueError, match=r"--rounds 2 needs --candidates, not --pairs \(got --pairs 'p.parquet'\)"):
        zelo(["judge", "--pairs", "p.parquet", "--output_dir", str(tmp_path / "o"), "--rounds", "2", "--budget", "9"])
