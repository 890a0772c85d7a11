"""Flat preference set -> grouped preferences (one row per query): ``group_preferences`` (ZELO.md step 5 at scale).

A flat preference set (one row per judged pair) is streamed in Arrow batches, so it may be larger than memory, and
grouped one bounded window of whole queries at a time. The output is the input of
:func:`zelo_hf.labeling.thurstone_map`. Schemas: :mod:`zelo_hf.schema`.
"""

from __future__ import annotations

import tempfile
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .preference_tables import PreferenceTables, arrow_codes, arrow_concat
from .schema import PREFERENCE_COLUMNS, PREFERENCE_ID_COLUMNS, require_columns
from .thurstone import available_cores
from .utils import arrow_array

__all__ = ["group_preferences"]


# A flat preference set can be larger than memory (112k queries x 400 pairs, #12): it is read in Arrow batches and
# grouped one bounded window of whole queries at a time, with vectorised Arrow/NumPy passes (dictionary encodings,
# a stable sort, offsets) instead of one pandas frame.
GROUP_WINDOW_ROWS = 1 << 20  # pairs held at once (a single query with more pairs is held whole)


class _NotGrouped(Exception):
    """A query's pairs reappear after other queries' beyond one window: sort by first appearance, then stream."""


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


def _group_window(t, tables: PreferenceTables | None = None):
    """Group a window of whole queries (rows in any order) into one row per query: queries and documents in order of
    first appearance, pairs in row order. Texts come from the rows, or (pair rows with ids only) from ``tables``'
    ``queries`` / ``documents``, looked up once per query and per (query, document). Returns the grouped Arrow
    table."""
    import pyarrow as pa

    qcode, qdict = arrow_codes(t["query_id"])
    order = None
    if np.any(qcode[1:] < qcode[:-1]):  # queries interleave within the window: gather each query's rows
        order = np.argsort(qcode, kind="stable")
        t, qcode = t.take(order), qcode[order]
    n, row_start = t.num_rows, _first_index(qcode)
    input_row = (lambda rows: rows) if order is None else (lambda rows: order[rows])  # noqa: E731
    name = lambda g: qdict[g].as_py()  # noqa: E731
    ids, uid, first_slot = _documents(t, qcode)
    if tables is None:  # texts inline: each id must carry one text (the tables are unique by construction)
        query_text = lambda rows: t["query"].take(pa.array(rows)).to_pylist()  # noqa: E731
        _text_conflict(arrow_codes(t["query"])[0], qcode, row_start, input_row, "query_id", name, query_text)
        texts = arrow_concat(t["doc_a"], t["doc_b"])  # the a-then-b texts, slot for slot with `ids`
        _check_document_texts(texts, qcode, uid, first_slot, input_row, qdict, ids)
    ids_of = lambda rows: (t["doc_a_id"][int(rows)].as_py(), t["doc_b_id"][int(rows)].as_py())  # noqa: E731
    source = pa.array((first_slot % 2) * n + first_slot // 2)  # each (query, doc)'s first occurrence
    slot_query = np.repeat(qcode, 2)
    doc_offsets = np.concatenate([[0], np.cumsum(np.bincount(slot_query[first_slot], minlength=len(row_start)))])
    position = uid - doc_offsets[slot_query]
    probs = arrow_array(t["prob_a"]).cast(pa.float64())
    _check_repeated_pairs(qcode, position[0::2], position[1::2], probs, name, ids_of)
    row_offsets = pa.array(np.append(row_start, n).astype(np.int32))
    doc_offsets = pa.array(doc_offsets.astype(np.int32))
    query_ids, doc_ids = t["query_id"].take(pa.array(row_start)), ids.take(source)
    if tables is None:
        queries, docs = t["query"].take(pa.array(row_start)), texts.take(source)
    else:
        queries, docs = tables.texts("query_id", query_ids), tables.texts("doc_a_id", doc_ids)
    return pa.table(
        {
            "query_id": query_ids,
            "query": queries,
            "doc_ids": pa.ListArray.from_arrays(doc_offsets, doc_ids),
            "docs": pa.ListArray.from_arrays(doc_offsets, docs),
            "pair_a": pa.ListArray.from_arrays(row_offsets, pa.array(position[0::2], pa.int64())),
            "pair_b": pa.ListArray.from_arrays(row_offsets, pa.array(position[1::2], pa.int64())),
            "prob_a": pa.ListArray.from_arrays(row_offsets, arrow_array(t["prob_a"]).cast(pa.float64())),
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


def _documents(t, qcode: np.ndarray):
    """Every document occurrence is a slot ``2 * row + side`` (a then b, pair after pair, as before). Returns the
    a-then-b concatenation of ids (slot j at index ``(j % 2) * n + j // 2``), the (query, doc) number of each slot
    (counting up from 0 in order of first appearance) and the slot where each (query, doc) appears first."""
    import pyarrow as pa

    n = len(qcode)
    ids = arrow_concat(t["doc_a_id"], t["doc_b_id"])
    id_code = arrow_codes(ids)[0]
    slot_query = np.repeat(qcode, 2)
    uid, _ = arrow_codes(pa.array(slot_query * (int(id_code.max()) + 1) + _interleave(id_code[:n], id_code[n:])))
    return ids, uid, _first_index(uid)


def _check_document_texts(texts, qcode: np.ndarray, uid: np.ndarray, first_slot: np.ndarray, input_row, qdict, ids):
    """Raise when one (query, doc) carries two texts (inline texts only; ``texts`` a-then-b, like ``ids``)."""
    import pyarrow as pa

    n = len(qcode)
    text_code = arrow_codes(texts)[0]
    slot_query = np.repeat(qcode, 2)
    concat_index = lambda slots: (slots % 2) * n + slots // 2  # noqa: E731
    _text_conflict(
        _interleave(text_code[:n], text_code[n:]), uid, first_slot,
        lambda slots: 2 * input_row(slots // 2) + slots % 2, "(query_id, doc_id)",
        lambda u: (qdict[int(slot_query[first_slot[u]])].as_py(), ids[int(concat_index(first_slot[u]))].as_py()),
        lambda slots: texts.take(pa.array(concat_index(slots))).to_pylist(),
    )  # fmt: skip


def _prepare_batch(t, offset: int, drop_failed: bool, columns: tuple[str, ...] = PREFERENCE_COLUMNS):
    """Check one batch of flat pairs (rows ``offset ...``); return its ``columns`` and the failed-pair count.
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
    t = t.select(list(columns))
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
    qcode, _ = arrow_codes(window["query_id"])
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
            if self.path is None:  # a file of its own: a later grouping must not rewrite one still memory-mapped
                from datasets.fingerprint import get_temporary_cache_files_directory

                with tempfile.NamedTemporaryFile(
                    dir=get_temporary_cache_files_directory(), prefix="grouped_preferences-", suffix=".arrow",
                    delete=False,
                ) as f:
                    self.path = f.name
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


def _group_stream(batches, drop_failed: bool, window_rows: int, out: _GroupedOutput,
                  tables: PreferenceTables | None = None) -> tuple[int, int]:
    """Group batch after batch, holding one window of rows (plus the windows being grouped: one per core, in
    threads, as Arrow and NumPy release the GIL; results are added in input order); returns (rows, failed pairs)."""
    import pyarrow as pa

    pending, offset, n_failed = None, 0, 0
    columns = PREFERENCE_COLUMNS if tables is None else PREFERENCE_ID_COLUMNS
    workers = min(2, available_cores())
    with ThreadPoolExecutor(workers) as pool:
        running = deque()
        for batch in batches:
            batch_rows = batch.num_rows
            batch, failed = _prepare_batch(batch, offset, drop_failed, columns)
            offset, n_failed = offset + batch_rows, n_failed + failed
            pending = batch if pending is None else pa.concat_tables([pending, batch])  # chunks, no copy
            if pending.num_rows >= window_rows:
                ready, pending = _split_window(pending)
                if ready.num_rows:
                    running.append(pool.submit(_group_window, ready, tables))
                elif pending.num_rows > 2 * window_rows and len(arrow_codes(pending["query_id"])[1]) > 1:
                    raise _NotGrouped  # queries interleave over more than a window
            while len(running) > workers or (running and running[0].done()):
                out.add(running.popleft().result())
        if pending is not None and pending.num_rows:
            running.append(pool.submit(_group_window, pending, tables))
        while running:
            out.add(running.popleft().result())
    return offset, n_failed


def _first_appearance_order(pref_ds, batch_size: int) -> np.ndarray:
    """Row order that puts each query's pairs together, queries in order of first appearance (stable): only the
    query ids are read, so the memory is one integer per pair."""
    ranks, known = [], {}
    for t in _arrow_batches(pref_ds, ["query_id"], batch_size):
        code, values = arrow_codes(t["query_id"].combine_chunks())
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
            query) with the preference-set columns (``votes`` and extra columns are ignored), or the
            :class:`~zelo_hf.preference_tables.PreferenceTables` of a set saved with each text once
            (``load_preference_set(source, join=False)``): pairs grouped by id, texts taken from its tables.
        num_proc: unused (grouping is a streamed vectorised pass); accepted for symmetry with the map steps.
        drop_failed: drop pairs whose ``prob_a`` is missing (every vote failed) with a warning. By default such
            pairs are kept and the fit raises, naming the query: nothing is dropped silently.
        window_rows: pairs held in memory at once.
        cache_file_name: Arrow file for a result larger than one window (default: a temporary cache file); a
            result that fits one window stays in memory.
    """
    if num_proc not in (None, 1):
        warnings.warn(f"group_preferences ignores num_proc={num_proc}: grouping is one vectorised pass.", stacklevel=2)
    tables = pref_ds if isinstance(pref_ds, PreferenceTables) else None
    rows = pref_ds.pairs if tables is not None else pref_ds
    column_names = list(rows.column_names or (rows.features or {}).keys())
    required = PREFERENCE_COLUMNS if tables is None else PREFERENCE_ID_COLUMNS
    require_columns(column_names, required, "the preference set", "see the schema in docs/design.md; a set saved with "
                    "ids only takes its texts from its tables: load it with `zelo_hf.load_preference_set(source)`.")
    columns = list(required) + (["query_b_id"] if "query_b_id" in column_names else [])
    path = None if cache_file_name is None else str(cache_file_name)
    out = _GroupedOutput(path)
    if tables is not None:  # built once, before the windows' threads ask them
        tables.index("queries"), tables.index("documents")

    def stream(ds):
        return _group_stream(_arrow_batches(ds, columns, window_rows), drop_failed, window_rows, out, tables)

    try:
        n_rows, n_failed = stream(rows)
    except _NotGrouped:
        if not hasattr(rows, "select") or not hasattr(rows, "__len__"):
            raise ValueError(
                "this streaming preference set is not ordered by query (a query's pairs reappear after other "
                "queries'): load it without `streaming=True`, or write it query by query (e.g. sorted by query_id)."
            ) from None
        out = _GroupedOutput(path)
        n_rows, n_failed = stream(rows.select(_first_appearance_order(rows, window_rows)))
    if n_rows == 0:
        raise ValueError("the preference set has no rows: judge some pairs first (`zelo judge`).")
    if drop_failed and n_failed:
        warnings.warn(f"dropping {n_failed} pair(s) with no prob_a (all votes failed).", stacklevel=2)
    if out.rows == 0:
        raise ValueError(f"all {n_rows} pairs failed (no prob_a): nothing to fit; re-judge them (`zelo judge`).")
    return out.dataset()
