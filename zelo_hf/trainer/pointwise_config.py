"""Configuration of :class:`~zelo_hf.trainer.PointwiseTrainer` (a :class:`RerankerConfig`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..utils import get_logger
from .base_config import RerankerConfig
from .losses import POINTWISE_LOSSES, TARGET_TRANSFORMS

logger = get_logger(__name__)

LOSS_TYPES = tuple(POINTWISE_LOSSES)


@dataclass
class PointwiseConfig(RerankerConfig):
    r"""Configuration for the pointwise reranker trained on calibrated zELO scores (ZELO.md step 7).

    Parameters:
        > Model

        head (`str`, defaults to `"auto"`): `"classification"`, `"causal"` (zerank "Yes" logit) or `"auto"`.
        model_init_kwargs (`dict`, *optional*): passed to `from_pretrained` when the model is a name.
        merge_lora (`bool`, defaults to `False`): write a merged plain model on the final save.

        > Objective

        loss_type (`str`, defaults to `"mse"`): the loss, and only it: `"mse"` on the (transformed) `score`
            column, `"soft_bce"` (BCE-with-logits against the `score` column, with `target_transform="sigmoid"`:
            `sigmoid(score / temperature)`), and the baselines for fair ablations: `"binary"` (BCE on the 0/1
            `label` column, e.g. `grade > 0`) and `"contrastive"` (InfoNCE over groups of one positive and
            `num_negatives` negatives of the same query).
        target_transform (`str`, defaults to `"raw"`): the `score` targets of `"mse"` / `"soft_bce"`: `"raw"`,
            `"standardize"` (mean/std fitted on the training set and saved in the model config as
            `zelo_target_mean`/`zelo_target_std`) or `"sigmoid"` (`sigmoid(score / temperature)`, in (0, 1)).
        temperature (`float`, defaults to `1.0`): of the `"sigmoid"` targets and of the InfoNCE softmax.
        num_negatives (`int`, defaults to `7`): negatives per positive for `"contrastive"`.

        > Data

        max_length (`int`, defaults to `512`), max_query_length (`int`, defaults to `64`): only documents are
            truncated; the query is cut to `max_query_length` tokens.

    Defaults that differ from `TrainingArguments`: `learning_rate=2e-5`, `logging_steps=10`,
    `bf16=None` (on when CUDA supports bf16), `remove_unused_columns=False`,
    `label_names=["labels", "query_index"]` (per-query eval metrics).
    """

    default_label_names = ("labels", "query_index")

    loss_type: str = field(
        default="mse",
        metadata={
            "help": "Objective: 'mse' (zELO scores), 'soft_bce' (BCE on sigmoid targets), 'binary' (BCE on labels), "
            "'contrastive' (InfoNCE).",
            "choices": list(LOSS_TYPES),
        },
    )
    target_transform: str = field(
        default="raw",
        metadata={
            "help": "Score targets: 'raw', 'standardize' (fit on train, saved), 'sigmoid' (sigmoid(score / temperature)).",
            "choices": list(TARGET_TRANSFORMS),
        },
    )
    temperature: float = field(default=1.0, metadata={"help": "Temperature of sigmoid targets / InfoNCE."})
    num_negatives: int = field(default=7, metadata={"help": "Negatives per positive in 'contrastive' mode."})

    def __post_init__(self):
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"`loss_type` must be one of {LOSS_TYPES} (got loss_type={self.loss_type!r}).")
        if self.target_transform not in TARGET_TRANSFORMS:
            raise ValueError(
                f"`target_transform` must be one of {TARGET_TRANSFORMS} (got target_transform={self.target_transform!r})."
            )
        if self.temperature <= 0:
            raise ValueError(f"`temperature` must be > 0 (got temperature={self.temperature}).")
        if self.loss_type == "contrastive" and self.num_negatives < 1:
            raise ValueError(f"`num_negatives` must be >= 1 for contrastive (got num_negatives={self.num_negatives}).")
        self._check_objective()
        super().__post_init__()

    def _check_objective(self) -> None:
        """The loss comes from `loss_type` alone; `target_transform` only shapes the `score` targets."""
        loss, transform = self.loss_type, self.target_transform
        if loss == "mse" and transform == "sigmoid":
            # before issue #9 this spelling selected BCE: refuse it rather than silently train MSE on probabilities
            raise ValueError(
                "`target_transform='sigmoid'` no longer changes the loss (got loss_type='mse'): pass "
                "loss_type='soft_bce' with target_transform='sigmoid' for BCE against sigmoid(score / temperature)."
            )
        if loss == "soft_bce" and transform == "standardize":
            raise ValueError(
                "`loss_type='soft_bce'` needs targets in [0, 1] (got target_transform='standardize'): pass "
                "target_transform='sigmoid' (or 'raw' for scores that are already probabilities)."
            )
        if POINTWISE_LOSSES[loss].column != "score" and transform != "raw":
            logger.warning(
                "`target_transform=%r` is ignored with loss_type=%r: it reads the 0/1 `label` column as it is.",
                transform,
                loss,
            )
