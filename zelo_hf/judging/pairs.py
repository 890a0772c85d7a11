"""What to judge: each query's comparison graph over its candidates (:func:`build_pairs`), or a pre-built pairs
dataset (:func:`pairs_from_dataset`, e.g. cross-query pairs), as :class:`Comparison` lists with their ids."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..graphs import comparison_graph, query_seed
from ..schema import CANDIDATE_COLUMNS, CROSS_QUERY_COLUMNS, PAIR_COLUMNS, require_columns
from ..utils import get_logger
from .votes import Comparison

logger = get_logger(__name__)

_CANDIDATES_FIX = "build it with zelo_hf.candidates (e.g. `zelo candidates`)."


def candidate_rows(candidates: Any) -> Iterator[tuple[str, str, list[str], list]]:
    """``(query_id, query, doc_ids, docs)`` of every query of a candidate set with two or more candidates (ids as
    strings); a query with fewer has nothing to compare and is skipped with a warning."""
    require_columns(candidates.column_names, CANDIDATE_COLUMNS, "the candidate set", _CANDIDATES_FIX)
    columns = candidates.select_columns(list(CANDIDATE_COLUMNS))
    for batch in columns.iter(batch_size=256):  # row by row, datasets' formatting was 5 s of a 809-query dry run
        for qid, query, ids, docs in zip(batch["query_id"], batch["query"], batch["doc_ids"], batch["docs"]):
            if len(ids) < 2:
                logger.warning("query %s has %d candidate(s): nothing to compare, skipped.", qid, len(ids))
                continue
            yield str(qid), query, [str(i) for i in ids], docs


def build_pairs(candidates: Any, degree: int = 8, seed: int = 0) -> list[Comparison]:
    """The comparison graph of every query in a candidate set (``zelo_hf.graphs.comparison_graph``), as pairs.

    Each query's graph is seeded by (seed, query_id), so it does not depend on the order or subset of queries.
    """
    pairs: list[Comparison] = []
    for qid, query, ids, docs in candidate_rows(candidates):
        edges = comparison_graph(len(ids), degree, query_seed(seed, qid))
        pairs += [Comparison(query, docs[a], docs[b], None, qid, ids[a], ids[b]) for a, b in edges]
    return pairs


def pairs_from_dataset(pairs: Any) -> list[Comparison]:
    """Comparisons from a pairs dataset (preference-set columns; ``query_b``/``query_b_id`` for cross-query pairs)."""
    require_columns(pairs.column_names, PAIR_COLUMNS, "the pairs dataset",
                    f"it needs {list(PAIR_COLUMNS)} (+ {list(CROSS_QUERY_COLUMNS)} for cross-query pairs).")
    wanted = [c for c in PAIR_COLUMNS + CROSS_QUERY_COLUMNS if c in pairs.column_names]
    cols = pairs.select_columns(wanted).to_dict()
    n = len(cols["query_id"])
    qb, qbid = cols.get("query_b", [None] * n), cols.get("query_b_id", [None] * n)
    return [
        Comparison(cols["query"][i], cols["doc_a"][i], cols["doc_b"][i], qb[i], str(cols["query_id"][i]),
                   str(cols["doc_a_id"][i]), str(cols["doc_b_id"][i]), None if qbid[i] is None else str(qbid[i]))
        for i in range(n)
    ]


def to_comparisons(data: Any, degree: int, seed: int) -> list[Comparison]:
    """``data`` as comparisons: a list of them as is, a candidate set's graphs, or a pairs dataset's rows."""
    from datasets import Dataset

    if isinstance(data, list) and data and isinstance(data[0], Comparison):
        return data
    if isinstance(data, list):
        data = Dataset.from_list(data)
    if not isinstance(data, Dataset):
        raise TypeError(f"`data` must be a datasets.Dataset (candidate set or pairs) or a list of rows/Comparisons "
                        f"(got {type(data).__name__}); load one with zelo_hf.hub.load_dataset_any.")
    return build_pairs(data, degree, seed) if "doc_ids" in data.column_names else pairs_from_dataset(data)
