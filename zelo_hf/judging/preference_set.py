"""A judged preference set: votes -> one row per pair (soft label ``prob_a`` + every vote), the summary (counts,
tokens, dollars, per-judge agreement, intransitive triangles) and the Hub-ready folder (:func:`save_preference_set`:
parquet pair rows with ids + one table per text kind + card, optionally pushed; layout in ``preference_tables``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import hub  # hub.push_folder looked up at call time: the one upload call, patched in tests
from ..preference_tables import write_preference_set
from ..raters import agreement_by_judge, intransitive_triangle_rate
from ..schema import preference_features
from ..utils import producing_command, redact, scrub_paths
from .base import Judge
from .prompts import PROMPT_VERSION, SYSTEM_PROMPT, build_messages
from .votes import Comparison, Vote, combine_votes

if TYPE_CHECKING:  # pragma: no cover
    from .preferences import JudgingResult, LeafRun


def _row(c: Comparison, prob: float | None, votes: list[Vote]) -> dict[str, Any]:
    return {"query_id": c.query_id, "query": c.query, "doc_a_id": c.doc_a_id, "doc_a": c.doc_a,
            "doc_b_id": c.doc_b_id, "doc_b": c.doc_b, "prob_a": prob, "votes": [v.to_dict() for v in votes],
            "query_b_id": c.query_b_id, "query_b": c.query_b}


def assemble(pairs: list[Comparison], runs: list[LeafRun], combine: str):
    """``(preferences, failed pairs, labels)``: the pairs with a label, those whose votes all failed (never a tie)."""
    from datasets import Dataset

    cross = any(c.query_b is not None for c in pairs)
    features = preference_features(cross)
    columns = list(features)
    ok_rows, failed_rows, probs = [], [], []
    for i, c in enumerate(pairs):
        votes = [run.votes[i] for run in runs]
        prob = combine_votes(votes, combine)
        probs.append(prob)
        row = {k: v for k, v in _row(c, prob, votes).items() if k in columns}
        (ok_rows if prob is not None else failed_rows).append(row)

    def make(rows: list[dict[str, Any]]):
        return Dataset.from_dict({c: [r[c] for r in rows] for c in columns}, features=features)

    return make(ok_rows), make(failed_rows), probs


def _judge_summary(run: LeafRun) -> dict[str, Any]:
    ok = np.array([v.ok for v in run.votes], dtype=bool)
    unique = list({id(v): v for v in run.votes}.values())  # a repeated pair shares one call: bill it once
    out = {
        "votes": int(ok.sum()), "failed_votes": int((~ok).sum()), "cached": run.cached, "calls": run.called,
        "requests": run.requests, "not_asked": run.not_asked,
        "prompt_tokens": sum(v.prompt_tokens for v in unique),
        "completion_tokens": sum(v.completion_tokens for v in unique),
        "cost": float(sum(v.cost for v in unique)), "cost_this_run": float(sum(v.cost for v in run.bought)),
    }
    stopped = run.judge.stopped
    return out | ({"stopped": stopped} if stopped else {}) | ({"batch": run.batch} if run.batch is not None else {})


def summary_of(runs, pairs, probs, judge, degree, seed, seconds, failed) -> dict[str, Any]:
    """The judging summary written next to the preference set (and printed by ``zelo judge``)."""
    per_judge = {run.judge.name: _judge_summary(run) for run in runs}
    prob_arr = np.array([np.nan if p is None else p for p in probs], dtype=np.float64)
    names = [run.judge.name for run in runs for v in run.votes if v.ok]
    vote_p = [v.prob_a for run in runs for v in run.votes if v.ok]
    ref = [prob_arr[i] for run in runs for i, v in enumerate(run.votes) if v.ok]
    agreement = agreement_by_judge(names, np.array(vote_p), np.array(ref)) if len(runs) > 1 and vote_p else {}
    for name, value in agreement.items():
        per_judge[name]["agreement_with_ensemble"] = value
    judged = ~np.isnan(prob_arr)
    items: dict[tuple[str, str], int] = {}
    a = [items.setdefault((c.query_id, c.doc_a_id), len(items)) for c in pairs]
    b = [items.setdefault((c.query_b_id or c.query_id, c.doc_b_id), len(items)) for c in pairs]
    triangles = intransitive_triangle_rate(np.array(a)[judged], np.array(b)[judged], prob_arr[judged], len(items)) \
        if judged.any() else 0.0
    partial = sum(1 for i in range(len(pairs)) if judged[i] and any(not r.votes[i].ok for r in runs))
    return {
        "judge": judge.name, "judges": [r.judge.name for r in runs], "pairs": len(pairs), "judged": int(judged.sum()),
        "failed": int((~judged).sum()), "partially_failed": partial, "queries": len({c.query_id for c in pairs}),
        "degree": degree, "seed": seed, "calls": sum(r.called for r in runs), "cached": sum(r.cached for r in runs),
        "requests": sum(r.requests for r in runs),
        "stopped_judges": {name: j["stopped"] for name, j in per_judge.items() if "stopped" in j},
        "prompt_tokens": sum(j["prompt_tokens"] for j in per_judge.values()),
        "completion_tokens": sum(j["completion_tokens"] for j in per_judge.values()),
        "cost": float(sum(j["cost"] for j in per_judge.values())),
        "cost_this_run": float(sum(j["cost_this_run"] for j in per_judge.values())),
        "intransitive_triangle_rate": triangles, "seconds": seconds, "per_judge": per_judge,
        "failed_pairs": [{"query_id": r["query_id"], "doc_a_id": r["doc_a_id"], "doc_b_id": r["doc_b_id"],
                          "query_b_id": r.get("query_b_id"), "errors": [v["error"] for v in r["votes"]]}
                         for r in failed],
    }


def dry_run_summary(runs: list[LeafRun], pairs: list[Comparison], concurrency: int) -> dict[str, Any]:
    estimates = []
    for run in runs:
        missing = [pairs[i] for i, v in enumerate(run.votes) if v is None]
        unique = list({run.keys[i] or i: pairs[i] for i, v in enumerate(run.votes) if v is None}.values())
        est = run.judge.estimate(unique, concurrency=concurrency)
        est.update(cached=run.cached, pairs_missing=len(missing))
        estimates.append(est)
    seconds = [e["seconds"] for e in estimates if e["seconds"] is not None]
    return {"dry_run": True, "pairs": len(pairs), "queries": len({c.query_id for c in pairs}),
            "calls": sum(e["calls"] for e in estimates), "cached": sum(r.cached for r in runs),
            "prompt_tokens": sum(e["prompt_tokens"] for e in estimates),
            "completion_tokens": sum(e["completion_tokens"] for e in estimates),
            "cost": float(sum(e["cost"] for e in estimates)),
            "batch_cost": float(sum(e.get("batch_cost", e["cost"]) for e in estimates)),
            "seconds": max(seconds) if seconds else None,
            "per_judge": {e["judge"]: e for e in estimates}}


def save_preference_set(
    result: JudgingResult,
    output_dir: str | Path,
    judge: Judge | None = None,
    push_to_hub: str | None = None,
    private: bool | None = None,
    source: str | None = None,
    max_shard_size: int | str = "500MB",
) -> Path:
    """Write the preference set with each text once (``data/train-*.parquet``: pair rows with ids, ``prob_a`` and
    votes; ``queries/`` and ``documents/``: the texts, issue #12), the failed pairs (``failed_pairs.jsonl``), the
    summary (``judging_summary.json``) and the card (``README.md``, one ``configs:`` entry per table); push the
    folder, one dataset repo, when ``push_to_hub`` is given. Parquet files are shards of about ``max_shard_size``.

    ``zelo_hf.load_preference_set(output_dir)`` gives back the row-per-pair set with its texts (as
    ``load_dataset_any`` does); ``datasets.load_dataset(output_dir, "queries")`` one table.
    """
    if result.preferences is None:
        raise ValueError("`result` is a dry run (no preferences): run judge_pairs with dry_run=False first.")
    out = Path(output_dir)
    configs = write_preference_set(result.preferences, out, max_shard_size)
    card = _card(result.summary, judge, source, configs)
    card.save(str(out / "README.md"))
    with open(out / "failed_pairs.jsonl", "w", encoding="utf-8") as f:
        for row in result.failed or []:
            f.write(scrub_paths(redact(json.dumps(row, ensure_ascii=False))) + "\n")
    summary_text = scrub_paths(redact(json.dumps(result.summary, indent=2, default=float)))  # tracebacks name files
    (out / "judging_summary.json").write_text(summary_text, encoding="utf-8")
    if push_to_hub:
        hub.push_folder(out, push_to_hub, repo_type="dataset", private=private)
    return out


def _card(summary: dict[str, Any], judge: Judge | None, source: str | None, configs: list | None):
    """The preference set's card; ``configs``: one entry per table, each naming its files (None: texts inline, no
    block, the ``data/<split>-*`` layout inferred)."""
    judges = [leaf.describe() for leaf in judge.leaves()] if judge is not None else [{"name": n} for n in summary["judges"]]
    example = build_messages("{query}", "{document A}", "{document B}")[1]["content"]
    tags = {"tags": ["zelo", "reranking", "pairwise-preferences", "llm-as-a-judge"]}
    return hub.render_dataset_card(
        "preference_set.md", card_data=tags | ({"configs": configs} if configs else {}),
        summary=summary, judges=judges, prompt_version=PROMPT_VERSION, system_prompt=SYSTEM_PROMPT,
        user_prompt=example, command=producing_command(), source=source, texts_once=configs is not None,
        uses_llm=any("LiteLLM" in j.get("type", "") for j in judges),
    )  # fmt: skip
