"""The base trainer of the cross-encoders (pairwise and pointwise), as trl's ``_BaseTrainer``: one ``__init__``
(load the model, attach LoRA, validate the datasets, build the collator), the final save, the card, the upload.

A subclass names its config, collator, task and card template, and implements ``_prepare_dataset``,
``compute_loss``, ``_metrics`` and ``hyperparameters``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any, ClassVar

import torch
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import DistributedType
from transformers import Trainer
from transformers.trainer import TRAINING_ARGS_NAME

from .. import hub
from ..modeling.loading import load_reranker, prepare_model_and_tokenizer, zelo_config
from ..modeling.saving import write_sentence_transformers_files
from ..utils import get_logger, producing_command, redact, scrub_paths
from .base_config import RerankerConfig
from .lora import attach_lora

logger = get_logger(__name__)

# What every reranker card shows; a trainer adds its objective's own knobs in `hyperparameters()`.
CARD_HYPERPARAMETERS = (
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
)


class RerankerTrainer(Trainer):
    """What the pairwise and pointwise trainers share: model/head/LoRA set-up, dataset preparation, final save,
    card and upload.

    Args:
        model: a model name/path (loaded with ``args.head``) or a model from ``zelo_hf.modeling.loading.load_reranker``.
        args: the subclass's config (a :class:`RerankerConfig`); its defaults when None.
        train_dataset, eval_dataset: datasets in the subclass's schema (``eval_dataset`` may be a dict of them).
        processing_class: the tokenizer (required with a loaded model).
        peft_config: a ``peft.LoraConfig`` (see :func:`~zelo_hf.trainer.lora.get_lora_config`); a classification
            head is added to ``modules_to_save``.
        dataset_name: the training set's Hub id, named on the card.

    Uploads go through :func:`zelo_hf.hub.push_folder` once, in :meth:`push_to_hub`; the Trainer's own repo creation
    at init and per-checkpoint pushes are turned off so nothing else touches the network.
    """

    config_class: ClassVar[type[RerankerConfig]] = RerankerConfig
    collator_class: ClassVar[type]
    _task: ClassVar[str]
    _template_file: ClassVar[str]
    loss_is_scaled_for_ga = False  # compute_loss returns a per-batch mean

    def __init__(
        self,
        model,
        args: RerankerConfig | None = None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        peft_config=None,
        compute_metrics=None,
        callbacks=None,
        optimizers=(None, None),
        dataset_name: str | None = None,
    ):
        args = args or self.config_class(output_dir=f"{self._task}-model")
        model, processing_class = self._load_model(model, args, processing_class, peft_config)
        self.dataset_name = dataset_name
        if train_dataset is not None:
            train_dataset = self._prepare_dataset(train_dataset, args, "train", model)
        if isinstance(eval_dataset, dict):
            eval_dataset = {k: self._prepare_dataset(v, args, f"eval[{k}]", model) for k, v in eval_dataset.items()}
        elif eval_dataset is not None:
            eval_dataset = self._prepare_dataset(eval_dataset, args, "eval", model)
        collator = self.collator_class(processing_class, model.config.zelo_head, args.max_length, args.max_query_length)
        super().__init__(
            model=model,
            args=args,
            data_collator=collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            compute_metrics=compute_metrics or self._metrics,
            callbacks=callbacks,
            optimizers=optimizers,
        )

    # -------------------------------------------------------------------------------------------- subclass hooks

    def _prepare_dataset(self, dataset, args: RerankerConfig, split: str, model):
        """Validate ``dataset`` (raising before training) and add what the collator reads."""
        raise NotImplementedError

    @staticmethod
    def _metrics(eval_pred) -> dict[str, float]:
        raise NotImplementedError

    def hyperparameters(self) -> dict[str, Any]:
        """The hyper-parameters the card shows: the shared ones; a subclass adds its objective's (enums as values)."""
        return card_values(self.args, CARD_HYPERPARAMETERS)

    # -------------------------------------------------------------------------------------------- model set-up

    def _load_model(self, model, args: RerankerConfig, processing_class, peft_config):
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

    # -------------------------------------------------------------------------------------------- saving

    def init_hf_repo(self, token: str | None = None, private: bool | None = None) -> None:
        """No-op: :meth:`push_to_hub` creates the repo through ``zelo_hf.hub.push_folder``."""

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        """No-op: checkpoints stay local; the final model is uploaded once by :meth:`push_to_hub`."""

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Save weights + tokenizer; a final save (not a checkpoint) also writes the CrossEncoder files, the card and
        the merged model. Never uploads: :meth:`push_to_hub` saves, then uploads."""
        super().save_model(output_dir, _internal_call=True)  # internal: Trainer.save_model would push from here
        if not _internal_call and self.args.should_save:
            self._finalize_folder(Path(output_dir or self.args.output_dir))

    def push_to_hub(
        self,
        commit_message: str | None = "End of training",
        blocking: bool = True,
        token=None,
        revision: str | None = None,
        **kwargs,
    ) -> str | None:
        """Save the final folder (weights, CrossEncoder files, card) to ``output_dir`` and upload it once with
        ``zelo_hf.hub.push_folder`` (``hub_model_id``, else the folder's name)."""
        self.save_model(self.args.output_dir)
        if not self.is_world_process_zero():
            return None
        return hub.push_folder(
            self.args.output_dir,
            self.args.hub_model_id or Path(self.args.output_dir).name,
            repo_type="model",
            private=self.args.hub_private_repo,
            commit_message=commit_message or "Upload with zelo-hf",
            revision=revision,
        )

    def _finalize_folder(self, output_dir: Path) -> None:
        self._write_public_args(output_dir)
        model = self.accelerator.unwrap_model(self.model)
        (output_dir / "zelo_config.json").write_text(json.dumps(zelo_config(model), indent=2))
        if hasattr(model, "peft_config"):
            if not self.args.merge_lora:
                self._write_card(output_dir, adapter=True)
                return
            model = _merge_adapter(output_dir)
        write_sentence_transformers_files(model, output_dir, self.args.max_length)
        self._write_card(output_dir, adapter=False)

    def _write_public_args(self, output_dir: Path) -> None:
        """``training_args.bin`` as transformers writes it (the pickled config), but with this machine's folders and
        any secret taken out of its text fields (``output_dir``, ``logging_dir``, ...): the folder is bound for the Hub."""
        public = copy.copy(self.args)
        for f in dataclasses.fields(public):
            value = getattr(public, f.name, None)
            if isinstance(value, str):
                object.__setattr__(public, f.name, redact(scrub_paths(value)))
        torch.save(public, output_dir / TRAINING_ARGS_NAME)

    # -------------------------------------------------------------------------------------------- card

    def _write_card(self, output_dir: Path, adapter: bool) -> None:
        model = self.accelerator.unwrap_model(self.model)
        base = getattr(model.config, "_name_or_path", None) or getattr(model, "name_or_path", "")
        if hasattr(model, "peft_config"):
            base = next(iter(model.peft_config.values())).base_model_name_or_path
        card = hub.render_model_card(
            self._template_file,
            card_data=self._card_metadata(base),
            base_model=base,
            head=model.config.zelo_head,
            adapter=adapter,
            hyperparameters=self.hyperparameters(),
            eval_results=self._last_eval_metrics(),
            train_rows=len(self.train_dataset) if self.train_dataset is not None else 0,
            dataset_name=self.dataset_name,
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
        if self.dataset_name and not Path(self.dataset_name).exists():  # a Hub id, not a local path
            data["datasets"] = [self.dataset_name]
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


def card_values(args, keys) -> dict[str, Any]:
    """``args``' values of ``keys`` it has, enums as their values."""
    return {k: getattr(getattr(args, k), "value", getattr(args, k)) for k in keys if hasattr(args, k)}


def _merge_adapter(output_dir: Path):
    """Move the saved adapter to ``output_dir/adapter`` and save the merged plain model in ``output_dir``."""
    adapter_dir = output_dir / "adapter"
    adapter_dir.mkdir(exist_ok=True)
    for f in output_dir.iterdir():
        if f.is_file() and f.name != "README.md":
            shutil.move(str(f), adapter_dir / f.name)
    merged, tokenizer = load_reranker(str(adapter_dir))
    model = merged.merge_and_unload()
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return model


def _parse_init_kwargs(value) -> dict[str, Any]:
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


def _release_deepspeed_state() -> None:
    """Let a second trainer start in this process under DeepSpeed (the zerank recipe trains the pairwise model,
    then the reranker): accelerate refuses a second ``Accelerator`` with a DeepSpeed plugin while the first one's
    ``AcceleratorState`` is alive. The previous state is dropped; the process group (``PartialState``) stays."""
    if AcceleratorState._shared_state and AcceleratorState().distributed_type == DistributedType.DEEPSPEED:
        AcceleratorState._reset_state()
        GradientState._reset_state()
