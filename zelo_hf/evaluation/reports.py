"""Result rows and tables: markdown tables, one honest row per system (mean and sd over seeds), card eval results."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .metrics import DEFAULT_METRICS, Qrels, cross_query_auc


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(_fmt, value))
    return "" if value is None else str(value)


def results_to_markdown(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A GitHub markdown table of result rows (one dict per row; columns default to the union, in order)."""
    if not rows:
        raise ValueError("`rows` is empty: pass at least one result row.")
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_fmt(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def result_row(name: str, dataset: str, split: str, result: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """One table row: ``model``, ``dataset``, ``split``, ``queries`` and each aggregate metric (+ ``extra``)."""
    row = {"model": name, "dataset": dataset, "split": split, "queries": result["num_queries"]}
    row.update(result["aggregate"])
    row.update(extra)
    return row


ROW_KINDS = ("first_stage", "random", "base", "trained")


def seed_row(name: str, kind: str, results: Sequence[dict[str, Any]], seeds: Sequence[int] | None = None,
             qrels: Qrels | None = None) -> dict:
    """One honest table row from one result per seed (or per random ordering): every metric's mean, the sd of
    NDCG@10 across seeds (0 for a single run), the seeds, the number of queries and the per-seed NDCG@10."""
    if kind not in ROW_KINDS:
        raise ValueError(f"`kind` must be one of {ROW_KINDS} (got kind={kind!r}).")
    if not results:
        raise ValueError(f"row {name!r}: `results` is empty: pass one evaluation result per seed.")
    queries = {r["num_queries"] for r in results}
    if len(queries) != 1:
        raise ValueError(f"row {name!r}: the seeds were scored on different query sets ({sorted(queries)} queries).")
    ndcg = np.array([r["aggregate"]["ndcg@10"] for r in results])
    row: dict[str, Any] = {"model": name, "kind": kind, "ndcg@10": float(ndcg.mean()),
                           "ndcg@10_sd": float(ndcg.std(ddof=1)) if len(ndcg) > 1 else 0.0,
                           "seeds": list(seeds) if seeds is not None else []}
    for metric in results[0]["aggregate"]:
        if metric != "ndcg@10":
            row[metric] = float(np.mean([r["aggregate"][metric] for r in results]))
    if qrels is not None and all("run" in r for r in results):  # cross-query calibration of the scores
        row["pooled_auc"] = float(np.mean([cross_query_auc(r["run"], qrels) for r in results]))
    row["queries"] = queries.pop()
    row["ndcg@10_per_seed"] = [round(float(x), 4) for x in ndcg]
    return row


def card_eval_rows(rows: Sequence[dict[str, Any]], metrics: Sequence[str] = DEFAULT_METRICS) -> list[dict[str, Any]]:
    """Rows a model-card template renders (``dataset``, ``split``, ``metric``, ``value``) plus ``eval_results``.

    Each input row comes from :func:`result_row`; the output is flat (one metric per row) so a Jinja template
    loops over it, and :func:`card_eval_results` turns the same rows into ``huggingface_hub.EvalResult``s.
    """
    flat = []
    for row in rows:
        for metric in metrics:
            if metric in row:
                flat.append(
                    {
                        "model": row.get("model"),
                        "dataset": row["dataset"],
                        "split": row["split"],
                        "metric": metric,
                        "value": round(float(row[metric]), 4),
                    }
                )
    return flat


def card_eval_results(rows: Sequence[dict[str, Any]], model_name: str, task_type: str = "text-ranking"):
    """``huggingface_hub.EvalResult`` objects for ``ModelCardData(eval_results=...)`` (the model-index)."""
    from huggingface_hub import EvalResult

    return [
        EvalResult(
            task_type=task_type,
            dataset_type=r["dataset"],
            dataset_name=r["dataset"],
            dataset_split=r["split"],
            metric_type=r["metric"].replace("@", "_at_"),
            metric_name=r["metric"],
            metric_value=r["value"],
        )
        for r in card_eval_rows(rows)
        if r.get("model") in (None, model_name)
    ]
