"""Configuration of :class:`~zelo_hf.trainer.PairwiseTrainer` (a :class:`RerankerConfig`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .base_config import RerankerConfig
from .losses import PAIR_WEIGHTINGS

ARCHITECTURES = ("cross_encoder", "bi_encoder")


@dataclass
class PairwiseConfig(RerankerConfig):
    r"""Configuration for the pairwise small model that distils the LLM judges (ZELO.md step 4).

    The model outputs the logit that document A is more relevant than B for the query; the loss is BCE-with-logits
    against the soft ``prob_a`` of the preference set. Two architectures:

    * ``"cross_encoder"`` (ZELO.md step 4): reads ``(query, A, B)`` in one input, through the scoring `head`.
    * ``"bi_encoder"``: a sentence-transformers bi-encoder's query tower (documents frozen, embedded once, as
      :class:`~zelo_hf.trainer.ZembedTrainer` trains it) with logit ``(cos(q, A) - cos(q, B)) / temperature``: it
      starts from the base model's own judgment, where a fresh classification head starts at chance, and it judges
      a comparison graph by encoding each text once. A step reads whole queries with all their pairs
      (`per_device_train_batch_size` counts queries); the epoch kept is picked on dev queries of the training split.

    Parameters:
        > Model

        architecture (`str`, defaults to `"cross_encoder"`): `"cross_encoder"` or `"bi_encoder"` (see above).
        temperature (`float`, defaults to `0.1`): of the bi-encoder's cosine difference (`"bi_encoder"` only).
        pair_weighting (`str`, defaults to `"confidence"`): `"bi_encoder"` only: each pair's BCE weighs
            ``|2 p - 1|``, so the many near-ties of a sparse graph barely pull the cosines together, or 1
            (`"uniform"`). On the demo's preferences only `confidence` at 0.1 trained above the base's held-out
            agreement (0.884 -> 0.892; uniform at 0.05: 0.641, see the README).
        selection_metric (`str`, defaults to `"agreement"`): the dev metric that picks the kept epoch of a
            `"bi_encoder"` judge (the untrained base competes; a tie keeps the earlier state): `"agreement"` (on
            the pairs the judges are confident about, what `pairwise_min_agreement` gates), `"accuracy"` or `"bce"`.
        head (`str`, defaults to `"auto"`): `"classification"`, `"causal"` (zerank "Yes" logit) or `"auto"`.
        model_init_kwargs (`dict`, *optional*): passed to `from_pretrained` when the model is a name.
        merge_lora (`bool`, defaults to `False`): write a merged plain model on the final save.

        > Data

        max_length (`int`, defaults to `512`): tokens per (query, A, B) input; the documents share what is left
            after the query, so neither is truncated away. With `"bi_encoder"`: tokens per document, at most the
            bi-encoder's own `max_seq_length`.
        max_query_length (`int`, defaults to `64`): the query is cut to this many tokens.
        symmetrize (`bool`, defaults to `True`): also train on every pair swapped, (q, B, A) with `1 - prob_a`,
            so the model learns the order symmetry the judges' random swaps give.

    Defaults that differ from `TrainingArguments`: `learning_rate=2e-5`, `logging_steps=10`,
    `bf16=None` (on when CUDA supports bf16), `remove_unused_columns=False` (the collator reads the text columns),
    `label_names=["labels"]`.
    """

    symmetrize: bool = field(
        default=True, metadata={"help": "Train on both orders: (q, A, B, p) and (q, B, A, 1 - p)."}
    )
    architecture: str = field(
        default="cross_encoder",
        metadata={"help": "'cross_encoder' (reads (q, A, B)) or 'bi_encoder' (logit = (cos(q, A) - cos(q, B)) / "
                  "temperature, the query tower trained).", "choices": list(ARCHITECTURES)},
    )
    temperature: float = field(
        default=0.1, metadata={"help": "Temperature of the bi-encoder's cosine difference (architecture=bi_encoder)."}
    )
    pair_weighting: str = field(
        default="confidence",
        metadata={"help": "Bi-encoder judge: weigh each pair's BCE 'uniform'ly or by the judges' 'confidence' "
                  "|2p - 1| (near-ties barely pull the cosines together).", "choices": list(PAIR_WEIGHTINGS)},
    )
    selection_metric: str = field(
        default="agreement",
        metadata={"help": "Dev metric that picks the kept epoch of a bi-encoder judge, the untrained base included: "
                  "'agreement' (what the pairwise_min_agreement gate reads), 'accuracy' or 'bce' (lower is better).",
                  "choices": ["agreement", "accuracy", "bce"]},
    )

    def __post_init__(self):
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"`architecture` must be one of {ARCHITECTURES} (got {self.architecture!r}).")
        if self.selection_metric not in ("agreement", "accuracy", "bce"):
            raise ValueError(f"`selection_metric` must be 'agreement', 'accuracy' or 'bce' (got {self.selection_metric!r}).")
        if self.pair_weighting not in PAIR_WEIGHTINGS:
            raise ValueError(f"`pair_weighting` must be one of {PAIR_WEIGHTINGS} (got {self.pair_weighting!r}).")
        if not self.temperature > 0:
            raise ValueError(f"`temperature` must be > 0 (got temperature={self.temperature}): e.g. 0.05.")
        super().__post_init__()
