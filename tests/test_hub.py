from __future__ import annotations

import pytest
from datasets import Dataset

from zelo_hf.hub import load_dataset_any, save_dataset_folder
from zelo_hf.utils import producing_command, redact


def _write_namesakes(tmp_path):
    for n_rows, parent in ((3, "a"), (5, "b")):
        save_dataset_folder(Dataset.from_dict({"x": list(range(n_rows))}), tmp_path / parent / "prefs")


def test_load_dataset_any_reads_the_folder_not_a_cached_namesake(tmp_path, monkeypatch):
    _write_namesakes(tmp_path)
    for n_rows, parent in ((3, "a"), (5, "b")):
        monkeypatch.chdir(tmp_path / parent)
        assert load_dataset_any("prefs").num_rows == n_rows


def test_load_dataset_any_files_and_errors(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"x": 1}\n{"x": 2}\n')
    assert load_dataset_any(path).num_rows == 2
    bad = tmp_path / "rows.txt"
    bad.write_text("x")
    with pytest.raises(ValueError, match="unsupported file type"):
        load_dataset_any(bad)


def test_secrets_are_redacted_from_text_and_commands(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-SECRET-123456789")
    assert redact("key=sk-test-SECRET-123456789 end") == "key=*** end"
    cmd = producing_command(["zelo", "judge", "--hub_token", "hf_abcdefghijk", "--api_key=sk-test-SECRET-123456789"])
    assert "hf_abcdefghijk" not in cmd and "sk-test-SECRET" not in cmd
    assert cmd.startswith("zelo judge --hub_token '***'") or cmd.startswith("zelo judge --hub_token ***")


def test_card_templates_ship_inside_the_package():
    """The templates are package data (zelo_hf/templates/*.md, as trl's trl/templates/), not mapped in by setup.cfg."""
    from pathlib import Path

    import zelo_hf
    from zelo_hf.hub import TEMPLATES_DIR, template_path

    assert TEMPLATES_DIR == Path(zelo_hf.__file__).parent / "templates"
    names = {"preference_set.md", "label_set.md", "reranker.md", "pairwise.md", "zembed.md", "zembed_query.md"}
    assert names <= {p.name for p in TEMPLATES_DIR.glob("*.md")}
    assert template_path("reranker.md").parent == TEMPLATES_DIR
    setup = (Path(__file__).resolve().parents[1] / "setup.cfg").read_text()
    assert "model_cards" not in setup and "templates/*.md" in setup
    with pytest.raises(FileNotFoundError, match="pick one of"):
        template_path("nope.md")


def test_load_split_reads_every_shard_of_a_label_set(tmp_path):
    """A large label set is written in shards (data/train-0000k-of-0000n.parquet): a stage reads all of them."""
    from zelo_hf.hub import has_split, load_split

    rows = Dataset.from_dict({"query_id": [str(i) for i in range(10)]})
    (tmp_path / "data").mkdir()
    for k in range(3):
        rows.shard(3, k, contiguous=True).to_parquet(str(tmp_path / "data" / f"train-{k:05d}-of-00003.parquet"))
    assert has_split(tmp_path, "train") and not has_split(tmp_path, "eval")
    assert load_split(tmp_path, "train")["query_id"] == rows["query_id"]
    with pytest.raises(FileNotFoundError, match="split 'eval' has not completed"):
        load_split(tmp_path, "eval")
