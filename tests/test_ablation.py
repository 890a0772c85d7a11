"""Smoke test of eval/ablation.py: every arm end to end on Cranfield with a tiny model and tiny sizes."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("pytrec_eval")
pytest.importorskip("bm25s")

ROOT = Path(__file__).resolve().parents[1]


def _load_ablation():
    spec = importlib.util.spec_from_file_location("zelo_ablation", ROOT / "eval" / "ablation.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ablation():
    return _load_ablation()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A random 2-layer BERT (hidden 32) with a tokenizer trained on the fly, saved as a plain encoder."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from tokenizers.processors import TemplateProcessing
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    from zelo_hf.data import load_retrieval_data

    data = load_retrieval_data("cranfield")
    texts = [data.doc_text(d) for d in list(data.corpus)[:300]] + list(data.queries.values())
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=800, special_tokens=specials))
    tok.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_max_length=64,
    )  # fmt: skip
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=64)  # fmt: skip
    path = tmp_path_factory.mktemp("tiny_bert")
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def _args(ablation, tiny_model, out, **overrides):
    settings = dict(
        datasets=["cranfield"], model_name_or_path=tiny_model, output_dir=str(out), seeds=[0, 1],
        num_train_queries=4, num_eval_queries=3, judge_depth=10, train_depth=4, eval_depth=8, degree=4,
        cross_cycles=1, max_length=32, max_query_length=8, epochs=1, batch_size=16, eval_batch_size=64, device="cpu",
    )  # fmt: skip
    settings.update(overrides)
    return ablation.AblationArguments(**settings)


def test_ablation_smoke(ablation, tiny_model, tmp_path):
    args = _args(ablation, tiny_model, tmp_path)
    results = ablation.main(args)
    rows = results["datasets"]["cranfield"]["rows"]
    systems = [r["system"] for r in rows]
    assert systems[:3] == ["BM25 (first stage)", "random order (10 shuffles)", "base model untrained (bi-encoder cosine)"]
    assert [r["kind"] for r in rows] == ["first_stage", "random", "base"] + ["trained"] * 5
    assert systems[3:] == [ablation.ARM_NAMES[a] for a in ("zelo", "binary", "contrastive", "dense", "uncalibrated")]
    by = {r["system"]: r for r in rows}
    zelo, dense = by[ablation.ARM_NAMES["zelo"]], by[ablation.ARM_NAMES["dense"]]
    # cycles: 4 queries x 10 docs x degree 4 / 2 = 80 pairs; dense: 4 x 45 = 180; + the same cross-query pairs
    assert dense["comparisons"] - zelo["comparisons"] == 180 - 80
    assert by[ablation.ARM_NAMES["uncalibrated"]]["comparisons"] == 80  # the graph's pairs, no cross-query ones
    assert by[ablation.ARM_NAMES["binary"]]["comparisons"] == 0
    for row in rows:
        assert 0.0 <= row["ndcg@10"] <= 1.0 and 0.0 <= row["pooled_auc"] <= 1.0
    label_auc = results["datasets"]["cranfield"]["label_pooled_auc"]
    assert set(label_auc) == {"zelo", "dense"} and all(0.0 <= v <= 1.0 for a in label_auc.values() for v in a.values())
    for row in rows[3:]:
        assert len(row["ndcg@10 per seed"]) == 2 and row["train rows"] == 4 * 4
    runs = results["datasets"]["cranfield"]["runs"]
    assert len(runs) == 5 * 2 and all(r["steps"] >= 1 for r in runs)
    markdown = (tmp_path / "results.md").read_text()
    assert "| dataset | system | kind | comparisons |" in markdown and "Target (Cranfield):" in markdown
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["settings"]["judge_depth"] == 10
    assert str(tmp_path) not in written["base_model"]  # the base model's local folder is scrubbed
    # a rerun reuses every cached stage and run: identical numbers, no retraining
    again = ablation.main(args)
    assert again["datasets"]["cranfield"]["rows"] == rows


def test_ablation_zembed_arms_train_the_query_tower(ablation, tiny_model, tmp_path):
    """model_kind zembed: every arm trains the bi-encoder's query tower (dev queries pick the epoch)."""
    args = _args(ablation, tiny_model, tmp_path, model_kind="zembed", num_train_queries=8, dev_query_fraction=0.25,
                 learning_rate=1e-3, batch_size=2, epochs=2)
    results = ablation.main(args)
    runs = results["datasets"]["cranfield"]["runs"]
    assert sorted({r["arm"] for r in runs}) == sorted(ablation.ARMS) and len(runs) == len(ablation.ARMS) * 2
    for run in runs:
        assert run["dev_queries"] == 2 and run["kept_epoch"] in (0.0, 1.0, 2.0) and 0.0 <= run["ndcg@10"] <= 1.0
    zelo = [r for r in runs if r["arm"] == "zelo"]
    assert zelo[0]["train_queries"] == 6 and zelo[0]["steps"] == 2 * 3


def test_zelo_targets_follow_grades(ablation, tiny_model, tmp_path):
    """The fitted, calibrated targets rank judged-relevant training documents above the rest."""
    import numpy as np

    args = _args(ablation, tiny_model, tmp_path, arms=["zelo"])
    train, test, _ = ablation.load_split("cranfield", 4, 3)
    cands = ablation._candidates(train, 10, tmp_path / "c")
    judge = ablation._judge(train.qrels, args, set(test.queries))
    prefs = ablation._preferences(cands, judge, 4, args, tmp_path / "p")
    labels, n_cross = ablation._labels(prefs, judge, args, tmp_path / "l")
    scores = ablation._label_scores(labels)
    ds = ablation._train_rows(cands, train, 10, scores)
    grades = np.array([train.qrels[q].get(d, 0) for q, d in zip(ds["query_id"], ds["doc_id"])])
    targets = np.array(ds["score"])
    assert n_cross > 0 and len(prefs) == 4 * 10 * 4 // 2
    assert targets[grades > 0].mean() > targets[grades == 0].mean() + 0.5
    # the uncalibrated arm's targets are the same scores less each query's calibration offset
    elo = ablation._label_scores(labels, "elo")
    shift = {}
    for (q, d), s in scores.items():
        shift.setdefault(q, set()).add(round(s - elo[(q, d)], 9))
    assert all(len(offsets) == 1 for offsets in shift.values()) and len({min(o) for o in shift.values()}) > 1


def test_held_out_qrels_never_reach_the_judge(ablation, tiny_model, tmp_path):
    args = _args(ablation, tiny_model, tmp_path)
    train, test, _ = ablation.load_split("cranfield", 4, 3)
    with pytest.raises(AssertionError, match="held-out queries' qrels reached the training judge"):
        ablation._judge({**train.qrels, **test.qrels}, args, set(test.queries))
    assert set(train.qrels).isdisjoint(test.queries)


def test_bad_arguments(ablation):
    with pytest.raises(ValueError, match="`arms` must be among"):
        ablation.AblationArguments(arms=["listwise"])
    with pytest.raises(ValueError, match="`train_depth` must be <= `judge_depth`"):
        ablation.AblationArguments(train_depth=50, judge_depth=20)
    with pytest.raises(FileNotFoundError, match="no committed split for dataset 'nfcorpus'"):
        ablation.load_split("nfcorpus")


@pytest.mark.parametrize("path", sorted((ROOT / "eval" / "configs").glob("ablation_*.yaml")), ids=lambda p: p.name)
def test_configs_parse(ablation, path):
    (args,) = ablation.make_parser().parse_args_and_config(["--config", str(path)])
    assert args.seeds and set(args.arms) <= set(ablation.ARMS)
