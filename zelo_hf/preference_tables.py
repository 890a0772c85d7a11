"""A preference set that stores each text once (issue #12): the pair rows hold ids only (``query_id``, ``doc_a_id``,
``doc_b_id``, [``query_b_id``], ``prob_a``, ``votes``) and two companion tables hold the texts, ``queries``
(``query_id``, ``query``) and ``documents`` (``doc_id``, ``doc``), as BEIR datasets keep ``corpus`` and ``queries``
beside their qrels. Inline, a degree-8 graph repeated every document text 8 times and every query text 400 times.

- :func:`split_texts`: an inline preference set -> :class:`PreferenceTables` (or why its ids do not name its texts).
- :func:`write_preference_set`: the folder: ``data/train-*``, ``queries/queries-*``, ``documents/documents-*``
  parquet shards, one ``configs:`` entry per table for the card (one Hub dataset repo, three configs).
- :func:`load_preference_set`: a folder, file or Hub id -> the row-per-pair set with texts (``join=True``), or its
  :class:`PreferenceTables` (``join=False``), which ``group_preferences`` reads without joining a text per pair.
  Folders written before (texts inline) load unchanged.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .schema import PREFERENCE_ID_COLUMNS, TEXT_OF_ID, TEXT_TABLES, require_columns
from .utils import arrow_array, string_buffers

__all__ = ["PreferenceTables", "split_texts", "join_texts", "write_preference_set", "load_preference_set",
           "concat_preference_sets", "is_ids_only", "pair_rows"]  # fmt: skip

JOIN_BATCH_ROWS = 1 << 16  # pair rows given their texts at a time (the joined rows are written to the cache file)


@dataclass
class PreferenceTables:
    """A preference set with each text once: ``pairs`` (ids, labels, votes) and the ``queries`` / ``documents``
    tables (``datasets.Dataset``\\ s, one row per id)."""

    pairs: Any
    queries: Any
    documents: Any
    _lookups: dict = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.pairs)

    def table(self, name: str):
        return {"queries": self.queries, "documents": self.documents}[name]

    def lookup(self, name: str):
        """``(ids, texts)`` Arrow columns of the table ``name`` (read once; the texts stay chunked, uncopied)."""
        if name not in self._lookups:
            key, text = TEXT_TABLES[name]
            table = self.table(name).with_format("arrow")[:]
            self._lookups[name] = (table[key].combine_chunks(), table[text])
        return self._lookups[name]

    def index(self, name: str) -> KeyIndex:
        """The :class:`KeyIndex` of the table ``name``'s ids, built on first use and kept."""
        if ("index", name) not in self._lookups:
            self._lookups[("index", name)] = KeyIndex(self.lookup(name)[0])
        return self._lookups[("index", name)]

    def texts(self, id_column: str, ids):
        """The texts of ``ids`` (values of the pair column ``id_column``) from their table; a null id gives null.
        Grouping calls this once per window: the table's :class:`KeyIndex` makes each call cost the window's ids, not
        a hash of the whole table again (an Arrow ``index_in`` over 5M document ids took 2.2 s per window, #12)."""
        name = TEXT_OF_ID[id_column][1]
        return self.lookup(name)[1].take(_positions(ids, self.index(name), id_column, name)).combine_chunks()

    def joined(self):
        return join_texts(self)


# ------------------------------------------------------------------------------------------------ the id index
_HASH_BASE = np.uint64(0x100000001B3)  # odd: the polynomial string hash below, mod 2^64
_HASH_CHUNK = 1 << 20  # strings hashed at a time (bounded temporaries)


def _hash_strings(values) -> np.ndarray:
    """A 64-bit polynomial hash of every string of an Arrow array (``sum byte_j * B^j`` mod 2^64, then its length
    mixed in), vectorised over the bytes chunk by chunk. Equal strings hash equal; a lookup verifies the strings."""
    offsets, data = string_buffers(values)
    out = np.empty(len(offsets) - 1, dtype=np.uint64)
    for lo in range(0, len(out), _HASH_CHUNK):
        o = offsets[lo : lo + _HASH_CHUNK + 1]
        lengths = np.diff(o)
        chunk = data[o[0] : o[-1]].astype(np.uint64) + np.uint64(1)
        position = np.arange(len(chunk)) - np.repeat(o[:-1] - o[0], lengths)
        steps = np.full(int(lengths.max(initial=0)) + 1, _HASH_BASE, dtype=np.uint64)
        steps[0] = 1
        powers = np.cumprod(steps, dtype=np.uint64)  # B^j mod 2^64 (uint64 products wrap)
        total = np.concatenate([np.zeros(1, np.uint64), np.cumsum(chunk * powers[position], dtype=np.uint64)])
        h = total[o[1:] - o[0]] - total[o[:-1] - o[0]]
        out[lo : lo + len(lengths)] = h * _HASH_BASE + lengths.astype(np.uint64)
    return out


class KeyIndex:
    """Row of each id in a table's unique ids, built once in O(ids) (hashes sorted) and asked per batch in O(batch).

    Arrow's ``index_in`` hashes its whole value set on every call, so grouping a large preference set window by
    window re-hashed every document id per window. Here a lookup hashes the asked ids, binary-searches the sorted
    hashes and then compares the strings themselves, so a hash collision can never return a wrong row: ids that
    fail the comparison (not in the table, or a collision) are looked up again with ``index_in``.
    """

    def __init__(self, keys):
        self.keys = arrow_array(keys)
        hashes = _hash_strings(self.keys)
        self.order = np.argsort(hashes, kind="stable")
        self.sorted = hashes[self.order]

    def positions(self, ids):
        """Arrow int64 rows of ``ids`` in the keys; null for a null id or an id not in the table."""
        import pyarrow as pa
        import pyarrow.compute as pc

        ids = arrow_array(ids)
        if len(self.sorted) == 0 or len(ids) == 0:
            return pa.nulls(len(ids), pa.int64())
        hashes = _hash_strings(ids)
        asked = np.argsort(hashes)  # sorted needles: the binary searches walk the table once, not at random
        slot = np.empty(len(hashes), dtype=np.int64)
        slot[asked] = np.searchsorted(self.sorted, hashes[asked])
        rows = self.order[np.minimum(slot, len(self.sorted) - 1)]
        same = pc.fill_null(pc.equal(self.keys.take(pa.array(rows)), ids), False).to_numpy(zero_copy_only=False)
        positions = pa.array(rows, pa.int64(), mask=~same)
        retry = np.flatnonzero(~same & pc.is_valid(ids).to_numpy(zero_copy_only=False))
        if len(retry):  # not in the table (the caller says so), or a collision: Arrow's exact lookup decides
            found = pc.index_in(ids.take(pa.array(retry)), value_set=self.keys).cast(pa.int64())
            merged = np.where(same, rows, -1)
            merged[retry] = found.fill_null(-1).to_numpy(zero_copy_only=False)
            positions = pa.array(merged, pa.int64(), mask=merged < 0)
        return positions


# ---------------------------------------------------------------------------------------------------- splitting
def arrow_codes(column) -> tuple[np.ndarray, Any]:
    """Integer codes in order of first appearance (nulls: -1) and the distinct values (one hash pass, Arrow)."""
    import pyarrow.compute as pc

    column = arrow_array(column)
    encoded = pc.dictionary_encode(column)
    return encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64), encoded.dictionary


def arrow_concat(*columns):
    """One contiguous array of the columns' values one after the other (a single copy of chunked columns)."""
    import pyarrow as pa

    return pa.concat_arrays([chunk for column in columns for chunk in getattr(column, "chunks", [column])])


def _distinct(ids, texts, table: str):
    """One row per id (in order of first appearance) of the table ``table``, or the reason ``ids`` do not name one
    text each (a str). Null ids (a within-query row's ``query_b_id``) are skipped; their texts must be null too."""
    import pyarrow as pa
    import pyarrow.compute as pc

    key, text = TEXT_TABLES[table]
    valid = pc.is_valid(ids)
    if pc.any(pc.and_(pc.invert(valid), pc.is_valid(texts))).as_py():
        return f"a {text} text has no {key} (null)"
    ids, texts = ids.filter(valid), texts.filter(valid)
    id_code, text_code = arrow_codes(ids)[0], arrow_codes(texts)[0]
    _, first = np.unique(id_code, return_index=True)  # codes 0..k-1 in order of first appearance
    bad = np.flatnonzero(text_code != text_code[first[id_code]])
    if len(bad):
        name = ids[int(bad[0])].as_py()
        n_texts = len(set(texts.filter(pc.equal(ids, name)).to_pylist()))
        return f"{key}={name!r} has {n_texts} different texts"
    return pa.table({key: ids.take(pa.array(first)), text: texts.take(pa.array(first))})


def _text_tables(table) -> dict[str, Any]:
    """``{"queries": ..., "documents": ...}`` Arrow tables of an inline preference set's Arrow ``table``, or the str
    reason why its ids do not name its texts."""
    out = {}
    for name in TEXT_TABLES:
        id_columns = [c for c, (text, t) in TEXT_OF_ID.items() if t == name and c in table.column_names]
        texts = [TEXT_OF_ID[c][0] for c in id_columns]
        ids = arrow_concat(*(table[c] for c in id_columns))
        distinct = _distinct(ids, arrow_concat(*(table[c] for c in texts)), name)
        if isinstance(distinct, str):
            return distinct
        out[name] = distinct
    return out


def split_texts(preferences):
    """An inline preference set (a ``Dataset`` with ``query``, ``doc_a``, ``doc_b``) -> :class:`PreferenceTables`,
    or a str saying why not: an id with two texts (e.g. ``doc_id`` 'd0' naming another document in each query)."""
    from datasets import Dataset

    require_columns(preferences.column_names, PREFERENCE_ID_COLUMNS, "the preference set")
    table = preferences.with_format("arrow")[:]
    tables = _text_tables(table)
    if isinstance(tables, str):
        return tables
    text_columns = [text for c, (text, _) in TEXT_OF_ID.items() if c in table.column_names]
    pairs = preferences.remove_columns([c for c in text_columns if c in table.column_names])
    return PreferenceTables(pairs, Dataset(tables["queries"]), Dataset(tables["documents"]))


# ----------------------------------------------------------------------------------------------------- joining
def _positions(ids, index: KeyIndex, id_column: str, table: str):
    """Row of each id in the table (its :class:`KeyIndex`); an id that is not there is an error naming it and the
    table."""
    import pyarrow.compute as pc

    ids = arrow_array(ids)
    positions = index.positions(ids)
    missing = pc.and_(pc.is_valid(ids), pc.is_null(positions))
    n_missing = pc.sum(missing).as_py() or 0
    if n_missing:
        row = int(np.flatnonzero(missing.to_numpy(zero_copy_only=False))[0])
        key = TEXT_TABLES[table][0]
        raise ValueError(
            f"pair row {row}: {id_column}={ids[row].as_py()!r} has no text in the `{table}` table ({n_missing} pair "
            f"id(s) missing from its `{key}` column): the set's {table}/ files are incomplete or from another set; "
            "write it again with `save_preference_set` (or `zelo judge`: answered pairs come from the cache)."
        )
    return positions


def _add_texts(batch, indices, positions: dict, texts: dict):
    """``Dataset.map`` function: the batch's pair rows with each id's text after it (the inline column order)."""
    import pyarrow as pa

    rows = pa.array(indices, pa.int64())
    columns = {}
    for name in batch.column_names:
        columns[name] = batch[name]
        if name in positions:
            columns[TEXT_OF_ID[name][0]] = texts[name].take(positions[name].take(rows)).combine_chunks()
    return pa.table(columns)


def join_texts(tables: PreferenceTables):
    """The row-per-pair set with ``query``, ``doc_a``, ``doc_b`` (, ``query_b``) beside their ids, in the inline
    layout's column order: one hash lookup per id column, then Arrow ``take`` batch by batch (the joined rows go to
    a cache file when the pairs are on disk)."""
    from datasets.fingerprint import Hasher

    pairs = tables.pairs
    id_columns = [c for c in TEXT_OF_ID if c in pairs.column_names]
    arrow = pairs.with_format("arrow")
    positions, texts = {}, {}
    for c in id_columns:
        name = TEXT_OF_ID[c][1]
        texts[c] = tables.lookup(name)[1]
        positions[c] = _positions(arrow[c], tables.index(name), c, name)
    if len(pairs) == 0:  # Dataset.map returns an empty dataset unchanged: give it the text columns here
        from datasets import Dataset

        return Dataset(_add_texts(arrow[:], [], positions, texts))
    fingerprint = Hasher.hash([pairs._fingerprint, tables.queries._fingerprint, tables.documents._fingerprint,
                               "join_texts/1"])  # fmt: skip
    joined = arrow.map(_add_texts, batched=True, batch_size=JOIN_BATCH_ROWS, with_indices=True,
                       fn_kwargs={"positions": positions, "texts": texts}, new_fingerprint=fingerprint,
                       desc="Joining the preference set's texts")  # fmt: skip
    return joined.with_format(None)


def pair_rows(preferences):
    """The pair rows (ids, labels, votes) of a ``Dataset`` or of :class:`PreferenceTables`."""
    return preferences.pairs if isinstance(preferences, PreferenceTables) else preferences


def is_ids_only(dataset) -> bool:
    """Pair rows with ids but not their texts: the saved layout of :func:`write_preference_set`."""
    names = set(dataset.column_names or ())
    return {"query_id", "doc_a_id", "doc_b_id"} <= names and not {"query", "doc_a", "doc_b"} & names


# ----------------------------------------------------------------------------------------------------- the folder
def write_preference_set(preferences, output_dir: str | Path, max_shard_size: int | str = "500MB") -> list | None:
    """Write the preference set's parquet shards into ``output_dir``: ``data/train-*`` pair rows with ids and the
    ``queries/queries-*`` and ``documents/documents-*`` text tables; returns the card's ``configs:`` entries (one per
    table). A set whose ids do not name one text each, or without rows, is written inline (texts in every row, no
    configs: the layout of older versions), with a warning naming the id."""
    from . import hub

    output_dir = Path(output_dir)
    for name in TEXT_TABLES:  # a rewrite must not keep another set's tables
        for old in (output_dir / name).glob("*.parquet"):
            old.unlink()
    tables = split_texts(preferences) if len(preferences) else "it has no rows"
    if isinstance(tables, str):
        if len(preferences):
            warnings.warn(f"the preference set is saved with its texts in every row: {tables} (ids must name one text "
                          "each to store each text once; give documents corpus-wide ids).", stacklevel=3)
        hub.write_shards(preferences, output_dir / "data", "train", max_shard_size)
        return None
    files = {"default": ("train", hub.write_shards(tables.pairs, output_dir / "data", "train", max_shard_size))}
    for name in TEXT_TABLES:
        files[name] = (name, hub.write_shards(tables.table(name), output_dir / name, name, max_shard_size))
    # every file named (not a `data/train-*` pattern): datasets keys its cache on the card's data_files, and the
    # content hash in each name keeps two same-named folders from loading each other's rows
    return [{"config_name": config, "data_files": [{"split": split, "path": [p.relative_to(output_dir).as_posix()
                                                                              for p in paths]}]}
            for config, (split, paths) in files.items()]  # fmt: skip


def _companion_tables(source: str | Path):
    """``(queries, documents)`` Datasets of a saved set (its folder's ``queries/`` and ``documents/`` shards, or
    the Hub repo's ``queries`` and ``documents`` configs), or None when it has none."""
    path = Path(source).expanduser()
    if path.is_dir():
        from datasets import Dataset

        files = {name: sorted((path / name).glob("*.parquet")) for name in TEXT_TABLES}
        if not any(files.values()):
            return None
        for name, found in files.items():
            if not found:
                raise FileNotFoundError(f"{path / name} has no parquet files: a preference set with ids needs both "
                                        f"{list(TEXT_TABLES)} tables; write it again with `save_preference_set`.")
        return tuple(Dataset.from_parquet([str(f) for f in files[name]]) for name in TEXT_TABLES)
    if path.exists():
        return None  # a single file holds no companion tables
    return _hub_companion_tables(str(source))


def _hub_companion_tables(repo_id: str):
    from datasets import load_dataset

    try:
        return tuple(load_dataset(repo_id, name, split=name) for name in TEXT_TABLES)
    except ValueError as err:
        if "not found" in str(err) and "BuilderConfig" in str(err):
            return None
        raise


def with_texts(dataset, source: str | Path, join: bool = True):
    """``dataset`` loaded from ``source``: joined with its companion tables when it has ids only and ``source``
    has them (``join=False``: as :class:`PreferenceTables`); any other dataset as it is."""
    if not is_ids_only(dataset):
        return dataset
    companions = _companion_tables(source)
    if companions is None:
        return dataset
    for table, name in zip(companions, TEXT_TABLES):
        require_columns(table.column_names, TEXT_TABLES[name], f"the `{name}` table of {source}")
    tables = PreferenceTables(dataset, *companions)
    return join_texts(tables) if join else tables


def load_preference_set(source: str | Path, split: str = "train", join: bool = True):
    """A preference set from a folder written by ``save_preference_set``, a parquet / jsonl file or a Hub id.

    ``join=True`` (what trainers read): the row-per-pair set with ``query``, ``doc_a``, ``doc_b`` beside their ids,
    as older folders (texts inline) hold it, which load unchanged. ``join=False``: a set saved with each text once
    comes back as :class:`PreferenceTables` (pairs + ``queries`` + ``documents``), which ``group_preferences`` and
    ``label_preferences`` read without a text per pair; an inline set as its ``Dataset``.
    """
    from . import hub

    return with_texts(hub.load_rows(source, split=split), source, join=join)


def _union(parts, name: str):
    """One table of ``name`` from several sets' (first text of each id; two different texts are an error)."""
    from datasets import Dataset

    key, text = TEXT_TABLES[name]
    arrow = [p.table(name).with_format("arrow")[:] for p in parts]
    merged = _distinct(arrow_concat(*(t[key] for t in arrow)), arrow_concat(*(t[text] for t in arrow)), name)
    if isinstance(merged, str):
        raise ValueError(f"the preference sets disagree on a text: {merged} across their `{name}` tables: ids must "
                         "name one text in every set; fix the ids or judge the sets apart.")
    return Dataset(merged)


def concat_preference_sets(parts: list):
    """Several preference sets as one: :class:`PreferenceTables` when all are (pairs concatenated, tables merged),
    else the joined row-per-pair ``Dataset``; a part with the first one's columns is cast to its features."""
    from datasets import concatenate_datasets

    if len(parts) == 1:
        return parts[0]
    tables = all(isinstance(p, PreferenceTables) for p in parts)
    rows = [p.pairs if tables else (p.joined() if isinstance(p, PreferenceTables) else p) for p in parts]
    rows = [r.cast(rows[0].features) if set(r.column_names) == set(rows[0].column_names) else r for r in rows]
    if not tables:
        return concatenate_datasets(rows)
    return PreferenceTables(concatenate_datasets(rows), _union(parts, "queries"), _union(parts, "documents"))
