"""The query-side zembed trainer: learns a label set's rankings, keeps documents frozen, selects on dev, saves a Router."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zelo_hf.trainer import DocumentIndex, ZembedConfig, ZembedTrainer
from zelo_hf.trainer.losses import listwise_kl_loss, multi_positive_nce_loss

TOPICS = ["wing lift", "boundary layer", "shock wave", "heat transfer", "jet noise", "panel flutter"]


def label_set(n_queries: int = 6, seed: int = 0):
    """Per-query rows: documents about the query's topic score high, the other topics' low."""
    from datasets import Dataset

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_queries):
        topic = TOPICS[i % len(TOPICS)]
        docs = [f"{t} study number {j}" for t in TOPICS for j in range(2)]
        score = [1.5 + 0.1 * rng.standard_normal() if d.startswith(topic) else -0.5 + 0.1 * rng.standard_normal()
                 for d in docs]
        rows.append({"query_id": str(i), "query": f"what is known about {topic}", "docs": docs, "score": score,
                     "labels": [float(d.startswith(topic)) for d in docs]})
    return Dataset.from_list(rows)


def config(tmp_path, **kw):
    defaults = dict(output_dir=str(tmp_path), num_train_epochs=4, learning_rate=3e-3, per_device_train_batch_size=3,
                    logging_steps=1, report_to="none", use_cpu=True, seed=0, disable_tqdm=True, max_query_length=16)
    return ZembedConfig(**{**defaults, **kw})


def test_listwise_kl_is_zero_when_the_student_matches_the_teacher_and_ignores_padding():
    targets = torch.tensor([[2.0, 0.0, -1.0, 9.0]])
    mask = torch.tensor([[True, True, True, False]])
    assert listwise_kl_loss(targets / 0.1, targets, mask, teacher_temperature=0.1).item() == pytest.approx(0, abs=1e-6)
    flipped = listwise_kl_loss(-targets / 0.1, targets, mask, teacher_temperature=0.1)
    assert flipped.item() > 1.0
    padded_changed = targets.clone()
    padded_changed[0, 3] = -50.0  # the padded slot must not matter
    assert listwise_kl_loss(-padded_changed / 0.1, padded_changed, mask, 0.1).item() == pytest.approx(flipped.item())


def test_contrastive_needs_a_positive():
    with pytest.raises(ValueError, match="no query of the batch has a positive"):
        multi_positive_nce_loss(torch.zeros(1, 3), torch.zeros(1, 3), torch.ones(1, 3, dtype=torch.bool))


def test_trainer_learns_the_label_ranking_and_keeps_documents_frozen(tiny_bert_path, tmp_path):
    train, dev = label_set(6, seed=0), label_set(6, seed=1)
    trainer = ZembedTrainer(tiny_bert_path, args=config(tmp_path, keep_best=False), train_dataset=train,
                            eval_dataset=dev)
    query_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    docs_before = trainer.document_index.embeddings.clone()
    trainer.train()
    history = trainer.selection()["dev_history"]
    assert history[0]["epoch"] == 0.0 and history[-1]["label_ndcg@10"] > history[0]["label_ndcg@10"]
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert losses[-1] < losses[0]
    # every parameter on the query path moved (the pooler is unused by mean pooling), no document embedding did
    unchanged = [n for n, p in trainer.model.named_parameters() if torch.equal(p, query_before[n])]
    assert unchanged and all("pooler" in n for n in unchanged)
    assert torch.equal(trainer.document_index.embeddings, docs_before)
    assert all(not p.requires_grad for p in trainer.document_model.parameters())


def test_keep_best_restores_the_base_when_training_only_hurts_dev(tiny_bert_path, tmp_path):
    """Dev labels that contradict the training labels (each query's relevant documents are another topic's): every
    epoch is worse than the base, so the base is kept."""
    train = label_set(6, seed=0)
    dev = label_set(6, seed=1)
    dev = dev.map(lambda row: {"score": row["score"][2:] + row["score"][:2]})
    trainer = ZembedTrainer(tiny_bert_path, args=config(tmp_path), train_dataset=train, eval_dataset=dev)
    base = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    assert trainer.selection()["kept_epoch"] == 0.0
    assert all(torch.equal(p, base[n]) for n, p in trainer.model.named_parameters())


def test_saved_router_scores_equal_the_training_scores(tiny_bert_path, tmp_path):
    from sentence_transformers import SentenceTransformer

    from zelo_hf.evaluation.scorers import as_score_fn

    train = label_set(6)
    trainer = ZembedTrainer(tiny_bert_path, args=config(tmp_path, num_train_epochs=1), train_dataset=train)
    trainer.train()
    trainer.save_model(str(tmp_path / "model"))
    loaded = SentenceTransformer(str(tmp_path / "model"), device="cpu")
    queries, docs = [train[0]["query"]] * 3, train[0]["docs"][:3]
    saved = as_score_fn(loaded)(queries, docs)
    index = DocumentIndex.build(trainer.document_model, docs)
    with torch.no_grad():
        q = trainer.model.encode(queries[:1], convert_to_tensor=True, normalize_embeddings=True)
    np.testing.assert_allclose(saved, (index.embeddings @ q[0]).numpy(), atol=1e-5)
    base = SentenceTransformer(tiny_bert_path, device="cpu")  # documents: still the base model's embeddings
    np.testing.assert_allclose(loaded.encode_document(docs), base.encode(docs), atol=1e-6)


def test_bad_label_rows_are_refused(tiny_bert_path, tmp_path):
    bad = label_set(2).map(lambda row: {"score": row["score"][:-1]})
    with pytest.raises(ValueError, match="must be finite, one per document"):
        ZembedTrainer(tiny_bert_path, args=config(tmp_path), train_dataset=bad)
    with pytest.raises(ValueError, match="teacher_temperature"):
        config(tmp_path, teacher_temperature=0.0)
