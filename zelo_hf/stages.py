"""Resumable stages: a stage writes its artifact under ``output_dir/<stage>/`` and a completion marker last.

The marker (``_COMPLETE.json``, written atomically: a temporary file then ``os.replace``) records a hash of the
stage's own settings and of its upstream stages' hashes. A rerun skips a stage whose marker matches, reruns (from
scratch) a stage whose marker is missing or stale, and therefore also reruns everything downstream of a changed stage.
Under ``accelerate launch`` data stages run on the main process only (the others wait at a barrier) and the training
stages run on every process. The pipelines in ``zelo_hf.pipelines`` are built on it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .utils import get_logger, producing_command, redact

logger = get_logger(__name__)

MARKER = "_COMPLETE.json"


def config_hash(config: dict[str, Any]) -> str:
    """A stable short hash of a JSON-able settings dict (key order does not matter)."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def write_json_atomic(path: str | Path, payload: dict[str, Any]) -> None:
    """Write JSON to a temporary file in the same folder and ``os.replace`` it, so readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def read_marker(stage_dir: str | Path) -> dict[str, Any] | None:
    """The completion marker of a stage folder, or None when the stage has not completed."""
    path = Path(stage_dir) / MARKER
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


class StageRunner:
    """Runs named stages under ``output_dir`` and skips those already completed with the same settings.

    ``run(name, config, fn, depends=(...), main_only=True)`` calls ``fn(stage_dir)`` unless ``stage_dir`` holds a
    marker whose hash equals the hash of ``config`` plus the hashes of the ``depends`` stages. ``fn`` returns a
    JSON-able summary stored in the marker. ``main_only`` stages run on the main process while the others wait;
    the other stages (training) run on every process.
    """

    def __init__(self, output_dir: str | Path, state=None):
        from accelerate import PartialState

        self.output_dir = Path(output_dir)
        self.state = state or PartialState()
        self.hashes: dict[str, str] = {}
        self.ran: list[str] = []
        self.skipped: list[str] = []

    def stage_dir(self, name: str) -> Path:
        return self.output_dir / name

    def marker(self, name: str) -> dict[str, Any] | None:
        return read_marker(self.stage_dir(name))

    def run(
        self,
        name: str,
        config: dict[str, Any],
        fn: Callable[[Path], dict[str, Any] | None],
        depends: tuple[str, ...] = (),
        main_only: bool = True,
    ) -> dict[str, Any]:
        missing = [d for d in depends if d not in self.hashes]
        if missing:
            raise RuntimeError(f"stage {name!r} depends on {missing}, which have not run yet: run them first.")
        upstream = {d: self.hashes[d] for d in depends}
        digest = config_hash({"stage": name, "config": config, "upstream": upstream})
        self.state.wait_for_everyone()
        marker = self.marker(name)
        self.state.wait_for_everyone()
        if marker is not None and marker.get("config_hash") == digest:
            self.hashes[name] = digest
            self.skipped.append(name)
            if self.state.is_main_process:
                logger.warning("stage %s: complete with the same settings, skipped (%s)", name, self.stage_dir(name))
            return marker
        summary = self._execute(name, fn, main_only)
        marker = {
            "stage": name,
            "config_hash": digest,
            "config": json.loads(redact(json.dumps(config, default=str))),
            "upstream": upstream,
            "command": producing_command(),
            **summary,
        }
        if self.state.is_main_process:
            write_json_atomic(self.stage_dir(name) / MARKER, marker)
        self.state.wait_for_everyone()
        self.hashes[name] = digest
        self.ran.append(name)
        # every process returns the marker the main process wrote (main-only stages return nothing elsewhere)
        return self.marker(name) or marker

    def _execute(self, name: str, fn: Callable[[Path], dict[str, Any] | None], main_only: bool) -> dict[str, Any]:
        stage_dir = self.stage_dir(name)
        if self.state.is_main_process:
            logger.warning("stage %s: running (%s)", name, stage_dir)
            if stage_dir.exists():
                shutil.rmtree(stage_dir)  # a stale or half-written artifact: rebuild it from scratch
            stage_dir.mkdir(parents=True)
        self.state.wait_for_everyone()
        start = time.time()
        result: dict[str, Any] | None = None
        if self.state.is_main_process or not main_only:
            result = fn(stage_dir)
        self.state.wait_for_everyone()
        return {"seconds": round(time.time() - start, 2), "summary": result or {}}

