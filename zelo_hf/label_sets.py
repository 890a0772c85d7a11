"""A label set as a Hub-ready folder: ``label_summary`` (counts and fit diagnostics for cards and logs) and
``save_label_set`` (``data/train-*.parquet`` shards + the dataset card, optionally pushed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import hub  # hub.push_folder looked up at call time: the one upload call, patched by offline tests
from .thurstone import DEFAULT_PRIOR_SD
from .utils import producing_command

__all__ = ["label_summary", "save_label_set"]


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
    summary = label_summary(label_ds)
    card = hub.render_dataset_card(
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
    if hub.shard_count(label_ds, max_shard_size) == 1:
        folder = hub.save_dataset_folder(label_ds, output_dir, card)
    else:  # data/train-0000k-of-0000n.parquet + README.md, the layout the Hub loads as one split
        folder = Path(output_dir)
        hub.write_shards(label_ds, folder / "data", "train", max_shard_size, name_by_content=False)
        card.save(str(folder / "README.md"))
    if push_to_hub:
        hub.push_folder(folder, push_to_hub, repo_type="dataset")
    return folder


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M" if n < 10_000_000 else "n>10M"
