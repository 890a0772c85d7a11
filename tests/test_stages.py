"""The resumable-stage engine (``zelo_hf.stages``): markers written last, skips, reruns of stale stages, crashes."""

from __future__ import annotations

import json

import pytest

from zelo_hf.stages import MARKER, StageRunner, config_hash, read_marker, write_json_atomic


class Counter:
    """A stage function that records its calls and writes an artifact."""

    def __init__(self, name: str):
        self.name, self.calls = name, 0

    def __call__(self, stage_dir):
        self.calls += 1
        (stage_dir / "artifact.txt").write_text(f"{self.name} {self.calls}")
        return {"calls": self.calls}


def run_two(tmp_path, a_cfg, b_cfg, a: Counter, b: Counter):
    runner = StageRunner(tmp_path)
    runner.run("a", a_cfg, a)
    runner.run("b", b_cfg, b, depends=("a",))
    return runner


def test_stage_writes_artifact_and_marker_last(tmp_path):
    a, b = Counter("a"), Counter("b")
    runner = run_two(tmp_path, {"x": 1}, {"y": 1}, a, b)
    assert runner.ran == ["a", "b"] and runner.skipped == []
    marker = read_marker(tmp_path / "a")
    assert marker["stage"] == "a" and marker["summary"] == {"calls": 1} and marker["config"] == {"x": 1}
    assert marker["config_hash"] == runner.hashes["a"]
    assert (tmp_path / "a" / "artifact.txt").read_text() == "a 1"
    assert not list(tmp_path.glob("**/.*.tmp")), "temporary marker files must be renamed away"


def test_rerun_skips_completed_stages(tmp_path):
    a, b = Counter("a"), Counter("b")
    run_two(tmp_path, {"x": 1}, {"y": 1}, a, b)
    before = (tmp_path / "b" / MARKER).read_text()
    runner = run_two(tmp_path, {"x": 1}, {"y": 1}, a, b)
    assert (a.calls, b.calls) == (1, 1)
    assert runner.skipped == ["a", "b"] and runner.ran == []
    assert (tmp_path / "b" / MARKER).read_text() == before


def test_changed_config_reruns_that_stage_and_downstream_only(tmp_path):
    a, b = Counter("a"), Counter("b")
    run_two(tmp_path, {"x": 1}, {"y": 1}, a, b)
    runner = run_two(tmp_path, {"x": 1}, {"y": 2}, a, b)  # only b's settings change
    assert (a.calls, b.calls) == (1, 2) and runner.ran == ["b"]
    runner = run_two(tmp_path, {"x": 2}, {"y": 2}, a, b)  # a changes: b is stale too (its upstream hash moved)
    assert (a.calls, b.calls) == (2, 3) and runner.ran == ["a", "b"]


def test_crash_leaves_no_marker_and_the_rerun_starts_clean(tmp_path):
    def crash(stage_dir):
        (stage_dir / "half.txt").write_text("partial")
        raise RuntimeError("killed mid-stage")

    runner = StageRunner(tmp_path)
    with pytest.raises(RuntimeError, match="killed mid-stage"):
        runner.run("a", {"x": 1}, crash)
    assert read_marker(tmp_path / "a") is None
    a = Counter("a")
    StageRunner(tmp_path).run("a", {"x": 1}, a)
    assert a.calls == 1 and not (tmp_path / "a" / "half.txt").exists()


def test_corrupt_marker_counts_as_incomplete(tmp_path):
    a = Counter("a")
    StageRunner(tmp_path).run("a", {"x": 1}, a)
    (tmp_path / "a" / MARKER).write_text("{not json")
    StageRunner(tmp_path).run("a", {"x": 1}, a)
    assert a.calls == 2


def test_stage_order_is_enforced(tmp_path):
    with pytest.raises(RuntimeError, match="depends on \\['a'\\]"):
        StageRunner(tmp_path).run("b", {}, Counter("b"), depends=("a",))


def test_config_hash_ignores_key_order_and_atomic_json(tmp_path):
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})
    write_json_atomic(tmp_path / "x.json", {"k": 1})
    assert json.loads((tmp_path / "x.json").read_text()) == {"k": 1}
