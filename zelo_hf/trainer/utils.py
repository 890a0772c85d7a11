"""Shared pieces of the two trainers: config fields, model loading, validation, metrics, saving, cards."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..utils import get_logger

logger = get_logger(__name__)


@dataclass
class RerankerArgsMixin:
    """Fields both trainer configs add to ``TrainingArguments`` (kept in one place)."""

    head: str = field(
        default="auto",
        metadata={
            "help": "Scoring head: 'classification' (AutoModelForSequenceClassification, num_labels=1), 'causal' "
            "(zerank style: logit of 'Yes' after a system=query/user=document chat) or 'auto' (causal for "
            "*ForCausalLM checkpoints, else classification).",
            "choices": ["auto", "classification", "causal"],
        },
    )
    max_length: int = field(default=512, metadata={"help": "Maximum tokens per input; only documents are truncated."})
    max_query_length: int = field(default=64, metadata={"help": "Queries are cut to this many tokens."})
    model_init_kwargs: dict | str | None = field(
        default=None,
        metadata={
            "help": 'Keyword arguments (a dict, or a JSON string on the command line) for `from_pretrained` when the model is a name, e.g. \'{"dtype": "bfloat16"}\'.'
        },
    )
    # TrainingArguments defaults both trainers change (the mixin precedes TrainingArguments in the bases).
    learning_rate: float = field(default=2e-5, metadata={"help": "The initial learning rate for AdamW."})
    logging_steps: float = field(default=10, metadata={"help": "Log every X update steps."})
    bf16: bool | None = field(
        default=None, metadata={"help": "bf16 mixed precision; None turns it on where CUDA supports bf16."}
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep the text columns: the collator tokenizes them per batch."}
    )
    merge_lora: bool = field(
        default=False,
        metadata={
            "help": "With a LoRA adapter: the final save writes the merged plain model to output_dir (loadable by "
            "CrossEncoder) and the adapter to output_dir/adapter."
        },
    )

    def _post_init_reranker(self) -> None:
        from ..modeling import check_lengths

        check_lengths(self.max_length, self.max_query_length)
        if self.bf16 is None:
            self.bf16 = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
        if self.ddp_backend is None and _deepspeed_without_cuda():
            # accelerate's PartialState finds no backend for DeepSpeed on CPU and falls back to one process per rank
            # (DeepSpeed then rejects the batch size); gloo is what DeepSpeed's CPU accelerator initialises anyway.
            self.ddp_backend = "gloo"


def _deepspeed_without_cuda() -> bool:
    import os

    launched = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true" and "LOCAL_RANK" in os.environ
    return launched and not torch.cuda.is_available()


# ----------------------------------------------------------------------------------------------- validation


def check_columns(dataset, required: list[str], split: str, fix: str) -> None:
    """Raise before training when a required column is missing."""
    missing = [c for c in required if c not in dataset.column_names]
    if missing:
        raise ValueError(f"{split} dataset is missing column(s) {missing} (has {dataset.column_names}): {fix}")


def check_texts(dataset, columns: list[str], split: str) -> None:
    """Queries and documents must be non-empty strings."""
    for column in columns:
        values = dataset[column]
        bad = [i for i, v in enumerate(values) if not isinstance(v, str) or not v.strip()]
        if bad:
            raise ValueError(
                f"{split} dataset: `{column}` is empty or not a string in {len(bad)} row(s) (first: row {bad[0]}, "
                f"value {values[bad[0]]!r}): drop or fill these rows before training."
            )


def check_numbers(dataset, column: str, split: str, low: float | None = None, high: float | None = None) -> np.ndarray:
    """A float column without NaN/inf, optionally inside [low, high]; returns it as an array."""
    values = np.asarray(dataset[column], dtype=np.float64)
    bad = ~np.isfinite(values)
    if low is not None:
        bad |= values < low
    if high is not None:
        bad |= values > high
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        span = f" in [{low}, {high}]" if low is not None else ""
        raise ValueError(
            f"{split} dataset: `{column}` must be finite{span} (got {float(values[first])!r} at row {first}, "
            f"{int(bad.sum())} bad row(s)): fix or drop these rows (a failed judgment is not a 0.5)."
        )
    return values


# ----------------------------------------------------------------------------------------------- metrics


def binary_entropy(logits: np.ndarray, targets: np.ndarray) -> float:
    """Mean BCE-with-logits (stable) of soft targets."""
    return float(np.mean(np.logaddexp(0.0, logits) - targets * logits))


def expected_calibration_error(probs: np.ndarray, targets: np.ndarray, n_bins: int = 10) -> float:
    """ECE: bin-weighted |mean predicted - mean observed| over equal-width probability bins (soft targets)."""
    bins = np.minimum((probs * n_bins).astype(int), n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    pred = np.bincount(bins, weights=probs, minlength=n_bins)
    obs = np.bincount(bins, weights=targets, minlength=n_bins)
    used = counts > 0
    return float(np.sum(np.abs(pred[used] - obs[used])) / max(len(probs), 1))


CONFIDENT_MARGIN = 0.3  # |prob_a - 0.5| >= 0.3: pairs the judges agree on (p <= 0.2 or p >= 0.8)


def pairwise_metrics(logits: np.ndarray, prob_a: np.ndarray) -> dict[str, float]:
    """Accuracy against the majority vote (``prob_a > 0.5``; ties excluded), ``agreement`` on the pairs the judges
    are confident about (``|prob_a - 0.5| >= 0.3``, counted in ``confident_pairs``), soft BCE and ECE."""
    logits, prob_a = np.asarray(logits, dtype=np.float64).ravel(), np.asarray(prob_a, dtype=np.float64).ravel()
    decided = prob_a != 0.5
    accuracy = float(np.mean((logits[decided] > 0) == (prob_a[decided] > 0.5))) if decided.any() else float("nan")
    confident = np.abs(prob_a - 0.5) >= CONFIDENT_MARGIN
    agreement = float(np.mean((logits[confident] > 0) == (prob_a[confident] > 0.5))) if confident.any() else float("nan")
    probs = 1.0 / (1.0 + np.exp(-logits))
    return {
        "accuracy": accuracy,
        "agreement": agreement,
        "confident_pairs": float(confident.sum()),
        "bce": binary_entropy(logits, prob_a),
        "ece": expected_calibration_error(probs, prob_a),
    }


def _ndcg_at_k(scores: np.ndarray, gains: np.ndarray, k: int = 10) -> float:
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    top = gains[np.argsort(-scores, kind="stable")][:k]
    ideal = np.sort(gains)[::-1][:k]
    idcg = float(np.sum(ideal * discounts[: len(ideal)]))
    return float(np.sum(top * discounts[: len(top)]) / idcg) if idcg > 0 else float("nan")


def pointwise_metrics(scores: np.ndarray, targets: np.ndarray, query_index: np.ndarray) -> dict[str, float]:
    """MSE plus per-query Spearman and NDCG@10 (gains = target - the query's minimum), averaged over queries."""
    from scipy.stats import spearmanr

    scores, targets = np.asarray(scores, dtype=np.float64).ravel(), np.asarray(targets, dtype=np.float64).ravel()
    query_index = np.asarray(query_index).ravel()
    spearman, ndcg = [], []
    order = np.argsort(query_index, kind="stable")
    splits = np.flatnonzero(np.diff(query_index[order])) + 1
    for idx in np.split(order, splits):  # one cheap pass per query: these are eval metrics, not a kernel
        if len(idx) < 2 or np.ptp(targets[idx]) == 0:
            continue
        spearman.append(spearmanr(scores[idx], targets[idx]).statistic)
        ndcg.append(_ndcg_at_k(scores[idx], targets[idx] - targets[idx].min()))
    return {
        "mse": float(np.mean((scores - targets) ** 2)),
        "spearman": float(np.nanmean(spearman)) if spearman else float("nan"),
        "ndcg@10": float(np.nanmean(ndcg)) if ndcg else float("nan"),
    }


# ----------------------------------------------------------------------------------------------- model set-up


def classification_head_names(model) -> list[str]:
    """Top-level module name(s) of a sequence-classification head (``classifier`` for BERT, ``score`` for Qwen3)."""
    names = [name for name in ("classifier", "score") if isinstance(getattr(model, name, None), torch.nn.Module)]
    if not names:
        raise ValueError(
            f"cannot find the classification head of {type(model).__name__} (looked for `classifier`, `score`): "
            "pass a peft_config whose `modules_to_save` names it."
        )
    return names


def attach_lora(model, peft_config, head: str, zero3: bool = False):
    """Wrap ``model`` with peft; a classification head is trained and saved with the adapter (``modules_to_save``).

    Without it the freshly initialised head would stay random and be missing from the saved adapter (the
    known pitfall). The causal head reads the pretrained LM head's "Yes" row, which LoRA's updates steer.
    """
    from peft import get_peft_model

    if head == "classification":
        names = classification_head_names(model)
        peft_config.modules_to_save = sorted(set(peft_config.modules_to_save or []) | set(names))
    # ZeRO-3 gathers parameters in the dtype of the first one: keep adapters in the base dtype (trl#6089).
    return get_peft_model(model, peft_config, autocast_adapter_dtype=not zero3)


def lora_config_from_model_args(model_args):
    """A ``peft.LoraConfig`` from TRL's ``ModelConfig`` (``--use_peft --lora_r ...``), or None."""
    if not getattr(model_args, "use_peft", False):
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        target_modules=model_args.lora_target_modules or "all-linear",
        modules_to_save=model_args.lora_modules_to_save,
        use_rslora=model_args.use_rslora,
        use_dora=model_args.use_dora,
    )


def format_hparams(args) -> dict[str, Any]:
    """The hyper-parameters a card shows (only the objective's own knobs; enums as their values)."""
    keys = [
        "learning_rate",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "num_train_epochs",
        "max_steps",
        "warmup_steps",
        "lr_scheduler_type",
        "weight_decay",
        "max_length",
        "max_query_length",
        "bf16",
        "seed",
        "loss_type",
        "target_transform",
        "symmetrize",
    ]
    loss_type = getattr(args, "loss_type", None)
    if loss_type == "contrastive" or getattr(args, "target_transform", None) == "sigmoid":
        keys.append("temperature")
    if loss_type == "contrastive":
        keys.append("num_negatives")
    if loss_type in ("binary", "contrastive"):
        keys.remove("target_transform")
    return {k: getattr(getattr(args, k), "value", getattr(args, k)) for k in keys if hasattr(args, k)}


# ----------------------------------------------------------------------------------------------- shared trainer


def _parse_init_kwargs(value) -> dict[str, Any]:
    import json

    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"`model_init_kwargs` must be a dict or a JSON object string (got {value!r}): e.g. "
                '\'{"dtype": "bfloat16"}\'.'
            ) from err
    return dict(value)


def _import_trainer():
    from transformers import Trainer

    return Trainer


def _release_deepspeed_state() -> None:
    """Let a second trainer start in this process under DeepSpeed (the zerank recipe trains the pairwise model,
    then the reranker): accelerate refuses a second ``Accelerator`` with a DeepSpeed plugin while the first one's
    ``AcceleratorState`` is alive. The previous state is dropped; the process group (``PartialState``) stays."""
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import DistributedType

    if AcceleratorState._shared_state and AcceleratorState().distributed_type == DistributedType.DEEPSPEED:
        AcceleratorState._reset_state()
        GradientState._reset_state()


class RerankerTrainer(_import_trainer()):
    """What the pairwise and pointwise trainers share: model/head/LoRA set-up, final save, card and upload.

    Uploads go through :func:`zelo_hf.hub.push_folder` once, at the end (``push_to_hub``); the Trainer's own
    repo creation at init and per-checkpoint pushes are turned off so nothing else touches the network.
    """

    _task = "pointwise"
    _card_template = "reranker.md"
    loss_is_scaled_for_ga = False  # compute_loss returns a per-batch mean

    def _load_model(self, model, args, processing_class, peft_config):
        from ..modeling import load_reranker, prepare_model_and_tokenizer

        if isinstance(model, (str, os.PathLike)):
            model, processing_class = load_reranker(
                str(model), head=args.head, task=self._task, zero3_init=True, **_parse_init_kwargs(args.model_init_kwargs)
            )
        else:
            if args.model_init_kwargs:
                logger.warning("`model_init_kwargs` is ignored: the model is already instantiated.")
            if processing_class is None:
                raise ValueError("`processing_class` (the tokenizer) is required when `model` is a loaded model.")
            model, processing_class = prepare_model_and_tokenizer(model, processing_class, args.head, self._task)
        if peft_config is not None:
            plugin = getattr(args, "deepspeed_plugin", None)
            zero3 = plugin is not None and getattr(plugin, "zero_stage", None) == 3
            model = attach_lora(model, peft_config, model.config.zelo_head, zero3=zero3)
            if args.gradient_checkpointing:
                model.enable_input_require_grads()
        return model, processing_class

    def create_accelerator_and_postprocess(self) -> None:
        _release_deepspeed_state()
        super().create_accelerator_and_postprocess()

    def init_hf_repo(self, token: str | None = None, private: bool | None = None) -> None:
        """No-op: :meth:`push_to_hub` creates the repo through ``zelo_hf.hub.push_folder``."""

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        """No-op: checkpoints stay local; the final model is uploaded once by :meth:`push_to_hub`."""

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Save weights + tokenizer; the final save also writes the CrossEncoder files, the card, the merge.

        With ``push_to_hub``, the Trainer's own push from inside ``save_model`` is deferred until the folder is
        complete, then done once with ``push_folder``.
        """
        self._in_save, self._push_pending = True, False
        try:
            super().save_model(output_dir, _internal_call)
        finally:
            self._in_save = False
        if _internal_call:
            return
        if self.args.should_save:
            self._finalize_folder(output_dir or self.args.output_dir)
        if self._push_pending:
            self._last_push = self._push_folder(output_dir or self.args.output_dir)

    def _finalize_folder(self, output_dir: str) -> None:
        import json
        import shutil
        from pathlib import Path

        from ..modeling import load_reranker, write_sentence_transformers_files, zelo_config

        output_dir = Path(output_dir)
        model = self.accelerator.unwrap_model(self.model)
        (output_dir / "zelo_config.json").write_text(json.dumps(zelo_config(model), indent=2))
        if hasattr(model, "peft_config"):
            if not self.args.merge_lora:
                self._write_card(output_dir, adapter=True)
                return
            adapter_dir = output_dir / "adapter"
            adapter_dir.mkdir(exist_ok=True)
            for f in output_dir.iterdir():
                if f.is_file() and f.name != "README.md":
                    shutil.move(str(f), adapter_dir / f.name)
            merged, tokenizer = load_reranker(str(adapter_dir))
            model = merged.merge_and_unload()
            model.save_pretrained(output_dir)
            tokenizer.save_pretrained(output_dir)
        write_sentence_transformers_files(model, output_dir, self.args.max_length)
        self._write_card(output_dir, adapter=False)

    def _write_card(self, output_dir, adapter: bool, eval_results: dict[str, float] | None = None) -> None:
        from ..hub import render_model_card
        from ..utils import producing_command

        model = self.accelerator.unwrap_model(self.model)
        base = getattr(model.config, "_name_or_path", None) or getattr(model, "name_or_path", "")
        if hasattr(model, "peft_config"):
            base = next(iter(model.peft_config.values())).base_model_name_or_path
        card = render_model_card(
            self._card_template,
            card_data=self._card_metadata(base),
            base_model=base,
            head=model.config.zelo_head,
            adapter=adapter,
            hyperparameters=format_hparams(self.args),
            eval_results=eval_results or self._last_eval_metrics(),
            train_rows=len(self.train_dataset) if self.train_dataset is not None else 0,
            dataset_name=getattr(self, "dataset_name", None),
            command=producing_command(),
            model_id=self.args.hub_model_id or output_dir.name,
        )
        card.save(str(output_dir / "README.md"))

    def _card_metadata(self, base: str) -> dict[str, Any]:
        data = {
            "library_name": "sentence-transformers",
            "pipeline_tag": "text-ranking",
            "tags": ["zelo", "reranker", "cross-encoder", self._task],
        }
        if base and not base.startswith(("/", ".")):
            data["base_model"] = base
        from pathlib import Path

        name = getattr(self, "dataset_name", None)
        if name and not Path(name).exists():  # a Hub id, not a local path
            data["datasets"] = [name]
        return data

    def _last_eval_metrics(self) -> dict[str, float]:
        """The last evaluation's metrics (``eval_*``) and, when the base model was evaluated before training with
        ``evaluate(metric_key_prefix="base")``, its metrics beside them (``base_*``)."""
        timing = ("_runtime", "_per_second", "preparation_time")
        # train() starts a new TrainerState, so a pre-training evaluation is kept aside by `evaluate`
        logs = [getattr(self, "_base_metrics", {})]
        logs += [next((e for e in reversed(self.state.log_history) if any(k.startswith("eval_") for k in e)), {})]
        return {k: float(v) for log in logs for k, v in log.items()
                if k.startswith(("base_", "eval_")) and isinstance(v, (int, float)) and not k.endswith(timing)}

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """``Trainer.evaluate``; metrics under the ``base`` prefix (the model before training) are kept for the card."""
        metrics = super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        if metric_key_prefix == "base":
            self._base_metrics = dict(metrics)
        return metrics

    def push_to_hub(
        self,
        commit_message: str | None = "End of training",
        blocking: bool = True,
        token=None,
        revision: str | None = None,
        **kwargs,
    ) -> str | None:
        """Save the final folder (weights, CrossEncoder files, card) and upload it once with ``push_folder``."""
        if getattr(self, "_in_save", False):  # called by Trainer.save_model: push once the folder is complete
            self._push_pending = True
            return None
        self._pushed = False
        self.save_model(self.args.output_dir)  # pushes itself when args.push_to_hub (Trainer.save_model's hook)
        if not self._pushed:
            self._last_push = self._push_folder(self.args.output_dir, commit_message, revision)
        return self._last_push

    def _push_folder(self, folder: str, commit_message: str | None = None, revision: str | None = None) -> str | None:
        from pathlib import Path

        from .. import hub

        self._push_pending, self._pushed = False, True
        if not self.is_world_process_zero():
            return None
        repo_id = self.args.hub_model_id or Path(folder).name
        return hub.push_folder(
            folder,
            repo_id,
            repo_type="model",
            private=self.args.hub_private_repo,
            commit_message=commit_message or "Upload with zelo-hf",
            revision=revision,
        )
