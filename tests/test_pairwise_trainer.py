from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Dataset

from zelo_hf.modeling.scoring import PairwiseScorer
from zelo_hf.trainer import PairwiseConfig, PairwiseTrainer
from zelo_hf.trainer.pairwise_trainer import swap_pairs

pytestmark = pytest.mark.usefixtures("single_thread")


WORDS = ["cat", "dog", "proteins", "vitamin", "stock", "paris", "apple", "banana"]


def preference_rows(n: int = 16) -> dict[str, list]:
    """A learnable toy preference set: the document mentioning the query's word wins with soft prob 0.9."""
    rows = {"query_id": [], "query": [], "doc_a": [], "doc_b": [], "prob_a": []}
    for i in range(n):
        word, other = WORDS[i % len(WORDS)], WORDS[(i + 3) % len(WORDS)]
        good, bad = f"{word} relevant yes", f"{other} irrelevant no"
        a_wins = i % 2 == 0
        rows["query_id"].append(f"q{i}")
        rows["query"].append(f"what about the {word}")
        rows["doc_a"].append(good if a_wins else bad)
        rows["doc_b"].append(bad if a_wins else good)
        rows["prob_a"].append(0.9 if a_wins else 0.1)
    return rows


def config(tmp_path, **kwargs) -> PairwiseConfig:
    defaults = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=8,
        learning_rate=2e-3,
        max_steps=80,
        warmup_steps=5,
        logging_steps=5,
        max_length=64,
        max_query_length=16,
        save_strategy="no",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    return PairwiseConfig(**{**defaults, **kwargs})


def test_swap_pairs_doubles_with_complement():
    out = swap_pairs({"query": ["q"], "doc_a": ["A"], "doc_b": ["B"], "prob_a": [0.8]})
    assert out == {"query": ["q", "q"], "doc_a": ["A", "B"], "doc_b": ["B", "A"], "prob_a": [0.8, pytest.approx(0.2)]}


# The decoder run is shorter (CPU time): it checks the loss falls and every parameter moves, not accuracy.
@pytest.mark.parametrize(
    ("model_fixture", "steps", "min_accuracy"), [("tiny_bert_path", 80, 0.75), ("tiny_qwen3_path", 20, 0.0)]
)
def test_pairwise_learns_and_scorer_is_antisymmetric(tmp_path, request, model_fixture, steps, min_accuracy):
    data = Dataset.from_dict(preference_rows())
    args = config(tmp_path, max_steps=steps)
    trainer = PairwiseTrainer(request.getfixturevalue(model_fixture), args=args, train_dataset=data, eval_dataset=data)
    assert len(trainer.train_dataset) == 2 * len(data)  # symmetrised by default
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    first = trainer.evaluate()
    trainer.train()
    last = trainer.evaluate()
    assert [e["loss"] for e in trainer.state.log_history if "loss" in e]
    changed = [n for n, p in trainer.model.named_parameters() if n in before and not torch.equal(before[n], p)]
    assert sorted(changed) == sorted(before)
    assert last["eval_loss"] < first["eval_loss"] and last["eval_bce"] == pytest.approx(last["eval_loss"], rel=1e-4)
    assert last["eval_accuracy"] >= min_accuracy

    trainer.save_model(str(tmp_path / "judge"))
    assert "BCE-with-logits against the soft label" in (tmp_path / "judge" / "README.md").read_text()
    hparams = trainer.hyperparameters()  # the card asks the trainer: its own knobs, not the pointwise ones
    assert hparams["symmetrize"] is True and "loss_type" not in hparams and "target_transform" not in hparams
    scorer = PairwiseScorer(str(tmp_path / "judge"), device="cpu")
    p = scorer.predict(data["query"], data["doc_a"], data["doc_b"], batch_size=5)
    q = scorer.predict(data["query"], data["doc_b"], data["doc_a"], batch_size=7)
    np.testing.assert_allclose(p, 1.0 - q, atol=1e-6)
    assert np.mean((p > 0.5) == (np.asarray(data["prob_a"]) > 0.5)) >= min_accuracy


@pytest.mark.parametrize(
    ("value", "match"), [(1.5, r"prob_a` must be finite in \[0.0, 1.0\] \(got 1.5"), (float("nan"), "got nan")]
)
def test_bad_probabilities_raise(tmp_path, tiny_bert_path, value, match):
    rows = preference_rows()
    rows["prob_a"][2] = value
    with pytest.raises(ValueError, match=match):
        PairwiseTrainer(tiny_bert_path, args=config(tmp_path), train_dataset=Dataset.from_dict(rows))
    rows = preference_rows()
    rows["doc_b"][0] = ""
    with pytest.raises(ValueError, match="`doc_b` is empty"):
        PairwiseTrainer(tiny_bert_path, args=config(tmp_path), train_dataset=Dataset.from_dict(rows))
