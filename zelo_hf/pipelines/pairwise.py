"""The pairwise small model on its own (``recipes/pairwise.py``, ``zelo pairwise``; ZELO.md step 4): a preference set
-> ``PairwiseTrainer`` -> agreement with the judges on held-out queries' pairs, before and after -> save (+ push).

The model reads (query, document A, document B) and is trained with binary cross-entropy against the judges' soft
label ``prob_a``.
"""

from __future__ import annotations

import argparse
import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trl import ModelConfig, TrlParser

from .. import hub  # hub.push_folder looked up at call time: the one upload call, patched by offline tests
from ..data import split_by_query
from ..hub import load_dataset_any
from ..trainer import PairwiseConfig, PairwiseTrainer
from ..trainer.base_config import own_option_names
from ..training import build_trainer
from ..utils import resolve_model_name

HELP = "Train the pairwise small model on a preference set and report its held-out agreement with the judges."


@dataclass
class PairwiseArguments:
    """A preference set in, a pairwise judge model out (ZELO.md step 4), evaluated on held-out queries' pairs."""
    preference_set: str = field(
        default="outputs/zerank-demo/preferences",
        metadata={"help": "Preference set: a folder written by zelo (e.g. a zerank run's preferences/), a parquet "
                  "or jsonl file, or a Hub dataset id."},
    )
    eval_query_fraction: float = field(
        default=0.2, metadata={"help": "Share of the queries whose pairs are held out for evaluation (0: none)."}
    )
    query_seed: int = field(default=0, metadata={"help": "Seed of the held-out query draw."})
    eval_batch_size: int = field(default=64, metadata={"help": "Batch size of the evaluation."})


@dataclass
class PairwiseRun:
    """A trained pairwise model with its agreement with the judges on held-out queries, before and after."""

    trainer: Any
    result: Any  # transformers' TrainOutput
    before: dict[str, float]
    after: dict[str, float]
    train_rows: int
    eval_rows: int


def train_pairwise_model(preferences, model: str, config, model_args=None, eval_fraction: float = 0.2, seed: int = 0,
                         dataset_name: str | None = None) -> PairwiseRun:
    """Failed pairs dropped, whole queries held out (``split_by_query``), the model trained (``build_trainer``, as
    ``zelo train-pairwise``) and measured on them before (when measurable) and after: the body of ``zelo pairwise``
    and of the zerank pairwise stage."""
    preferences = preferences.filter(lambda p: p is not None, input_columns="prob_a", desc="Dropping failed pairs")
    train, held_out = split_by_query(preferences, eval_fraction, seed)
    trainer = build_trainer(PairwiseTrainer, model, config, model_args, train, held_out, dataset_name=dataset_name)
    # the base model's agreement, before any training; under DeepSpeed the engine only exists once training starts
    measure_base = held_out is not None and not trainer.is_deepspeed_enabled
    before = trainer.evaluate(metric_key_prefix="base") if measure_base else {}  # the card shows both
    result = trainer.train()
    after = trainer.evaluate() if held_out is not None else {}
    return PairwiseRun(trainer, result, before, after, len(train), len(held_out) if held_out is not None else 0)


def run_pairwise(args: PairwiseArguments, training_args, model_args) -> dict[str, Any]:
    """Preference set -> PairwiseTrainer -> held-out agreement before/after -> save (+ push through push_folder)."""
    config = copy.copy(training_args)
    config.push_to_hub = False  # one upload, below, through zelo_hf.hub.push_folder
    hub_id = args.preference_set if "/" in args.preference_set and not Path(args.preference_set).exists() else None
    run = train_pairwise_model(load_dataset_any(args.preference_set), resolve_model_name(model_args.model_name_or_path),
                               config, model_args, args.eval_query_fraction, args.query_seed, dataset_name=hub_id)
    output_dir = Path(training_args.output_dir) / "model"
    run.trainer.save_model(str(output_dir))
    if training_args.push_to_hub and run.trainer.is_world_process_zero():
        if not training_args.hub_model_id:
            raise ValueError("push_to_hub=True needs `hub_model_id` (got None): pass --hub_model_id you/pairwise-judge.")
        hub.push_folder(output_dir, training_args.hub_model_id, repo_type="model", private=training_args.hub_private_repo)
    return {"before": run.before, "after": run.after, "train_loss": run.result.training_loss,
            "train_rows": run.train_rows, "eval_rows": run.eval_rows, "output_dir": str(output_dir)}


def own_option_fields() -> set[str]:
    """The options this pipeline adds (its arguments and the config fields ``TrainingArguments`` lacks): ``zelo pairwise
    --help`` lists them first, in their own group."""
    return own_option_names(PairwiseArguments, PairwiseConfig)


def make_parser(subparsers: argparse._SubParsersAction | None = None, prog: str | None = None) -> TrlParser:
    """YAML ``--config`` sets values, command-line flags override them."""
    dataclass_types = (PairwiseArguments, PairwiseConfig, ModelConfig)
    if subparsers is not None:
        return subparsers.add_parser("pairwise", help=HELP, dataclass_types=dataclass_types)
    return TrlParser(dataclass_types, prog=prog)


def main(script_args: PairwiseArguments, training_args: PairwiseConfig, model_args: ModelConfig) -> dict[str, Any]:
    """Train and evaluate; prints the held-out metrics before and after on the main process."""
    result = run_pairwise(script_args, training_args, model_args)
    if training_args.process_index == 0:
        keys = sorted(k for k in result["after"] if k.startswith("eval_") and "runtime" not in k and "per_second" not in k)
        print("| metric | before | after |\n|---|---|---|")
        for key in keys:
            before = result["before"].get("base_" + key[5:], float("nan"))
            print(f"| {key[5:]} | {before:.4f} | {result['after'][key]:.4f} |")
        print(f"saved to {result['output_dir']}")
    return result
