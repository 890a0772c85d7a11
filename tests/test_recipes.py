"""The recipes end to end, in-process, with a tiny BERT and a few Cranfield queries (offline, CPU, seconds).

One module-scoped run of ``recipes/zerank.py`` (every stage, the pairwise stage included) feeds the tests: its
artifacts, a rerun that must skip everything (the judge is not called again), changed settings that must rerun
exactly the affected stages, the push stage, and the zembed / pairwise recipes on its outputs.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from zelo_hf.utils import scrub_paths

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
STAGES = ["candidates", "preferences", "pairwise", "pairwise_preferences", "labels", "calibration", "pointwise",
          "zembed", "evaluation"]


def load_recipe(name: str):
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def zerank_args(model_path: str, output_dir: Path, *flags: str):
    """Parse tiny settings through the recipe's own parser (as `accelerate launch recipes/zerank.py ...` would)."""
    argv = [
        "--dataset_name", "cranfield", "--dataset_split", "test", "--eval_split", "test",
        "--num_train_queries", "6", "--num_pairwise_queries", "3", "--num_eval_queries", "4",
        "--top_k", "6", "--eval_top_k", "8", "--graph_degree", "2", "--calibration_cycles", "1",
        "--pairwise_model_name_or_path", model_path, "--pairwise_max_length", "96",
        "--pairwise_per_device_train_batch_size", "8", "--pairwise_learning_rate", "1e-3", "--eval_batch_size", "16",
        "--model_name_or_path", model_path, "--output_dir", str(output_dir),
        "--max_length", "64", "--max_query_length", "16", "--num_train_epochs", "16",
        "--per_device_train_batch_size", "8", "--learning_rate", "3e-3", "--logging_steps", "1",
        "--save_strategy", "no", "--report_to", "none", "--use_cpu", "true", "--seed", "0",
        "--target_transform", "standardize", "--dev_query_fraction", "0.34", "--seeds", "0", "1",
        "--zembed_num_train_epochs", "2", "--zembed_learning_rate", "1e-3", "--zembed_batch_size", "2",
        "--random_orderings", "3", "--pairwise_min_agreement", "0.0", *flags,
    ]  # fmt: skip
    return load_recipe("zerank").make_parser().parse_args_and_config(argv)


class JudgeSpy:
    """Counts the simulated judge's votes (wraps the real acompare_many)."""

    def __init__(self, monkeypatch):
        from zelo_hf.judging.local import SimulatedJudge

        self.votes = 0
        real = SimulatedJudge.acompare_many

        async def spy(judge, comparisons, concurrency=64):
            self.votes += len(comparisons)
            return await real(judge, comparisons, concurrency)

        monkeypatch.setattr(SimulatedJudge, "acompare_many", spy)


def markers(output_dir: Path) -> dict[str, str]:
    return {p.parent.name: p.read_text() for p in sorted(output_dir.glob("*/_COMPLETE.json"))}


@pytest.fixture(scope="module")
def zerank_run(tiny_bert_path, tmp_path_factory):
    """One full run of the zerank recipe; returns (output_dir, result, judge votes)."""
    output_dir = tmp_path_factory.mktemp("zerank") / "run"
    with pytest.MonkeyPatch.context() as mp:
        spy = JudgeSpy(mp)
        result = load_recipe("zerank").main(*zerank_args(tiny_bert_path, output_dir))
    return output_dir, result, spy.votes


def test_zerank_writes_every_stage_artifact(zerank_run):
    from datasets import load_dataset

    from zelo_hf.hub import load_split

    output_dir, result, votes = zerank_run
    assert result["ran"] == STAGES and result["skipped"] == []
    assert sorted(markers(output_dir)) == sorted(STAGES)
    assert votes > 0
    cands = {s: load_split(output_dir / "candidates", s) for s in ("train", "pairwise", "eval")}
    assert [len(c) for c in cands.values()] == [6, 3, 4]
    assert all(len(d) == 6 for d in cands["train"]["doc_ids"]) and all(len(d) == 8 for d in cands["eval"]["doc_ids"])
    assert not set(cands["train"]["query_id"]) & set(cands["eval"]["query_id"])
    # preference sets: a degree-2 graph over 6 documents has 6 edges per query
    prefs = load_dataset(str(output_dir / "preferences"), split="train")
    assert len(prefs) == 6 * 6 and {"prob_a", "votes", "doc_a_id"} <= set(prefs.column_names)
    assert "zelo" in (output_dir / "preferences" / "README.md").read_text()
    assert (output_dir / "preferences.judgments.sqlite").exists()  # judgment cache: next to the stage, not in it
    assert len(load_split(output_dir / "pairwise_preferences", "train")) == 3 * 6
    assert (output_dir / "pairwise" / "model" / "config.json").exists()
    labels = load_split(output_dir / "labels", "train")
    assert len(labels) == 9 and all(np.isfinite(e).all() for e in labels["elo"])  # 6 judged + 3 pairwise queries
    calibrated = load_split(output_dir / "calibration", "train")
    for row in calibrated:
        assert np.allclose(row["score"], np.asarray(row["elo"]) + row["offset"])
    assert (output_dir / "calibration" / "README.md").exists()
    assert (output_dir / "pointwise" / "model" / "README.md").exists()
    assert (output_dir / "pointwise" / "seeds" / "seed-1" / "config.json").exists()  # one model per seed
    for seed_dir in ("model", "seeds/seed-1"):
        assert (output_dir / "zembed" / seed_dir / "router_config.json").exists()
    card = (output_dir / "zembed" / "model" / "README.md").read_text()  # written with the evaluation table
    assert "| zembed (query-side bi-encoder, listwise KL) | trained |" in card and "| random order | random |" in card
    assert "encode_query" in card


def test_zerank_reports_every_baseline_and_seed(zerank_run):
    output_dir, result, _ = zerank_run
    rows = result["rows"]
    assert [(r["model"], r["kind"]) for r in rows] == [
        ("bm25", "first_stage"), ("random order", "random"), ("base model untrained (its own cross-encoder head)", "base"),
        ("zELO reranker (cross-encoder, MSE)", "trained"), ("zembed (query-side bi-encoder, listwise KL)", "trained"),
    ]
    for row in rows:
        assert row["queries"] == 4 and 0.0 <= row["ndcg@10"] <= 1.0 and 0.0 <= row["mrr@10"] <= 1.0
        assert {"ndcg@10_sd", "seeds", "recall@8"} <= set(row) and "recall@100" not in row  # named by depth scored
    assert rows[0]["recall@8"] == pytest.approx(rows[3]["recall@8"])  # reranking keeps the candidate set
    assert rows[1]["seeds"] == [0, 1, 2] and len(rows[1]["ndcg@10_per_seed"]) == 3
    for trained in rows[3:]:
        assert trained["seeds"] == [0, 1] and trained["ndcg@10_sd"] == pytest.approx(
            np.std(trained["ndcg@10_per_seed"], ddof=1), abs=1e-4)
    saved = json.loads((output_dir / "evaluation" / "results.json").read_text())
    assert saved["rows"] == rows
    assert "| zELO reranker (cross-encoder, MSE) |" in (output_dir / "evaluation" / "results.md").read_text()
    for png in ("score_distributions.png", "metrics.png"):
        assert (output_dir / "evaluation" / png).read_bytes()[:4] == b"\x89PNG"


def test_the_trained_reranker_learned_the_labels(zerank_run):
    """The tiny reranker's training loss fell (the pointwise stage's summary comes from the trainer)."""
    output_dir, _, _ = zerank_run
    marker = json.loads((output_dir / "pointwise" / "_COMPLETE.json").read_text())
    summary = marker["summary"]
    assert summary["rows"] == 6 * 6 and summary["steps"] > 0  # 9 labelled queries, 3 of them dev
    assert summary["last_loss"] < summary["first_loss"]


def test_pairwise_model_reports_held_out_agreement_next_to_its_base(zerank_run):
    output_dir, _, _ = zerank_run
    summary = json.loads((output_dir / "pairwise" / "_COMPLETE.json").read_text())["summary"]
    from zelo_hf.data import split_by_query
    from zelo_hf.hub import load_split

    assert summary["held_out_rows"] == 6 and summary["rows"] == 5 * 6  # one of 6 judged queries held out
    _, held_out = split_by_query(load_split(output_dir / "preferences", "train"), 0.2, 0 + 4)  # the stage's draw
    confident = int(np.sum(np.abs(np.asarray(held_out["prob_a"]) - 0.5) >= 0.3))
    assert summary["confident_pairs"] == confident
    if confident:  # agreement is measured on the pairs the judges are sure of, and only there
        assert 0.0 <= summary["agreement"] <= 1.0 and 0.0 <= summary["base_agreement"] <= 1.0
    else:
        assert np.isnan(summary["agreement"])
    card = (output_dir / "pairwise" / "model" / "README.md").read_text()
    assert "eval_agreement" in card and "base_agreement" in card


def test_a_pairwise_model_below_the_agreement_threshold_judges_nothing():
    from zelo_hf.pipelines.zerank_stages import check_pairwise_agreement

    with pytest.raises(ValueError, match=r"agreement with the judges is 0.55 .* below pairwise_min_agreement=0.7"):
        check_pairwise_agreement({"agreement": 0.55, "confident_pairs": 40, "base_agreement": 0.5}, 0.7)
    with pytest.raises(ValueError, match="agreement with the judges is None"):  # never measured: refused too
        check_pairwise_agreement({}, 0.7)
    check_pairwise_agreement({"agreement": 0.8}, 0.7)
    check_pairwise_agreement({"agreement": float("nan")}, 0.0)  # 0 turns the check off


def test_rerun_skips_everything_and_judges_nothing(zerank_run, tiny_bert_path, monkeypatch):
    output_dir, first, _ = zerank_run
    before = markers(output_dir)
    spy = JudgeSpy(monkeypatch)
    result = load_recipe("zerank").main(*zerank_args(tiny_bert_path, output_dir))
    assert spy.votes == 0
    assert result["ran"] == [] and result["skipped"] == STAGES
    assert markers(output_dir) == before
    assert result["rows"] == first["rows"]


LOOP_STAGES = ["loop_preferences", "loop_labels", "loop_calibration", "loop_zembed", "evaluation"]


def test_the_loop_round_judges_only_new_pairs_and_retrains(zerank_run, tiny_bert_path, tmp_path, monkeypatch,
                                                           capsys):
    """Turning the reranker-in-the-loop round on runs only its stages: the chosen pairs are judged (never a pair of
    the first round; at most the per-query budget), recalibration is answered from the cache, the rerun bills
    nothing, and the random control judges as many pairs per query."""
    import shutil

    from zelo_hf.hub import load_split
    from zelo_hf.loop import judged_pairs

    output_dir = tmp_path / "run"
    shutil.copytree(zerank_run[0], output_dir)
    flags = ("--loop_pairs_per_query", "4", "--loop_top_k", "3")
    import zelo_hf.pipelines.zerank_stages as stages
    from zelo_hf.calibration import sample_cross_query_pairs

    drawn = []
    monkeypatch.setattr(stages, "sample_cross_query_pairs",
                        lambda *a, **k: drawn.append(sample_cross_query_pairs(*a, **k)) or drawn[-1])
    spy = JudgeSpy(monkeypatch)
    result = load_recipe("zerank").main(*zerank_args(tiny_bert_path, output_dir, *flags))
    assert result["ran"] == LOOP_STAGES
    loop = load_split(output_dir / "loop_preferences", "train")
    summary = json.loads((output_dir / "loop_preferences" / "_COMPLETE.json").read_text())["summary"]
    # recalibration asks the first round's cross-query pairs again (a paid judge answers them from the cache)
    first_pairs = sample_cross_query_pairs(load_split(output_dir / "labels", "train"), n_cycles=1, seed=0)
    assert len(drawn) == 1 and drawn[0].to_dict() == first_pairs.to_dict()
    assert spy.votes == len(loop) + len(first_pairs) and len(loop) == summary["loop_pairs"] > 0
    first = judged_pairs(load_split(output_dir / "preferences", "train"))
    for name, pairs in judged_pairs(load_split(output_dir / "pairwise_preferences", "train")).items():
        first.setdefault(name, set()).update(pairs)
    new = judged_pairs(loop)
    assert all(not (pairs & first.get(q, set())) for q, pairs in new.items())
    per_query = {q: len(p) for q, p in new.items()}
    assert max(per_query.values()) <= 4 and sum(per_query.values()) == len(loop)
    labels = load_split(output_dir / "loop_labels", "train")
    prefs = len(load_split(output_dir / "preferences", "train")) + len(load_split(output_dir / "pairwise_preferences",
                                                                                  "train"))
    assert sum(len(a) for a in labels["pair_a"]) == prefs + len(loop)  # every preference, old and new, was fitted
    assert f"reranker-in-the-loop round: +{len(loop)} disagreement pairs" in capsys.readouterr().out
    row = result["rows"][-1]
    assert row["model"] == f"zembed (query-side bi-encoder, listwise KL) + loop round (+{len(loop)} disagreement pairs)"
    assert row["kind"] == "trained" and row["seeds"] == [0, 1] and row["queries"] == 4
    again = JudgeSpy(monkeypatch)
    assert load_recipe("zerank").main(*zerank_args(tiny_bert_path, output_dir, *flags))["ran"] == []
    assert again.votes == 0
    control = load_recipe("zerank").main(*zerank_args(tiny_bert_path, output_dir, *flags, "--loop_selection", "random"))
    assert control["ran"] == LOOP_STAGES
    random_pairs = judged_pairs(load_split(output_dir / "loop_preferences", "train"))
    assert {q: len(p) for q, p in random_pairs.items()} == per_query
    assert all(not (pairs & first.get(q, set())) for q, pairs in random_pairs.items())


def test_changed_settings_rerun_only_the_affected_stages(zerank_run, tiny_bert_path, monkeypatch):
    output_dir, _, _ = zerank_run
    before = markers(output_dir)
    spy = JudgeSpy(monkeypatch)
    result = load_recipe("zerank").main(*zerank_args(tiny_bert_path, output_dir, "--learning_rate", "5e-4"))
    assert spy.votes == 0 and result["ran"] == ["pointwise", "evaluation"]  # zembed does not read that setting
    after = markers(output_dir)
    assert {k for k in after if after[k] != before[k]} == {"pointwise", "evaluation"}
    # calibration changes: new cross-query pairs are judged, labels/preferences stay
    result = load_recipe("zerank").main(*zerank_args(tiny_bert_path, output_dir, "--learning_rate", "5e-4",
                                                     "--calibration_cycles", "2"))
    assert result["ran"] == ["calibration", "pointwise", "zembed", "evaluation"] and spy.votes > 0


def test_push_stage_uploads_every_artifact_once(zerank_run, tiny_bert_path, monkeypatch):
    import zelo_hf.hub

    output_dir, _, _ = zerank_run
    calls = []
    monkeypatch.setattr(zelo_hf.hub, "push_folder", lambda folder, repo_id, **kw: calls.append((Path(folder), repo_id,
                                                                                               kw["repo_type"])))
    flags = ["--learning_rate", "5e-4", "--calibration_cycles", "2", "--push_to_hub", "true", "--hub_model_id",
             "me/zerank-tiny", "--preference_set_repo_id", "me/prefs", "--label_set_repo_id", "me/labels",
             "--pairwise_model_repo_id", "me/pairwise"]
    result = load_recipe("zerank").main(*zerank_args(tiny_bert_path, output_dir, *flags))
    assert result["ran"] == ["push"]
    assert sorted((folder.relative_to(output_dir).as_posix(), repo, kind) for folder, repo, kind in calls) == [
        ("calibration", "me/labels", "dataset"),
        ("pairwise/model", "me/pairwise", "model"),
        ("pointwise/model", "me/zerank-tiny", "model"),
        ("preferences", "me/prefs", "dataset"),
    ]
    calls.clear()
    assert load_recipe("zerank").main(*zerank_args(tiny_bert_path, output_dir, *flags))["ran"] == []
    assert calls == []


@pytest.mark.parametrize("loss", ["margin_mse", "kl_div"])
def test_zembed_distils_a_bi_encoder(zerank_run, tiny_bert_path, tmp_path, loss):
    import torch
    from sentence_transformers import SentenceTransformer

    output_dir, _, _ = zerank_run
    teacher = output_dir / "pointwise" / "model"
    argv = ["--teacher_model", str(teacher), "--candidates_path", str(output_dir / "candidates"),
            "--dataset_name", "cranfield", "--dataset_split", "test", "--eval_split", "test", "--top_k", "6",
            "--loss", loss, "--num_negatives", "3", "--triples_per_query", "4", "--positive_pool", "2",
            "--model_name_or_path", tiny_bert_path, "--output_dir", str(tmp_path), "--num_train_epochs", "2",
            "--per_device_train_batch_size", "4", "--learning_rate", "1e-3", "--logging_steps", "1",
            "--save_strategy", "no", "--report_to", "none", "--use_cpu", "true", "--max_seq_length", "64"]
    recipe = load_recipe("zembed")
    result = recipe.main(*recipe.make_parser().parse_args_and_config(argv))
    assert [r["model"] for r in result["rows"]] == ["bm25", "student (before)", "zembed (after)", "teacher reranker"]
    assert result["train_rows"] == (6 * 4 if loss == "margin_mse" else 6) and result["losses"]
    student = SentenceTransformer(result["output_dir"])
    base = SentenceTransformer(tiny_bert_path)
    # every parameter on the embedding path moved (BERT's pooler is not used by mean pooling: no gradient)
    unchanged = [n for (n, p), q in zip(student.named_parameters(), base.parameters()) if torch.equal(p, q)]
    assert unchanged and all("pooler" in n for n in unchanged)
    card = (Path(result["output_dir"]) / "README.md").read_text()
    assert loss in card and scrub_paths(str(teacher)) in card and "zembed (after)" in card  # no machine path


def test_zembed_distils_the_label_set_directly(zerank_run, tiny_bert_path, tmp_path):
    """teacher_labels: the calibrated scores are the teacher (no reranker pass); its 9 queries x 6 documents."""
    from zelo_hf.hub import load_split
    from zelo_hf.pipelines.zembed import label_set_teacher

    output_dir, _, _ = zerank_run
    labels = output_dir / "calibration"
    candidates, scores = label_set_teacher(str(labels))
    calibrated = load_split(labels, "train")
    assert scores == [list(row["score"]) for row in calibrated] and len(candidates) == 9
    argv = ["--teacher_labels", str(labels), "--evaluate_teacher", "false",
            "--candidates_path", str(output_dir / "candidates"), "--dataset_name", "cranfield",
            "--dataset_split", "test", "--eval_split", "test", "--top_k", "6", "--loss", "margin_mse",
            "--triples_per_query", "4", "--positive_pool", "2", "--model_name_or_path", tiny_bert_path,
            "--output_dir", str(tmp_path), "--num_train_epochs", "1", "--per_device_train_batch_size", "4",
            "--learning_rate", "1e-3", "--logging_steps", "1", "--save_strategy", "no", "--report_to", "none",
            "--use_cpu", "true", "--max_seq_length", "64"]  # fmt: skip
    recipe = load_recipe("zembed")
    result = recipe.main(*recipe.make_parser().parse_args_and_config(argv))
    assert [r["model"] for r in result["rows"]] == ["bm25", "student (before)", "zembed (after)"]
    assert result["train_rows"] == 9 * 4 and result["losses"]
    card = (Path(result["output_dir"]) / "README.md").read_text()
    assert "distilled from the zELO label set" in card and scrub_paths(str(labels)) in card


def test_zembed_refuses_labels_that_hold_the_evaluation_queries(zerank_run, tiny_bert_path, tmp_path, monkeypatch):
    import zelo_hf.pipelines.zembed as distill
    from zelo_hf.hub import load_split

    output_dir, _, _ = zerank_run
    train, _, qrels = distill.zembed_candidates(
        distill.DistillArguments(candidates_path=str(output_dir / "candidates"), dataset_name="cranfield",
                                 dataset_split="test", eval_split="test", top_k=6)
    )  # fmt: skip
    leaking = load_split(output_dir / "calibration", "train").select(range(1))  # one labelled query evaluated
    monkeypatch.setattr(distill, "zembed_candidates", lambda args: (train, leaking, qrels))
    argv = ["--teacher_labels", str(output_dir / "calibration"), "--dataset_name", "cranfield", "--top_k", "6",
            "--model_name_or_path", tiny_bert_path, "--output_dir", str(tmp_path), "--use_cpu", "true"]
    recipe = load_recipe("zembed")
    with pytest.raises(ValueError, match="holds 1 evaluation queries"):
        recipe.main(*recipe.make_parser().parse_args_and_config(argv))


@pytest.mark.parametrize("architecture", ["cross_encoder", "bi_encoder"])
def test_pairwise_recipe_trains_and_evaluates(zerank_run, tiny_bert_path, tmp_path, architecture):
    output_dir, _, _ = zerank_run
    argv = ["--preference_set", str(output_dir / "preferences"), "--eval_query_fraction", "0.34",
            "--model_name_or_path", tiny_bert_path, "--output_dir", str(tmp_path), "--max_length", "96",
            "--max_query_length", "16", "--num_train_epochs", "1", "--per_device_train_batch_size", "8",
            "--learning_rate", "1e-3", "--report_to", "none", "--use_cpu", "true", "--save_strategy", "no",
            "--architecture", architecture, "--dev_query_fraction", "0.25"]
    recipe = load_recipe("pairwise")
    result = recipe.main(*recipe.make_parser().parse_args_and_config(argv))
    assert result["eval_rows"] == 2 * 6 and result["train_rows"] == 4 * 6
    assert {"base_agreement", "eval_agreement"} <= set(result["before"]) | set(result["after"])
    saved = Path(result["output_dir"])
    if architecture == "cross_encoder":
        assert "base_loss" in result["before"] and "eval_loss" in result["after"]
        assert (saved / "config.json").exists()
    else:  # a sentence-transformers folder that load_pairwise_scorer reads, with the held-out table on its card
        assert "base_bce" in result["before"] and "eval_bce" in result["after"]
        assert json.loads((saved / "zelo_pairwise.json").read_text())["architecture"] == "bi_encoder"
        assert "| agreement |" in (saved / "README.md").read_text()
