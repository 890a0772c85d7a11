"""``zelo train-pointwise``: train the pointwise reranker on a label set (MSE on calibrated zELO scores).

    zelo train-pointwise --dataset_name outputs/labels-flat --model_name_or_path Qwen/Qwen3-0.6B --head causal \\
        --use_peft --lora_r 16 --output_dir outputs/reranker
    zelo train-pointwise --config recipes/configs/zerank.yaml --learning_rate 1e-5   # YAML + flag overrides
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from trl import ModelConfig, TrlParser

from ..hub import load_dataset_any
from ..labeling import flatten_labels
from ..trainer.base_config import own_option_names
from ..trainer.pointwise_config import PointwiseConfig
from ..trainer.pointwise_trainer import PointwiseTrainer
from ..training import build_trainer
from ..utils import check_local_name, resolve_model_name

HELP = "Train the pointwise reranker (MSE on calibrated scores) on a label set."


@dataclass
class TrainScriptArguments:
    """Where the training data comes from and which columns hold the fields the trainer reads."""

    dataset_name: str | None = field(
        default=None, metadata={"help": "Hub dataset id, local folder (save_dataset_folder) or .parquet/.jsonl file."}
    )
    dataset_train_split: str = field(default="train", metadata={"help": "Split to train on."})
    dataset_test_split: str | None = field(
        default=None, metadata={"help": "Split of `dataset_name` to evaluate on (or use eval_dataset_name)."}
    )
    eval_dataset_name: str | None = field(default=None, metadata={"help": "A separate evaluation dataset."})
    column_map: str | None = field(
        default=None,
        metadata={"help": "Rename columns to the trainer's names, e.g. 'question:query,passage:doc,grade:label'."},
    )


def parse_column_map(value: str | None) -> dict[str, str]:
    """``'a:b,c:d'`` -> ``{"a": "b", "c": "d"}``."""
    if not value:
        return {}
    pairs = [item.split(":") for item in value.split(",") if item.strip()]
    if any(len(p) != 2 or not all(s.strip() for s in p) for p in pairs):
        raise ValueError(f"`column_map` must look like 'old:new,old2:new2' (got column_map={value!r}).")
    return {old.strip(): new.strip() for old, new in pairs}


def as_training_rows(dataset):
    """A per-query label set (``zelo fit`` / ``zelo calibrate`` output: ``doc_ids`` + ``elo``/``score`` lists) is
    flattened to one (query, doc, score) row per document, so its folder or Hub id can be passed directly."""
    if "doc_ids" in dataset.column_names and ({"elo", "score"} & set(dataset.column_names)):
        return flatten_labels(dataset)
    return dataset


def load_splits(script_args, training_args):
    """Train and (optional) eval datasets, with ``column_map`` applied."""
    if not script_args.dataset_name:
        raise ValueError("`dataset_name` is required: pass --dataset_name <hub id | folder | file.parquet>.")
    rename = parse_column_map(script_args.column_map)
    train = load_dataset_any(script_args.dataset_name, split=script_args.dataset_train_split)
    evaluation = None
    if script_args.eval_dataset_name:
        evaluation = load_dataset_any(script_args.eval_dataset_name, split=script_args.dataset_test_split or "train")
    elif script_args.dataset_test_split:
        evaluation = load_dataset_any(script_args.dataset_name, split=script_args.dataset_test_split)
    if evaluation is None and training_args.eval_strategy != "no":
        raise ValueError(
            f"`eval_strategy={training_args.eval_strategy}` needs an eval set: pass --dataset_test_split "
            "or --eval_dataset_name, or --eval_strategy no."
        )

    def rename_fn(ds, what):
        rows = as_training_rows(ds.rename_columns({k: v for k, v in rename.items() if k in ds.column_names}))
        check_target_scale(rows, what)
        return rows

    return rename_fn(train, "train"), (rename_fn(evaluation, "eval") if evaluation is not None else None)


MAX_ABS_TARGET = 1e4  # zELO scores live within about +-20 and grades within 0-10: 1e12 is a broken label, not a scale


def check_target_scale(dataset, what: str) -> None:
    """Training targets (``score`` / ``label``) must be finite and of a plausible scale (issue #11: a 1e12 target
    would dominate every MSE step)."""
    for column in ("score", "label"):
        if column not in dataset.column_names or not dataset.features[column].dtype.startswith(("float", "int")):
            continue
        values = np.asarray(dataset[column], dtype=np.float64)
        bad = ~np.isfinite(values) | (np.abs(values) > MAX_ABS_TARGET)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{what} dataset: `{column}` must be finite with |{column}| <= {MAX_ABS_TARGET:g} (got {float(values[i])!r} at "
                f"row {i}, {int(bad.sum())} bad row(s)): fix the label set (re-run `zelo fit` / `zelo calibrate`)."
            )


def run(trainer_cls, script_args, training_args, model_args):
    """Shared body of both train commands: load, train (``zelo_hf.training.build_trainer``, as the recipes' training
    stages), save (card + CrossEncoder files), push."""
    if not model_args.model_name_or_path:
        raise ValueError("`model_name_or_path` is required: pass --model_name_or_path <hub id | folder>.")
    name = check_local_name(resolve_model_name(model_args.model_name_or_path), "model_name_or_path")
    model_args.model_name_or_path = name
    train, evaluation = load_splits(script_args, training_args)
    trainer = build_trainer(trainer_cls, name, training_args, model_args, train, evaluation,
                            dataset_name=script_args.dataset_name)
    result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    trainer.save_state()  # trainer_state.json: steps and the loss log, as the transformers examples keep them
    if evaluation is not None:
        metrics = trainer.evaluate()
        trainer.save_metrics("eval", metrics)
    if training_args.push_to_hub:  # saves the folder (weights, CrossEncoder files, card), then uploads it once
        url = trainer.push_to_hub()
        trainer.accelerator.print(f"Model saved to {training_args.output_dir} and pushed: {url}")
    else:
        trainer.save_model(training_args.output_dir)
        trainer.accelerator.print(f"Model saved to {training_args.output_dir}.")
    return trainer


def own_option_fields() -> set[str]:
    return own_option_names(TrainScriptArguments, PointwiseConfig)


def make_parser():
    return TrlParser((TrainScriptArguments, PointwiseConfig, ModelConfig))


def main(script_args, training_args, model_args):
    """Train a :class:`~zelo_hf.trainer.PointwiseTrainer`; also importable by recipes."""
    return run(PointwiseTrainer, script_args, training_args, model_args)
