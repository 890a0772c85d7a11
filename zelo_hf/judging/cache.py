"""A crash-safe judgment cache: SQLite in WAL mode, one committed row per answered call.

Judging spends money, so every successful vote is committed the moment it arrives: a rerun, or a resume after
``kill -9``, re-bills nothing already answered and loses at most the calls that were in flight. Keys hash
(model, prompt version, answer settings, query, query_b, doc A, doc B, presented order) -- built in one place,
:func:`cache_key` -- so a changed prompt or setting never reuses a stale answer.

Failed calls are not answers: they go to a ``failures`` table (for accounting: a refusal is billed) and are
asked again on the next run. Provider batches (``zelo judge --batch``) are recorded in a ``batches`` table the
moment they are created -- id and the (key, swapped) of every request -- so a restart polls them instead of
submitting the same requests again. Nothing secret is stored: votes are redacted, and no request (headers, keys,
api_base) is kept.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..utils import redact
from .base import Judge
from .votes import Comparison, Vote, digest

_SCHEMA = """
CREATE TABLE IF NOT EXISTS votes (
    key TEXT PRIMARY KEY,
    judge TEXT NOT NULL,
    vote TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS failures (
    key TEXT NOT NULL,
    judge TEXT NOT NULL,
    vote TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    batch_id TEXT PRIMARY KEY,
    judge TEXT NOT NULL,
    requests TEXT NOT NULL,
    status TEXT NOT NULL,
    created REAL NOT NULL
);
"""
_CHUNK = 900  # below SQLite's default limit of 999 bound parameters


def cache_key(judge: Judge, c: Comparison, swapped: bool | None = None) -> str | None:
    """The key of ``judge``'s answer to ``c`` shown in the ``swapped`` order (default: the judge's seeded coin);
    None for a judge whose votes are not cached. The bytes hashed never change: old caches stay valid."""
    identity = judge.cache_identity()
    if identity is None:
        return None
    swapped = judge.swap_for(c) if swapped is None else swapped
    return digest(*identity, c.query, c.query_b, *judge.documents_as_sent(c), swapped).hex()


def call_keys(judge: Judge, pairs: Sequence[Comparison], cached: bool) -> list[Any]:
    """One key per pair; pairs with equal keys share one call. With a cache (``cached``), the cache keys; without
    one, the pair's texts (nothing to look up, so nothing is hashed); None for a judge that caches nothing (a free
    local judge is asked every pair)."""
    if judge.cache_identity() is None:
        return [None] * len(pairs)
    if cached:
        return [cache_key(judge, c) for c in pairs]
    return [(c.query, c.query_b, c.doc_a, c.doc_b) for c in pairs]


class JudgmentCache:
    """SQLite (WAL) store of votes keyed by :func:`cache_key`; safe to share between threads of one process.

    ``synchronous=NORMAL`` in WAL mode: a committed row survives the process being killed (it is in the WAL file
    the moment ``commit`` returns); only an OS crash or power loss may drop the last commits.

    ``readonly=True`` (a dry run) opens an existing cache without writing a byte: no table, no WAL or shared-memory
    file is created. A cache another process has open (its ``-wal`` file exists) is read through that WAL; a
    closed one is read as an immutable file.
    """

    def __init__(self, path: str | Path, readonly: bool = False):
        self.path, self.readonly = Path(path), readonly
        self._lock = threading.Lock()
        if readonly:
            self._conn = _open_readonly(self.path)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(self.path), timeout=30.0, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(_SCHEMA)
        self._conn.commit()

    def __repr__(self) -> str:
        return f"JudgmentCache({str(self.path)!r}, votes={len(self)})"

    def __len__(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT COUNT(*) FROM votes").fetchone()[0]

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def get(self, key: str) -> Vote | None:
        return self.get_many([key]).get(key)

    def get_many(self, keys: Iterable[str]) -> dict[str, Vote]:
        """The cached votes among ``keys`` (one query per ~900 keys)."""
        keys = list(dict.fromkeys(keys))
        found: dict[str, Vote] = {}
        with self._lock:
            for i in range(0, len(keys), _CHUNK):
                chunk = keys[i : i + _CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = self._conn.execute(f"SELECT key, vote FROM votes WHERE key IN ({marks})", chunk).fetchall()
                found.update((key, Vote.from_dict(json.loads(vote))) for key, vote in rows)
        return found

    def put(self, key: str, vote: Vote) -> bool:
        """Store one answer and commit at once; failed votes go to ``failures``. True when a new answer was stored."""
        return self.put_many([(key, vote)]) > 0

    def put_many(self, items: Sequence[tuple[str, Vote]]) -> int:
        """Store several votes in one transaction; returns how many new answers were stored (existing keys kept)."""
        self._check_writable()
        now = time.time()
        answers = [(k, redact(v.judge), _dump(v), now) for k, v in items if v.ok]
        failures = [(k, redact(v.judge), _dump(v), now) for k, v in items if not v.ok]
        with self._lock:
            before = self._conn.total_changes
            if answers:
                self._conn.executemany("INSERT OR IGNORE INTO votes VALUES (?, ?, ?, ?)", answers)
            stored = self._conn.total_changes - before
            if failures:
                self._conn.executemany("INSERT INTO failures VALUES (?, ?, ?, ?)", failures)
            self._conn.commit()
        return stored

    def add_batch(self, batch_id: str, judge: str, requests: Sequence[tuple[str, bool]]) -> None:
        """Record a submitted provider batch (committed at once: a crash after this never resubmits it)."""
        self._check_writable()
        with self._lock:
            self._conn.execute("INSERT OR REPLACE INTO batches VALUES (?, ?, ?, ?, ?)",
                               (batch_id, redact(judge), json.dumps([[k, bool(s)] for k, s in requests]), "submitted",
                                time.time()))
            self._conn.commit()

    def open_batches(self, judge: str) -> dict[str, list[tuple[str, bool]]]:
        """The judge's batches whose results are not stored yet: ``{batch_id: [(key, swapped), ...]}``."""
        if not self._has_table("batches"):  # an old cache opened read-only
            return {}
        with self._lock:
            rows = self._conn.execute("SELECT batch_id, requests FROM batches WHERE judge = ? AND status = 'submitted' "
                                      "ORDER BY created", (redact(judge),)).fetchall()
        return {b: [(k, bool(s)) for k, s in json.loads(r)] for b, r in rows}

    def close_batch(self, batch_id: str, status: str) -> None:
        """Mark a batch whose results (answers and failures) are stored, with the provider's final status."""
        self._check_writable()
        with self._lock:
            self._conn.execute("UPDATE batches SET status = ? WHERE batch_id = ?", (status, batch_id))
            self._conn.commit()

    def _has_table(self, name: str) -> bool:
        with self._lock:
            return self._conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                                      (name,)).fetchone() is not None

    def _check_writable(self) -> None:
        if self.readonly:
            raise ValueError(f"JudgmentCache({str(self.path)!r}) was opened with readonly=True (a dry run): open it "
                             "without readonly to store votes.")

    def failures(self) -> list[tuple[str, Vote]]:
        """Every failed attempt recorded (key, vote), oldest first."""
        with self._lock:
            rows = self._conn.execute("SELECT key, vote FROM failures ORDER BY rowid").fetchall()
        return [(k, Vote.from_dict(json.loads(v))) for k, v in rows]

    def totals(self) -> dict[str, dict[str, float]]:
        """Per judge: cached answers, tokens and dollars spent on them (failed attempts included separately)."""
        out: dict[str, dict[str, float]] = {}
        with self._lock:
            tables = {"votes": self._conn.execute("SELECT vote FROM votes").fetchall(),
                      "failures": self._conn.execute("SELECT vote FROM failures").fetchall()}
        for table, rows in tables.items():
            for (raw,) in rows:
                vote = json.loads(raw)
                entry = out.setdefault(vote["judge"], {"answers": 0, "failures": 0, "prompt_tokens": 0,
                                                       "completion_tokens": 0, "cost": 0.0})
                entry["answers" if table == "votes" else "failures"] += 1
                entry["prompt_tokens"] += vote["prompt_tokens"]
                entry["completion_tokens"] += vote["completion_tokens"]
                entry["cost"] += vote["cost"]
        return out

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> JudgmentCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _open_readonly(path: Path) -> sqlite3.Connection:
    if not path.exists():
        raise FileNotFoundError(f"no judgment cache at {path}: a read-only cache must exist (drop readonly=True).")
    wal = path.with_name(path.name + "-wal").exists()
    mode = "mode=ro" if wal else "immutable=1"  # mode=ro alone would create the -wal and -shm files
    return sqlite3.connect(f"{path.resolve().as_uri()}?{mode}", uri=True, timeout=30.0, check_same_thread=False)


def _dump(vote: Vote) -> str:
    data = vote.to_dict()
    for field in ("judge", "raw_answer", "error"):
        if data.get(field) is not None:
            data[field] = redact(str(data[field]))
    return json.dumps(data, ensure_ascii=False)
