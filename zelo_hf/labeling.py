"""From judged pairs to per-query scores with ``datasets`` (ZELO.md, pipeline step 5 at scale).

``group_preferences`` turns a flat preference set (one row per judged pair) into one row per query,
``thurstone_map`` fits every query of a batch in one vectorised call (use it with ``Dataset.map``), and
``flatten_labels`` gives the pointwise training set (one row per query-document). Schemas: docs/design.md.

    >>> grouped = group_preferences(pref_ds)
    >>> labels = grouped.map(thurstone_map, batched=True, fn_kwargs={"model": "thurstone"}, desc="Thurstone fit")
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .thurstone import DEFAULT_PRIOR_SD, fit_scores_flat
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


def _check_unique_text(df, key: list[str], text: str, what: str) -> None:
    """Raise when one id carries two different texts (e.g. a doc id reused for another document)."""
    counts = df.groupby(key, sort=False)[text].nunique()
    bad = counts[counts > 1]
    if len(bad):
        ident = bad.index[0]
        raise ValueError(
            f"{what} {ident!r} has {bad.iloc[0]} different texts in the preference set: ids must identify one text; "
            "fix the ids (e.g. hash the text into the id) or de-duplicate the candidates."
        )


def _documents(pairs):
    """One row per (query, document), in order of first appearance; ``idx`` is the position in the query."""
    import pandas as pd

    sides = []
    for k, side in enumerate(("a", "b")):
        part = pairs[["query_id", f"doc_{side}_id", f"doc_{side}"]].set_axis(["query_id", "doc_id", "doc"], axis=1)
        sides.append(part.assign(order=2 * np.arange(len(pairs)) + k))  # a then b, pair after pair
    docs = pd.concat(sides).sort_values("order", kind="stable").drop(columns="order")
    docs = docs.drop_duplicates(["query_id", "doc_id", "doc"])
    _check_unique_text(docs, ["query_id", "doc_id"], "doc", "(query_id, doc_id)")
    docs = docs.drop_duplicates(["query_id", "doc_id"]).reset_index(drop=True)
    docs["idx"] = docs.groupby("query_id", sort=False).cumcount()
    return docs


def _reject_cross_query(pref_ds) -> None:
    """Cross-query pairs (doc_b answers another query) belong to calibration, not to a within-query fit."""
    if "query_b_id" not in pref_ds.column_names:
        return
    cols = pref_ds.select_columns(["query_id", "query_b_id"]).to_pandas()
    cross = cols["query_b_id"].notna() & (cols["query_b_id"] != cols["query_id"])
    if cross.any():
        i = int(cross.to_numpy().nonzero()[0][0])
        raise ValueError(
            f"row {i} is a cross-query pair (query_id={cols.query_id[i]!r}, query_b_id={cols.query_b_id[i]!r}): "
            "fit those with `calibrate_labels` / `zelo calibrate`, and pass only within-query pairs here."
        )


def group_preferences(pref_ds, num_proc: int | None = None, drop_failed: bool = False):
    """Flat preference set (one row per judged pair) -> grouped preferences (one row per query).

    Output columns: ``query_id``, ``query``, ``doc_ids``, ``docs``, ``pair_a``, ``pair_b`` (indices into
    ``doc_ids``), ``prob_a``; queries and documents keep their order of first appearance. Grouping is one
    vectorised pandas pass (millions of pairs in seconds).

    Args:
        pref_ds: a ``datasets.Dataset`` with the preference-set columns (``votes`` and extra columns are ignored).
        num_proc: unused (grouping is a single vectorised pass); accepted for symmetry with the map steps.
        drop_failed: drop pairs whose ``prob_a`` is missing (every vote failed) with a warning. By default such
            pairs are kept and the fit raises, naming the query: nothing is dropped silently.
    """
    from datasets import Dataset

    if num_proc not in (None, 1):
        warnings.warn(f"group_preferences ignores num_proc={num_proc}: grouping is one vectorised pass.", stacklevel=2)
    _require_columns(pref_ds.column_names, PREFERENCE_COLUMNS, "the preference set")
    _reject_cross_query(pref_ds)
    pairs = pref_ds.select_columns(list(PREFERENCE_COLUMNS)).to_pandas()
    if len(pairs) == 0:
        raise ValueError("the preference set has no rows: judge some pairs first (`zelo judge`).")
    failed = pairs["prob_a"].isna()
    if drop_failed and failed.any():
        warnings.warn(f"dropping {int(failed.sum())} pair(s) with no prob_a (all votes failed).", stacklevel=2)
        pairs = pairs[~failed].reset_index(drop=True)
    _check_unique_text(pairs, ["query_id"], "query", "query_id")
    docs = _documents(pairs)
    for side in ("a", "b"):
        index = docs[["query_id", "doc_id", "idx"]].set_axis(["query_id", f"doc_{side}_id", f"pair_{side}"], axis=1)
        pairs = pairs.merge(index, on=["query_id", f"doc_{side}_id"], how="left", validate="many_to_one")
    per_query = pairs.groupby("query_id", sort=False).agg(
        query=("query", "first"), pair_a=("pair_a", list), pair_b=("pair_b", list), prob_a=("prob_a", list)
    )
    per_doc = docs.groupby("query_id", sort=False).agg(doc_ids=("doc_id", list), docs=("doc", list))
    grouped = per_query.join(per_doc).reset_index()
    columns = ["query_id", "query", "doc_ids", "docs", "pair_a", "pair_b", "prob_a"]
    return Dataset.from_pandas(grouped[columns], preserve_index=False)


def _check_batch(batch: dict[str, list]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Validate one batch of grouped rows; return global edges, probs, sizes and the query ids."""
    _require_columns(list(batch), GROUPED_COLUMNS, "the grouped preferences")
    query_ids = [str(q) for q in batch["query_id"]]
    sizes = np.array([len(d) for d in batch["doc_ids"]], dtype=np.int64)
    for q, doc_ids in enumerate(batch["doc_ids"]):
        if len(set(doc_ids)) != len(doc_ids):
            dup = next(d for d in doc_ids if doc_ids.count(d) > 1)
            raise ValueError(
                f"query_id={query_ids[q]!r}: doc_id {dup!r} appears twice in doc_ids: each document once per query "
                "(re-run `group_preferences` on the flat preference set)."
            )
    counts = np.array([len(a) for a in batch["pair_a"]], dtype=np.int64)
    if any(len(b) != c or len(p) != c for b, p, c in zip(batch["pair_b"], batch["prob_a"], counts)):
        raise ValueError("`pair_a`, `pair_b` and `prob_a` must have equal lengths per query: one entry per pair.")
    a = np.concatenate([np.asarray(x, dtype=np.int64) for x in batch["pair_a"]]) if counts.sum() else np.empty(0, int)
    b = np.concatenate([np.asarray(x, dtype=np.int64) for x in batch["pair_b"]]) if counts.sum() else np.empty(0, int)
    probs = np.array([np.nan if v is None else v for row in batch["prob_a"] for v in row], dtype=np.float64)
    edge_query = np.repeat(np.arange(len(sizes)), counts)
    edge_size = sizes[edge_query]
    bad = np.flatnonzero((a < 0) | (b < 0) | (a >= edge_size) | (b >= edge_size))
    if len(bad):
        e = bad[0]
        raise ValueError(
            f"query_id={query_ids[edge_query[e]]!r}: pair ({a[e]}, {b[e]}) is out of range for "
            f"{edge_size[e]} doc_ids: pair_a / pair_b must index into doc_ids."
        )
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])[edge_query]
    return np.stack([a + offsets, b + offsets], axis=1), probs, sizes, query_ids


def thurstone_map(
    batch: dict[str, list],
    model: str = "thurstone",
    prior_sd: float = DEFAULT_PRIOR_SD,
    tol: float = 1e-9,
    max_iter: int = 50,
    compute_se: bool = True,
) -> dict[str, list]:
    """Batched ``Dataset.map`` function: fit every query of the batch at once and add the label columns.

    Adds ``elo`` (one score per doc), ``elo_se``, ``converged``, ``iterations``, ``log_likelihood``,
    ``connected``. Use with ``batched=True`` and ``fn_kwargs`` for the options (see :func:`fit_scores_flat`).
    Bad rows raise an error naming the ``query_id``.
    """
    edges, probs, sizes, query_ids = _check_batch(batch)
    res = fit_scores_flat(
        edges, probs, sizes, model=model, prior_sd=prior_sd, tol=tol, max_iter=max_iter, compute_se=compute_se,
        query_ids=query_ids, num_threads=1,
    )  # fmt: skip
    se = res.split(res.se) if res.se is not None else [[None] * n for n in sizes]
    return {
        "elo": [x.tolist() for x in res.split(res.scores)],
        "elo_se": [list(x) for x in se],
        "converged": res.converged.tolist(),
        "iterations": res.iterations.tolist(),
        "log_likelihood": res.log_likelihood.tolist(),
        "connected": res.connected.tolist(),
    }


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
    **card_info: Any,
):
    """Flat preference set -> label set (``group_preferences`` + ``thurstone_map``), optionally saved and pushed.

    Args:
        pref_ds: flat preference set (``datasets.Dataset``).
        model, prior_sd, compute_se: fit options (see :func:`zelo_hf.thurstone.fit_scores_flat`).
        num_proc, batch_size: ``Dataset.map`` parallelism (processes) and queries per vectorised fit.
        drop_failed: see :func:`group_preferences`.
        output_dir: write the label set folder (parquet + dataset card) there.
        push_to_hub: also upload that folder to this Hub dataset repo (needs ``output_dir``).
        card_info: extra card variables (e.g. ``source``), see :func:`save_label_set`.
    """
    grouped = group_preferences(pref_ds, drop_failed=drop_failed)
    labels = grouped.map(
        thurstone_map,
        batched=True,
        batch_size=batch_size,
        num_proc=num_proc,
        fn_kwargs={"model": model, "prior_sd": prior_sd, "compute_se": compute_se},
        desc="Thurstone fit",
    )
    if push_to_hub and output_dir is None:
        raise ValueError(f"push_to_hub={push_to_hub!r} needs `output_dir`: the folder that gets uploaded.")
    if output_dir is not None:
        save_label_set(labels, output_dir, push_to_hub=push_to_hub, model=model, prior_sd=prior_sd, **card_info)
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


def label_summary(label_ds) -> dict[str, Any]:
    """Counts and fit diagnostics of a label set (for cards and logs)."""
    n_docs = np.array([len(d) for d in label_ds["doc_ids"]])
    n_pairs = np.array([len(p) for p in label_ds["pair_a"]])
    summary = {
        "n_queries": len(label_ds),
        "n_docs": int(n_docs.sum()),
        "n_pairs": int(n_pairs.sum()),
        "mean_degree": float(2 * n_pairs.sum() / max(n_docs.sum(), 1)),
    }
    if "converged" in label_ds.column_names:
        summary |= {
            "converged_pct": 100.0 * float(np.mean(label_ds["converged"])),
            "connected_pct": 100.0 * float(np.mean(label_ds["connected"])),
            "mean_iterations": float(np.mean(label_ds["iterations"])),
            "mean_log_likelihood": float(np.mean(label_ds["log_likelihood"])),
            "mean_log_likelihood_per_pair": float(np.sum(label_ds["log_likelihood"]) / max(n_pairs.sum(), 1)),
        }
    return summary


def save_label_set(
    label_ds,
    output_dir: str | Path,
    push_to_hub: str | None = None,
    model: str = "thurstone",
    prior_sd: float = DEFAULT_PRIOR_SD,
    **card_info: Any,
) -> Path:
    """Write the label set folder (``data/train-*.parquet`` + README.md card) and optionally push it.

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
    folder = save_dataset_folder(label_ds, output_dir, card)
    if push_to_hub:
        push_folder(folder, push_to_hub, repo_type="dataset")
    return folder


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M" if n < 10_000_000 else "n>10M"
