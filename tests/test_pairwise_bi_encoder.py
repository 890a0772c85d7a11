"""The pairwise judge on a bi-encoder (``architecture: bi_encoder``, ``loss_type: pairwise_bce``): it learns the
judges' preferences, keeps documents frozen, picks its epoch on dev queries, and the saved folder judges graphs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset

from zelo_hf.grouping import group_preferences
from zelo_hf.modeling.scoring import BiEncoderPairwiseScorer, load_pairwise_scorer
from zelo_hf.trainer import PairwiseConfig, ZembedConfig, ZembedTrainer
from zelo_hf.trainer.losses import pairwise_bce_loss

pytestmark = pytest.mark.usefixtures("single_thread")

TOPICS = ["wing lift", "boundary layer", "shock wave", "heat transfer", "jet noise", "panel flutter"]


def preferences(n_queries: int = 12, seed: int = 0) -> Dataset:
    """A flat preference set: per query, every document of its topic beats the others' (soft p ~ 0.9), and pairs
    within one side are near ties; half the pairs are presented with the loser first."""
    rng = np.random.default_rng(seed)
    docs = [f"{t} study number {j}" for t in TOPICS for j in range(2)]
    rows = []
    for i in range(n_queries):
        topic = TOPICS[i % len(TOPICS)]
        for a in range(len(docs)):
            for b in range(a + 1, len(docs)):
                gap = float(docs[a].startswith(topic)) - float(docs[b].startswith(topic))
                p = float(np.clip(0.5 + 0.4 * gap + 0.03 * rng.standard_normal(), 0.0, 1.0))
                first, second, prob = (a, b, p) if rng.random() < 0.5 else (b, a, 1.0 - p)
                rows.append({"query_id": f"q{i}", "query": f"what is known about {topic}", "doc_a_id": str(first),
                             "doc_a": docs[first], "doc_b_id": str(second), "doc_b": docs[second], "prob_a": prob})
    return Dataset.from_list(rows)


def config(tmp_path, **kw) -> ZembedConfig:
    defaults = dict(output_dir=str(tmp_path), loss_type="pairwise_bce", num_train_epochs=4, learning_rate=3e-3,
                    per_device_train_batch_size=3, logging_steps=1, report_to="none", use_cpu=True, seed=0,
                    disable_tqdm=True, max_query_length=32)  # the tiny tokenizer: 21-27 tokens a query
    return ZembedConfig(**{**defaults, **kw})


def test_pairwise_bce_is_the_bce_of_score_differences_and_ignores_padding():
    scores = torch.tensor([[2.0, 0.0, -1.0]])
    pair_a, pair_b = torch.tensor([[0, 2, 1]]), torch.tensor([[1, 0, 1]])
    prob = torch.tensor([[0.9, 0.2, 0.5]])
    mask = torch.tensor([[True, True, False]])  # the third slot is padding
    expected = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor([2.0, -3.0]), torch.tensor([0.9, 0.2]))
    assert pairwise_bce_loss(scores, pair_a, pair_b, prob, mask).item() == pytest.approx(expected.item())
    prob_padded = prob.clone()
    prob_padded[0, 2] = 0.0
    assert pairwise_bce_loss(scores, pair_a, pair_b, prob_padded, mask).item() == pytest.approx(expected.item())


def test_confidence_weighting_lets_confident_pairs_lead():
    scores = torch.tensor([[2.0, 0.0, -1.0]])
    pair_a, pair_b = torch.tensor([[0, 2, 1]]), torch.tensor([[1, 0, 2]])
    prob = torch.tensor([[0.9, 0.2, 0.5]])
    mask = torch.tensor([[True, True, True]])
    terms = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor([2.0, -3.0, 1.0]), prob[0],
                                                                 reduction="none")
    weights = torch.tensor([0.8, 0.6, 0.0])  # |2p - 1|: the tie (p = 0.5) weighs nothing
    expected = (weights * terms).sum() / weights.sum()
    loss = pairwise_bce_loss(scores, pair_a, pair_b, prob, mask, "confidence")
    assert loss.item() == pytest.approx(expected.item())
    assert loss.item() != pytest.approx(pairwise_bce_loss(scores, pair_a, pair_b, prob, mask).item())
    with pytest.raises(ValueError, match="pair_weighting.*one of"):
        pairwise_bce_loss(scores, pair_a, pair_b, prob, mask, "hard")
    with pytest.raises(ValueError, match="pair_weighting"):
        ZembedConfig(output_dir="x", loss_type="pairwise_bce", pair_weighting="hard")


def test_selection_metric_follows_the_loss():
    assert ZembedConfig(output_dir="x", loss_type="pairwise_bce").selection_metric == "bce"
    assert ZembedConfig(output_dir="x").selection_metric == "label_ndcg@10"
    with pytest.raises(ValueError, match=r"`selection_metric` must be one of \('bce', 'agreement', 'accuracy'\)"):
        ZembedConfig(output_dir="x", loss_type="pairwise_bce", selection_metric="label_ndcg@10")
    with pytest.raises(ValueError, match="`architecture` must be one of"):
        PairwiseConfig(output_dir="x", architecture="siamese")


def test_the_judge_learns_the_preferences_and_the_saved_folder_judges_like_the_trainer(tiny_bert_path, tmp_path):
    train, dev = group_preferences(preferences(12, seed=0)), group_preferences(preferences(6, seed=1))
    trainer = ZembedTrainer(tiny_bert_path, args=config(tmp_path, keep_best=False), train_dataset=train,
                            eval_dataset=dev)
    query_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    docs_before = trainer.document_index.embeddings.clone()
    dev_before = trainer.measure(trainer.eval_dataset)
    trainer.train()
    history = trainer.selection()["dev_history"]
    assert [e["epoch"] for e in history] == [0.0, 1.0, 2.0, 3.0, 4.0]  # the base, then every epoch
    dev_after = trainer.measure(trainer.eval_dataset)  # unseen queries' pairs: the soft labels fit better
    assert dev_after["bce"] < dev_before["bce"] - 0.03 and dev_after["accuracy"] >= dev_before["accuracy"]
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert losses[-1] < losses[0]
    unchanged = [n for n, p in trainer.model.named_parameters() if torch.equal(p, query_before[n])]
    assert unchanged and all("pooler" in n for n in unchanged)  # mean pooling never reads the pooler
    assert torch.equal(trainer.document_index.embeddings, docs_before)

    trainer.save_model(str(tmp_path / "judge"))
    assert json.loads((tmp_path / "judge" / "zelo_pairwise.json").read_text()) == {
        "architecture": "bi_encoder", "temperature": 0.05}
    scorer = load_pairwise_scorer(str(tmp_path / "judge"))
    assert isinstance(scorer, BiEncoderPairwiseScorer) and scorer.temperature == 0.05
    flat = preferences(6, seed=1)
    p = scorer.predict(flat["query"], flat["doc_a"], flat["doc_b"])
    np.testing.assert_allclose(p, 1.0 - scorer.predict(flat["query"], flat["doc_b"], flat["doc_a"]), atol=1e-6)
    # the saved scorer's agreement is the trainer's on the same pairs (one logit, two code paths)
    measured = trainer.measure(trainer.prepare(group_preferences(flat)))
    confident = np.abs(np.asarray(flat["prob_a"]) - 0.5) >= 0.3
    agreement = np.mean((p[confident] > 0.5) == (np.asarray(flat["prob_a"])[confident] > 0.5))
    assert agreement == pytest.approx(measured["agreement"]) and agreement > 0.9


def test_a_pairwise_model_judge_reads_a_bi_encoder_folder(tiny_bert_path, tmp_path):
    from zelo_hf.judging.local import PairwiseModelJudge
    from zelo_hf.judging.votes import Comparison

    trainer = ZembedTrainer(tiny_bert_path, args=config(tmp_path, num_train_epochs=1),
                            train_dataset=group_preferences(preferences(6)))
    trainer.train()
    trainer.save_model(str(tmp_path / "judge"))
    judge = PairwiseModelJudge(str(tmp_path / "judge"))
    votes = judge._votes([Comparison(query="what is known about jet noise", doc_a="jet noise study number 0",
                                     doc_b="wing lift study number 1")])
    expected = judge.scorer.predict(["what is known about jet noise"], ["jet noise study number 0"],
                                    ["wing lift study number 1"])
    assert votes[0].error is None and votes[0].prob_a == pytest.approx(float(expected[0]))


@pytest.mark.parametrize(
    ("change", "match"),
    [({"pair_a": [[0, 99]]}, r"`pair_a`/`pair_b` must index the query's 12 `docs`"),
     ({"prob_a": [[0.5, 1.5]]}, r"`prob_a` must be probabilities in \[0, 1\] \(got \[0.5, 1.5\]\)"),
     ({"pair_b": [[1]]}, r"needs >= 1 pair with one `pair_a`, `pair_b` and `prob_a` each \(got 2, 1 and 2\)")],
)
def test_bad_grouped_preferences_raise_naming_the_row_and_field(tiny_bert_path, tmp_path, change, match):
    grouped = group_preferences(preferences(1)).to_dict()
    grouped = {k: [v[0][:2]] if k in ("pair_a", "pair_b", "prob_a") else v for k, v in grouped.items()}
    grouped.update(change)
    with pytest.raises(ValueError, match="train dataset row 0: " + match):
        ZembedTrainer(tiny_bert_path, args=config(tmp_path), train_dataset=Dataset.from_dict(grouped))


def test_train_pairwise_model_bi_encoder_measures_held_out_queries_before_and_after(tiny_bert_path, tmp_path):
    from zelo_hf.pipelines.pairwise import save_pairwise_model, train_pairwise_model

    pairwise_config = PairwiseConfig(
        output_dir=str(tmp_path / "trainer"), architecture="bi_encoder", num_train_epochs=4, learning_rate=3e-3,
        per_device_train_batch_size=3, logging_steps=1, report_to="none", use_cpu=True, seed=0, disable_tqdm=True,
        max_query_length=32, save_strategy="no", selection_metric="bce",  # agreement saturates on toy data
        temperature=0.05, pair_weighting="uniform",  # the toy labels' near-ties are what this judge should learn
    )
    run = train_pairwise_model(preferences(12), tiny_bert_path, pairwise_config, eval_fraction=0.25, seed=0,
                               dev_fraction=0.25)
    assert run.eval_rows == 3 * 66 and run.train_rows == 9 * 66  # 3 of 12 queries held out, 66 pairs each
    selection = run.trainer.selection()  # the 2 dev queries (25 % of 9) picked the epoch: the lowest dev BCE
    assert selection["dev_bce"] == min(e["bce"] for e in selection["dev_history"]) and selection["kept_epoch"] > 0
    assert len(run.trainer.train_dataset) == 7
    assert run.after["eval_bce"] < run.before["base_bce"] and run.after["eval_agreement"] >= run.before["base_agreement"]
    save_pairwise_model(run, tmp_path / "model")
    card = (tmp_path / "model" / "README.md").read_text()
    row = re.search(r"\| agreement \| ([0-9.]+) \| ([0-9.]+) \|", card)
    assert row and float(row[1]) == pytest.approx(run.before["base_agreement"], abs=1e-4)
    assert float(row[2]) == pytest.approx(run.after["eval_agreement"], abs=1e-4)
    assert "base_model" not in card.split("---")[1]  # a local folder is never named as a Hub base model


def test_every_card_usage_import_resolves():
    """Each ``from zelo_hf... import a, b`` line of a card template names something importable."""
    import importlib

    templates = Path(__file__).resolve().parents[1] / "zelo_hf" / "templates"
    lines = [m for t in templates.glob("*.md") for m in re.findall(r"^from (zelo_hf\S*) import (.+)$",
                                                                      t.read_text(), re.M)]
    assert lines
    for module, names in lines:
        for name in (n.strip() for n in names.split(",")):
            assert hasattr(importlib.import_module(module), name), f"{module}.{name} (a card's usage snippet)"
