"""The settings of the zerank pipeline that are not training hyper-parameters (``recipes/zerank.py``,
``zelo zerank``); every one is validated here, before anything is judged."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..candidates import FIRST_STAGES
from ..loop import SELECTIONS as LOOP_SELECTIONS
from ..thurstone import FIT_MODELS, check_fit_model
from ..trainer.losses import PAIR_WEIGHTINGS
from ..utils import BUNDLED_MINILM

JUDGES = ("simulated", "litellm")
LOOP_MODELS = ("auto", "zembed", "pointwise")


@dataclass
class ZerankArguments:
    """Settings of the zerank pipeline that are not training hyper-parameters (those live in the trainer config).

    Data: ``dataset_name`` (bundled name, local BEIR folder or Hub id) / ``dataset_split`` give the queries to
    label; ``eval_dataset_name`` / ``eval_split`` the held-out evaluation queries (when they are the same split,
    the evaluation queries are drawn from the queries left over after the training ones: never the same query).
    """

    dataset_name: str = field(default="scifact", metadata={"help": "Bundled name, local BEIR folder or Hub id."})
    dataset_split: str = field(default="train", metadata={"help": "Qrels split whose queries are labelled."})
    num_train_queries: int | None = field(
        default=None, metadata={"help": "Queries whose graphs the judge labels (None: all of the split)."}
    )
    num_pairwise_queries: int = field(
        default=0, metadata={"help": "Further queries labelled by the pairwise model (needs pairwise_model_name_or_path)."}
    )
    eval_dataset_name: str | None = field(default=None, metadata={"help": "Evaluation data (default: dataset_name)."})
    eval_split: str = field(default="test", metadata={"help": "Qrels split of the evaluation queries."})
    num_eval_queries: int | None = field(default=None, metadata={"help": "Evaluation queries (None: all left)."})
    query_seed: int = field(default=0, metadata={"help": "Seed of the query sampling and of every random graph."})
    query_split: str | None = field(
        default=None,
        metadata={"help": "A committed fixed query split (zelo_hf/bundled/splits/<name>.json, e.g. 'scifact'): the "
                  "judged queries are its `train` ids, the evaluation queries its `test` ids (prefixes of "
                  "num_train_queries / num_eval_queries), instead of seeded draws."},
    )
    dev_query_fraction: float = field(
        default=0.0,
        metadata={"help": "Share of the judged queries kept out of training as dev queries: every selection (zembed "
                  "epochs) is made on them, never on the evaluation queries (0: no dev split, no selection)."},
    )
    seeds: list[int] | None = field(
        default=None,
        metadata={"help": "Training seeds: every trained model is trained once per seed and reported as mean and sd "
                  "(None: the training config's seed only)."},
    )
    # candidates
    first_stage: str = field(default="bm25", metadata={"help": f"First stage, one of {FIRST_STAGES}."})
    first_stage_model: str | None = field(
        default=None, metadata={"help": "Embedder of the 'embedder'/'fusion' first stage (name or path)."}
    )
    top_k: int = field(default=100, metadata={"help": "Candidates per training query (nodes of its graph)."})
    eval_top_k: int = field(default=100, metadata={"help": "Candidates per evaluation query (reranked)."})
    # graphs and judging
    graph_degree: int = field(default=8, metadata={"help": "Degree of the comparison graph (even; k/2 cycles)."})
    judge: str = field(default="simulated", metadata={"help": f"Judge, one of {JUDGES}."})
    judge_models: list[str] = field(
        default_factory=lambda: ["openai/gpt-4.1-mini", "anthropic/claude-sonnet-4-5", "gemini/gemini-2.5-flash"],
        metadata={"help": "litellm model names of the judge ensemble (judge='litellm')."},
    )
    judge_cache: str | None = field(
        default=None, metadata={"help": "SQLite judgment cache (default: next to each judged stage's folder, "
                                "e.g. <output_dir>/preferences.judgments.sqlite)."}
    )
    judge_max_concurrency: int = field(default=16, metadata={"help": "Concurrent LLM calls (per judge)."})
    judge_rounds: int = field(
        default=1,
        metadata={"help": "Judging rounds: 1 judges the degree-`graph_degree` cycles; > 1 judges random cycles of "
                  "degree `judge_first_degree` first, then pairs chosen from the fit (zelo_hf.adaptive) until "
                  "`judge_budget` comparisons per query."},
    )
    judge_budget: int | None = field(default=None, metadata={"help": "Comparisons per query with judge_rounds > 1."})
    judge_first_degree: int = field(default=4, metadata={"help": "Degree of the first adaptive round's cycles."})
    simulated_noise: float = field(default=0.2, metadata={"help": "Noise s.d. of the simulated judge."})
    # fit and calibration
    link: str = field(
        default="thurstone",
        metadata={"help": f"F of the fit (labels and calibration), one of {FIT_MODELS}.", "choices": list(FIT_MODELS)},
    )
    calibration_cycles: int = field(
        default=4,
        metadata={"help": "Random cycles over queries for cross-query calibration; each query takes part in "
                  "2 x cycles comparisons (0: no calibration, score = elo)."},
    )
    calibration_anchors: str | None = field(
        default=None,
        metadata={"help": "Relevance votes (query_id, doc_id, prob_relevant; a folder, .parquet/.jsonl file or Hub "
                  "id) pinning score 0 to the relevance boundary, as `zelo calibrate --anchors` (None: no anchors)."},
    )
    # pairwise small model
    pairwise_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Base model of the pairwise judge (None: no pairwise stage)."}
    )
    pairwise_architecture: str = field(
        default="cross_encoder",
        metadata={"help": "'cross_encoder' (reads (q, A, B); ZELO.md step 4) or 'bi_encoder' (the base bi-encoder's "
                  "cosine difference, query tower trained: starts from the base's judgment)."},
    )
    pairwise_temperature: float | None = field(
        default=None, metadata={"help": "bi_encoder judge: temperature of the cosine difference (None: PairwiseConfig's)."}
    )
    pairwise_pair_weighting: str | None = field(
        default=None,
        metadata={"help": "bi_encoder judge: 'uniform' or 'confidence' (|2p - 1|) pair weights (None: PairwiseConfig's)."},
    )
    pairwise_num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs of the pairwise model."})
    pairwise_learning_rate: float = field(default=2e-5, metadata={"help": "Learning rate of the pairwise model."})
    pairwise_per_device_train_batch_size: int = field(default=8, metadata={"help": "Pairwise batch size."})
    pairwise_max_length: int = field(default=512, metadata={"help": "Max tokens of a (query, doc A, doc B) input."})
    pairwise_eval_query_fraction: float = field(
        default=0.2,
        metadata={"help": "Share of the judged queries whose pairs are held out of the pairwise model's training to "
                  "measure its agreement with the judges (split off before training)."},
    )
    pairwise_min_agreement: float = field(
        default=0.7,
        metadata={"help": "The pairwise model judges no query unless its held-out agreement with the judges (pairs "
                  "with |p - 0.5| >= 0.3) reaches this (0.5 is chance)."},
    )
    # zembed: the query-side bi-encoder on the calibrated labels
    zembed: bool = field(
        default=True,
        metadata={"help": "Also train zembed (the base bi-encoder's query tower on the calibrated labels, documents "
                  "frozen; ZELO.md step 8) and evaluate it."},
    )
    zembed_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Bi-encoder base of zembed (None: model_name_or_path)."}
    )
    zembed_max_seq_length: int | None = field(
        default=None,
        metadata={"help": "Tokens per document of zembed's (frozen, base) document tower, for the base row too (None: "
                  "the model's own max_seq_length). all-MiniLM-L6-v2 was trained at 128."},
    )
    zembed_num_train_epochs: float = field(default=4.0, metadata={"help": "zembed epochs (the best dev one is kept)."})
    zembed_learning_rate: float = field(default=2e-5, metadata={"help": "zembed learning rate."})
    zembed_batch_size: int = field(default=16, metadata={"help": "zembed queries per step."})
    zembed_teacher_temperature: float = field(
        default=0.1, metadata={"help": "Softmax temperature of the calibrated scores (ZembedConfig)."}
    )
    # the reranker-in-the-loop round (zelo_hf.loop)
    loop_pairs_per_query: int = field(
        default=0,
        metadata={"help": "Reranker-in-the-loop round (0: off): after the first training, the trained model scores "
                  "the training queries' candidates; at most this many unjudged pairs per query where its ranking and "
                  "the labels' disagree at the top go to the judges; labels are refit, recalibrated (same cross-query "
                  "pairs, from the cache) and the model retrained on them. Both models are evaluated."},
    )
    loop_model: str = field(
        default="auto",
        metadata={"help": f"The model of the loop round, one of {LOOP_MODELS} (auto: zembed when it is trained, "
                  "else the pointwise reranker); its first seed scores the training queries."},
    )
    loop_top_k: int = field(default=10, metadata={"help": "The top of the rankings the loop round compares."})
    loop_selection: str = field(
        default="disagreement",
        metadata={"help": f"One of {LOOP_SELECTIONS}; random is the control: as many unjudged pairs per query as "
                  "disagreement would take, drawn uniformly."},
    )
    # evaluation
    evaluate_base_model: bool = field(
        default=True,
        metadata={"help": "Also evaluate the base model the way it was trained (a bi-encoder by cosine, a "
                  "cross-encoder by its own head)."},
    )
    random_orderings: int = field(default=10, metadata={"help": "Random orderings of the candidates reported."})
    eval_batch_size: int = field(default=64, metadata={"help": "Batch size of evaluation scoring."})
    eval_max_length: int | None = field(default=None, metadata={"help": "Max tokens when scoring (None: model's)."})
    plot: bool = field(default=True, metadata={"help": "Save score-distribution plots (needs matplotlib)."})
    # hub
    preference_set_repo_id: str | None = field(default=None, metadata={"help": "Hub dataset id of the preferences."})
    label_set_repo_id: str | None = field(default=None, metadata={"help": "Hub dataset id of the label set."})
    pairwise_model_repo_id: str | None = field(default=None, metadata={"help": "Hub model id of the pairwise model."})

    @property
    def loop_stage_model(self) -> str:
        """The model the loop round scores with and retrains: ``zembed`` or ``pointwise``."""
        return ("zembed" if self.zembed else "pointwise") if self.loop_model == "auto" else self.loop_model

    def __post_init__(self) -> None:
        _check_choice("first_stage", self.first_stage, FIRST_STAGES)
        _check_choice("judge", self.judge, JUDGES)
        check_fit_model(self.link, "link")
        for name, low in _MINIMA:
            _check_at_least(name, getattr(self, name), low)
        if not self.zembed_teacher_temperature > 0:
            raise ValueError(f"`zembed_teacher_temperature` must be > 0 (got {self.zembed_teacher_temperature}): e.g. 0.1.")
        if not 0.0 <= self.pairwise_eval_query_fraction < 1.0:
            raise ValueError(f"`pairwise_eval_query_fraction` must be in [0, 1) (got {self.pairwise_eval_query_fraction})"
                             ": e.g. 0.2.")
        if self.judge == "litellm" and not self.judge_models:
            raise ValueError("judge='litellm' needs `judge_models` (got []): pass e.g. --judge_models openai/gpt-4.1-mini.")
        if self.first_stage != "bm25" and not self.first_stage_model:
            raise ValueError(
                f"`first_stage_model` is required with first_stage={self.first_stage!r} (got None): pass an embedder, "
                f"e.g. --first_stage_model {BUNDLED_MINILM}."
            )
        if self.graph_degree < 2 or self.graph_degree % 2:
            raise ValueError(
                f"`graph_degree` must be even and >= 2 (got graph_degree={self.graph_degree}): pass e.g. 8."
            )
        if self.graph_degree >= self.top_k:
            raise ValueError(
                f"`graph_degree` must be < top_k (got graph_degree={self.graph_degree}, top_k={self.top_k}): "
                f"lower the degree or raise top_k."
            )
        if self.judge_rounds < 1 or (self.judge_rounds > 1) != (self.judge_budget is not None):
            raise ValueError(
                f"adaptive judging needs judge_rounds > 1 together with judge_budget (got judge_rounds="
                f"{self.judge_rounds}, judge_budget={self.judge_budget}): pass e.g. --judge_rounds 4 --judge_budget "
                "225, or neither."
            )
        if not 0.0 <= self.dev_query_fraction < 1.0:
            raise ValueError(
                f"`dev_query_fraction` must be in [0, 1) (got dev_query_fraction={self.dev_query_fraction}): e.g. 0.15."
            )
        if self.seeds is not None and (not self.seeds or len(set(self.seeds)) != len(self.seeds)):
            raise ValueError(f"`seeds` must be distinct and non-empty (got seeds={self.seeds}): e.g. --seeds 0 1 2.")
        if not 0.0 <= self.pairwise_min_agreement <= 1.0:
            raise ValueError(
                f"`pairwise_min_agreement` must be in [0, 1] (got {self.pairwise_min_agreement}): e.g. 0.7 (0.5 is chance)."
            )
        if self.pairwise_pair_weighting is not None:
            _check_choice("pairwise_pair_weighting", self.pairwise_pair_weighting, PAIR_WEIGHTINGS)
        if self.pairwise_temperature is not None and not self.pairwise_temperature > 0:
            raise ValueError(f"`pairwise_temperature` must be > 0 (got {self.pairwise_temperature}): e.g. 0.1.")
        _check_choice("loop_model", self.loop_model, LOOP_MODELS)
        _check_choice("loop_selection", self.loop_selection, LOOP_SELECTIONS)
        if self.loop_model == "zembed" and not self.zembed:
            raise ValueError("loop_model='zembed' needs the zembed stage (got zembed=False): pass --zembed true or "
                             "--loop_model pointwise.")
        if self.num_pairwise_queries and not self.pairwise_model_name_or_path:
            raise ValueError(
                f"`num_pairwise_queries`={self.num_pairwise_queries} needs a pairwise model: set "
                f"`pairwise_model_name_or_path` or pass --num_pairwise_queries 0."
            )


# Settings a later stage would refuse, checked at start-up so nothing is judged (paid) before a bad value fails.
_MINIMA = (("top_k", 1), ("eval_top_k", 1), ("judge_max_concurrency", 1), ("simulated_noise", 0.0),
           ("calibration_cycles", 0), ("random_orderings", 0), ("eval_batch_size", 1), ("zembed_batch_size", 1),
           ("pairwise_num_train_epochs", 0.0),
           ("loop_pairs_per_query", 0), ("loop_top_k", 1))


def _check_at_least(name: str, value: float, low: float) -> None:
    if value < low:
        raise ValueError(f"`{name}` must be >= {low} (got {name}={value}): pass a value >= {low}.")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {choices} (got {name}={value!r}).")
