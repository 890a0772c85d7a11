"""The ``zelo`` command line: ``zelo <command> [--config file.yaml] [--flags]``.

Each command lives in ``zelo_hf/commands/<name>.py`` and exposes ``HELP`` (one line), ``make_parser()``
(a ``TrlParser`` over its argument dataclasses, so a YAML ``--config`` sets values and flags override
them) and ``main(*dataclasses)``. Commands are imported only when run, so ``zelo --help`` is instant.
"""

from __future__ import annotations

import importlib
import os
import sys

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

COMMANDS: dict[str, str] = {
    "graph": "zelo_hf.commands.graph",
    "fit": "zelo_hf.commands.fit",
    "calibrate": "zelo_hf.commands.calibrate",
    "candidates": "zelo_hf.commands.candidates",
    "judge": "zelo_hf.commands.judge",
    "train-pairwise": "zelo_hf.commands.train_pairwise",
    "train-pointwise": "zelo_hf.commands.train_pointwise",
}

HELPS: dict[str, str] = {
    "graph": "Sample sparse comparison graphs (unions of random Hamiltonian cycles) for candidate lists.",
    "fit": "Fit Thurstone / Bradley-Terry scores per query from a preference set -> a label set.",
    "calibrate": "Fit per-query offsets from cross-query comparisons so scores compare across queries.",
    "candidates": "Retrieve first-stage top-k candidates (BM25, embedder, or fusion) per query.",
    "judge": "Judge comparison pairs with LLMs (litellm), a local pairwise model or a simulated judge.",
    "train-pairwise": "Train the pairwise small model (BCE on soft labels) on a preference set.",
    "train-pointwise": "Train the pointwise reranker (MSE on calibrated scores) on a label set.",
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: zelo <command> [--config CONFIG.yaml] [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {HELPS[name]}" for name in COMMANDS]
    lines += ["", "Run `zelo <command> --help` for the options of one command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"zelo: unknown command {name!r}; choose one of: {', '.join(COMMANDS)}.\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name])
    parser = module.make_parser()
    parser.prog = f"zelo {name}"
    args = parser.parse_args_and_config(rest)
    result = module.main(*args)
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
