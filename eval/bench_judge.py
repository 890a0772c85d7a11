"""Benchmark the judging pipeline against a local instant OpenAI-compatible server; prints JSON.

For each concurrency (default 64 and 256) it times, in the same run and against the same server:

* ``bare``: a plain ``litellm.acompletion`` loop (semaphore, prebuilt prompts, nothing else);
* ``pipeline``: :func:`zelo_hf.judging.preferences.judge_pairs` with a :class:`LiteLLMJudge` -- seeded swap, prompt
  rendering, SQLite cache lookups and one committed row per answer, parsing, and the preference ``Dataset``.

The ratio pipeline / bare is the overhead of everything that protects the bill (target >= 0.8); on a shared
machine wall-clock rounds are noisy, so rounds are interleaved, the median ratio is reported, and so is the
client's CPU time per pair (the server runs in its own process), which other processes' load barely moves. Then the
largest run is repeated from the cache alone (every pair a cache hit, target < 5 s for 10,000 pairs). Last, the
batch path (``judge_pairs(batch=True)``) judges ``--batch_pairs`` pairs through tests/openai_batch_server.py (the
OpenAI files + batches protocol, instant batches, in this process): its wall time per 10,000 pairs is the overhead
of building, uploading, polling, downloading, parsing and caching a batch.

    python eval/bench_judge.py --pairs 600 --rounds 5 --cache_pairs 10000 --batch_pairs 10000 --concurrency 64 256
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def start_server() -> tuple[subprocess.Popen, str]:
    """The stub server in its own process (so it does not share the client's interpreter lock)."""
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "openai_stub_server.py"), "--answer", "SCORE: 0.5", "--lifetime", "900"],
        stdout=subprocess.PIPE,
        text=True,
    )
    port = int(server.stdout.readline())
    return server, f"http://127.0.0.1:{port}/v1"


def make_pairs(n: int, tag: str):
    from zelo_hf.judging.votes import Comparison

    return [
        Comparison(
            f"query {tag} {i % 97}",
            f"document A {tag} {i} " * 20,
            f"document B {tag} {i} " * 20,
            None,
            f"q{i % 97}",
            f"{tag}a{i}",
            f"{tag}b{i}",
        )
        for i in range(n)
    ]


async def bare_loop(url: str, messages: list, concurrency: int) -> float:
    import litellm

    from zelo_hf.judging.litellm_judge import flush_litellm_logging

    semaphore = asyncio.Semaphore(concurrency)

    async def one(m):
        async with semaphore:
            # The very request LiteLLMJudge sends (same arguments), so the ratio measures only the pipeline's work.
            return await litellm.acompletion(
                model="openai/stub",
                messages=m,
                api_base=url,
                api_key="no-key-needed",
                temperature=0.0,
                max_tokens=256,
                timeout=60.0,
                max_retries=0,
                num_retries=0,
            )

    start = time.perf_counter()
    await asyncio.gather(*(one(m) for m in messages))
    await flush_litellm_logging()  # as judge_pairs does: each loop pays for its own litellm callbacks
    return time.perf_counter() - start


def pipeline(url: str, pairs, concurrency: int, cache_path: str):
    from zelo_hf.judging.litellm_judge import LiteLLMJudge
    from zelo_hf.judging.preferences import judge_pairs

    judge = LiteLLMJudge("openai/stub", api_base=url, cost_per_token=(1e-7, 4e-7))
    start = time.perf_counter()
    result = judge_pairs(pairs, judge, cache=cache_path, concurrency=concurrency, progress=False)
    return time.perf_counter() - start, result.summary


def batch_path(pairs, cache_path: str) -> dict:
    """Wall time of judge_pairs(batch=True) against the local batch server (instant batches)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from openai_batch_server import StubBatchServer

    from zelo_hf.judging.litellm_judge import LiteLLMJudge
    from zelo_hf.judging.preferences import judge_pairs

    with StubBatchServer(batch_delay=0.0, lifetime=900) as server:
        judge = LiteLLMJudge("openai/stub", api_base=server.url, cost_per_token=(1e-7, 4e-7), timeout=300.0)
        start, cpu = time.perf_counter(), time.process_time()
        result = judge_pairs(pairs, judge, cache=cache_path, batch=True, batch_poll_interval=0.05, progress=False)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert result.summary["judged"] == len(pairs), result.summary
    return {"pairs": len(pairs), "batches": server.calls["create"], "seconds": round(seconds, 2),
            "seconds_per_10k_pairs": round(1e4 * seconds / len(pairs), 2),
            "cpu_seconds_per_10k_pairs": round(1e4 * cpu / len(pairs), 2),
            "note": "server in this process: its JSONL work is included"}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=600, help="pairs per throughput run")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved bare/pipeline rounds (medians reported)")
    parser.add_argument("--cache_pairs", type=int, default=10_000, help="pairs of the cache-hit rerun")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--batch_pairs", type=int, default=10_000, help="pairs of the batch-path run (0: skip)")
    args = parser.parse_args(argv)

    import litellm

    from zelo_hf.judging.litellm_judge import LiteLLMJudge

    litellm.suppress_debug_info = True
    server, url = start_server()
    tmp = tempfile.mkdtemp(prefix="bench_judge_")
    out: dict = {
        "server": "tests/openai_stub_server.py (ThreadingHTTPServer, own process, instant answers)",
        "pairs": args.pairs,
        "rounds": args.rounds,
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg()[0],
        "runs": [],
    }
    try:
        render = LiteLLMJudge("openai/stub")
        pipeline(url, make_pairs(200, "warm"), 64, f"{tmp}/warm.sqlite")  # first-call imports and connections
        asyncio.run(bare_loop(url, [render.messages(c, False) for c in make_pairs(200, "warmb")], 64))
        for concurrency in args.concurrency:
            bare, piped, bare_cpu, piped_cpu = [], [], [], []
            for round_ in range(args.rounds):  # interleaved rounds: a shared machine's load hits both alike
                tag = f"c{concurrency}r{round_}"
                messages = [render.messages(c, render.swap_for(c)) for c in make_pairs(args.pairs, tag + "bare")]
                pairs = make_pairs(args.pairs, tag)
                # Alternate which goes first, and let litellm's callback threads of the previous loop settle, so
                # neither side pays for the other's leftovers.
                for which in ("bare", "pipeline") if round_ % 2 == 0 else ("pipeline", "bare"):
                    time.sleep(1.0)
                    cpu = time.process_time()
                    if which == "bare":
                        bare.append(args.pairs / asyncio.run(bare_loop(url, messages, concurrency)))
                        bare_cpu.append((time.process_time() - cpu) / args.pairs)
                    else:
                        pipe_s, summary = pipeline(url, pairs, concurrency, f"{tmp}/{tag}.sqlite")
                        piped_cpu.append((time.process_time() - cpu) / args.pairs)
                        assert summary["judged"] == args.pairs and summary["calls"] == args.pairs, summary
                        piped.append(args.pairs / pipe_s)
            ratios = [p / b for p, b in zip(piped, bare)]
            out["runs"].append(
                {
                    "concurrency": concurrency,
                    "bare_pairs_per_s": round(float(np.median(bare)), 1),
                    "pipeline_pairs_per_s": round(float(np.median(piped)), 1),
                    "ratio": round(float(np.median(ratios)), 3),  # median of the per-round ratios
                    "ratio_per_round": [round(r, 3) for r in ratios],
                    # Client CPU per pair (the server runs in its own process): what the pipeline adds, load-independent.
                    "bare_cpu_ms_per_pair": round(1e3 * float(np.median(bare_cpu)), 3),
                    "pipeline_cpu_ms_per_pair": round(1e3 * float(np.median(piped_cpu)), 3),
                    "cpu_ratio": round(float(np.median(bare_cpu) / np.median(piped_cpu)), 3),
                }
            )
        # Cache-hit rerun: fill a cache with cache_pairs answers, then judge the same pairs again.
        pairs = make_pairs(args.cache_pairs, "cache")
        fill_s, _ = pipeline(url, pairs, max(args.concurrency), f"{tmp}/cache.sqlite")
        rerun_s, summary = pipeline(url, pairs, max(args.concurrency), f"{tmp}/cache.sqlite")
        assert summary["calls"] == 0 and summary["cached"] == args.cache_pairs, summary
        out["cache_rerun"] = {
            "pairs": args.cache_pairs,
            "fill_seconds": round(fill_s, 2),
            "rerun_seconds": round(rerun_s, 2),
            "calls": summary["calls"],
        }
        if args.batch_pairs:
            out["batch"] = batch_path(make_pairs(args.batch_pairs, "batch"), f"{tmp}/batch.sqlite")
    finally:
        server.kill()
        server.wait()
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
