"""Configuration of :class:`~zelo_hf.trainer.PointwiseTrainer` (a ``transformers.TrainingArguments``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

from .utils import RerankerArgsMixin

LOSS_TYPES = ("mse", "binary", "contrastive")


@dataclass
class PointwiseConfig(RerankerArgsMixin, TrainingArguments):
    r"""Configuration for the pointwise reranker trained on calibrated zELO scores (ZELO.md step 7).

    Parameters:
        > Model

        head (`str`, defaults to `"auto"`): `"classification"`, `"causal"` (zerank "Yes" logit) or `"auto"`.
        model_init_kwargs (`dict`, *optional*): passed to `from_pretrained` when the model is a name.
        merge_lora (`bool`, defaults to `False`): write a merged plain model on the final save.

        > Objective

        loss_type (`str`, defaults to `"mse"`): `"mse"` on the (transformed) `score` column; the baselines for
            fair ablations: `"binary"` (BCE on the 0/1 `label` column, e.g. `grade > 0`) and `"contrastive"`
            (InfoNCE over groups of one positive and `num_negatives` negatives of the same query).
        target_transform (`str`, defaults to `"raw"`): for `"mse"`: `"raw"`, `"standardize"` (mean/std fitted on
            the training set and saved in the model config as `zelo_target_mean`/`zelo_target_std`) or
            `"sigmoid"` (BCE against `sigmoid(score / temperature)`).
        temperature (`float`, defaults to `1.0`): of the `"sigmoid"` targets and of the InfoNCE softmax.
        num_negatives (`int`, defaults to `7`): negatives per positive for `"contrastive"`.

        > Data

        max_length (`int`, defaults to `512`), max_query_length (`int`, defaults to `64`): only documents are
            truncated; the query is cut to `max_query_length` tokens.

    Defaults that differ from `TrainingArguments`: `learning_rate=2e-5`, `logging_steps=10`,
    `bf16=None` (on when CUDA supports bf16), `remove_unused_columns=False`,
    `label_names=["labels", "query_index"]` (per-query eval metrics).
    """

    loss_type: str = field(
        default="mse",
        metadata={
            "help": "Objective: 'mse' (zELO scores), 'binary' (BCE on labels), 'contrastive' (InfoNCE).",
            "choices": list(LOSS_TYPES),
        },
    )
    target_transform: str = field(
        default="raw",
        metadata={
            "help": "MSE targets: 'raw', 'standardize' (fit on train, saved), 'sigmoid' (BCE).",
            "choices": ["raw", "standardize", "sigmoid"],
        },
    )
    temperature: float = field(default=1.0, metadata={"help": "Temperature of sigmoid targets / InfoNCE."})
    num_negatives: int = field(default=7, metadata={"help": "Negatives per positive in 'contrastive' mode."})

    def __post_init__(self):
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"`loss_type` must be one of {LOSS_TYPES} (got loss_type={self.loss_type!r}).")
        if self.temperature <= 0:
            raise ValueError(f"`temperature` must be > 0 (got temperature={self.temperature}).")
        if self.loss_type == "contrastive" and self.num_negatives < 1:
            raise ValueError(f"`num_negatives` must be >= 1 for contrastive (got num_negatives={self.num_negatives}).")
        self._post_init_reranker()
        if self.label_names is None:
            self.label_names = ["labels", "query_index"]
        super().__post_init__()
