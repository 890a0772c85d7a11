"""Every kind of folder the CLI writes, checked for what must never be published (issue #11): this machine's home
directory, working directory, temp folders, username, and a secret planted in the environment."""

from __future__ import annotations

import getpass
import json
import os
import sys
from pathlib import Path

import pytest

from zelo_hf import cli

SECRET = "sk-planted-zelo-secret-0123456789"
NOT_CHECKED: set[str] = set()  # every file is read, training_args.bin (transformers' pickled config) included


def forbidden(tmp_path: Path) -> list[str]:
    user = getpass.getuser()
    items = [str(Path.home()), os.getcwd(), str(tmp_path), str(tmp_path.resolve()), SECRET, f"/{user}/"]
    return [i for i in items if len(i) > 1]


def leaks(folder: Path, words: list[str]) -> list[str]:
    found = []
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in NOT_CHECKED):
        data = f.read_bytes()
        found += [f"{f.relative_to(folder.parent)}: {w!r}" for w in words if w.encode() in data]
    return found


def beir(path: Path) -> Path:
    path.mkdir(parents=True)
    docs = [{"_id": f"d{i}", "title": "", "text": f"wing lift text {i} " + "cake " * (i % 3)} for i in range(8)]
    (path / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    queries = [{"_id": f"q{q}", "text": f"wing lift cake {q}"} for q in range(3)]
    (path / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (path / "qrels").mkdir()
    rows = "".join(f"q{q}\td{i}\t{(i + q) % 3}\n" for q in range(3) for i in range(8))
    (path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + rows)
    return path


def zelo(*argv: str) -> None:
    status = cli.main(list(argv))
    assert status in (0, 3, 4), argv


@pytest.fixture
def produced(tmp_path, tiny_bert_path, monkeypatch):
    monkeypatch.setenv("ZELO_TEST_API_KEY", SECRET)
    run = tmp_path / f"run-{SECRET}"
    data = beir(run / "beir")
    out = {name: str(run / name) for name in ("cands", "pairs", "prefs", "labels", "cross", "cross_judged",
                                              "calibrated", "failed", "reranker", "pairwise")}  # fmt: skip
    zelo("candidates", "--data", str(data), "--k", "6", "--output_dir", out["cands"])
    zelo("graph", "--input", out["cands"], "--degree", "2", "--output_dir", out["pairs"])
    zelo("judge", "--candidates", out["cands"], "--degree", "2", "--no_progress", "--output_dir", out["prefs"])
    zelo("fit", "--input", out["prefs"], "--output_dir", out["labels"])
    zelo("calibrate", "--labels", out["labels"], "--sample_pairs", "--n_cycles", "1", "--output_dir", out["cross"])
    zelo("judge", "--pairs", out["cross"], "--data", str(data), "--no_progress", "--output_dir", out["cross_judged"])
    zelo("calibrate", "--labels", out["labels"], "--cross_pairs", out["cross_judged"], "--output_dir",
         out["calibrated"])  # fmt: skip
    zelo("judge", "--candidates", out["cands"], "--degree", "2", "--judge", "openai/stub", "--api_base",
         "http://127.0.0.1:9/v1", "--max_retries", "0", "--timeout", "5", "--no_progress", "--max_pairs", "2",
         "--output_dir", out["failed"])  # fmt: skip
    train = ["--model_name_or_path", tiny_bert_path, "--max_steps", "1", "--report_to", "none",
             "--per_device_train_batch_size", "4", "--save_strategy", "no", "--eval_strategy", "no"]  # fmt: skip
    zelo("train-pointwise", "--dataset_name", out["calibrated"], "--output_dir", out["reranker"], *train)
    zelo("train-pairwise", "--dataset_name", out["prefs"], "--output_dir", out["pairwise"], *train)
    return run


def test_no_folder_names_this_machine_or_a_secret(produced, tmp_path):
    folders = sorted(p for p in produced.iterdir() if p.is_dir() and p.name != "beir")
    assert len(folders) == 10
    for folder in folders:
        assert (folder / "README.md").exists(), f"{folder.name} has no card"
    assert leaks(produced, forbidden(tmp_path)) == []
    card = (produced / "reranker" / "README.md").read_text()
    assert "**Base model:** a local model (sha256 " in card


def test_producing_command_and_tracebacks_use_placeholders(tmp_path, monkeypatch):
    from zelo_hf.utils import producing_command, scrub_paths

    monkeypatch.chdir(tmp_path)
    argv = ["/usr/bin/zelo", "fit", "--input", str(tmp_path / "prefs"), "--output_dir", str(Path.home() / "labels")]
    assert producing_command(argv) == "zelo fit --input ./prefs --output_dir ~/labels"
    trace = f'File "{Path.home()}/src/zelo_hf/judges.py", line 3; File "{tmp_path}/x.py"'
    assert scrub_paths(trace) == 'File "~/src/zelo_hf/judges.py", line 3; File "./x.py"'
    if sys.prefix not in ("/usr", "/usr/local", "/opt"):
        assert scrub_paths(f'File "{sys.prefix}/lib/site.py"') == 'File "<env>/lib/site.py"'
