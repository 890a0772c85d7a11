from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Dataset

from zelo_hf.modeling.loading import load_reranker
from zelo_hf.modeling.scoring import score_pairs
from zelo_hf.trainer import PointwiseConfig, PointwiseTrainer

pytestmark = pytest.mark.usefixtures("single_thread")


WORDS = ["cat", "dog", "proteins", "vitamin", "stock", "paris", "apple", "banana"]


def toy_rows(n_queries: int = 8, seed: int = 0) -> dict[str, list]:
    """A learnable toy set: a document scores +2 when it mentions the query's word, -2 otherwise."""
    rng = np.random.default_rng(seed)
    rows = {"query_id": [], "query": [], "doc_id": [], "doc": [], "score": [], "label": []}
    for q in range(n_queries):
        word = WORDS[q % len(WORDS)]
        for d in range(4):
            other = WORDS[(q + 1 + d) % len(WORDS)]
            relevant = d < 2
            text = f"the {word} sat on the mat" if relevant else f"the {other} fell on monday"
            rows["query_id"].append(f"q{q}")
            rows["query"].append(f"what about the {word}")
            rows["doc_id"].append(f"q{q}d{d}")
            rows["doc"].append(text)
            rows["score"].append(2.0 + 0.1 * rng.standard_normal() if relevant else -2.0)
            rows["label"].append(int(relevant))
    return rows


def config(tmp_path, **kwargs) -> PointwiseConfig:
    defaults = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=8,
        learning_rate=5e-3,
        max_steps=60,
        logging_steps=5,
        max_length=48,
        max_query_length=16,
        save_strategy="no",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    return PointwiseConfig(**{**defaults, **kwargs})


def train_and_check(tmp_path, model_path, **kwargs):
    data = Dataset.from_dict(toy_rows())
    trainer = PointwiseTrainer(model_path, args=config(tmp_path, **kwargs), train_dataset=data, eval_dataset=data)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    first = trainer.evaluate()
    trainer.train()
    last = trainer.evaluate()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert losses, "the training loss must be logged"
    for name, param in trainer.model.named_parameters():
        if name in before:
            assert not torch.equal(before[name], param.detach()), f"{name} did not change"
    return trainer, first, last


def test_pointwise_mse_learns_bert(tmp_path, tiny_bert_path):
    trainer, first, last = train_and_check(tmp_path, tiny_bert_path)
    assert last["eval_loss"] < first["eval_loss"] * 0.5
    assert last["eval_spearman"] > 0.5 and last["eval_ndcg@10"] > 0.9
    trainer.save_model(str(tmp_path / "final"))
    card = (tmp_path / "final" / "README.md").read_text()
    assert "MSE on the calibrated zELO scores" in card and "eval_loss" in card


def test_pointwise_causal_head_learns(tmp_path, tiny_qwen3_path):
    _, first, last = train_and_check(tmp_path, tiny_qwen3_path, max_steps=20, max_length=64)
    assert last["eval_loss"] < first["eval_loss"]


def test_standardize_saved_and_binary_contrastive_modes(tmp_path, tiny_bert_path):
    data = Dataset.from_dict(toy_rows())
    trainer = PointwiseTrainer(
        tiny_bert_path, args=config(tmp_path, target_transform="standardize", max_steps=2), train_dataset=data
    )
    scores = np.asarray(data["score"])
    assert trainer.model.config.zelo_target_mean == pytest.approx(scores.mean())
    assert trainer.model.config.zelo_target_std == pytest.approx(scores.std())
    assert np.mean(trainer.train_dataset["labels"]) == pytest.approx(0.0, abs=1e-9)
    trainer.train()
    trainer.save_model(str(tmp_path / "std"))
    model, _ = load_reranker(str(tmp_path / "std"))
    assert model.config.zelo_target_transform == "standardize"

    for loss_type in ("binary", "contrastive"):
        trainer, first, last = train_and_check(tmp_path, tiny_bert_path, loss_type=loss_type, max_steps=15)
        assert last["eval_loss"] < first["eval_loss"]
    groups = trainer.train_dataset
    assert len(groups) == 16 and all(len(d) == 8 for d in groups["docs"])  # 2 positives x 8 queries, 1 + 7 docs


@pytest.mark.parametrize(
    ("column", "value", "match"),
    [("score", float("nan"), "`score` must be finite"), ("doc", "  ", "`doc` is empty"), ("query", "", "`query`")],
)
def test_bad_inputs_raise_before_training(tmp_path, tiny_bert_path, column, value, match):
    rows = toy_rows()
    rows[column][3] = value
    with pytest.raises(ValueError, match=match):
        PointwiseTrainer(tiny_bert_path, args=config(tmp_path), train_dataset=Dataset.from_dict(rows))
    rows = toy_rows()
    del rows["score"]
    with pytest.raises(ValueError, match=r"missing column\(s\) \['score'\]"):
        PointwiseTrainer(tiny_bert_path, args=config(tmp_path), train_dataset=Dataset.from_dict(rows))


def test_loaded_model_with_two_labels_is_refused(tmp_path, tiny_bert_path):
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    model = BertForSequenceClassification(BertConfig.from_pretrained(tiny_bert_path, num_labels=2))
    with pytest.raises(ValueError, match="num_labels=1.*got num_labels=2"):
        PointwiseTrainer(model, args=config(tmp_path), processing_class=AutoTokenizer.from_pretrained(tiny_bert_path))
    model.save_pretrained(tmp_path / "two")
    with pytest.raises(ValueError, match="got num_labels=2"):
        load_reranker(str(tmp_path / "two"))


def test_score_pairs_matches_per_pair_scoring(tiny_bert_path):
    model, tok = load_reranker(tiny_bert_path)
    queries, docs = ["the cat", "paris", "x"], ["the cat sat on the mat today", "paris is the capital", "dog"]
    batched = score_pairs(model, tok, queries, docs, batch_size=2)
    single = np.array([score_pairs(model, tok, [q], [d])[0] for q, d in zip(queries, docs)])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_soft_bce_trains_on_sigmoid_targets(tmp_path, tiny_bert_path):
    """The sigmoid is a target transform (targets become sigmoid(score / T)); soft_bce is the loss (issue #9)."""
    trainer, first, last = train_and_check(
        tmp_path, tiny_bert_path, loss_type="soft_bce", target_transform="sigmoid", temperature=0.5, max_steps=30
    )
    expected = 1 / (1 + np.exp(-np.asarray(toy_rows()["score"]) / 0.5))
    np.testing.assert_allclose(trainer.train_dataset["labels"], expected, rtol=1e-6)
    assert last["eval_loss"] < first["eval_loss"] and last["eval_spearman"] > 0.5
    hparams = trainer.hyperparameters()
    assert hparams["loss_type"] == "soft_bce" and hparams["temperature"] == 0.5 and "symmetrize" not in hparams
    trainer.save_model(str(tmp_path / "soft"))
    assert "BCE against sigmoid(score / 0.5)" in (tmp_path / "soft" / "README.md").read_text()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(target_transform="sigmoid"), "no longer changes the loss.*pass loss_type='soft_bce'"),
        (dict(loss_type="soft_bce", target_transform="standardize"), "needs targets in \\[0, 1\\]"),
        (dict(loss_type="sigmoid"), "`loss_type` must be one of"),
    ],
)
def test_objective_spellings_are_checked(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        config(tmp_path, **kwargs)


def test_soft_bce_refuses_raw_targets_outside_0_1(tmp_path, tiny_bert_path):
    data = Dataset.from_dict(toy_rows())
    with pytest.raises(ValueError, match="needs targets in \\[0, 1\\].*pass target_transform='sigmoid'"):
        PointwiseTrainer(tiny_bert_path, args=config(tmp_path, loss_type="soft_bce"), train_dataset=data)


def test_save_model_never_pushes_and_push_to_hub_uploads_the_complete_folder_once(tmp_path, tiny_bert_path, monkeypatch):
    pushed = []

    def fake_push(folder, repo_id, **kw):
        pushed.append((repo_id, sorted(p.name for p in (tmp_path / "out").iterdir())))
        return "https://hub/me/r"

    monkeypatch.setattr("zelo_hf.hub.push_folder", fake_push)
    args = config(tmp_path, push_to_hub=True, hub_model_id="me/r", max_steps=1)
    trainer = PointwiseTrainer(tiny_bert_path, args=args, train_dataset=Dataset.from_dict(toy_rows()))
    trainer.train()
    trainer.save_model(str(tmp_path / "out"))
    assert pushed == []
    assert trainer.push_to_hub() == "https://hub/me/r"
    assert len(pushed) == 1 and pushed[0][0] == "me/r"
    assert {"README.md", "zelo_config.json", "config.json"} <= set(pushed[0][1])  # the card is there before the upload


def test_configs_share_one_base_config(tmp_path):
    """The configs subclass one base (TrainingArguments subclasses, as trl's _BaseConfig), whose __post_init__ runs
    the shared checks and defaults: no mixin method for each config to call by hand."""
    from zelo_hf.trainer import BaseConfig, PairwiseConfig, RerankerConfig, ZembedConfig

    assert issubclass(PointwiseConfig, RerankerConfig) and issubclass(PairwiseConfig, RerankerConfig)
    assert issubclass(RerankerConfig, BaseConfig) and issubclass(ZembedConfig, BaseConfig)
    assert config(tmp_path).label_names == ["labels", "query_index"]
    pairwise = PairwiseConfig(output_dir=str(tmp_path), use_cpu=True)
    assert pairwise.label_names == ["labels"] and pairwise.learning_rate == 2e-5
    assert pairwise.bf16 == bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())  # None: resolved
    with pytest.raises(ValueError, match="`max_query_length` must leave room for documents"):
        PairwiseConfig(output_dir=str(tmp_path), use_cpu=True, max_length=16, max_query_length=16)
