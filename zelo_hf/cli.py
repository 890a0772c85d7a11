"""The ``zelo`` command line: ``zelo [--debug] <command> [--config file.yaml] [--flags]``.

Each step command lives in ``zelo_hf/commands/<name>.py`` and each recipe's pipeline in
``zelo_hf/pipelines/<name>.py`` (``zelo zerank|pairwise|zembed``); both expose ``HELP`` (one line), ``make_parser()``
(a ``TrlParser`` over its argument dataclasses, so a YAML ``--config`` sets values and flags override
them) and ``main(*dataclasses)``. Commands are imported only when run, so ``zelo --help`` is instant.

From the shell an error prints one line (``zelo <command>: error: <message>``) and exits with status 1;
``zelo --debug <command>`` or ``ZELO_DEBUG=1`` shows the traceback instead (issue #11).
"""

from __future__ import annotations

import importlib
import os
import sys

from . import __version__
from .utils import closing_distributed

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

COMMANDS: dict[str, str] = {
    "graph": "zelo_hf.commands.graph",
    "fit": "zelo_hf.commands.fit",
    "calibrate": "zelo_hf.commands.calibrate",
    "candidates": "zelo_hf.commands.candidates",
    "judge": "zelo_hf.commands.judge",
    "train-pairwise": "zelo_hf.commands.train_pairwise",
    "train-pointwise": "zelo_hf.commands.train_pointwise",
    # the recipes' pipelines (recipes/<name>.py runs the same module's main under `accelerate launch`)
    "zerank": "zelo_hf.pipelines.zerank",
    "pairwise": "zelo_hf.pipelines.pairwise",
    "zembed": "zelo_hf.pipelines.zembed",
}

HELPS: dict[str, str] = {
    "graph": "Sample sparse comparison graphs (unions of random Hamiltonian cycles) for candidate lists.",
    "fit": "Fit Thurstone / Bradley-Terry scores per query from a preference set -> a label set.",
    "calibrate": "Fit per-query offsets from cross-query comparisons so scores compare across queries.",
    "candidates": "Retrieve first-stage top-k candidates (BM25, embedder, or fusion) per query.",
    "judge": "Judge comparison pairs with LLMs (litellm), a local pairwise model or a simulated judge.",
    "train-pairwise": "Train the pairwise small model (BCE on soft labels) on a preference set.",
    "train-pointwise": "Train the pointwise reranker (MSE on calibrated scores) on a label set.",
    "zerank": "Run the zELO reranker pipeline end to end (resumable stages): candidates -> judging -> labels -> training.",
    "pairwise": "Train the pairwise small model on a preference set and report its held-out agreement with the judges.",
    "zembed": "Distil a bi-encoder (zembed) from a zELO reranker's scores or a label set; evaluated before and after.",
}
DEBUG_ENV = "ZELO_DEBUG"


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: zelo [--version] [--debug] <command> [--config CONFIG.yaml] [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {HELPS[name]}" for name in COMMANDS]
    lines += ["", "Run `zelo <command> --help` for the options of one command.",
              f"--debug (or {DEBUG_ENV}=1) shows the traceback of an error instead of its one-line message."]  # fmt: skip
    return "\n".join(lines)


def _version() -> str:
    return f"zelo-hf {__version__}"


def _describe_negations(parser) -> None:
    """HfArgumentParser gives ``--no_x`` the help of ``--x`` ("--no_progress: Show a progress bar."): say what it does."""
    for action in parser._actions:
        negated = [s for s in action.option_strings if s.startswith("--no_")]
        if negated and action.const is False:
            action.help = f"Turn off --{action.dest} (the same as --{action.dest} false)."


def _group_own_options_first(parser, module) -> None:
    """The train commands' help runs to hundreds of lines of TrainingArguments: list the options zELO adds (the
    script arguments and the config fields TrainingArguments lacks) first, in their own group."""
    own = module.own_option_fields() if hasattr(module, "own_option_fields") else None
    if not own:
        return
    group = parser.add_argument_group("zELO options (the rest are transformers TrainingArguments / TRL ModelConfig)")
    moved = [a for a in parser._optionals._group_actions if a.dest in own]
    for action in moved:
        parser._optionals._group_actions.remove(action)
        group._group_actions.append(action)
    parser._action_groups.remove(group)
    parser._action_groups.insert(parser._action_groups.index(parser._optionals), group)
    parser.usage = f"{parser.prog} [-h] [--config CONFIG.yaml] [options]"  # the full list runs to ~150 lines


def make_command_parser(name: str):
    """The parser of one command, named ``zelo <name>``, its help opening with the command's one-line description."""
    module = importlib.import_module(COMMANDS[name])
    parser = module.make_parser()
    parser.prog = f"zelo {name}"
    extra = parser.description or ""
    if not extra.startswith(HELPS[name]):
        parser.description = f"{HELPS[name]}\n\n{extra}".strip() if extra else HELPS[name]
    _describe_negations(parser)
    _group_own_options_first(parser, module)
    return module, parser


def run_command(argv: list[str]) -> int:
    """Run ``zelo <argv>``; errors propagate (tests and Python callers see the exception)."""
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        print(_version())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"zelo: unknown command {name!r}; choose one of: {', '.join(COMMANDS)}.\n\n{_usage()}", file=sys.stderr)
        return 2
    module, parser = make_command_parser(name)
    args = parser.parse_args_and_config(rest)
    with closing_distributed():
        result = module.main(*args)
    return int(result) if isinstance(result, int) else 0


def _one_line(err: BaseException) -> str:
    message = str(err).strip() or type(err).__name__
    if isinstance(err, KeyError) and message.startswith(("'", '"')):
        message = f"missing key {message}"
    return " ".join(message.split())


def main(argv: list[str] | None = None, catch: bool | None = None) -> int:
    """``zelo`` entry point. ``catch`` (default: True when run from the shell, i.e. ``argv`` is None) turns an error
    into one line on stderr and exit status 1; ``--debug`` before the command, or ``ZELO_DEBUG=1``, re-raises it."""
    catch = argv is None if catch is None else catch
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(_usage(), file=sys.stderr)
        return 2
    debug = os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")
    if argv[0] == "--debug":
        debug, argv = True, argv[1:]
    if not catch or debug:
        return run_command(argv)
    try:
        return run_command(argv)
    except KeyboardInterrupt:
        print("zelo: interrupted.", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the shell gets one line; --debug / ZELO_DEBUG=1 show the traceback
        name = argv[0] if argv and argv[0] in COMMANDS else ""
        print(f"zelo {name}: error: {_one_line(err)}".replace("zelo : ", "zelo: "), file=sys.stderr)
        print(f"(run with `zelo --debug {' '.join(argv[:1])} ...` or {DEBUG_ENV}=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
