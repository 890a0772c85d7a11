from __future__ import annotations

import json

import pytest
from datasets import Dataset
from test_pairwise_trainer import preference_rows
from test_pointwise_trainer import toy_rows

from zelo_hf import cli
from zelo_hf.commands import train_pairwise, train_pointwise

pytestmark = pytest.mark.usefixtures("single_thread")


def test_train_pointwise_yaml_with_flag_override_and_push(tmp_path, tiny_bert_path, monkeypatch):
    Dataset.from_dict(toy_rows()).to_parquet(str(tmp_path / "labels.parquet"))
    (tmp_path / "cfg.yaml").write_text(
        f"dataset_name: {tmp_path / 'labels.parquet'}\nmodel_name_or_path: {tiny_bert_path}\n"
        f"output_dir: {tmp_path / 'out'}\nmax_steps: 50\nper_device_train_batch_size: 8\nlearning_rate: 0.005\n"
        "max_length: 48\nmax_query_length: 16\nuse_cpu: true\nsave_strategy: 'no'\ndisable_tqdm: true\n"
        "push_to_hub: true\nhub_model_id: me/tiny-reranker\n"
    )
    pushed = []
    monkeypatch.setattr("zelo_hf.hub.push_folder", lambda folder, repo_id, **kw: pushed.append((folder, repo_id, kw)))
    parser = train_pointwise.make_parser()
    script, args, model_args = parser.parse_args_and_config(
        ["--config", str(tmp_path / "cfg.yaml"), "--max_steps", "3"]
    )
    assert args.max_steps == 3 and args.learning_rate == 0.005
    assert cli.main(["train-pointwise", "--config", str(tmp_path / "cfg.yaml"), "--max_steps", "3"]) == 0
    assert len(pushed) == 1 and pushed[0][1] == "me/tiny-reranker" and pushed[0][2]["repo_type"] == "model"
    out = tmp_path / "out"
    assert json.loads((out / "config.json").read_text())["sentence_transformers"]["activation_fn"].endswith("Identity")
    card = (out / "README.md").read_text()
    assert "Produced by" in card and "library_name: sentence-transformers" in card and "datasets:" not in card


def test_train_pairwise_main_with_lora(tmp_path, tiny_bert_path):
    Dataset.from_dict(preference_rows()).to_json(str(tmp_path / "prefs.jsonl"))
    parser = train_pairwise.make_parser()
    script, args, model_args = parser.parse_args_and_config(
        [
            "--dataset_name",
            str(tmp_path / "prefs.jsonl"),
            "--model_name_or_path",
            tiny_bert_path,
            "--output_dir",
            str(tmp_path / "judge"),
            "--max_steps",
            "2",
            "--use_cpu",
            "--save_strategy",
            "no",
            "--use_peft",
            "--lora_r",
            "4",
            "--lora_target_modules",
            "query",
            "value",
            "--max_length",
            "64",
            "--max_query_length",
            "16",
            "--disable_tqdm",
            "true",
        ]
    )
    trainer = train_pairwise.main(script, args, model_args)
    assert len(trainer.train_dataset) == 32
    assert (tmp_path / "judge" / "adapter_config.json").is_file()
    assert "classifier" in json.loads((tmp_path / "judge" / "adapter_config.json").read_text())["modules_to_save"]


def test_cli_errors(tmp_path, tiny_bert_path):
    parser = train_pointwise.make_parser()
    script, args, model_args = parser.parse_args_and_config(
        ["--model_name_or_path", tiny_bert_path, "--output_dir", str(tmp_path)]
    )
    with pytest.raises(ValueError, match="`dataset_name` is required"):
        train_pointwise.main(script, args, model_args)
    with pytest.raises(ValueError, match="`column_map` must look like"):
        train_pointwise.parse_column_map("query")
    assert train_pointwise.parse_column_map("question:query, passage:doc") == {"question": "query", "passage": "doc"}


@pytest.mark.parametrize("command", ["train-pointwise", "train-pairwise"])
def test_cli_help_lists_options(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--dataset_name" in out and "--head" in out and "--use_peft" in out and "--max_query_length" in out


def test_train_pointwise_takes_a_label_set_folder(tmp_path, tiny_bert_path):
    from zelo_hf.commands.train_pointwise import as_training_rows
    from zelo_hf.hub import save_dataset_folder

    labels = Dataset.from_dict(
        {
            "query_id": ["q1", "q2"],
            "query": ["what is lift", "boundary layer"],
            "doc_ids": [["d1", "d2"], ["d3", "d4"]],
            "docs": [["lift of wings", "heat flux"], ["laminar boundary layer", "shock waves"]],
            "elo": [[1.0, -1.0], [0.5, -0.5]],
            "score": [[1.5, -0.5], [0.2, -0.8]],
        }
    )
    flat = as_training_rows(labels)
    assert flat["doc"] == ["lift of wings", "heat flux", "laminar boundary layer", "shock waves"]
    assert flat["score"] == [1.5, -0.5, 0.2, -0.8]
    save_dataset_folder(labels, tmp_path / "calibrated")
    argv = ["--dataset_name", str(tmp_path / "calibrated"), "--model_name_or_path", tiny_bert_path, "--output_dir",
            str(tmp_path / "out"), "--max_steps", "1", "--use_cpu", "--save_strategy", "no", "--max_length", "32",
            "--max_query_length", "8", "--disable_tqdm", "true"]
    assert cli.main(["train-pointwise", *argv]) == 0
    assert (tmp_path / "out" / "config.json").exists()
