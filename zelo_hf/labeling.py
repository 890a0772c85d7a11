"""From judged pairs to per-query scores with ``datasets`` (ZELO.md, pipeline step 5 at scale).

``group_preferences`` turns a flat preference set (one row per judged pair; streamed in Arrow batches, so it may be
larger than memory) into one row per query, ``thurstone_map`` fits every query of a batch in one vectorised call
(use it with ``Dataset.map``; it reads the batch as Arrow), and ``flatten_labels`` gives the pointwise training set
(one row per query-document). Schemas: docs/design.md.

    >>> grouped = group_preferences(pref_ds)
    >>> labels = grouped.map(thurstone_map, batched=True, fn_kwargs={"model": "thurstone"}, desc="Thurstone fit")
"""

from __future__ import annotations

import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .thurstone import DEFAULT_PRIOR_SD, available_cores, fit_scores_flat
from .utils import get_logger

logger = get_logger(__name__)

__all__ = [
    "PREFERENCE_COLUMNS",
    "group_preferences",
    "thurstone_map",
    "label_preferences",
    "flatten_labels",
    "label_summary",
    "save_label_set",
]

PREFERENCE_COLUMNS = ("query_id", "query", "doc_a_id", "doc_a", "doc_b_id", "doc_b", "prob_a")
GROUPED_COLUMNS = ("query_id", "doc_ids", "pair_a", "pair_b", "prob_a")
FIT_COLUMNS = ("elo", "elo_se", "converged", "iterations", "log_likelihood", "connected")


def _require_columns(column_names: list[str], required: tuple[str, ...], what: str) -> None:
    missing = [c for c in required if c not in column_names]
    if missing:
        raise ValueError(
            f"{what} is missing column(s) {missing} (has {sorted(column_names)}): see the schema in docs/design.md, "
            "e.g. rename your columns with `ds.rename_column(old, new)`."
        )


# ----------------------------------------------------------------------------------------------- grouping
# A flat preference set can be larger than memory (112k queries x 400 pairs already repeat every text hundreds of
# times, #12): it is read in Arrow batches and grouped one bounded window of whole queries at a time, with
# vectorised Arrow/NumPy passes (dictionary encodings, a stable sort, offsets) instead of one pandas frame.
GROUP_WINDOW_ROWS = 1 << 20  # pairs held at once (a single query with more pairs is held whole)


class _NotGrouped(Exception):
    """A query's pairs reappear after other queries' beyond one window: sort by first appearance, then stream."""


def _array(column):
    """One contiguous Arrow array from an array or a (chunked) table column."""
    return column.combine_chunks() if hasattr(column, "combine_chunks") else column


def _codes(column) -> tuple[np.ndarray, Any]:
    """Integer codes in order of first appearance (nulls: -1) and the distinct values (one hash pass, Arrow)."""
    import pyarrow.compute as pc

    encoded = pc.dictionary_encode(_array(column))
    return encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64), encoded.dictionary


def _interleave(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a[0], b[0], a[1], b[1], ...``: the two documents of each pair, pair after pair (order of appearance)."""
    out = np.empty(2 * len(a), dtype=a.dtype)
    out[0::2], out[1::2] = a, b
    return out


def _first_index(ids: np.ndarray) -> np.ndarray:
    """For codes numbered in order of first appearance: position of each code's first occurrence."""
    seen_before = np.maximum.accumulate(ids)
    return np.flatnonzero(np.concatenate([[True], ids[1:] > seen_before[:-1]]))


def _text_conflict(text: np.ndarray, groups: np.ndarray, first: np.ndarray, input_position, what, name, texts) -> None:
    """Raise when a group (a query, or a (query, doc) pair) carries two texts. ``text``/``groups``: codes per
    occurrence; ``first[g]``: the occurrence that is group g's first; ``input_position(occurrences)``: their places in
    the input; ``name(g)`` identifies group g; ``texts(occurrences)``: their texts."""
    bad = np.flatnonzero(text != text[first[groups]])
    if len(bad):
        g = groups[bad[np.argmin(input_position(bad))]]  # the group met first in the input (pandas' order, as before)
        n_texts = len({v for v in texts(np.flatnonzero(groups == g)) if v is not None})
        raise ValueError(
            f"{what} {name(g)!r} has {n_texts} different texts in the preference set: ids must identify one text; "
            "fix the ids (e.g. hash the text into the id) or de-duplicate the candidates."
        )


def _concat(*columns):
    """One contiguous array of the columns' values one after the other (a single copy of chunked columns)."""
    import pyarrow as pa

    return pa.concat_arrays([chunk for column in columns for chunk in getattr(column, "chunks", [column])])


def _group_window(t):
    """Group a window of whole queries (rows in any order) into one row per query: queries and documents in order of
    first appearance, pairs in row order. Returns the grouped Arrow table."""
    import pyarrow as pa

    qcode, qdict = _codes(t["query_id"])
    order = None
    if np.any(qcode[1:] < qcode[:-1]):  # queries interleave within the window: gather each query's rows
        order = np.argsort(qcode, kind="stable")
        t, qcode = t.take(order), qcode[order]
    n, row_start = t.num_rows, _first_index(qcode)
    input_row = (lambda rows: rows) if order is None else (lambda rows: order[rows])  # noqa: E731
    query_text = lambda rows: t["query"].take(pa.array(rows)).to_pylist()  # noqa: E731
    name = lambda g: qdict[g].as_py()  # noqa: E731
    _text_conflict(_codes(t["query"])[0], qcode, row_start, input_row, "query_id", name, query_text)
    ids, texts, uid, first_slot = _documents(t, qcode, input_row, qdict)
    ids_of = lambda rows: (t["doc_a_id"][int(rows)].as_py(), t["doc_b_id"][int(rows)].as_py())  # noqa: E731
    source = pa.array((first_slot % 2) * n + first_slot // 2)  # each (query, doc)'s first occurrence
    slot_query = np.repeat(qcode, 2)
    doc_offsets = np.concatenate([[0], np.cumsum(np.bincount(slot_query[first_slot], minlength=len(row_start)))])
    position = uid - doc_offsets[slot_query]
    _check_repeated_pairs(qcode, position[0::2], position[1::2], _array(t["prob_a"]).cast(pa.float64()), name, ids_of)
    row_offsets = pa.array(np.append(row_start, n).astype(np.int32))
    doc_offsets = pa.array(doc_offsets.astype(np.int32))
    return pa.table(
        {
            "query_id": t["query_id"].take(pa.array(row_start)),
            "query": t["query"].take(pa.array(row_start)),
            "doc_ids": pa.ListArray.from_arrays(doc_offsets, ids.take(source)),
            "docs": pa.ListArray.from_arrays(doc_offsets, texts.take(source)),
            "pair_a": pa.ListArray.from_arrays(row_offsets, pa.array(position[0::2], pa.int64())),
            "pair_b": pa.ListArray.from_arrays(row_offsets, pa.array(position[1::2], pa.int64())),
            "prob_a": pa.ListArray.from_arrays(row_offsets, _array(t["prob_a"]).cast(pa.float64())),
        }
    )


CONTRADICTION = 0.5


def _check_repeated_pairs(qcode, pos_a, pos_b, prob, name, ids_of) -> None:
    """A pair judged twice in one query is kept as two observations (two likelihood terms, as repeated votes are),
    with a warning; two labels that contradict each other (oriented ``prob_a`` more than ``CONTRADICTION`` apart,
    e.g. 0.9 and 0.1 for the same pair, or 0.9 for (a, b) and 0.9 for (b, a)) are refused (issue #11)."""
    lo, hi = np.minimum(pos_a, pos_b), np.maximum(pos_a, pos_b)
    order = np.lexsort((hi, lo, qcode))
    key = np.stack([qcode[order], lo[order], hi[order]], axis=1)
    same = np.all(key[1:] == key[:-1], axis=1)
    if not same.any():
        return
    p = prob.to_numpy(zero_copy_only=False).astype(float)
    oriented = np.where(pos_a <= pos_b, p, 1.0 - p)[order]
    start = np.flatnonzero(np.concatenate([[True], ~same]))
    with np.errstate(invalid="ignore"):
        spread = np.fmax.reduceat(oriented, start) - np.fmin.reduceat(oriented, start)
    bad = np.flatnonzero(spread > CONTRADICTION)
    if len(bad):
        rows = order[start[bad[0]] : (start[bad[0] + 1] if bad[0] + 1 < len(start) else len(order))]
        doc_a, doc_b = ids_of(rows[0])
        raise ValueError(
            f"query_id={name(int(qcode[rows[0]]))!r}: the pair ({doc_a!r}, {doc_b!r}) appears {len(rows)} times with "
            f"contradictory labels (prob_a={[float(p[r]) for r in rows]}, counted from each row's doc_a): re-judge it "
            "or keep one row; agreeing repeats are kept as separate observations."
        )
    warnings.warn(f"{int(same.sum())} repeated pair(s) kept as separate observations (agreeing labels).", stacklevel=2)


def _documents(t, qcode: np.ndarray, input_row, qdict):
    """Every document occurrence is a slot ``2 * row + side`` (a then b, pair after pair, as before). Returns the
    a-then-b concatenations of ids and texts (slot j at index ``(j % 2) * n + j // 2``), the (query, doc) number of
    each slot (counting up from 0 in order of first appearance) and the slot where each (query, doc) appears first.
    Raises when one (query, doc) carries two texts."""
    import pyarrow as pa

    n = len(qcode)
    ids, texts = _concat(t["doc_a_id"], t["doc_b_id"]), _concat(t["doc_a"], t["doc_b"])
    id_code, text_code = _codes(ids)[0], _codes(texts)[0]
    slot_query = np.repeat(qcode, 2)
    uid, _ = _codes(pa.array(slot_query * (int(id_code.max()) + 1) + _interleave(id_code[:n], id_code[n:])))
    first_slot = _first_index(uid)
    concat_index = lambda slots: (slots % 2) * n + slots // 2  # noqa: E731
    _text_conflict(
        _interleave(text_code[:n], text_code[n:]), uid, first_slot,
        lambda slots: 2 * input_row(slots // 2) + slots % 2, "(query_id, doc_id)",
        lambda u: (qdict[int(slot_query[first_slot[u]])].as_py(), ids[int(concat_index(first_slot[u]))].as_py()),
        lambda slots: texts.take(pa.array(concat_index(slots))).to_pylist(),
    )  # fmt: skip
    return ids, texts, uid, first_slot


def _prepare_batch(t, offset: int, drop_failed: bool):
    """Check one batch of flat pairs (rows ``offset ...``); return its preference columns and the failed-pair count.
    Works on the batch's (chunked) columns as they are: nothing is copied unless failed pairs are dropped."""
    import pyarrow as pa
    import pyarrow.compute as pc

    qb = t["query_b_id"] if "query_b_id" in t.column_names else None
    if qb is not None and qb.null_count < len(qb):  # cross-query pairs belong to calibration, not to this fit
        cross = pc.and_(pc.is_valid(qb), pc.not_equal(qb, t["query_id"].cast(qb.type)))
        bad = np.flatnonzero(cross.fill_null(False).to_numpy())
        if len(bad):
            i = int(bad[0])
            raise ValueError(
                f"row {offset + i} is a cross-query pair (query_id={t['query_id'][i].as_py()!r}, "
                f"query_b_id={qb[i].as_py()!r}): fit those with `calibrate_labels` / `zelo calibrate`, and pass only "
                "within-query pairs here."
            )
    for name in ("query_id", "doc_a_id", "doc_b_id"):
        if t[name].null_count:
            i = int(np.flatnonzero(t[name].is_null().to_numpy())[0])
            raise ValueError(
                f"row {offset + i} has no `{name}` (null): every pair needs its query and document ids; fix or drop "
                "such rows."
            )
    t = t.select(list(PREFERENCE_COLUMNS))
    _check_prob_type(t["prob_a"], offset)
    failed = pc.is_null(t["prob_a"], nan_is_null=True)
    n_failed = pc.sum(failed).as_py() or 0
    if drop_failed and n_failed:
        t = t.filter(pc.invert(failed))
    return t if isinstance(t, pa.Table) else pa.table(t), n_failed


def _check_prob_type(column, offset: int) -> None:
    """``prob_a`` written as strings ("0.7") would be cast to floats silently: refuse them, naming the first value."""
    import pyarrow as pa

    kind = column.type
    if pa.types.is_floating(kind) or pa.types.is_integer(kind) or pa.types.is_null(kind):
        return
    first = next((v for v in column.to_pylist() if v is not None), None)
    raise ValueError(
        f"`prob_a` must hold numbers P(a beats b) in [0, 1] (got type {kind}, e.g. prob_a={first!r} near row {offset}):"
        " write them as numbers, e.g. 0.7, not '0.7'."
    )


def _split_window(window):
    """Split a window into the queries that are complete (first seen before the last row's query) and the rest,
    which may continue in the next batch."""
    qcode, _ = _codes(window["query_id"])
    last = qcode[-1]  # codes are in order of first appearance: code >= last means first seen at or after it
    if np.all(qcode[1:] >= qcode[:-1]):
        cut = int(np.searchsorted(qcode, last))
        return window.slice(0, cut), window.slice(cut)
    return window.filter(qcode < last), window.filter(qcode >= last)


class _GroupedOutput:
    """Grouped windows: one window stays in memory (a small preference set gives an in-memory dataset, as before);
    from the second on, all go to one Arrow file (``path``, or a temporary cache file), memory-mapped when loaded."""

    def __init__(self, path: str | None):
        self.path, self.tables, self.rows, self.writer, self.seen = path, [], 0, None, set()

    def add(self, grouped) -> None:
        ids = grouped["query_id"].to_pylist()
        if not self.seen.isdisjoint(ids):
            raise _NotGrouped
        self.seen.update(ids)
        self.tables.append(grouped)
        self.rows += grouped.num_rows
        if len(self.tables) > 1:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if self.writer is None:
            if self.path is None:
                from datasets.fingerprint import get_temporary_cache_files_directory

                self.path = str(Path(get_temporary_cache_files_directory()) / "grouped_preferences.arrow")
            self.writer = pa.ipc.new_stream(self.path, self.tables[0].schema)
        for t in self.tables:
            self.writer.write_table(t)
        self.tables = []

    def dataset(self):
        import pyarrow as pa
        from datasets import Dataset

        if self.writer is None:
            return Dataset(pa.concat_tables(self.tables))
        self._flush()
        self.writer.close()
        return Dataset.from_file(self.path)


def _arrow_batches(pref_ds, columns: list[str], batch_size: int):
    """The preference set in Arrow batches (a ``Dataset``, or an ``IterableDataset`` when streaming)."""
    yield from pref_ds.select_columns(columns).with_format("arrow").iter(batch_size=batch_size)


def _group_stream(batches, drop_failed: bool, window_rows: int, out: _GroupedOutput) -> tuple[int, int]:
    """Group batch after batch, holding one window of rows (plus the windows being grouped: one per core, in
    threads, as Arrow and NumPy release the GIL; results are added in input order); returns (rows, failed pairs)."""
    import pyarrow as pa

    pending, offset, n_failed = None, 0, 0
    workers = min(2, available_cores())
    with ThreadPoolExecutor(workers) as pool:
        running = deque()
        for batch in batches:
            batch_rows = batch.num_rows
            batch, failed = _prepare_batch(batch, offset, drop_failed)
            offset, n_failed = offset + batch_rows, n_failed + failed
            pending = batch if pending is None else pa.concat_tables([pending, batch])  # chunks, no copy
            if pending.num_rows >= window_rows:
                ready, pending = _split_window(pending)
                if ready.num_rows:
                    running.append(pool.submit(_group_window, ready))
                elif pending.num_rows > 2 * window_rows and len(_codes(pending["query_id"])[1]) > 1:
                    raise _NotGrouped  # queries interleave over more than a window
            while len(running) > workers or (running and running[0].done()):
                out.add(running.popleft().result())
        if pending is not None and pending.num_rows:
            running.append(pool.submit(_group_window, pending))
        while running:
            out.add(running.popleft().result())
    return offset, n_failed


def _first_appearance_order(pref_ds, batch_size: int) -> np.ndarray:
    """Row order that puts each query's pairs together, queries in order of first appearance (stable): only the
    query ids are read, so the memory is one integer per pair."""
    ranks, known = [], {}
    for t in _arrow_batches(pref_ds, ["query_id"], batch_size):
        code, values = _codes(t["query_id"].combine_chunks())
        lookup = np.array([known.setdefault(v, len(known)) for v in values.to_pylist()] + [-1], dtype=np.int64)
        ranks.append(lookup[code])  # code -1 (a null id) maps to -1; the grouping pass then names the row
    return np.argsort(np.concatenate(ranks), kind="stable") if ranks else np.zeros(0, np.int64)


def group_preferences(
    pref_ds,
    num_proc: int | None = None,
    drop_failed: bool = False,
    window_rows: int = GROUP_WINDOW_ROWS,
    cache_file_name: str | None = None,
):
    """Flat preference set (one row per judged pair) -> grouped preferences (one row per query).

    Output columns: ``query_id``, ``query``, ``doc_ids``, ``docs``, ``pair_a``, ``pair_b`` (indices into
    ``doc_ids``), ``prob_a``; queries and documents keep their order of first appearance. The pairs are read in
    Arrow batches and grouped one bounded window (``window_rows`` pairs) of whole queries at a time, so the
    preference set may be larger than memory. Pairs of one query need not be adjacent: when a query reappears after
    its window was grouped, the rows are first put in order of first appearance (one integer per pair held).

    Args:
        pref_ds: a ``datasets.Dataset`` (or a streaming ``IterableDataset``, whose pairs must then come query by
            query) with the preference-set columns (``votes`` and extra columns are ignored).
        num_proc: unused (grouping is a streamed vectorised pass); accepted for symmetry with the map steps.
        drop_failed: drop pairs whose ``prob_a`` is missing (every vote failed) with a warning. By default such
            pairs are kept and the fit raises, naming the query: nothing is dropped silently.
        window_rows: pairs held in memory at once.
        cache_file_name: Arrow file for a result larger than one window (default: a temporary cache file); a
            result that fits one window stays in memory.
    """
    if num_proc not in (None, 1):
        warnings.warn(f"group_preferences ignores num_proc={num_proc}: grouping is one vectorised pass.", stacklevel=2)
    column_names = list(pref_ds.column_names or (pref_ds.features or {}).keys())
    _require_columns(column_names, PREFERENCE_COLUMNS, "the preference set")
    columns = list(PREFERENCE_COLUMNS) + (["query_b_id"] if "query_b_id" in column_names else [])
    path = None if cache_file_name is None else str(cache_file_name)
    out = _GroupedOutput(path)
    try:
        n_rows, n_failed = _group_stream(_arrow_batches(pref_ds, columns, window_rows), drop_failed, window_rows, out)
    except _NotGrouped:
        if not hasattr(pref_ds, "select") or not hasattr(pref_ds, "__len__"):
            raise ValueError(
                "this streaming preference set is not ordered by query (a query's pairs reappear after other "
                "queries'): load it without `streaming=True`, or write it query by query (e.g. sorted by query_id)."
            ) from None
        out = _GroupedOutput(path)
        ordered = pref_ds.select(_first_appearance_order(pref_ds, window_rows))
        n_rows, n_failed = _group_stream(_arrow_batches(ordered, columns, window_rows), drop_failed, window_rows, out)
    if n_rows == 0:
        raise ValueError("the preference set has no rows: judge some pairs first (`zelo judge`).")
    if drop_failed and n_failed:
        warnings.warn(f"dropping {n_failed} pair(s) with no prob_a (all votes failed).", stacklevel=2)
    if out.rows == 0:
        raise ValueError(f"all {n_rows} pairs failed (no prob_a): nothing to fit; re-judge them (`zelo judge`).")
    return out.dataset()


# ----------------------------------------------------------------------------------------------- the fit map
def _arrow_column(batch, name: str):
    """One column of a batch as an Arrow array, never as Python objects when it is Arrow already.

    A ``Dataset.map`` batch (``LazyBatch``) still holds its Arrow table: reading it there leaves the column
    unformatted, so ``datasets`` also writes it back as Arrow (formatting 400 pairs x 1000 queries to Python lists
    and back cost more than the fit itself, #12). Plain dicts (lists or arrays) and ``pa.Table`` batches work too.
    """
    import pyarrow as pa

    table = batch if isinstance(batch, pa.Table) else getattr(batch, "pa_table", None)
    if table is not None and name in getattr(batch, "keys_to_format", (name,)):
        column = table.column(name)
    else:
        values = batch[name]
        column = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(list(values))
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


class _QueryIds:
    """``query_id`` of row q, as ``str``, looked up only when an error message needs it."""

    def __init__(self, column):
        self.column = column

    def __len__(self) -> int:
        return len(self.column)

    def __getitem__(self, q: int) -> str:
        return str(self.column[int(q)].as_py())


def _list_lengths(column, name: str, query_ids: _QueryIds) -> np.ndarray:
    """Per-row lengths of a list column, checked: one list per row, none missing."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if len(column) == 0:
        return np.zeros(0, dtype=np.int64)
    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)):
        raise ValueError(f"`{name}` must hold one list per query (got type {column.type}): see docs/design.md.")
    if column.null_count:
        q = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        raise ValueError(f"query_id={query_ids[q]!r}: `{name}` is missing (null): pass a list (re-run grouping).")
    return pc.list_value_length(column).to_numpy(zero_copy_only=False).astype(np.int64)


def _indices(column, name: str, query_ids: _QueryIds) -> tuple[np.ndarray, np.ndarray]:
    """Lengths and flat int64 values of ``pair_a`` / ``pair_b``: integers, none missing."""
    import pyarrow as pa

    lengths = _list_lengths(column, name, query_ids)
    values = column.flatten() if len(column) else pa.array([], pa.int64())
    if values.null_count or not (pa.types.is_integer(values.type) or len(values) == 0):
        e = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0]) if values.null_count else 0
        q = int(np.searchsorted(np.cumsum(lengths), e, side="right"))
        raise ValueError(
            f"query_id={query_ids[q]!r}: `{name}` must hold integer indices into doc_ids (got {values[e]} of type "
            f"{values.type}): re-run `group_preferences` on the flat preference set."
        )
    return lengths, values.cast(pa.int64()).to_numpy()


def _probabilities(column, query_ids: _QueryIds) -> tuple[np.ndarray, np.ndarray]:
    """Lengths and flat float64 ``prob_a``; a failed pair (null) becomes NaN, which the fit reports by query."""
    import pyarrow as pa

    lengths = _list_lengths(column, "prob_a", query_ids)
    values = column.flatten() if len(column) else pa.array([], pa.float64())
    if not (pa.types.is_floating(values.type) or pa.types.is_integer(values.type) or pa.types.is_null(values.type)):
        raise ValueError(f"`prob_a` must hold numbers P(a beats b) in [0, 1] (got type {values.type}).")
    return lengths, values.cast(pa.float64()).to_numpy(zero_copy_only=False)


def _check_unique_doc_ids(column, sizes: np.ndarray, query_ids: _QueryIds) -> None:
    """Each doc_id at most once per query: one hash pass over the batch's ids (Arrow), then integer checks."""
    import pyarrow.compute as pc

    if len(column) == 0:
        return
    encoded = pc.dictionary_encode(column.flatten())
    if len(encoded.dictionary) == len(encoded):  # no id repeats anywhere in the batch (the common case)
        return
    parent = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
    key = np.sort(parent * len(encoded.dictionary) + encoded.indices.to_numpy(zero_copy_only=False))
    repeated = key[1:][key[1:] == key[:-1]]
    if len(repeated):
        q = int(repeated.min() // len(encoded.dictionary))
        doc_ids = column[q].as_py()
        dup = next(d for d in doc_ids if doc_ids.count(d) > 1)
        raise ValueError(
            f"query_id={query_ids[q]!r}: doc_id {dup!r} appears twice in doc_ids: each document once per query "
            "(re-run `group_preferences` on the flat preference set)."
        )


def _check_batch(batch) -> tuple[np.ndarray, np.ndarray, np.ndarray, _QueryIds]:
    """Validate one batch of grouped rows, vectorised over the batch (flat values + per-query offsets); return global
    edges, probs, sizes and the query ids (for error messages)."""
    _require_columns(getattr(batch, "column_names", None) or list(batch), GROUPED_COLUMNS, "the grouped preferences")
    query_ids = _QueryIds(_arrow_column(batch, "query_id"))
    doc_ids = _arrow_column(batch, "doc_ids")
    sizes = _list_lengths(doc_ids, "doc_ids", query_ids)
    _check_unique_doc_ids(doc_ids, sizes, query_ids)
    counts, a = _indices(_arrow_column(batch, "pair_a"), "pair_a", query_ids)
    counts_b, b = _indices(_arrow_column(batch, "pair_b"), "pair_b", query_ids)
    counts_p, probs = _probabilities(_arrow_column(batch, "prob_a"), query_ids)
    if not (np.array_equal(counts, counts_b) and np.array_equal(counts, counts_p)):
        raise ValueError("`pair_a`, `pair_b` and `prob_a` must have equal lengths per query: one entry per pair.")
    edge_query = np.repeat(np.arange(len(sizes)), counts)
    edge_size = sizes[edge_query]
    bad = np.flatnonzero((a < 0) | (b < 0) | (a >= edge_size) | (b >= edge_size))
    if len(bad):
        e = bad[0]
        raise ValueError(
            f"query_id={query_ids[edge_query[e]]!r}: pair ({a[e]}, {b[e]}) is out of range for "
            f"{edge_size[e]} doc_ids: pair_a / pair_b must index into doc_ids."
        )
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)[edge_query]
    return np.stack([a + offsets, b + offsets], axis=1), probs, sizes, query_ids


def thurstone_map(
    batch: dict[str, list],
    model: str = "thurstone",
    prior_sd: float = DEFAULT_PRIOR_SD,
    tol: float = 1e-9,
    max_iter: int = 50,
    compute_se: bool = True,
    num_threads: int | None = None,
) -> dict[str, list]:
    """Batched ``Dataset.map`` function: fit every query of the batch at once and add the label columns.

    Adds ``elo`` (one score per doc), ``elo_se``, ``converged``, ``iterations``, ``log_likelihood``,
    ``connected``. Use with ``batched=True`` and ``fn_kwargs`` for the options (see :func:`fit_scores_flat`).
    The batch's columns are read as Arrow (no Python objects per pair) and the per-document columns come back as
    one NumPy array per query. ``num_threads``: fit threads (default: every core, 1 per process under
    ``num_proc``). Bad rows raise an error naming the ``query_id``.
    """
    edges, probs, sizes, query_ids = _check_batch(batch)
    if len(sizes) == 0:
        return {name: [] for name in FIT_COLUMNS}
    res = fit_scores_flat(
        edges, probs, sizes, model=model, prior_sd=prior_sd, tol=tol, max_iter=max_iter, compute_se=compute_se,
        query_ids=query_ids, num_threads=num_threads,
    )  # fmt: skip
    return {
        "elo": _per_query(res.scores, sizes),
        "elo_se": _per_query(res.se, sizes) if res.se is not None else [[None] * n for n in sizes.tolist()],
        "converged": res.converged,
        "iterations": res.iterations,
        "log_likelihood": res.log_likelihood,
        "connected": res.connected,
    }


def _per_query(values: np.ndarray, sizes: np.ndarray):
    """A flat per-document array as one row per query: a 2-D array when all queries have the same size (``datasets``
    writes it as one Arrow list column without a per-row conversion), else one array per query."""
    if len(sizes) and np.all(sizes == sizes[0]):
        return values.reshape(len(sizes), int(sizes[0]))
    return np.split(values, np.cumsum(sizes)[:-1])


def label_preferences(
    pref_ds,
    model: str = "thurstone",
    prior_sd: float = DEFAULT_PRIOR_SD,
    num_proc: int | None = None,
    batch_size: int = 1000,
    drop_failed: bool = False,
    compute_se: bool = True,
    output_dir: str | Path | None = None,
    push_to_hub: str | None = None,
    max_shard_size: int | str = "500MB",
    **card_info: Any,
):
    """Flat preference set -> label set (``group_preferences`` + ``thurstone_map``), optionally saved and pushed.

    Args:
        pref_ds: flat preference set (``datasets.Dataset``, or a streaming ``IterableDataset`` written query by
            query).
        model, prior_sd, compute_se: fit options (see :func:`zelo_hf.thurstone.fit_scores_flat`).
        num_proc, batch_size: ``Dataset.map`` processes and queries per vectorised fit. Each process fits with
            ``cores // num_proc`` threads (all cores in one process by default): processes x threads = cores.
        drop_failed: see :func:`group_preferences`.
        output_dir: write the label set folder (parquet shards + dataset card) there.
        push_to_hub: also upload that folder to this Hub dataset repo (needs ``output_dir``).
        max_shard_size: parquet shard size of the saved folder (see :func:`save_label_set`).
        card_info: extra card variables (e.g. ``source``), see :func:`save_label_set`.
    """
    if push_to_hub and output_dir is None:
        raise ValueError(f"push_to_hub={push_to_hub!r} needs `output_dir`: the folder that gets uploaded.")
    grouped = group_preferences(pref_ds, drop_failed=drop_failed)
    threads = max(1, available_cores() // num_proc) if num_proc and num_proc > 1 else None
    labels = grouped.map(
        thurstone_map,
        batched=True,
        batch_size=batch_size,
        num_proc=num_proc,
        fn_kwargs={"model": model, "prior_sd": prior_sd, "compute_se": compute_se, "num_threads": threads},
        desc="Thurstone fit",
    )
    if output_dir is not None:
        save_label_set(
            labels, output_dir, push_to_hub=push_to_hub, model=model, prior_sd=prior_sd,
            max_shard_size=max_shard_size, **card_info,
        )  # fmt: skip
    return labels


def flatten_labels(label_ds, score_column: str | None = None):
    """Label set -> pointwise training set: one row per (query_id, query, doc_id, doc, score).

    ``score_column`` defaults to ``"score"`` (calibrated, comparable across queries) when present, else ``"elo"``.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    from datasets import Dataset

    score_column = score_column or ("score" if "score" in label_ds.column_names else "elo")
    _require_columns(label_ds.column_names, ("query_id", "query", "doc_ids", "docs", score_column), "the label set")
    table = label_ds.select_columns(["query_id", "query", "doc_ids", "docs", score_column]).with_format("arrow")[:]
    lists = {c: table[c].combine_chunks() for c in ("doc_ids", "docs", score_column)}
    parent = pc.list_parent_indices(lists["doc_ids"])
    if any(len(lists[c].flatten()) != len(parent) for c in lists):
        raise ValueError(f"`doc_ids`, `docs` and `{score_column}` must have equal lengths per query.")
    flat = pa.table(
        {
            "query_id": table["query_id"].take(parent),
            "query": table["query"].take(parent),
            "doc_id": lists["doc_ids"].flatten(),
            "doc": lists["docs"].flatten(),
            "score": lists[score_column].flatten().cast(pa.float64()),
        }
    )
    return Dataset(flat)


def _column_arrays(ds, columns: list[str], batch_size: int = 100_000):
    """The columns of a dataset, batch by batch, as Arrow tables (memory-mapped: nothing else is read)."""
    yield from ds.select_columns(columns).with_format("arrow").iter(batch_size=batch_size)


def label_summary(label_ds) -> dict[str, Any]:
    """Counts and fit diagnostics of a label set (for cards and logs); reads list lengths only (Arrow offsets)."""
    import pyarrow.compute as pc

    fit = "converged" in label_ds.column_names
    columns = ["doc_ids", "pair_a"] + (["converged", "connected", "iterations", "log_likelihood"] if fit else [])
    totals = dict.fromkeys(["docs", "pairs", "converged", "connected", "iterations", "log_likelihood"], 0.0)
    for t in _column_arrays(label_ds, columns):
        totals["docs"] += pc.sum(pc.list_value_length(t["doc_ids"])).as_py() or 0
        totals["pairs"] += pc.sum(pc.list_value_length(t["pair_a"])).as_py() or 0
        for name in columns[2:]:
            totals[name] += pc.sum(t[name].cast("float64")).as_py() or 0.0
    n_queries, n_docs, n_pairs = len(label_ds), int(totals["docs"]), int(totals["pairs"])
    summary = {
        "n_queries": n_queries,
        "n_docs": n_docs,
        "n_pairs": n_pairs,
        "mean_degree": float(2 * n_pairs / max(n_docs, 1)),
    }
    if fit:
        per_query = max(n_queries, 1)
        summary |= {
            "converged_pct": 100.0 * totals["converged"] / per_query,
            "connected_pct": 100.0 * totals["connected"] / per_query,
            "mean_iterations": totals["iterations"] / per_query,
            "mean_log_likelihood": totals["log_likelihood"] / per_query,
            "mean_log_likelihood_per_pair": totals["log_likelihood"] / max(n_pairs, 1),
        }
    return summary


def save_label_set(
    label_ds,
    output_dir: str | Path,
    push_to_hub: str | None = None,
    model: str = "thurstone",
    prior_sd: float = DEFAULT_PRIOR_SD,
    max_shard_size: int | str = "500MB",
    **card_info: Any,
) -> Path:
    """Write the label set folder (``data/train-*.parquet`` + README.md card) and optionally push it.

    The parquet files are shards of about ``max_shard_size`` each (``data/train-00000-of-00004.parquet`` ...;
    a small set is one file, as before), so a label set of millions of queries uploads and loads shard by shard.
    ``card_info`` fills the card: ``source`` (input preference set), ``degree`` (graph degree), and for
    calibrated sets ``calibration`` (a dict of the calibration diagnostics). The producing command is recorded.
    """
    from .hub import push_folder, render_dataset_card, save_dataset_folder
    from .utils import producing_command

    summary = label_summary(label_ds)
    card = render_dataset_card(
        "label_set.md",
        card_data={
            "tags": ["zelo", "reranking", "thurstone", "pairwise-preferences"],
            "task_categories": ["text-ranking"],
            "size_categories": [_size_category(summary["n_docs"])],
            "pretty_name": card_info.pop("pretty_name", None) or "zELO label set",
        },
        model=model,
        prior_sd=prior_sd,
        summary=summary,
        calibrated="score" in label_ds.column_names,
        command=producing_command(),
        repo_id=push_to_hub,
        **card_info,
    )
    n_shards = _n_shards(label_ds, max_shard_size)
    if n_shards == 1:
        folder = save_dataset_folder(label_ds, output_dir, card)
    else:
        folder = _save_shards(label_ds, Path(output_dir), n_shards, card)
    if push_to_hub:
        push_folder(folder, push_to_hub, repo_type="dataset")
    return folder


def _n_shards(ds, max_shard_size: int | str) -> int:
    """Shards of at most ``max_shard_size`` (Arrow bytes, as ``datasets.push_to_hub`` counts them)."""
    from datasets.utils.py_utils import convert_file_size_to_int

    limit = convert_file_size_to_int(max_shard_size)
    if limit <= 0:
        raise ValueError(f"`max_shard_size` must be > 0 (got max_shard_size={max_shard_size!r}): e.g. '500MB'.")
    table = ds.data
    nbytes = table.nbytes * len(ds) / max(table.num_rows, 1)  # with an indices mapping, the selected share
    return max(1, min(len(ds), int(np.ceil(nbytes / limit))))


def _save_shards(ds, output_dir: Path, n_shards: int, card) -> Path:
    """``data/train-0000k-of-0000n.parquet`` shards (contiguous) + README.md, the layout the Hub loads as one split."""
    data = output_dir / "data"
    data.mkdir(parents=True, exist_ok=True)
    for old in data.glob("train-*.parquet"):
        old.unlink()
    for k in range(n_shards):
        ds.shard(n_shards, k, contiguous=True).to_parquet(str(data / f"train-{k:05d}-of-{n_shards:05d}.parquet"))
    card.save(str(output_dir / "README.md"))
    return output_dir


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M" if n < 10_000_000 else "n>10M"
