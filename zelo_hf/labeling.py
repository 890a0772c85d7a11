"""From grouped preferences to per-query scores with ``datasets`` (ZELO.md, pipeline step 5 at scale).

``thurstone_map`` fits every query of a batch in one vectorised call (use it with ``Dataset.map``; it reads the
batch as Arrow), ``label_preferences`` runs grouping (:func:`zelo_hf.grouping.group_preferences`) and the fit, and
``flatten_labels`` gives the pointwise training set (one row per query-document). Saving and summarising a label
set: :mod:`zelo_hf.label_sets`. Schemas: :mod:`zelo_hf.schema`.

    >>> grouped = group_preferences(pref_ds)
    >>> labels = grouped.map(thurstone_map, batched=True, fn_kwargs={"model": "thurstone"}, desc="Thurstone fit")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numba import njit

from .grouping import group_preferences
from .label_sets import save_label_set
from .schema import FIT_COLUMNS, GROUPED_FIT_COLUMNS, LABEL_COLUMNS, require_columns
from .thurstone import DEFAULT_PRIOR_SD, available_cores, check_fit_model, fit_scores_grouped
from .utils import arrow_array, string_buffers

__all__ = ["thurstone_map", "label_preferences", "flatten_labels"]


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
    return arrow_array(column)


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


@njit(cache=True, nogil=True)
def _first_repeated_id(offsets, data, starts):
    """``(query, position)`` of the first id that repeats within its query, ``(-1, -1)`` if none. Ids are the byte
    strings ``data[offsets[i]:offsets[i + 1]]``, query q owns ids ``starts[q] .. starts[q + 1] - 1``: one small hash
    table per query (FNV-1a; equal hashes are compared byte by byte), so it stays in cache."""
    n_max = 0
    for q in range(len(starts) - 1):
        n_max = max(n_max, starts[q + 1] - starts[q])
    size = 16
    while size < 2 * n_max:
        size *= 2
    table = np.empty(size, dtype=np.int64)
    hashes = np.empty(size, dtype=np.uint64)
    for q in range(len(starts) - 1):
        table[:] = -1
        for i in range(starts[q], starts[q + 1]):
            h = np.uint64(14695981039346656037)
            for k in range(offsets[i], offsets[i + 1]):
                h = (h ^ np.uint64(data[k])) * np.uint64(1099511628211)
            slot = np.int64(h >> np.uint64(40)) & (size - 1)
            while table[slot] >= 0:
                j = table[slot]
                if hashes[slot] == h and _same_bytes(data, offsets[i], offsets[i + 1], offsets[j], offsets[j + 1]):
                    return q, i - starts[q]
                slot = (slot + 1) & (size - 1)
            table[slot] = i
            hashes[slot] = h
    return -1, -1


@njit(cache=True, nogil=True)
def _same_bytes(data, a0, a1, b0, b1) -> bool:
    if a1 - a0 != b1 - b0:
        return False
    for k in range(a1 - a0):
        if data[a0 + k] != data[b0 + k]:
            return False
    return True


def _repeated_id(values, sizes: np.ndarray) -> tuple[int, int]:
    """``(query, position)`` of the first doc_id repeated within its query, ``(-1, -1)`` if none: compiled per-query
    hash tables over the ids' bytes (3 us per query of 100 ids, 3-4x cheaper than one Arrow ``dictionary_encode``
    of the batch, whose table of every id in the batch leaves the cache). Ids of other types compare as strings."""
    offsets, data = string_buffers(values)
    return _first_repeated_id(offsets, data, np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64))


def _check_unique_doc_ids(column, sizes: np.ndarray, query_ids: _QueryIds) -> None:
    """Each doc_id present and at most once per query."""
    if len(column) == 0:
        return
    values = column.flatten()
    if values.null_count:
        i = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
        q = int(np.searchsorted(np.cumsum(sizes), i, side="right"))
        raise ValueError(
            f"query_id={query_ids[q]!r}: doc_ids holds a missing (null) id: every document needs its doc_id "
            "(re-run `group_preferences` on the flat preference set)."
        )
    q, i = _repeated_id(values, sizes)
    if q >= 0:
        raise ValueError(
            f"query_id={query_ids[q]!r}: doc_id {column[q].as_py()[i]!r} appears twice in doc_ids: each document once "
            "per query (re-run `group_preferences` on the flat preference set)."
        )


def _check_batch(batch) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, _QueryIds]:
    """Validate one batch of grouped rows, vectorised over the batch (flat values + per-query offsets); return the
    flat local pair indices, probs, sizes, pairs per query and the query ids (for error messages). Each pair's
    indices and label are checked by the fit's kernel, in its threads."""
    require_columns(getattr(batch, "column_names", None) or list(batch), GROUPED_FIT_COLUMNS, "the grouped preferences")
    query_ids = _QueryIds(_arrow_column(batch, "query_id"))
    doc_ids = _arrow_column(batch, "doc_ids")
    sizes = _list_lengths(doc_ids, "doc_ids", query_ids)
    _check_unique_doc_ids(doc_ids, sizes, query_ids)
    counts, a = _indices(_arrow_column(batch, "pair_a"), "pair_a", query_ids)
    counts_b, b = _indices(_arrow_column(batch, "pair_b"), "pair_b", query_ids)
    counts_p, probs = _probabilities(_arrow_column(batch, "prob_a"), query_ids)
    if not (np.array_equal(counts, counts_b) and np.array_equal(counts, counts_p)):
        raise ValueError("`pair_a`, `pair_b` and `prob_a` must have equal lengths per query: one entry per pair.")
    return a, b, probs, sizes, counts, query_ids


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
    ``connected``. Use with ``batched=True`` and ``fn_kwargs`` for the options (see
    :func:`zelo_hf.thurstone.fit_scores_grouped`). The batch's columns are read as Arrow (no Python objects per pair)
    and the per-document columns come back as one NumPy array per query. ``num_threads``: fit threads (default: every core, 1 per process under
    ``num_proc``). Bad rows raise an error naming the ``query_id``.
    """
    a, b, probs, sizes, counts, query_ids = _check_batch(batch)
    if len(sizes) == 0:
        return {name: [] for name in FIT_COLUMNS}
    res = fit_scores_grouped(
        a, b, probs, sizes, counts, model=model, prior_sd=prior_sd, tol=tol, max_iter=max_iter,
        compute_se=compute_se, query_ids=query_ids, num_threads=num_threads,
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
    check_fit_model(model)  # before grouping: a bad model fails before any work
    if push_to_hub and output_dir is None:
        raise ValueError(f"push_to_hub={push_to_hub!r} needs `output_dir`: the folder that gets uploaded.")
    grouped = group_preferences(pref_ds, drop_failed=drop_failed)
    labels = label_grouped(grouped, model, prior_sd, num_proc, batch_size, compute_se)
    if output_dir is not None:
        save_label_set(
            labels, output_dir, push_to_hub=push_to_hub, model=model, prior_sd=prior_sd,
            max_shard_size=max_shard_size, **card_info,
        )  # fmt: skip
    return labels


def label_grouped(
    grouped,
    model: str = "thurstone",
    prior_sd: float = DEFAULT_PRIOR_SD,
    num_proc: int | None = None,
    batch_size: int = 1000,
    compute_se: bool = True,
):
    """A grouped preference set with the label columns of :func:`thurstone_map` added (the fit step of
    :func:`label_preferences`; options as there). The map writes only the label columns, which are then joined onto
    the grouped set without a copy: a map that keeps the input columns rewrites all of them to its cache file
    (1.1-1.2x through ``eval/bench_fit.py --through_map``, ``queries_per_s_label_grouped``)."""
    from datasets import concatenate_datasets

    threads = max(1, available_cores() // num_proc) if num_proc and num_proc > 1 else None
    fitted = grouped.map(
        thurstone_map,
        batched=True,
        batch_size=batch_size,
        num_proc=num_proc,
        fn_kwargs={"model": model, "prior_sd": prior_sd, "compute_se": compute_se, "num_threads": threads},
        remove_columns=grouped.column_names,
        desc="Thurstone fit",
    )
    return concatenate_datasets([grouped, fitted], axis=1)


def flatten_labels(label_ds, score_column: str | None = None):
    """Label set -> pointwise training set: one row per (query_id, query, doc_id, doc, score).

    ``score_column`` defaults to ``"score"`` (calibrated, comparable across queries) when present, else ``"elo"``.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    from datasets import Dataset

    score_column = score_column or ("score" if "score" in label_ds.column_names else "elo")
    require_columns(label_ds.column_names, (*LABEL_COLUMNS, score_column), "the label set")
    table = label_ds.select_columns([*LABEL_COLUMNS, score_column]).with_format("arrow")[:]
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
