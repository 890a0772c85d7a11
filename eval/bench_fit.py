"""Benchmark of the batched Thurstone / Bradley-Terry fit (issue #2). Prints one JSON object.

On simulated judges (latent scores U(-2, 2); judges sigmoid(diff + N(0, 0.2^2)) mixed with 2 % uniform noise,
ZELO.md), n documents per query on a degree-k cycle graph, it measures:
- queries/s of ``fit_scores_flat`` (Thurstone and Bradley-Terry, with and without exact standard errors);
- per-query time of two public-style baselines on a subsample: the classic MM / Zermelo iteration on a dense
  win matrix (Hunter 2004), looped per query, and ``choix.ilsr_pairwise_dense`` per query; ratios to the batch;
- max |difference| from an independent scipy ``trust-exact`` optimum of the same objective (exactness);
- Spearman of fitted vs latent scores at degree 4, 8, 16 and dense (the sparse-graph claim).

Issue #12 adds the user's paths:
- ``--through_map``: ``grouped.map(zelo_hf.thurstone_map, batched=True)`` with its defaults (standard errors on),
  timed against the per-query dense MM fit of the same run, then the library's own fit step
  (``zelo_hf.labeling.label_grouped``, what ``label_preferences`` runs: label columns mapped alone and joined on,
  ``queries_per_s_label_grouped`` and its ratio to the map), and on a subset once more with one fit thread (the
  compiled kernel releases the GIL: the ratio is the fit's thread scaling);
- ``--scale N``: N simulated queries written to disk as a preference set in the saved layout (one row per pair with
  ids, each text once in ``queries`` / ``documents`` tables; a corpus of N * n_docs / 10 documents, each a candidate
  of ~10 queries), then loaded (pairs ``streaming=True``), grouped, fitted through the map and written as a sharded
  label set, end to end.
- ``--graphs N``: the comparison graphs of N queries (``zelo_hf.graphs.sample_cycle_graph``, what ``zelo graph`` and
  the judging stages draw per query) against the sampler before #12, which re-keyed the whole cycle after every
  re-draw swap (kept below as the baseline), timed in the same run; the graphs must be identical.
``--through_map`` and ``--scale`` print ``queries_per_s_map``, ``speedup_vs_mm``, ``max_abs_diff_vs_scipy``, ``peak_rss_mb`` and
``seconds_total`` (and ``disk_mb`` of the preference set for ``--scale``), with the load average.

    .venv/bin/python eval/bench_fit.py --n_queries 20000
    .venv/bin/python eval/bench_fit.py --n_queries 20000 --through_map
    .venv/bin/python eval/bench_fit.py --scale 1000000 --work_dir /tmp/zelo-scale
    .venv/bin/python eval/bench_fit.py --graphs 5000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, log_expit, log_ndtr
from scipy.stats import spearmanr

from zelo_hf.grouping import GROUP_WINDOW_ROWS
from zelo_hf.simulate import simulate_queries
from zelo_hf.thurstone import fit_scores, fit_scores_flat


def mm_bradley_terry(edges, probs, n, tol=1e-8, max_iter=10_000):
    """Classic MM (Zermelo / Hunter 2004) for Bradley-Terry on a dense soft win matrix, one query."""
    wins = np.zeros((n, n))
    np.add.at(wins, (edges[:, 0], edges[:, 1]), probs)
    np.add.at(wins, (edges[:, 1], edges[:, 0]), 1 - probs)
    games = wins + wins.T
    total = wins.sum(axis=1)
    pi = np.ones(n)
    for it in range(max_iter):
        new = total / (games / (pi[:, None] + pi[None, :])).sum(axis=1)
        new /= np.exp(np.log(new).mean())
        if np.abs(np.log(new) - np.log(pi)).max() < tol:
            return np.log(new), it + 1
        pi = new
    return np.log(pi), max_iter


def choix_ilsr(edges, probs, n):
    import choix

    wins = np.zeros((n, n))
    np.add.at(wins, (edges[:, 0], edges[:, 1]), probs)
    np.add.at(wins, (edges[:, 1], edges[:, 0]), 1 - probs)
    return choix.ilsr_pairwise_dense(wins, alpha=0.0, max_iter=1000, tol=1e-8)


def scipy_optimum(edges, probs, n, model, prior_sd):
    """Independent dense implementation of the objective, its gradient and Hessian; scipy trust-exact."""
    inc = np.zeros((len(edges), n))
    inc[np.arange(len(edges)), edges[:, 0]] = 1.0
    inc[np.arange(len(edges)), edges[:, 1]] = -1.0
    prec = prior_sd**-2

    def parts(d):  # log F(d), d/dd log F(d), d2/dd2 log F(d)
        if model == "bradley-terry":
            return log_expit(d), expit(-d), -expit(d) * expit(-d)
        z = np.sqrt(2) * d
        lf = log_ndtr(z)
        mills = np.exp(-z * z / 2 - 0.5 * np.log(2 * np.pi) - lf)
        return lf, np.sqrt(2) * mills, -2 * mills * (z + mills)

    def value(s):
        d = inc @ s
        return -(probs @ parts(d)[0] + (1 - probs) @ parts(-d)[0] - 0.5 * prec * s @ s)

    def grad(s):
        d = inc @ s
        return -(inc.T @ (probs * parts(d)[1] - (1 - probs) * parts(-d)[1]) - prec * s)

    def hess(s):
        d = inc @ s
        w = -(probs * parts(d)[2] + (1 - probs) * parts(-d)[2])
        return inc.T @ (w[:, None] * inc) + prec * np.eye(n)

    opts = {"gtol": 1e-12, "maxiter": 1000}
    return minimize(value, np.zeros(n), jac=grad, hess=hess, method="trust-exact", options=opts).x


def timed(fn, *args, **kwargs):
    """Result, wall seconds and CPU seconds (all threads of this process: robust to other users' load)."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start, time.process_time() - cpu


def batched_rates(sim, args) -> dict:
    out = {}
    for model, se in (("thurstone", False), ("thurstone", True), ("bradley-terry", False)):
        kw = dict(model=model, compute_se=se, num_threads=args.num_threads, chunk_size=args.chunk_size)
        res, seconds, cpu = timed(fit_scores_flat, sim.edges, sim.probs, sim.sizes, **kw)
        key = f"{model}{'_with_se' if se else ''}"
        out[key] = {
            "queries_per_s": round(len(sim.sizes) / seconds, 1),
            "queries_per_cpu_s": round(len(sim.sizes) / cpu, 1),
            "seconds": round(seconds, 3),
            "mean_newton_iterations": round(float(res.iterations.mean()), 2),
            "converged_pct": round(100 * float(res.converged.mean()), 2),
            "mean_spearman_vs_latent": round(mean_spearman(sim, res), 4),
        }
    return out


def mean_spearman(sim, res) -> float:
    lat, fit = sim.latent, res.scores
    return float(np.mean([spearmanr(x, y).statistic for x, y in zip(res.split(lat), res.split(fit))]))


def baselines(sim, args, batched_bt_rate, batched_bt_cpu_rate) -> dict:
    k = min(args.baseline_queries, len(sim.sizes))
    queries = [sim.query(q) for q in range(k)]
    n = int(sim.sizes[0])
    mm, mm_s, mm_cpu = timed(lambda: [mm_bradley_terry(e, p, n) for _, e, p in queries])
    ch, ch_s, ch_cpu = timed(lambda: [choix_ilsr(e, p, n) for _, e, p in queries])
    ours = [fit_scores(e, p, n, model="bradley-terry", prior_sd=1e3, compute_se=False) for _, e, p in queries]
    centre = [x - x.mean() for x in ours]
    per_q = {"mm": mm_s / k, "choix": ch_s / k}
    return {
        "subsample_queries": k,
        "mm_dense_ms_per_query": round(1e3 * per_q["mm"], 3),
        "mm_mean_iterations": round(float(np.mean([it for _, it in mm])), 1),
        "choix_ilsr_ms_per_query": round(1e3 * per_q["choix"], 3),
        "speedup_vs_mm": round(batched_bt_rate * per_q["mm"], 1),
        "speedup_vs_choix": round(batched_bt_rate * per_q["choix"], 1),
        "speedup_vs_mm_cpu_time": round(batched_bt_cpu_rate * mm_cpu / k, 1),
        "speedup_vs_choix_cpu_time": round(batched_bt_cpu_rate * ch_cpu / k, 1),
        "max_abs_diff_mm_vs_ours_prior_sd_1e3": float(
            max(np.abs((m - m.mean()) - c).max() for (m, _), c in zip(mm, centre))
        ),
        "max_abs_diff_choix_vs_ours_prior_sd_1e3": float(
            max(np.abs((x - x.mean()) - c).max() for x, c in zip(ch, centre))
        ),
    }


def exactness(sim, args) -> dict:
    out = {}
    n = int(sim.sizes[0])
    for model in ("thurstone", "bradley-terry"):
        worst = 0.0
        for q in range(min(args.exact_queries, len(sim.sizes))):
            _, e, p = sim.query(q)
            ours = fit_scores(e, p, n, model=model, compute_se=False)
            worst = max(worst, float(np.abs(ours - scipy_optimum(e, p, n, model, 4.0)).max()))
        out[f"max_abs_diff_vs_scipy_{model}"] = worst
    out["exact_queries"] = min(args.exact_queries, len(sim.sizes))
    return out


def spearman_by_degree(args) -> dict:
    out = {}
    for degree in (4, 8, 16, args.n_docs - 1):
        sim = simulate_queries(args.spearman_queries, args.n_docs, degree, seed=args.seed + degree)
        res = fit_scores_flat(sim.edges, sim.probs, sim.sizes, compute_se=False, num_threads=args.num_threads)
        name = "dense" if degree >= args.n_docs - 1 else f"degree_{degree}"
        out[name] = {
            "pairs_per_query": len(sim.edges) // args.spearman_queries,
            "spearman": round(mean_spearman(sim, res), 4),
        }
    return out


# ----------------------------------------------------------------------------------------------- issue #12
def peak_rss_mb() -> float:
    """Peak resident set of this process (includes file pages it touched through memory maps)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


class AnonPeak:
    """Samples RssAnon (memory the process itself allocated, not memory-mapped file pages) in a thread."""

    def __init__(self, every: float = 0.2):
        self.peak, self.every, self.done = 0, every, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.done.wait(self.every):
            with open("/proc/self/status") as f:
                kb = next((int(line.split()[1]) for line in f if line.startswith("RssAnon:")), 0)
            self.peak = max(self.peak, kb)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()

    @property
    def mb(self) -> float:
        return round(self.peak / 1024, 1)


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def grouped_dataset(sim, path: str | None = None):
    """The grouped preferences of simulated queries, built straight in Arrow (ids and texts are synthetic). With
    ``path``, written there as one Arrow file and memory-mapped, as ``group_preferences`` returns a set of more
    than one grouping window (1M pairs): ``Dataset.map`` then writes its result to a cache file beside it, where an
    in-memory set's result grows one in-memory buffer by reallocation (~15% of a 20,000-query map)."""
    import pyarrow as pa
    from datasets import Dataset

    starts = np.concatenate([[0], np.cumsum(sim.sizes)])
    edge_query = np.repeat(np.arange(len(sim.sizes)), sim.sizes)[sim.edges[:, 0]]
    order = np.argsort(edge_query, kind="stable")
    edges, probs, edge_query = sim.edges[order], sim.probs[order], edge_query[order]
    pair_offsets = pa.array(np.concatenate([[0], np.cumsum(np.bincount(edge_query, minlength=len(sim.sizes)))]))
    doc_offsets = pa.array(starts.astype(np.int32))
    ids = pa.array([f"d{i}" for i in range(int(starts[-1]))])
    local = edges - starts[edge_query][:, None]
    table = pa.table(
        {
            "query_id": [f"q{q}" for q in range(len(sim.sizes))],
            "query": [f"query {q}" for q in range(len(sim.sizes))],
            "doc_ids": pa.ListArray.from_arrays(doc_offsets, ids),
            "docs": pa.ListArray.from_arrays(doc_offsets, ids),
            "pair_a": pa.ListArray.from_arrays(pair_offsets.cast(pa.int32()), pa.array(local[:, 0])),
            "pair_b": pa.ListArray.from_arrays(pair_offsets.cast(pa.int32()), pa.array(local[:, 1])),
            "prob_a": pa.ListArray.from_arrays(pair_offsets.cast(pa.int32()), pa.array(probs)),
        }
    )
    if path is None:
        return Dataset(table)
    with pa.ipc.new_stream(path, table.schema) as writer:
        writer.write_table(table)
    return Dataset.from_file(path)


def map_exactness(labels, k: int) -> float:
    """Largest |elo - independent scipy optimum| over the first k rows the map wrote."""
    worst = 0.0
    for row in labels.select(range(min(k, len(labels)))):
        edges = np.stack([row["pair_a"], row["pair_b"]], axis=1)
        ref = scipy_optimum(edges, np.asarray(row["prob_a"]), len(row["doc_ids"]), "thurstone", 4.0)
        worst = max(worst, float(np.abs(np.asarray(row["elo"]) - ref).max()))
    return worst


def mm_seconds_per_query(sim, k: int) -> float:
    queries = [sim.query(q) for q in range(min(k, len(sim.sizes)))]
    n = int(sim.sizes[0])
    _, seconds, _ = timed(lambda: [mm_bradley_terry(e, p, n) for _, e, p in queries])
    return seconds / len(queries)


def through_map(args) -> dict:
    from zelo_hf.labeling import label_grouped, thurstone_map

    start = time.perf_counter()
    sim = simulate_queries(args.n_queries, args.n_docs, args.degree, seed=args.seed)
    work = Path(tempfile.mkdtemp(prefix="zelo-bench-map-"))
    big = len(sim.edges) > GROUP_WINDOW_ROWS  # what group_preferences would return: file-backed beyond one window
    grouped = grouped_dataset(sim, str(work / "grouped.arrow") if big else None)
    load_before = load_average()
    # the compiled kernel loads from numba's disk cache on a process's first fit (compiles on a fresh install):
    # once per process, timed apart on one query so the rate below is the map's own
    _, load_s, _ = timed(grouped.select(range(1)).map, thurstone_map, batched=True)
    labels, seconds, cpu = timed(grouped.map, thurstone_map, batched=True)  # the user's call, defaults (SE on)
    # the library's own fit step (label_preferences): the map writes only the label columns, joined on after
    joined, joined_s, _ = timed(label_grouped, grouped)
    assert joined.column_names == labels.column_names and joined[-3:]["elo"] == labels[-3:]["elo"]
    mm = mm_seconds_per_query(sim, args.baseline_queries)
    out = {
        "queries_per_s_map": round(len(grouped) / seconds, 1),
        "kernel_load_seconds": round(load_s, 2),
        "queries_per_s_map_with_load": round(len(grouped) / (seconds + load_s), 1),
        "map_seconds": round(seconds, 2),
        "map_cpu_us_per_query": round(1e6 * cpu / len(grouped), 1),
        "mm_dense_ms_per_query": round(1e3 * mm, 3),
        "speedup_vs_mm": round(mm * len(grouped) / seconds, 1),
        "queries_per_s_label_grouped": round(len(grouped) / joined_s, 1),
        "label_grouped_vs_map": round(seconds / joined_s, 2),
        "max_abs_diff_vs_scipy": map_exactness(labels, args.exact_queries),
        "se_finite_pct": 100.0 * float(np.mean(np.isfinite(np.concatenate(labels["elo_se"])))),
    }
    if args.single_thread_queries:  # the fit's thread scaling (its kernel releases the GIL)
        small = grouped.select(range(min(args.single_thread_queries, len(grouped))))
        _, default_s, _ = timed(small.map, thurstone_map, batched=True)
        _, single_s, _ = timed(small.map, thurstone_map, batched=True, fn_kwargs={"num_threads": 1})
        out |= {
            "thread_scaling_queries": len(small),
            "queries_per_s_map_default_threads_same_queries": round(len(small) / default_s, 1),
            "queries_per_s_map_1_thread": round(len(small) / single_s, 1),
        }
    del labels, joined, grouped
    shutil.rmtree(work, ignore_errors=True)
    return out | {
        "grouped_set_file_backed": big,
        "load_avg_before": load_before,
        "load_avg_after": load_average(),
        "peak_rss_mb": peak_rss_mb(),
        "seconds_total": round(time.perf_counter() - start, 1),
    }


def corpus_size(args) -> int:
    """Documents of the simulated corpus: each appears in the candidates of ~10 queries (shared, as retrieved
    candidates are), at least one query's worth."""
    return max(args.n_docs + 1, args.scale * args.n_docs // 10)


def _doc_index(flat: np.ndarray, corpus: int) -> np.ndarray:
    """Corpus row of candidate ``flat = query * n_docs + rank``: an odd multiplier mod the corpus size, so one
    query's candidates are distinct and every document is shared by ~10 queries."""
    return (flat * 2654435761) % corpus


def simulated_pairs(q0: int, q: int, args):
    """Queries ``q0 .. q0 + q - 1`` as flat pair rows with ids only (the saved preference-set layout, texts in the
    ``queries`` / ``documents`` tables), vectorised; graphs are unions of degree/2 random Hamiltonian cycles, a
    pair two cycles share kept once (so a query has up to n * degree / 2 pairs)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from zelo_hf.simulate import latent_scores, simulate_probs

    rng, n, cycles = np.random.default_rng([args.seed, q0]), args.n_docs, args.degree // 2
    perms = np.argsort(rng.random((q, cycles, n)), axis=2)  # one random Hamiltonian cycle per row
    base = (np.arange(q) * n)[:, None]
    a = (perms.reshape(q, -1) + base).ravel()
    b = (np.roll(perms, -1, axis=2).reshape(q, -1) + base).ravel()
    _, first = np.unique(np.minimum(a, b) * (q * n) + np.maximum(a, b), return_index=True)
    keep = np.sort(first)  # a pair two cycles share is judged once (the library's sampler re-draws such repeats)
    a, b = a[keep], b[keep]
    probs = simulate_probs(latent_scores(q * n, rng), np.stack([a, b], axis=1), rng)
    corpus = corpus_size(args)

    def doc_ids(local):
        return pc.binary_join_element_wise("d", pc.cast(pa.array(_doc_index(local + q0 * n, corpus)), pa.string()), "")

    return pa.table(
        {
            "query_id": pc.binary_join_element_wise("q", pc.cast(pa.array(q0 + a // n), pa.string()), ""),
            "doc_a_id": doc_ids(a),
            "doc_b_id": doc_ids(b),
            "prob_a": pa.array(probs),
        }
    )


def _text_table(key: str, text: str, prefix: str, words: str, lo: int, hi: int):
    import pyarrow as pa
    import pyarrow.compute as pc

    number = pc.cast(pa.array(np.arange(lo, hi)), pa.string())
    return pa.table({key: pc.binary_join_element_wise(prefix, number, ""),
                     text: pc.binary_join_element_wise(words, number, "")})  # fmt: skip


def write_preference_set(folder: Path, n_queries: int, args, chunk: int = 2_500) -> dict:
    """The simulated preference set in the saved layout, chunk after chunk (two chunks simulated at a time): pair
    rows with ids in ``data/``, each text once in ``queries/`` and ``documents/``."""
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow.parquet as pq

    for sub in ("data", "queries", "documents"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    starts = list(range(0, n_queries, chunk))
    with ThreadPoolExecutor(2) as pool:
        for k in range(0, len(starts), 2):
            tables = pool.map(lambda q0: simulated_pairs(q0, min(chunk, n_queries - q0), args), starts[k : k + 2])
            for j, table in enumerate(tables):
                pq.write_table(table, folder / "data" / f"train-{k + j:05d}.parquet", row_group_size=1 << 18)
    step = 1 << 22
    for i, lo in enumerate(range(0, n_queries, step)):
        table = _text_table("query_id", "query", "q", "query number ", lo, min(lo + step, n_queries))
        pq.write_table(table, folder / "queries" / f"queries-{i:05d}.parquet")
    corpus = corpus_size(args)
    for i, lo in enumerate(range(0, corpus, step)):
        table = _text_table("doc_id", "doc", "d", "the text of passage ", lo, min(lo + step, corpus))
        pq.write_table(table, folder / "documents" / f"documents-{i:05d}.parquet")
    mb = {sub: sum(f.stat().st_size for f in (folder / sub).glob("*.parquet")) / 2**20
          for sub in ("data", "queries", "documents")}  # fmt: skip
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in (folder / "data").glob("*.parquet"))
    return {"preference_rows": rows, "corpus_documents": corpus, "parquet_files": len(starts),
            "disk_mb": round(sum(mb.values()), 1), "disk_mb_by_table": {k: round(v, 1) for k, v in mb.items()}}


def scale(args) -> dict:
    from datasets import load_dataset

    from zelo_hf.grouping import group_preferences
    from zelo_hf.label_sets import save_label_set
    from zelo_hf.labeling import thurstone_map
    from zelo_hf.preference_tables import PreferenceTables

    work = Path(args.work_dir)
    shutil.rmtree(work, ignore_errors=True)
    stages, start, load_before = {}, time.perf_counter(), load_average()
    with AnonPeak() as anon:
        info, stages["simulate_and_write_s"], _ = timed(write_preference_set, work / "preferences", args.scale, args)
        t0 = time.perf_counter()
        folder = work / "preferences"
        prefs = PreferenceTables(  # pair rows streamed from parquet; the text tables memory-mapped
            load_dataset("parquet", data_files=str(folder / "data" / "*.parquet"), split="train", streaming=True),
            *(load_dataset("parquet", data_files=str(folder / t / "*.parquet"), split="train")
              for t in ("queries", "documents")),
        )  # fmt: skip
        grouped = group_preferences(prefs, cache_file_name=str(work / "grouped.arrow"))
        stages["load_and_group_s"] = time.perf_counter() - t0
        load_fit = load_average()
        labels, stages["fit_map_s"], fit_cpu = timed(
            grouped.map, thurstone_map, batched=True, cache_file_name=str(work / "labels.arrow")
        )
        (work / "grouped.arrow").unlink()  # the label set holds every grouped column too
        _, stages["write_label_set_s"], _ = timed(save_label_set, labels, work / "label_set", max_shard_size="500MB")
        exact = map_exactness(labels, args.exact_queries)
    label_mb = sum(f.stat().st_size for f in (work / "label_set" / "data").glob("*.parquet")) / 2**20
    mm_sim = simulate_queries(args.baseline_queries, args.n_docs, args.degree, seed=args.seed)
    mm = mm_seconds_per_query(mm_sim, args.baseline_queries)  # the same run's per-query dense MM fit
    out = {
        "queries": len(labels),
        "queries_per_s_map": round(len(labels) / stages["fit_map_s"], 1),
        "map_cpu_us_per_query": round(1e6 * fit_cpu / len(labels), 1),
        "speedup_vs_mm": round(mm * len(labels) / stages["fit_map_s"], 1),
        "max_abs_diff_vs_scipy": exact,
        "converged_pct": 100.0 * float(np.mean(labels.with_format("numpy")["converged"])),
        **info,
        "label_set_parquet_mb": round(label_mb, 1),
        "label_set_shards": len(list((work / "label_set" / "data").glob("*.parquet"))),
        "stages_s": {k: round(v, 1) for k, v in stages.items()},
        "seconds_total": round(time.perf_counter() - start, 1),
        "peak_rss_mb": peak_rss_mb(),
        "peak_anon_rss_mb": anon.mb,
        "load_avg_before": load_before,
        "load_avg_at_fit": load_fit,
        "load_avg_after": load_average(),
        "cpu_count": os.cpu_count(),
    }  # fmt: skip
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return out


def _full_rekey_graph(n: int, degree: int, seed: int, max_redraws: int = 100) -> np.ndarray:
    """The cycle sampler before #12 (the baseline of ``--graphs``): every re-draw swap re-keys the whole cycle and
    searches all its pairs among the earlier cycles' again."""
    rng, cycles, seen = np.random.default_rng(seed), [], np.empty(0, dtype=np.int64)

    def keys_of(perm):
        a, b = perm, np.roll(perm, -1)
        return np.minimum(a, b) * n + np.maximum(a, b)

    def repeats(perm):
        keys = keys_of(perm)
        pos = np.minimum(np.searchsorted(seen, keys), max(len(seen) - 1, 0))
        return np.flatnonzero(seen[pos] == keys) if len(seen) else np.empty(0, dtype=np.int64)

    for _ in range(degree // 2):
        perm = rng.permutation(n)
        bad = repeats(perm)
        for _ in range(max_redraws):
            if not len(bad):
                break
            i, j = rng.choice(bad), rng.integers(n)
            perm[[i, j]] = perm[[j, i]]
            new_bad = repeats(perm)
            if len(new_bad) <= len(bad):
                bad = new_bad
            else:
                perm[[i, j]] = perm[[j, i]]
        cycles.append(np.stack([perm, np.roll(perm, -1)], axis=1))
        seen = np.sort(np.concatenate([seen, keys_of(perm)]))
    return np.concatenate(cycles).astype(np.int64)


def graph_sampling(args) -> dict:
    from zelo_hf.graphs import query_seed, sample_cycle_graph

    seeds = [query_seed(args.seed, f"q{q}") for q in range(args.graphs)]
    ours, ours_s, ours_cpu = timed(lambda: [sample_cycle_graph(args.n_docs, args.degree, seed=s) for s in seeds])
    old, old_s, old_cpu = timed(lambda: [_full_rekey_graph(args.n_docs, args.degree, s) for s in seeds])
    return {
        "queries": args.graphs, "n_docs": args.n_docs, "degree": args.degree,
        "ms_per_query": round(1e3 * ours_s / len(seeds), 4),
        "ms_per_query_full_rekey": round(1e3 * old_s / len(seeds), 4),
        "speedup": round(old_s / ours_s, 2), "speedup_cpu_time": round(old_cpu / ours_cpu, 2),
        "identical_graphs": all(np.array_equal(a, b) for a, b in zip(ours, old)),
        "load_avg_after": load_average(),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n_queries", type=int, default=20_000)
    parser.add_argument("--n_docs", type=int, default=100)
    parser.add_argument("--degree", type=int, default=8)
    parser.add_argument("--baseline_queries", type=int, default=300)
    parser.add_argument("--exact_queries", type=int, default=20)
    parser.add_argument("--spearman_queries", type=int, default=300)
    parser.add_argument("--num_threads", type=int, default=None)
    parser.add_argument("--chunk_size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--through_map", action="store_true", help="time ds.map(thurstone_map) with its defaults")
    parser.add_argument("--single_thread_queries", type=int, default=5000, help="queries for the 1-thread comparison")
    parser.add_argument("--scale", type=int, default=0, help="N queries end to end from parquet on disk")
    parser.add_argument("--work_dir", default="/tmp/zelo-bench-scale", help="folder for --scale (removed after)")
    parser.add_argument("--keep", action="store_true", help="keep --scale's files")
    parser.add_argument("--graphs", type=int, default=0, help="time N queries' comparison graphs (vs the old sampler)")
    args = parser.parse_args()
    from datasets import disable_caching, disable_progress_bars

    disable_caching()  # time the work, not a cache hit
    disable_progress_bars()
    if args.graphs:
        print(json.dumps(graph_sampling(args), indent=1))
        return
    if args.scale:
        print(json.dumps(scale(args), indent=1))
        return
    if args.through_map:
        print(json.dumps(through_map(args), indent=1))
        return
    sim, sim_s, _ = timed(simulate_queries, args.n_queries, args.n_docs, args.degree, seed=args.seed)
    rates = batched_rates(sim, args)
    report = {
        "setup": {
            "n_queries": args.n_queries, "n_docs": args.n_docs, "degree": args.degree,
            "pairs": int(len(sim.edges)), "cpu_count": os.cpu_count(), "load_avg_1m": os.getloadavg()[0],
            "python": platform.python_version(), "simulate_seconds": round(sim_s, 2),
        },
        "batched": rates,
        "baselines_bradley_terry": baselines(
            sim, args, rates["bradley-terry"]["queries_per_s"], rates["bradley-terry"]["queries_per_cpu_s"]
        ),
        "exactness": exactness(sim, args),
        "spearman_by_degree": spearman_by_degree(args),
    }  # fmt: skip
    report["targets"] = {
        "queries_per_s>=10000": rates["thurstone"]["queries_per_s"] >= 10_000,
        "speedup_vs_mm>=50": report["baselines_bradley_terry"]["speedup_vs_mm"] >= 50,
        "exact_to_1e-6": max(v for k, v in report["exactness"].items() if k.startswith("max")) <= 1e-6,
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
