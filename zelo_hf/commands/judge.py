"""``zelo judge``: judge comparison pairs (ZELO.md steps 2-3) -> a preference-set folder with its card.

Judges are given as strings -- ``simulated``, ``pairwise:<model folder>``, or litellm model strings such as
``openai/gpt-4.1-mini`` -- or, in a YAML ``--config``, as a list of mappings with per-model settings::

    candidates: outputs/candidates
    output_dir: outputs/preferences
    judge:
      - {model: openai/gpt-4.1-mini, rpm: 500, tpm: 200000}
      - {model: anthropic/claude-sonnet-4-5, rpm: 50, answer_format: score}
      - {model: openai/qwen3-32b, api_base: "http://localhost:8000/v1", rpm: 600}

API keys are read from the environment only (``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``, ...). Every answer is
committed to a SQLite cache (default ``<output_dir>.judgments.sqlite``) as it arrives: rerunning the same
command, or ``--resume`` after a crash, never pays twice for an answered call.

A judge whose key is missing or rejected, whose model is unknown, whose quota is spent or whose server is down
stops after ``--max_fatal_errors`` such errors in a row (one line on stderr says why and what to do), its remaining
pairs are recorded as failed, and the command exits with status 4 (3: some pairs failed; 0: all judged).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trl import TrlParser

from ..adaptive import judge_candidates
from ..data import load_retrieval_data
from ..hub import load_dataset_any
from ..judging.factory import build_judge, judge_cache_path
from ..judging.preference_set import save_preference_set

HELP = "Judge comparison pairs with LLMs (litellm), a local pairwise model or a simulated judge."
DESCRIPTION = f"""{HELP}
Writes a preference-set folder (parquet + card).

Local LLM server (vLLM, llama.cpp's llama-server, Ollama: anything OpenAI-compatible):
  zelo judge --candidates out/candidates --output_dir out/prefs \\
      --judge openai/<served model name> --api_base http://127.0.0.1:8080/v1 --answer_format verdict \\
      --context_window 4096 --concurrency 8 --timeout 120
  No key is needed (a placeholder is sent; OPENAI_BASE_URL / OPENAI_API_BASE work instead of --api_base).
  --answer_format logprobs needs a server that returns `logprobs`/`top_logprobs` (vLLM, llama-server do);
  score and verdict work with any server. Set --concurrency near the server's parallel slots; timeouts and
  429s lower it automatically (AIMD), and --context_window (the per-slot context) cuts documents to fit.
Exit status: 0 all pairs judged, 3 some (or all: stderr says so) pairs failed, 4 a judge was stopped (bad key,
unknown model, quota, server down, stalled provider: stderr says which and how to fix it)."""


@dataclass
class JudgeArguments:
    """Arguments of ``zelo judge``."""

    output_dir: str = field(metadata={"help": "Folder for the preference set (parquet + README.md card)."})
    candidates: str | None = field(
        default=None, metadata={"help": "Candidate set (folder, .parquet/.jsonl file or Hub id): graphs are built."}
    )
    pairs: str | None = field(
        default=None, metadata={"help": "Pre-built pairs (e.g. cross-query pairs from `zelo calibrate --sample_pairs`)."}
    )
    split: str = field(default="train", metadata={"help": "Split of the candidates / pairs dataset."})
    judge: list[str] = field(
        default_factory=lambda: ["simulated"],
        metadata={"help": "Judges: `simulated`, `pairwise:<path>`, or litellm model strings (several = ensemble). "
                  "In YAML also mappings with per-model settings (api_base, rpm, tpm, answer_format, ...).",
                  "nargs": "+"},
    )
    combine: str = field(default="mean", metadata={"help": "Ensemble label.", "choices": ["mean", "median"]})
    degree: int = field(default=8, metadata={"help": "Comparison-graph degree (even; comparisons per document)."})
    rounds: int = field(
        default=1, metadata={"help": "Judging rounds. 1: the --degree cycles. R > 1: --first_degree cycles, then R - 1 "
                             "adaptive rounds (zelo_hf.adaptive) spend the rest of --budget on the pairs each query's "
                             "fit is least sure of near its top; every round is cached, a rerun re-bills nothing."}
    )
    budget: int | None = field(
        default=None, metadata={"help": "With --rounds > 1: comparisons per query in all rounds together, exactly "
                                "(e.g. 400 = degree-8 cycles' count on 100 documents)."}
    )
    first_degree: int = field(default=4, metadata={"help": "With --rounds > 1: degree of the first round's cycles."})
    seed: int = field(default=0, metadata={"help": "Seeds the graphs and the position swaps."})
    cache: str | None = field(default=None, metadata={"help": "SQLite judgment cache (default: <output_dir>.judgments.sqlite)."})
    resume: bool = field(default=False, metadata={"help": "Continue an interrupted run: the cache must exist."})
    dry_run: bool = field(default=False, metadata={"help": "Estimate calls, tokens, dollars and time; spend nothing."})
    concurrency: int = field(
        default=64, metadata={"help": "Calls in flight at most, per LLM judge (lowered automatically on timeouts / "
                              "429s). For a local server: about its number of parallel slots."}
    )
    max_pairs: int | None = field(default=None, metadata={"help": "Judge only the first N pairs."})
    answer_format: str = field(
        default="score", metadata={"help": "LLM answer format.", "choices": ["score", "verdict", "logprobs"]}
    )
    api_base: str | None = field(
        default=None, metadata={"help": "OpenAI-compatible server for string judges, e.g. http://127.0.0.1:8080/v1 "
                                "with --judge openai/<model name>; no key needed."}
    )
    rpm: float | None = field(default=None, metadata={"help": "Requests per minute per LLM judge (string judges)."})
    tpm: float | None = field(default=None, metadata={"help": "Tokens per minute per LLM judge (string judges)."})
    timeout: float = field(default=60.0, metadata={"help": "Seconds per LLM call."})
    max_retries: int = field(default=6, metadata={"help": "Retries per call on 429 / 5xx / timeouts (fatal errors and "
                                                  "context-window errors are not retried)."})
    max_doc_tokens: int | None = field(
        default=None, metadata={"help": "Cut documents to this many tokens so every prompt fits (default: derived "
                                "from --context_window, else from litellm's model info)."}
    )
    context_window: int | None = field(
        default=None, metadata={"help": "Context of the judge model in tokens, for models litellm does not know "
                                "(a local server's per-slot context)."}
    )
    max_fatal_errors: int = field(
        default=3, metadata={"help": "Stop a judge after this many fatal errors in a row (bad key, unknown model, "
                             "quota, server down)."}
    )
    stall_pause: float = field(
        default=30.0, metadata={"help": "A judge whose recent calls all time out pauses this many seconds, then "
                                "probes once; a probe that times out stops it."}
    )
    batch: bool = field(
        default=False, metadata={"help": "Send LLM judges' pairs through the provider's batch API (OpenAI files + "
                                 "batches, Anthropic Message Batches: half price, within 24 h; openai/... and "
                                 "anthropic/... judges). Batch ids go to the cache: rerunning the same "
                                 "command after a crash polls them again, nothing is submitted twice."}
    )
    batch_poll_interval: float = field(default=30.0, metadata={"help": "Seconds between batch status polls."})
    batch_timeout: float = field(
        default=25 * 3600.0, metadata={"help": "Seconds to poll before leaving open batches for a later rerun."}
    )
    data: str | None = field(
        default=None, metadata={"help": "Retrieval data whose qrels drive the simulated judge (default: `grades`)."}
    )
    data_split: str = field(default="test", metadata={"help": "Qrels split of --data."})
    push_to_hub: str | None = field(default=None, metadata={"help": "Also upload the folder to this dataset repo."})
    progress: bool = field(default=True, metadata={"help": "Show a progress bar."})


def make_parser():
    return TrlParser((JudgeArguments,), description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)


def _qrels(args: JudgeArguments, dataset) -> dict[str, dict[str, int]] | None:
    if args.data:
        return load_retrieval_data(args.data, split=args.data_split).qrels
    if "grades" in dataset.column_names:
        cols = dataset.select_columns(["query_id", "doc_ids", "grades"]).to_dict()
        return {q: dict(zip(ids, grades)) for q, ids, grades in zip(cols["query_id"], cols["doc_ids"], cols["grades"])}
    return None


def arguments_judge(args: JudgeArguments, qrels: dict | None):
    """The judge of ``--judge`` (an ensemble when several are given), from the one factory; the LLM flags
    (``--api_base``, ``--rpm``, ...) are the settings of judges given as plain model strings."""
    defaults: dict[str, Any] = {"answer_format": args.answer_format, "api_base": args.api_base, "rpm": args.rpm,
                                "tpm": args.tpm, "timeout": args.timeout, "max_retries": args.max_retries,
                                "max_doc_tokens": args.max_doc_tokens, "context_window": args.context_window,
                                "max_fatal_errors": args.max_fatal_errors, "stall_pause": args.stall_pause}
    return build_judge(args.judge, qrels=qrels, seed=args.seed, combine=args.combine, llm_defaults=defaults)


def _first_error(summary: dict) -> str:
    for row in summary.get("failed_pairs") or []:
        errors = [e for e in row.get("errors") or [] if e]
        if errors:
            return " ".join(str(errors[0]).split())[:300]
    return "unknown"


def _check_rounds(args: JudgeArguments) -> None:
    """Bad --rounds / --budget combinations fail before anything is loaded or sent (issue #13)."""
    r, b = args.rounds, args.budget
    if r < 1:
        raise ValueError(f"--rounds must be >= 1 (got --rounds {r}): pass 1 for plain cycles, or e.g. --rounds 4 "
                         "--budget 400.")
    if r == 1:
        if b is not None:
            raise ValueError(f"--budget is only used with --rounds > 1 (got --budget {b} --rounds 1): add e.g. "
                             "--rounds 4, or drop --budget and set --degree.")
        return
    problems = [
        (b is None, "needs --budget (comparisons per query in all rounds, got none): e.g. --budget 400"),
        (b is not None and b < 1, f"needs --budget >= 1 (got --budget {b}): e.g. --budget 400"),
        (args.first_degree < 2 or args.first_degree % 2, f"needs an even --first_degree >= 2 (got --first_degree "
         f"{args.first_degree}): e.g. --first_degree 4"),
        (args.pairs is not None, f"needs --candidates, not --pairs (got --pairs {args.pairs!r}): adaptive rounds "
         "choose pairs among each query's candidates"),
        (args.dry_run, "cannot be priced by --dry_run (later rounds depend on the answers): price the same number "
         "of comparisons with --rounds 1 --degree <2 * budget / documents per query>"),
        (args.max_pairs is not None, f"takes --budget, not --max_pairs (got --max_pairs {args.max_pairs}): drop "
         "--max_pairs"),
    ]
    for bad, message in problems:
        if bad:
            raise ValueError(f"--rounds {r} {message}.")


def main(args: JudgeArguments) -> int:
    if (args.candidates is None) == (args.pairs is None):
        raise ValueError(
            f"pass exactly one of --candidates or --pairs (got candidates={args.candidates!r}, pairs={args.pairs!r})."
        )
    _check_rounds(args)
    source = args.candidates or args.pairs
    dataset = load_dataset_any(source, split=args.split)
    judge = arguments_judge(args, _qrels(args, dataset))
    cache = judge_cache_path(args.cache, args.output_dir)
    if args.resume and not Path(cache).exists():
        raise FileNotFoundError(f"--resume: no judgment cache at {cache}: drop --resume to start, or pass --cache.")
    result = judge_candidates(  # with --rounds > 1 the adaptive rounds; the zerank preferences stage's body too
        dataset, judge, rounds=args.rounds, budget=args.budget, first_degree=args.first_degree,
        degree=args.degree, seed=args.seed, cache=cache, concurrency=args.concurrency,
        max_pairs=args.max_pairs, progress=args.progress, dry_run=args.dry_run, combine=args.combine,
        batch=args.batch, batch_poll_interval=args.batch_poll_interval, batch_timeout=args.batch_timeout,
    )
    if args.dry_run:
        print(json.dumps(result.summary, indent=2, default=float))
        return 0
    save_preference_set(result, args.output_dir, judge=judge, push_to_hub=args.push_to_hub, source=str(source))
    shown = {k: v for k, v in result.summary.items() if k != "failed_pairs"}
    print(json.dumps(shown | {"output_dir": args.output_dir, "cache": str(cache)}, default=float))
    if result.summary["pairs"] and result.summary["judged"] == 0:
        print(f"zelo judge: every one of the {result.summary['pairs']} pairs failed, so nothing was judged "
              f"(first error: {_first_error(result.summary)}): fix the judge and rerun; the failures are in "
              f"{Path(args.output_dir) / 'failed_pairs.jsonl'}.", file=sys.stderr)  # fmt: skip
    if result.summary.get("stopped_judges"):
        return 4
    return 0 if result.summary["failed"] == 0 else 3
