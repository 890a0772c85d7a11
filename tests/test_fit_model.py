"""One fit-model vocabulary (`zelo_hf.thurstone.FIT_MODELS`) for the recipe's `link`, `fit_raters` and both CLI
commands (issue #9): a bad value fails at start-up, before anything is judged, and Bradley-Terry reaches the fit."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from zelo_hf.thurstone import FIT_MODELS, check_fit_model

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def _zerank_parser():
    spec = importlib.util.spec_from_file_location("recipe_zerank_fit_model", RECIPES / "zerank.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_parser()


def test_one_vocabulary_everywhere():
    from zelo_hf.commands.calibrate import CalibrateArguments
    from zelo_hf.commands.fit import FitArguments
    from zelo_hf.pipelines.zerank_args import ZerankArguments

    for args in (FitArguments, CalibrateArguments):
        assert tuple(args.__dataclass_fields__["model"].metadata["choices"]) == FIT_MODELS
    assert tuple(ZerankArguments.__dataclass_fields__["link"].metadata["choices"]) == FIT_MODELS
    for model in FIT_MODELS:
        assert check_fit_model(model) == model
        assert ZerankArguments(link=model).link == model


@pytest.mark.parametrize("bad", ["logistic", "probit", "Thurstone"])
def test_a_bad_link_fails_at_start_up_naming_the_field(bad):
    from zelo_hf.pipelines.zerank_args import ZerankArguments

    with pytest.raises(ValueError, match=r"`link` must be one of \('thurstone', 'bradley-terry'\).*got link="):
        ZerankArguments(link=bad)


def test_logistic_is_pointed_to_bradley_terry():
    with pytest.raises(ValueError, match="a logistic F is 'bradley-terry'"):
        check_fit_model("logistic", "link")


def test_a_recipe_config_with_a_bad_link_judges_nothing(tmp_path):
    """Before the fix `link: logistic` passed start-up, every pair was judged, then the labels stage failed."""
    config = tmp_path / "bad.yaml"
    config.write_text(f"dataset_name: cranfield\ndataset_split: test\nlink: logistic\noutput_dir: {tmp_path / 'run'}\n"
                      "report_to: none\n")
    with pytest.raises(ValueError, match="`link` must be one of"):
        _zerank_parser().parse_args_and_config(["--config", str(config)])
    assert not (tmp_path / "run").exists()  # no stage folder, no judgment cache: zero judge calls


def test_raters_refuse_an_unknown_model_before_fitting():
    from zelo_hf.raters import fit_raters

    votes = {"a": np.array([0]), "b": np.array([1]), "judge": np.array([0]), "prob_a": np.array([0.7]),
             "swapped": np.array([False])}
    with pytest.raises(ValueError, match=r"`model` must be one of \('thurstone', 'bradley-terry'\)"):
        fit_raters(votes, model="logistic")
    assert fit_raters(votes, model="thurstone") is not None


def test_bradley_terry_reaches_the_recipes_labels_stage(tmp_path):
    """Before the fix `link: bradley-terry` was refused at start-up: Bradley-Terry was unreachable from the recipe."""
    from zelo_hf.hub import load_split
    from zelo_hf.pipelines.zerank_args import ZerankArguments
    from zelo_hf.pipelines.zerank_stages import stage_candidates, stage_labels, stage_preferences

    args = ZerankArguments(dataset_name="cranfield", dataset_split="test", eval_split="test", num_train_queries=3,
                           num_eval_queries=2, top_k=6, eval_top_k=6, graph_degree=2, link="bradley-terry")
    for stage in ("candidates", "preferences", "labels"):
        (tmp_path / stage).mkdir()
    stage_candidates(args, tmp_path / "candidates")
    stage_preferences(args, tmp_path, tmp_path / "preferences")
    summary = stage_labels(args, tmp_path, tmp_path / "labels")
    labels = load_split(tmp_path / "labels", "train")
    assert summary["n_queries"] == 3 and all(labels["converged"])
    assert "bradley-terry" in (tmp_path / "labels" / "README.md").read_text()


@pytest.mark.parametrize(("model", "match"), [(None, "`model_name_or_path` is required"),
                                              ("./no-such-model-folder", "path does not exist")])
def test_a_missing_model_fails_before_any_stage_runs(tmp_path, model, match):
    """The pointwise stage comes after judging: its model is checked at start-up, so nothing is judged in vain."""
    from trl import ModelConfig

    from zelo_hf.pipelines.zerank import run_zerank
    from zelo_hf.pipelines.zerank_args import ZerankArguments
    from zelo_hf.trainer import PointwiseConfig

    args = ZerankArguments(dataset_name="cranfield", dataset_split="test", eval_split="test", num_train_queries=3,
                           num_eval_queries=2, top_k=6, eval_top_k=6, graph_degree=2)
    training_args = PointwiseConfig(output_dir=str(tmp_path / "run"), report_to="none", use_cpu=True)
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        run_zerank(args, training_args, ModelConfig(model_name_or_path=model))
    assert not (tmp_path / "run" / "candidates").exists() and not (tmp_path / "run" / "preferences").exists()


def test_the_library_steps_refuse_a_bad_model_before_any_work():
    from datasets import Dataset

    from zelo_hf.calibration import calibrate_labels
    from zelo_hf.labeling import label_preferences

    empty = Dataset.from_dict({"query_id": []})  # would fail later, on its columns: the model is checked first
    with pytest.raises(ValueError, match=r"`model` must be one of \('thurstone', 'bradley-terry'\)"):
        label_preferences(empty, model="logistic")
    with pytest.raises(ValueError, match=r"`model` must be one of \('thurstone', 'bradley-terry'\)"):
        calibrate_labels(empty, empty, model="probit")
