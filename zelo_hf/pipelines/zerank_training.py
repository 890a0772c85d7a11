"""zerank stages 6-7: the pointwise reranker (MSE on the calibrated scores) and zembed (the base bi-encoder's query
tower on the same labels), each trained once per seed on the training queries (the dev queries are kept out)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from sentence_transformers import SentenceTransformer
from transformers import set_seed

from ..data import split_dev
from ..hub import load_split
from ..labeling import flatten_labels
from ..stages import write_json_atomic
from ..trainer import DocumentIndex, PointwiseTrainer, ZembedConfig, ZembedTrainer
from ..training import build_trainer
from ..utils import resolve_model_name
from .zerank_args import ZerankArguments

DOCUMENTS_FILE = "documents.pt"  # a zembed stage's document embeddings (DocumentIndex.save)


def scoring_lengths(args: ZerankArguments, training_args) -> dict[str, int | None]:
    """The token budgets a pointwise reranker scores with, as it was trained (``RerankerScorer`` keywords)."""
    return {"max_length": args.eval_max_length or training_args.max_length,
            "max_query_length": training_args.max_query_length}


def split_labels(labels, args: ZerankArguments):
    """``(train, dev)`` label sets: the dev queries are never trained on (dev is None without a dev split)."""
    return split_dev(labels, args.dev_query_fraction, args.query_seed)


def training_seeds(args: ZerankArguments, training_args) -> list[int]:
    return list(args.seeds) if args.seeds else [training_args.seed]


def seed_model_dir(stage_dir: Path, seeds: list[int], seed: int) -> Path:
    """Where a seed's model is saved: the first seed's at ``<stage>/model`` (the one pushed), others beside it."""
    return stage_dir / "model" if seed == seeds[0] else stage_dir / "seeds" / f"seed-{seed}"


def stage_pointwise(args: ZerankArguments, training_args, model_args, output_dir: Path, stage_dir: Path,
                    labels_dir: str = "calibration"):
    """Train the pointwise reranker with MSE on the calibrated scores (of the ``labels_dir`` stage), once per seed
    (every process takes part)."""
    train, _ = split_labels(load_split(output_dir / labels_dir, "train"), args)
    train = flatten_labels(train)
    seeds = training_seeds(args, training_args)
    runs = {str(seed): _train_pointwise(args, training_args, model_args, train, stage_dir, seeds, seed) for seed in seeds}
    return {"rows": len(train), "seeds": seeds, **runs[str(seeds[0])], "per_seed": runs}


def _train_pointwise(args, training_args, model_args, train, stage_dir: Path, seeds: list[int], seed: int):
    config = copy.copy(training_args)
    # checkpoints inside the stage; uploads happen in the push stage only (once, through zelo_hf.hub.push_folder)
    config.output_dir, config.push_to_hub, config.seed = str(stage_dir / "trainer" / f"seed-{seed}"), False, seed
    trainer = build_trainer(PointwiseTrainer, resolve_model_name(model_args.model_name_or_path), config, model_args,
                            train, dataset_name=args.label_set_repo_id)  # as `zelo train-pointwise`
    result = trainer.train()
    trainer.save_model(str(seed_model_dir(stage_dir, seeds, seed)))
    return training_summary(trainer, result)


def stage_zembed(args: ZerankArguments, training_args, model_args, output_dir: Path, stage_dir: Path,
                 labels_dir: str = "calibration", index_from: str | None = None):
    """zembed on the calibrated labels (of the ``labels_dir`` stage), once per seed: the base bi-encoder's query
    tower, documents frozen.

    The documents of the training, dev and evaluation queries are embedded once by the frozen base (shared by every
    seed; saved as ``documents.pt``, which a later stage named in ``index_from`` reuses); each seed's model is saved
    (a sentence-transformers Router) with its run over the evaluation candidates, and the base model's run, so the
    evaluation reads them without embedding the documents again.
    """
    train, dev = split_labels(load_split(output_dir / labels_dir, "train"), args)
    candidates = load_split(output_dir / "candidates", "eval")
    base = SentenceTransformer(resolve_model_name(args.zembed_model_name_or_path or model_args.model_name_or_path),
                               device="cpu")
    if args.zembed_max_seq_length:
        base.max_seq_length = args.zembed_max_seq_length  # saved with both towers: encode_document reads it
    texts = [d for ds in (train, dev, candidates) if ds is not None for docs in ds["docs"] for d in docs]
    index = document_index(output_dir / index_from if index_from else None, base, texts, args.eval_batch_size)
    index.save(stage_dir / DOCUMENTS_FILE)
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


def document_index(stage_dir: Path | None, model, texts: list[str], batch_size: int) -> DocumentIndex:
    """The documents embedded by ``model``'s document tower: those a zembed stage saved (the same frozen tower and
    settings) plus any text they lack; all of them when ``stage_dir`` is None or saved none (an older run)."""
    path = stage_dir / DOCUMENTS_FILE if stage_dir is not None else None
    if path is not None and path.exists():
        return DocumentIndex.load(path).extend(model, texts, batch_size)
    return DocumentIndex.build(model, texts, batch_size=batch_size)


def _train_zembed(args, training_args, base, train, dev, index, stage_dir: Path, seed: int):
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


def training_summary(trainer, result) -> dict[str, Any]:
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
