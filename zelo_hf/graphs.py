"""Sparse comparison graphs: which document pairs of one query get judged (ZELO.md, pipeline step 2).

For ``n`` candidates the paper judges the union of ``degree / 2`` random Hamiltonian cycles: a
``degree``-regular multigraph with ``n * degree / 2`` edges (``degree=8, n=100`` -> 400 pairs instead of
4,950). Each cycle alone is connected, every node has the same degree (a well-conditioned fit), and random
regular graphs are expanders, so the diameter is small (about ``log n / log(degree - 1)``).

Edges are returned as an ``int64`` array of shape ``(m, 2)``: row ``(a, b)`` asks "is document ``a`` more
relevant than document ``b``?". Indices are positions in the query's candidate list.

Small ``n``: a Hamiltonian cycle needs ``n >= 3``; with ``n = 3`` the only cycle is the triangle (degree 2),
which is already the dense graph. :func:`comparison_graph` is the entry point for pipelines: it falls back to
the dense graph whenever ``n <= degree + 1`` (there the dense graph has no more pairs than the sparse one
would), so ``n = 2`` gives the single comparison ``(0, 1)``.
"""

from __future__ import annotations

import hashlib
import warnings

import numpy as np

from .schema import PAIR_COLUMNS, require_columns

__all__ = [
    "sample_cycle_graph",
    "dense_graph",
    "comparison_graph",
    "is_connected",
    "graph_diameter",
    "candidate_pairs",
    "query_seed",
]


def query_seed(seed: int, query_id: str) -> int:
    """The seed of one query's comparison graph: (seed, query_id), so it does not depend on the other queries (the
    same graph in ``zelo graph``, ``zelo judge --candidates`` and the zerank preferences stage)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{query_id}".encode()).digest()[:8], "little")


def _rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _check_cycle_args(n: int, degree: int) -> None:
    if n < 3:
        raise ValueError(
            f"`n` must be >= 3 for a Hamiltonian cycle (got n={n}): use `comparison_graph(n, degree)`, which "
            "returns the dense graph for small n (n=2 -> the single pair (0, 1))."
        )
    if degree < 2:
        raise ValueError(f"`degree` must be >= 2 (got degree={degree}): pass an even degree, e.g. 8.")
    if degree % 2:
        raise ValueError(
            f"`degree` must be even, each Hamiltonian cycle adds 2 (got degree={degree}): pass e.g. {degree + 1}."
        )
    if degree >= n:
        raise ValueError(
            f"`degree` must be even and < n (got degree={degree}, n={n}): pass a smaller even degree, or use "
            "`comparison_graph(n, degree)` / `dense_graph(n)` to judge all pairs."
        )


def _cycle_edges(perm: np.ndarray) -> np.ndarray:
    """The edges ``(perm[i], perm[i + 1])`` of the cycle through ``perm``, the last one closing it."""
    return np.stack([perm, np.concatenate([perm[1:], perm[:1]])], axis=1)


def _edge_keys(edges: np.ndarray, n: int) -> np.ndarray:
    """One integer per unordered pair, so repeats between cycles are found by a sorted search or a set lookup."""
    lo, hi = np.minimum(edges[:, 0], edges[:, 1]), np.maximum(edges[:, 0], edges[:, 1])
    return lo * n + hi


def _redraw_repeats(perm: np.ndarray, seen: np.ndarray, n: int, rng: np.random.Generator, budget: int) -> int:
    """Re-draw the positions of documents on repeated pairs (swap with a random position) while that helps.

    A swap is kept when it does not increase the number of repeated pairs. Returns the number of repeats left.
    Position ``i`` is bad when its cycle edge ``(perm[i], perm[i + 1])`` is already in ``seen`` (the pairs of the
    earlier cycles, sorted keys of unordered pairs). A swap of ``i`` and ``j`` changes only the edges at positions
    ``i - 1, i, j - 1, j``, so only those are looked up again (2-3x faster per graph than re-keying the whole cycle
    after every swap, #12), with the same random draws, hence the same graph for the same seed: judgment caches
    keyed on the pairs stay valid.
    """
    if not len(seen):
        return 0
    keys = _edge_keys(_cycle_edges(perm), n)
    bad = np.flatnonzero(seen[np.minimum(np.searchsorted(seen, keys), len(seen) - 1)] == keys).tolist()
    if not bad:
        return 0
    seen_set, order = set(seen.tolist()), perm.tolist()

    def is_repeat(k: int) -> bool:
        u, v = order[k], order[(k + 1) % n]
        return (u * n + v if u < v else v * n + u) in seen_set

    for _ in range(budget):  # `bad` stays sorted, as np.flatnonzero gave it: the draws index into it
        if not bad:
            break
        # bad[rng.integers(len(bad))] is the draw of rng.choice(bad), at a third of its cost
        i, j = bad[int(rng.integers(len(bad)))], int(rng.integers(n))
        touched = {(i - 1) % n, i, (j - 1) % n, j}
        order[i], order[j] = order[j], order[i]
        now_bad = {k for k in touched if is_repeat(k)}
        if len(now_bad) <= len(touched.intersection(bad)):
            bad = sorted((set(bad) - touched) | now_bad)
        else:
            order[i], order[j] = order[j], order[i]
    perm[:] = order
    return len(bad)


def sample_cycle_graph(
    n: int,
    degree: int = 8,
    seed: int | np.random.Generator | None = None,
    redraw_duplicates: bool = True,
    max_redraws: int = 100,
) -> np.ndarray:
    """Union of ``degree // 2`` random Hamiltonian cycles on ``n`` nodes: ``int64`` edges of shape ``(n*degree//2, 2)``.

    Args:
        n: number of documents (>= 3).
        degree: even degree of every node, ``2 <= degree < n``.
        seed: an int or a ``np.random.Generator``; the same seed gives the same graph.
        redraw_duplicates: re-draw the parts of a new cycle that repeat a pair already in the graph (a document
            on a repeated pair swaps its place in the cycle with a random other document, kept when it does not
            add repeats), so every judged pair is new information.
        max_redraws: re-draws allowed per cycle. When repeats remain after them (dense regimes, e.g.
            ``degree = n - 1``) the multigraph is kept and a warning says so -- never silently.
    """
    _check_cycle_args(n, degree)
    rng = _rng(seed)
    cycles: list[np.ndarray] = []
    seen = np.empty(0, dtype=np.int64)
    for _ in range(degree // 2):
        perm = rng.permutation(n)
        left = _redraw_repeats(perm, seen, n, rng, max_redraws) if redraw_duplicates else 0
        if left:
            warnings.warn(
                f"sample_cycle_graph(n={n}, degree={degree}): {left} repeated pair(s) left after max_redraws="
                f"{max_redraws} re-draws; keeping a multigraph (raise max_redraws or lower degree to avoid this).",
                stacklevel=2,
            )
        cycle = _cycle_edges(perm)
        cycles.append(cycle)
        seen = np.sort(np.concatenate([seen, _edge_keys(cycle, n)]))
    return np.concatenate(cycles).astype(np.int64)


def dense_graph(n: int) -> np.ndarray:
    """All ``n * (n - 1) / 2`` pairs ``(i, j)`` with ``i < j``, as ``int64`` of shape ``(m, 2)``."""
    if n < 2:
        raise ValueError(f"`n` must be >= 2 to compare anything (got n={n}): a query needs at least two documents.")
    a, b = np.triu_indices(n, k=1)
    return np.stack([a, b], axis=1).astype(np.int64)


def comparison_graph(n: int, degree: int = 8, seed: int | np.random.Generator | None = None) -> np.ndarray:
    """The pairs to judge for one query of ``n`` documents (what pipelines call).

    The cycle graph of :func:`sample_cycle_graph` when ``n > degree + 1``; otherwise the dense graph, which then
    has at most as many pairs as ``degree`` cycles would ask for (``n = 2`` -> ``[(0, 1)]``).
    """
    if n < 2:
        raise ValueError(
            f"`n` must be >= 2 documents per query (got n={n}): drop queries with fewer than two candidates "
            "or retrieve more candidates (e.g. a larger top-k)."
        )
    if n <= degree + 1:
        return dense_graph(n)
    return sample_cycle_graph(n, degree, seed=seed)


def _adjacency(edges: np.ndarray, n: int):
    from scipy.sparse import coo_matrix

    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    if edges.size and (edges.min() < 0 or edges.max() >= n):
        raise ValueError(f"`edges` index out of range for n={n} (got values in [{edges.min()}, {edges.max()}]).")
    ones = np.ones(len(edges), dtype=np.int8)
    return coo_matrix((ones, (edges[:, 0], edges[:, 1])), shape=(n, n)).tocsr()


def is_connected(edges: np.ndarray, n: int) -> bool:
    """Whether the (undirected) comparison graph connects all ``n`` documents; ``n = 1`` is connected."""
    from scipy.sparse.csgraph import connected_components

    if n <= 1:
        return True
    n_components, _ = connected_components(_adjacency(edges, n), directed=False)
    return bool(n_components == 1)


def graph_diameter(edges: np.ndarray, n: int) -> int:
    """Longest shortest path (in comparisons) between two documents; ``-1`` when the graph is disconnected."""
    from scipy.sparse.csgraph import shortest_path

    if n <= 1:
        return 0
    dist = shortest_path(_adjacency(edges, n), directed=False, unweighted=True)
    return -1 if np.isinf(dist).any() else int(dist.max())


def candidate_pairs(candidates, degree: int = 8, seed: int = 0):
    """The pairs to judge for a candidate set: one row per pair, the preference-set schema without ``prob_a``.

    ``candidates`` is a ``datasets.Dataset`` with ``query_id`` and ``doc_ids`` (plus ``query`` and ``docs``,
    copied to the pairs when present). Each query gets :func:`comparison_graph` over its candidates seeded by
    :func:`query_seed` (``seed``, ``query_id``): the pairs that ``judge_pairs`` judges for the same candidates,
    degree and seed (so their cache entries are shared), whatever the order or subset of queries.
    """
    from datasets import Dataset

    require_columns(candidates.column_names, ("query_id", "doc_ids"), "the candidate set",
                    "it needs one row per query with `query_id` and `doc_ids` (see docs/design.md), e.g. from "
                    "`zelo candidates`.")
    with_text = "query" in candidates.column_names and "docs" in candidates.column_names
    rows: dict[str, list] = {c: [] for c in PAIR_COLUMNS}
    for row in candidates:
        if with_text and len(row["docs"]) != len(row["doc_ids"]):
            raise ValueError(
                f"query_id={row['query_id']!r}: {len(row['docs'])} docs for {len(row['doc_ids'])} doc_ids: "
                "one text per id."
            )
        if len(row["doc_ids"]) < 2:
            raise ValueError(
                f"query_id={row['query_id']!r} has {len(row['doc_ids'])} candidate(s): drop it or retrieve more."
            )
        edges = comparison_graph(len(row["doc_ids"]), degree, seed=query_seed(seed, str(row["query_id"])))
        ids = np.asarray(row["doc_ids"], dtype=object)
        rows["query_id"] += [row["query_id"]] * len(edges)
        rows["doc_a_id"] += ids[edges[:, 0]].tolist()
        rows["doc_b_id"] += ids[edges[:, 1]].tolist()
        if with_text:
            docs = np.asarray(row["docs"], dtype=object)
            rows["query"] += [row["query"]] * len(edges)
            rows["doc_a"] += docs[edges[:, 0]].tolist()
            rows["doc_b"] += docs[edges[:, 1]].tolist()
    if not with_text:
        rows = {k: v for k, v in rows.items() if k in ("query_id", "doc_a_id", "doc_b_id")}
    return Dataset.from_dict(rows)
