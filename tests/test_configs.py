"""Every YAML under recipes/ parses with its recipe's own parser (catches drift between YAML keys and dataclasses)."""

from __future__ import annotations

import dataclasses
import importlib.util
import typing
from pathlib import Path

import pytest
import yaml

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
CONFIGS = sorted((RECIPES / "configs").glob("*.yaml"))
ACCELERATE_CONFIGS = sorted((RECIPES / "accelerate_configs").glob("*.yaml"))


def load_recipe(name: str):
    """Import ``recipes/<name>.py`` (recipes are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def recipe_for(config: Path) -> str:
    """``zembed*.yaml`` -> zembed.py, ``pairwise*.yaml`` -> pairwise.py, everything else -> zerank.py."""
    for name in ("zembed", "pairwise"):
        if config.stem.startswith(name):
            return name
    return "zerank"


def _accepts(annotation, value) -> bool:
    """Whether a YAML value has the type a dataclass field declares (YAML 1.1 reads `5e-5` as a string)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return any(_accepts(arg, value) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is typing.Any:
        return True
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple))
    if origin is dict:
        return isinstance(value, dict)
    if isinstance(annotation, type):
        # enums (e.g. IntervalStrategy) and other classes accept their string form
        return isinstance(value, annotation) or isinstance(value, str)
    return True


def test_every_recipe_has_configs():
    assert CONFIGS, "no YAML under recipes/configs"
    assert {recipe_for(c) for c in CONFIGS} == {"zerank", "zembed", "pairwise"}
    assert {c.stem for c in ACCELERATE_CONFIGS} >= {"cpu", "ddp", "zero2", "zero3"}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_config_parses_with_its_recipe(config):
    import torch

    recipe = load_recipe(recipe_for(config))
    parser = recipe.make_parser()
    raw = yaml.safe_load(config.read_text())
    # GPU recipes ask for bf16, which TrainingArguments refuses on a CPU-only machine: override the flag there
    overrides = ["--bf16", "false"] if raw.get("bf16") and not torch.cuda.is_available() else []
    parsed = parser.parse_args_and_config(["--config", str(config), *overrides])
    fields = {}
    for dc in parsed:
        hints = typing.get_type_hints(type(dc))
        fields.update({f.name: (dc, hints[f.name]) for f in dataclasses.fields(dc) if f.init})
    unknown = sorted(set(raw) - set(fields))
    assert not unknown, f"{config.name}: keys not in any dataclass of recipes/{recipe_for(config)}.py: {unknown}"
    for key, value in raw.items():
        dc, annotation = fields[key]
        assert _accepts(annotation, value), f"{config.name}: `{key}: {value!r}` does not fit the type {annotation}"
    output_dir = next(dc.output_dir for dc in parsed if hasattr(dc, "output_dir"))
    assert output_dir.startswith("outputs/"), f"{config.name}: output_dir should live under outputs/ (gitignored)"


def test_flags_override_the_yaml():
    recipe = load_recipe("zerank")
    script_args, training_args, model_args = recipe.make_parser().parse_args_and_config(
        ["--config", str(RECIPES / "configs" / "demo.yaml"), "--top_k", "12", "--learning_rate", "1e-4"]
    )
    assert script_args.top_k == 12 and training_args.learning_rate == 1e-4
    assert script_args.dataset_name == yaml.safe_load((RECIPES / "configs" / "demo.yaml").read_text())["dataset_name"]


def test_unknown_yaml_key_is_refused(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((RECIPES / "configs" / "demo.yaml").read_text() + "\ndataset_mixer: oops\n")
    with pytest.raises(ValueError, match="dataset_mixer"):
        load_recipe("zerank").make_parser().parse_args_and_config(["--config", str(bad)])


@pytest.mark.parametrize("config", ACCELERATE_CONFIGS, ids=lambda p: p.name)
def test_accelerate_config_loads(config):
    from accelerate.commands.config.config_args import load_config_from_file

    cluster = load_config_from_file(str(config))
    assert cluster.num_machines == 1 and cluster.num_processes >= 1
    if config.stem == "cpu":
        assert cluster.use_cpu and cluster.num_processes == 1
    if config.stem.startswith("zero"):
        assert cluster.deepspeed_config["zero_stage"] == int(config.stem[-1])
