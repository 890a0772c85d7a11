"""DeepSpeed ZeRO-2 and ZeRO-3 through `accelerate launch` with the shipped configs (recipes/accelerate_configs).

Two CPU processes talk over gloo (DeepSpeed's CPU accelerator), so the sharding, the gathered save and the
batch-size bookkeeping run for real; only the device differs from a GPU run. Each launch takes ~20 s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "recipes" / "accelerate_configs"
ROWS, BATCH, PROCESSES = 48, 4, 2


@pytest.fixture(scope="module")
def labels_file(tmp_path_factory):
    """A small pointwise label set: every (query, document) pair of six short texts, scored by word overlap."""
    from datasets import Dataset

    texts = ["the cat sat on the mat", "a dog barked at the mailman", "proteins fold into structures",
             "vitamin d deficiency and bone loss", "the stock market fell sharply", "neural rerankers score pairs",
             "what is the capital of france", "query document relevance ranking"]  # fmt: skip
    rows = [
        {"query": q, "doc": d, "score": float(len(set(q.split()) & set(d.split())))}
        for q in texts[:6] for d in texts
    ]  # fmt: skip
    path = tmp_path_factory.mktemp("ds-data") / "labels.parquet"
    Dataset.from_list(rows[:ROWS]).to_parquet(str(path))
    return str(path)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def accelerate_launch(config: str, *program: str) -> None:
    """`accelerate launch --config_file <config>` of ``program`` on 2 CPU processes; fails with its stderr."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "ACCELERATE_DISABLE_RICH": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / config),
           "--num_processes", str(PROCESSES), "--mixed_precision", "no", "--main_process_port", str(free_port()),
           *program]  # fmt: skip
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]


def launch(config: str, output_dir: Path, *flags: str) -> dict:
    """`zelo train-pointwise ...` under ``config``; returns its trainer state."""
    accelerate_launch(
        config, "-m", "zelo_hf.cli", "train-pointwise", "--output_dir", str(output_dir),
        "--per_device_train_batch_size", str(BATCH), "--num_train_epochs", "2", "--learning_rate", "3e-3",
        "--max_length", "48", "--max_query_length", "16", "--logging_steps", "1", "--save_strategy", "no",
        "--report_to", "none", "--seed", "0", *flags,
    )  # fmt: skip
    return json.loads((output_dir / "trainer_state.json").read_text())


def load_weights(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    name = "adapter_model.safetensors" if (folder / "adapter_model.safetensors").exists() else "model.safetensors"
    return load_file(str(folder / name))


def assert_every_tensor_trained(trained: dict, base: dict) -> None:
    shared = sorted(set(trained) & set(base))
    assert shared, "no weights in common with the base model"
    unchanged = [k for k in shared if np.array_equal(trained[k], base[k])]
    assert unchanged == [], f"ZeRO left these tensors untrained or saved them empty: {unchanged}"


def assert_crossencoder_agrees(folder: Path) -> None:
    from sentence_transformers import CrossEncoder

    from zelo_hf.modeling.loading import load_reranker
    from zelo_hf.modeling.scoring import score_pairs

    pairs = [("cat on a mat", "the cat sat on the mat"), ("cat on a mat", "the stock market fell")]
    model, tokenizer = load_reranker(str(folder))
    ours = score_pairs(model, tokenizer, [q for q, _ in pairs], [d for _, d in pairs], batch_size=4, max_length=48,
                       max_query_length=16)
    theirs = CrossEncoder(str(folder)).predict(pairs)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


@pytest.fixture(scope="module")
def zero_runs(tiny_qwen3_path, labels_file, tmp_path_factory):
    """The same causal (zerank-style) training under ZeRO-2 and under ZeRO-3."""
    root = tmp_path_factory.mktemp("zero")
    flags = ("--dataset_name", labels_file, "--model_name_or_path", tiny_qwen3_path)
    return {stage: (root / stage, launch(f"{stage}.yaml", root / stage, *flags)) for stage in ("zero2", "zero3")}


def test_zero_stages_shard_one_global_batch_over_both_processes(zero_runs):
    # world size 2: each optimizer step consumes BATCH rows on each process (a world size of 1 doubles the steps)
    for _, state in zero_runs.values():
        assert state["global_step"] == 2 * ROWS // (BATCH * PROCESSES)
        losses = [e["loss"] for e in state["log_history"] if "loss" in e]
        assert len(losses) == state["global_step"] and all(np.isfinite(losses))


def test_zero3_gathers_the_same_trained_weights_as_zero2(zero_runs, tiny_qwen3_path):
    (dir2, _), (dir3, _) = zero_runs["zero2"], zero_runs["zero3"]
    base, w2, w3 = load_weights(Path(tiny_qwen3_path)), load_weights(dir2), load_weights(dir3)
    assert_every_tensor_trained(w3, base)
    assert set(w3) <= set(w2) and set(w2) - set(w3) <= {"lm_head.weight"}  # tied lm_head: saved once under ZeRO-3
    for key in w3:
        np.testing.assert_allclose(w3[key], w2[key], atol=1e-4, err_msg=key)
    assert_crossencoder_agrees(dir3)


def test_zero3_lora_saves_the_classification_head_with_the_adapter(tiny_bert_path, labels_file, tmp_path):
    out = tmp_path / "zero3-lora"
    launch("zero3.yaml", out, "--dataset_name", labels_file, "--model_name_or_path", tiny_bert_path,
           "--use_peft", "--lora_r", "4", "--lora_alpha", "8", "--lora_target_modules", "query", "value")  # fmt: skip
    adapter = load_weights(out)
    lora_b = [k for k in adapter if "lora_B" in k]
    assert lora_b and not [k for k in lora_b if not adapter[k].any()], "a LoRA B matrix was saved empty/untrained"
    head = [k for k in adapter if "classifier" in k]
    assert head, f"the score head is missing from the adapter (keys: {sorted(adapter)[:6]}...)"
    base = load_weights(Path(tiny_bert_path))
    for key in head:
        base_key = "classifier." + key.split("classifier.")[-1].replace("modules_to_save.default.", "")
        assert not np.array_equal(adapter[key], base[base_key]), f"{key} was not trained"


@pytest.mark.slow  # ~55 s; the recipe runs by default in test_recipes.py, ZeRO-3 training in the tests above
def test_zerank_recipe_trains_the_pairwise_model_then_the_reranker_under_zero3(tiny_bert_path, tmp_path):
    """Two trainers in one DeepSpeed process (accelerate refuses a second DeepSpeed Accelerator unless released)."""
    out = tmp_path / "recipe"
    accelerate_launch(
        "zero3.yaml", str(REPO / "recipes" / "zerank.py"), "--dataset_name", "cranfield", "--dataset_split", "test",
        "--eval_split", "test", "--num_train_queries", "6", "--num_pairwise_queries", "3", "--num_eval_queries", "4",
        "--top_k", "6", "--eval_top_k", "8", "--graph_degree", "2", "--calibration_cycles", "1",
        "--pairwise_model_name_or_path", tiny_bert_path, "--pairwise_max_length", "64",
        "--model_name_or_path", tiny_bert_path, "--output_dir", str(out), "--max_length", "64",
        "--max_query_length", "16", "--num_train_epochs", "2", "--per_device_train_batch_size", "4",
        "--learning_rate", "3e-3", "--save_strategy", "no", "--report_to", "none", "--seed", "0",
        "--pairwise_min_agreement", "0", "--zembed", "false",  # a tiny pairwise judge is near chance; zembed: no ZeRO
    )  # fmt: skip
    pointwise = json.loads((out / "pointwise" / "_COMPLETE.json").read_text())["summary"]
    # 9 queries x 6 documents = 54 rows; 4 per process x 2 processes -> 7 steps an epoch
    assert pointwise["rows"] == 54 and pointwise["steps"] == 2 * 7
    assert (out / "pairwise" / "model" / "model.safetensors").exists()
    assert_every_tensor_trained(load_weights(out / "pointwise" / "model"), load_weights(Path(tiny_bert_path)))
    assert_crossencoder_agrees(out / "pointwise" / "model")


@pytest.fixture
def one_process_group(monkeypatch):
    """A real 1-process gloo group in this process, with ``dist.barrier`` counted (and still run)."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    barriers, real = [], dist.barrier
    monkeypatch.setattr(dist, "barrier", lambda *a, **k: (barriers.append(1), real(*a, **k))[1])
    yield barriers
    if dist.is_initialized():
        dist.destroy_process_group()


def test_a_finished_run_waits_for_its_peers_then_closes_the_process_group(one_process_group):
    """The barrier is what lets the gloo workers of a ZeRO-3 rank drop their last all-gather before the exit."""
    import torch
    import torch.distributed as dist

    from zelo_hf.utils import closing_distributed

    ones = torch.ones(3)
    with closing_distributed():
        dist.all_reduce(ones)
    assert ones.tolist() == [1.0, 1.0, 1.0]
    assert one_process_group == [1] and not dist.is_initialized()


def test_a_failed_run_closes_the_process_group_without_waiting_for_peers(one_process_group):
    """After an error the other ranks may never reach a barrier: the group is closed and the error goes on."""
    import torch.distributed as dist

    from zelo_hf.utils import closing_distributed

    with pytest.raises(RuntimeError, match="rank failed"), closing_distributed():
        raise RuntimeError("rank failed")
    assert one_process_group == [] and not dist.is_initialized()
