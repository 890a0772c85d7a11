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

from sentence_transformers import SentenceTransformer
from transformers import set_seed
from trl import ModelConfig, TrlParser

from .. import hub  # hub.push_folder looked up at call time: the one upload call, patched by offline tests
from ..data import split_by_query, split_dev
from ..grouping import group_preferences
from ..hub import load_dataset_any, render_model_card
from ..trainer import PairwiseConfig, PairwiseTrainer, ZembedConfig, ZembedTrainer
from ..trainer.base_config import own_option_names
from ..training import build_trainer, sub_config
from ..utils import producing_command, resolve_model_name

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
    query_seed: int = field(default=0, metadata={"help": "Seed of the held-out (and dev) query draws."})
    dev_query_fraction: float = field(
        default=0.15,
        metadata={"help": "Share of the training queries that pick the kept epoch of a bi-encoder judge (never "
                  "trained on; the untrained base competes too). architecture=bi_encoder only."},
    )
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
    base_model: str | None = None


def train_pairwise_model(preferences, model: str, config, model_args=None, eval_fraction: float = 0.2, seed: int = 0,
                         dataset_name: str | None = None, dev_fraction: float = 0.15) -> PairwiseRun:
    """Failed pairs dropped, whole queries held out (``split_by_query``), the model trained (``build_trainer``, as
    ``zelo train-pairwise``, or :func:`train_bi_encoder_judge` for ``architecture="bi_encoder"``) and measured on
    them before (when measurable) and after: the body of ``zelo pairwise`` and of the zerank pairwise stage."""
    preferences = preferences.filter(lambda p: p is not None, input_columns="prob_a", desc="Dropping failed pairs")
    train, held_out = split_by_query(preferences, eval_fraction, seed)
    if config.architecture == "bi_encoder":
        return train_bi_encoder_judge(str(model), config, train, held_out, dev_fraction, seed)
    trainer = build_trainer(PairwiseTrainer, model, config, model_args, train, held_out, dataset_name=dataset_name)
    # the base model's agreement, before any training; under DeepSpeed the engine only exists once training starts
    measure_base = held_out is not None and not trainer.is_deepspeed_enabled
    before = trainer.evaluate(metric_key_prefix="base") if measure_base else {}  # the card shows both
    result = trainer.train()
    after = trainer.evaluate() if held_out is not None else {}
    return PairwiseRun(trainer, result, before, after, len(train), len(held_out) if held_out is not None else 0)


def train_bi_encoder_judge(model: str, config: PairwiseConfig, train, held_out, dev_fraction: float,
                           seed: int) -> PairwiseRun:
    """The pairwise judge on a bi-encoder: ``ZembedTrainer`` with ``loss_type="pairwise_bce"`` on the grouped
    training preferences; the kept epoch (the untrained base included) is picked on ``dev_fraction`` of the training
    queries, and the held-out queries' agreement is measured before and after, outside the selection. Texts are cut
    to ``config.max_length`` tokens, at most the bi-encoder's own ``max_seq_length``."""
    fit, dev = split_dev(group_preferences(train), dev_fraction, seed)
    zembed_config = sub_config(
        config, ZembedConfig, config.output_dir, loss_type="pairwise_bce", temperature=config.temperature,
        selection_metric=config.selection_metric, pair_weighting=config.pair_weighting,
        num_train_epochs=config.num_train_epochs, max_steps=config.max_steps, learning_rate=config.learning_rate,
        per_device_train_batch_size=config.per_device_train_batch_size, eval_strategy="epoch" if dev else "no",
    )
    set_seed(config.seed)
    base = SentenceTransformer(model, device="cpu")
    base.max_seq_length = min(config.max_length, base.max_seq_length or config.max_length)  # tokens per text
    trainer = ZembedTrainer(base, args=zembed_config, train_dataset=fit, eval_dataset=dev)
    held = trainer.prepare(group_preferences(held_out)) if held_out is not None else None
    before = _prefixed(trainer.measure(held), "base") if held is not None else {}
    result = trainer.train()
    after = _prefixed(trainer.measure(held), "eval") if held is not None else {}
    return PairwiseRun(trainer, result, before, after, len(train), len(held_out) if held_out is not None else 0,
                       base_model=model)


def _prefixed(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    return {f"{prefix}_{k}": v for k, v in metrics.items()}


def save_pairwise_model(run: PairwiseRun, output_dir: str | Path, dataset_name: str | None = None) -> None:
    """The trained judge's final folder with its card: a cross-encoder through its trainer's ``save_model``, a
    bi-encoder judge as a sentence-transformers model + ``zelo_pairwise.json`` + a card with the held-out
    agreement before and after training."""
    run.trainer.save_model(str(output_dir))  # a cross-encoder's trainer writes its own card
    if isinstance(run.trainer, ZembedTrainer) and run.trainer.is_world_process_zero():
        save_bi_encoder_judge_card(run, Path(output_dir), dataset_name)


def save_bi_encoder_judge_card(run: PairwiseRun, output_dir: Path, dataset_name: str | None) -> None:
    """README.md of a bi-encoder pairwise judge (``zelo_hf/templates/pairwise_bi_encoder.md``)."""
    args, base = run.trainer.args, run.base_model
    card_data = {"library_name": "sentence-transformers", "pipeline_tag": "sentence-similarity",
                 "tags": ["zelo", "pairwise-judge", "sentence-transformers"]}
    if base and "/" in base and not Path(base).exists():
        card_data["base_model"] = base
    if dataset_name:
        card_data["datasets"] = [dataset_name]
    card = render_model_card(
        "pairwise_bi_encoder.md", card_data=card_data, model_id=output_dir.name, base_model=base,
        dataset_name=dataset_name, train_rows=run.train_rows, eval_rows=run.eval_rows, temperature=args.temperature,
        pair_weighting=args.pair_weighting, selection=run.trainer.selection(), selection_metric=args.selection_metric,
        evaluation=_before_after(run.before, run.after),
        hyperparameters={k: getattr(args, k) for k in ("learning_rate", "num_train_epochs", "max_steps",
                                                       "per_device_train_batch_size", "max_query_length", "seed")},
        command=producing_command(),
    )
    card.save(str(output_dir / "README.md"))


def _before_after(before: dict[str, float], after: dict[str, float]) -> list[tuple[str, float | None, float]]:
    """``(metric, base, trained)`` rows of the held-out evaluation."""
    return [(k[5:], before.get("base_" + k[5:]), v) for k, v in after.items() if k.startswith("eval_")]


def run_pairwise(args: PairwiseArguments, training_args, model_args) -> dict[str, Any]:
    """Preference set -> PairwiseTrainer -> held-out agreement before/after -> save (+ push through push_folder)."""
    config = copy.copy(training_args)
    config.push_to_hub = False  # one upload, below, through zelo_hf.hub.push_folder
    hub_id = args.preference_set if "/" in args.preference_set and not Path(args.preference_set).exists() else None
    run = train_pairwise_model(load_dataset_any(args.preference_set), resolve_model_name(model_args.model_name_or_path),
                               config, model_args, args.eval_query_fraction, args.query_seed, dataset_name=hub_id,
                               dev_fraction=args.dev_query_fraction)
    output_dir = Path(training_args.output_dir) / "model"
    save_pairwise_model(run, output_dir, hub_id)
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
