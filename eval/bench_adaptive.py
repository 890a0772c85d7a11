"""Adaptive judging rounds vs random cycles vs dense: label quality per comparison spent (issue #13).

Simulated judges (``zelo_hf.simulate``: latent scores U(-2, 2), sigmoid(diff + N(0, 0.2^2)), 2 % uniform votes),
``--n_docs`` documents per query. For each budget (comparisons per query) it fits the judged pairs
(``zelo_hf.thurstone.fit_scores_flat``) and scores the fit against the latent truth:

- ``ndcg10``: NDCG@10 of the fitted ranking, graded gains from the latent order (latent ranks 1-5: grade 3,
  6-10: 2, 11-20: 1, else 0; gain 2^grade - 1);
- ``spearman20``: Spearman correlation of fitted and latent scores over the latent top 20.

Methods: (a) random Hamiltonian cycles at degree 4, 6, 8, 12; (b) adaptive rounds (``zelo_hf.adaptive``: first
round of ``--first_degree`` cycles, then ``--rounds - 1`` rounds chosen from the fit) at the same budgets and a few
smaller ones; (c) the dense graph. ``comparisons_ratio`` = comparisons adaptive needs to match degree-8 cycles'
NDCG@10 (linear interpolation along its curve) / degree-8 cycles' comparisons. Means over ``--seeds`` seeds.

    python eval/bench_adaptive.py --queries 200

Result (``--queries 500``, 3 seeds, 102 s at load average 7 on 2 cores): NDCG@10 / Spearman@20 of random cycles at
degree 4, 6, 8, 12 (200 ... 600 comparisons): .861/.718, .898/.775, .906/.800, .919/.831; adaptive rounds (first
round degree 4, 4 rounds) at 225, 250, 300, 400, 600: .906/.770, .938/.840, .943/.887, .943/.893, .968/.934; dense
(4,950): .974/.958. ``comparisons_ratio`` 0.562 (the first round alone is 0.5 of degree 8; ``--first_degree 2``:
0.42). More rounds help larger budgets (``--rounds 8`` at 400: .960/.924, 150 queries).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from zelo_hf.adaptive import AdaptivePlan
from zelo_hf.graphs import comparison_graph, dense_graph
from zelo_hf.simulate import latent_scores, simulate_probs
from zelo_hf.thurstone import fit_scores_flat

GRADE_EDGES = (5, 10, 20)  # latent ranks below each edge: grades 3, 2, 1


def graded_gains(latent: np.ndarray) -> np.ndarray:
    """``(Q, n)`` gains 2^grade - 1 from each document's latent rank (see the module docstring)."""
    rank = np.argsort(np.argsort(-latent, axis=1), axis=1)
    grade = 3 - np.searchsorted(np.asarray(GRADE_EDGES), rank, side="right")
    return 2.0 ** np.clip(grade, 0, 3) - 1.0


def ndcg_at(scores: np.ndarray, latent: np.ndarray, k: int = 10) -> np.ndarray:
    gains = graded_gains(latent)
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    top = np.take_along_axis(gains, np.argsort(-scores, axis=1)[:, :k], axis=1)
    ideal = -np.sort(-gains, axis=1)[:, :k]
    return (top * disc).sum(1) / (ideal * disc).sum(1)


def spearman_top(scores: np.ndarray, latent: np.ndarray, k: int = 20) -> np.ndarray:
    idx = np.argsort(-latent, axis=1)[:, :k]
    ranks = [np.argsort(np.argsort(np.take_along_axis(x, idx, axis=1), axis=1), axis=1) for x in (scores, latent)]
    a, b = (r - r.mean(1, keepdims=True) for r in ranks)
    return (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))


def _fit(edges, probs, sizes, se: bool):
    res = fit_scores_flat(edges, probs, sizes, compute_se=se, num_threads=1)
    n = int(sizes[0])
    return res.scores.reshape(-1, n), (res.se.reshape(-1, n) if se else None)


def _quality(edges, probs, sizes, latent) -> dict[str, float]:
    scores, _ = _fit(edges, probs, sizes, se=False)
    return {"ndcg10": float(ndcg_at(scores, latent).mean()), "spearman20": float(spearman_top(scores, latent).mean())}


def random_cycles(latent, degree, rng):
    q, n = latent.shape
    edges = np.concatenate([comparison_graph(n, degree, rng) + i * n for i in range(q)])
    return edges, simulate_probs(latent.reshape(-1), edges, rng)


def dense(latent, rng):
    q, n = latent.shape
    edges = np.concatenate([dense_graph(n) + i * n for i in range(q)])
    return edges, simulate_probs(latent.reshape(-1), edges, rng)


def adaptive(latent, budget, rounds, first_degree, rng, top_k, max_per_doc):
    """The rounds of ``zelo_hf.adaptive.adaptive_judge`` with the judge simulated in place (no judge_pairs)."""
    q, n = latent.shape
    sizes = np.full(q, n, dtype=np.int64)
    plan = AdaptivePlan.start(sizes, budget)
    local = [comparison_graph(n, first_degree, rng) for _ in range(q)]
    all_edges, all_probs = [], []
    for r in range(rounds):
        edges = np.concatenate([e + i * n for i, e in enumerate(local)])
        all_edges.append(edges)
        all_probs.append(simulate_probs(latent.reshape(-1), edges, rng))
        for i, e in enumerate(local):
            if len(e):
                plan.mark(i, e[:, 0], e[:, 1])
        if r + 1 == rounds or not (plan.spent < plan.budget).any():
            break
        scores, se = _fit(np.concatenate(all_edges), np.concatenate(all_probs), sizes, se=True)
        local = plan.next_round(list(scores), list(se), rounds - r - 1, top_k, max_per_doc)
    assert (plan.spent == plan.budget).all(), "budget not spent exactly"
    return np.concatenate(all_edges), np.concatenate(all_probs)


def _interp_budget(budgets: list[int], values: list[float], target: float) -> float | None:
    """Smallest budget where the (budget-sorted) curve reaches ``target``, linearly interpolated."""
    for i, (b, v) in enumerate(zip(budgets, values)):
        if v >= target:
            if i == 0:
                return float(b)
            b0, v0 = budgets[i - 1], values[i - 1]
            return float(b0 + (b - b0) * (target - v0) / (v - v0))
    return None


def run(args) -> dict:
    n = args.n_docs
    degrees = [int(d) for d in args.degrees.split(",")]
    cycle_budgets = [n * d // 2 for d in degrees]
    extra = [int(f * n) for f in (1.5, 2.25, 2.5, 3.5)]  # more budgets, to find where adaptive meets degree 8
    adaptive_budgets = sorted({b for b in cycle_budgets + extra if b >= n * args.first_degree // 2})
    curves: dict[str, dict[int, list[dict]]] = {"random": {}, "adaptive": {}, "dense": {}}
    started = time.perf_counter()
    for seed in range(args.seeds):
        rng = np.random.default_rng(seed)
        latent = latent_scores((args.queries, n), rng)
        sizes = np.full(args.queries, n, dtype=np.int64)
        for d, b in zip(degrees, cycle_budgets):
            curves["random"].setdefault(b, []).append(_quality(*random_cycles(latent, d, rng), sizes, latent))
        for b in adaptive_budgets:
            e, p = adaptive(latent, b, args.rounds, args.first_degree, rng, args.top_k, args.max_per_doc)
            curves["adaptive"].setdefault(b, []).append(_quality(e, p, sizes, latent))
        if not args.no_dense:
            curves["dense"].setdefault(n * (n - 1) // 2, []).append(_quality(*dense(latent, rng), sizes, latent))
    return _report(args, curves, degrees, cycle_budgets, time.perf_counter() - started)


def _mean(rows: list[dict]) -> dict:
    out = {}
    for k in rows[0]:
        v = np.array([r[k] for r in rows])
        out[k], out[f"{k}_sd_over_seeds"] = round(float(v.mean()), 4), round(float(v.std()), 4)
    return out


def _report(args, curves, degrees, cycle_budgets, seconds) -> dict:
    table = {m: {str(b): _mean(rows) for b, rows in sorted(c.items())} for m, c in curves.items()}
    ref = table["random"].get(str(args.n_docs * 4))  # degree-8 = 4 * n comparisons
    ratio = None
    if ref is not None:
        budgets = sorted(int(b) for b in table["adaptive"])
        needed = _interp_budget(budgets, [table["adaptive"][str(b)]["ndcg10"] for b in budgets], ref["ndcg10"])
        ratio = None if needed is None else round(needed / (args.n_docs * 4), 3)
    return {
        "queries": args.queries, "n_docs": args.n_docs, "seeds": args.seeds, "rounds": args.rounds,
        "first_degree": args.first_degree, "top_k": args.top_k, "max_per_doc": args.max_per_doc,
        "random_degrees": dict(zip(map(str, cycle_budgets), degrees)), "curves": table,
        "comparisons_ratio": ratio, "goal": "<= 0.6", "seconds": round(seconds, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--n_docs", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--degrees", default="4,6,8,12", help="Random-cycle degrees (comma separated).")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--first_degree", type=int, default=4, help="First round's cycle degree (the library default).")
    parser.add_argument("--top_k", type=int, default=20)
    parser.add_argument("--max_per_doc", type=int, default=2)
    parser.add_argument("--no_dense", action="store_true")
    print(json.dumps(run(parser.parse_args()), indent=1))


if __name__ == "__main__":
    main()
