"""A real local HTTP server speaking the OpenAI chat-completions protocol, for offline tests and benchmarks.

It listens on 127.0.0.1 (an ephemeral port), answers ``POST /v1/chat/completions`` (and ``/chat/completions``), and
can inject faults per request: 429 bursts, 500s, slow responses (beyond a client's timeout), malformed JSON and
refusals, auth / unknown-model / quota errors, a context limit, and a small number of slots (requests served at once;
the others wait their turn, as llama.cpp's ``llama-server -np N`` does). A ``behaviour(prompt, n)`` callable decides
each answer from the pair's prompt (the first user message: a re-ask appends turns after it) and how many times that
prompt was requested (n = 1 on the first request). The server counts requests per prompt, refuses anything past
``max_requests`` (503) and shuts itself down after ``lifetime`` seconds, so a forgotten server cannot linger.

Run standalone (the benchmark does): ``python tests/openai_stub_server.py --answer "SCORE: 0.5"`` prints the port.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import select
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Action = dict[str, Any]


def prompt_key(prompt: str) -> str:
    """Short stable id of a user prompt (what the server counts requests by)."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]


def ok(content: str, logprobs: dict[str, float] | None = None) -> Action:
    """A successful answer (optionally with top log-probabilities of the first token)."""
    return {"status": 200, "content": content, "logprobs": logprobs}


REFUSAL = "I'm sorry, but I can't help with comparing these documents."


# OpenAI's error codes and messages, as its API sends them.
_CODES = {401: "invalid_api_key", 403: "unsupported_country_region_territory", 404: "model_not_found",
          429: "rate_limit_exceeded", 500: "server_error"}
_MESSAGES = {
    "invalid_api_key": "Incorrect API key provided: sk-wrong. You can find your API key at "
                       "https://platform.openai.com/account/api-keys.",
    "unsupported_country_region_territory": "Country, region, or territory not supported",
    "model_not_found": "The model `stub-missing` does not exist or you do not have access to it.",
    "insufficient_quota": "You exceeded your current quota, please check your plan and billing details.",
}


class _Server(ThreadingHTTPServer):
    # The default listen backlog (5) drops connections under 64-256 concurrent clients, which then wait
    # for TCP's SYN retries (1 s, 3 s, ...): a benchmark would measure the kernel, not the client.
    request_queue_size = 1024
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:  # a client that timed out and hung up is not news
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class StubServer:
    """What the stub servers share: a threading server on 127.0.0.1 (``port`` 0: an ephemeral one) that stops itself
    after ``lifetime`` seconds, usable as a context manager. Subclasses call :meth:`_listen` and give ``_handler()``."""

    def _listen(self, port: int, lifetime: float) -> None:
        self.lifetime = lifetime
        self._server = _Server(("127.0.0.1", port), self._handler())
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self):
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        self._timer = threading.Timer(self.lifetime, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class JsonHandler(BaseHTTPRequestHandler):
    """A quiet HTTP/1.1 handler that answers JSON (or raw bytes) and ignores clients that hung up."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def _send(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
        self._send_raw(status, json.dumps(payload).encode("utf-8"), headers)

    def _send_raw(self, status: int, data: bytes, headers: dict[str, str] | None = None,
                  content_type: str = "application/json") -> None:
        try:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout): nothing to do
            pass


class StubOpenAIServer(StubServer):
    """OpenAI-compatible stub; use as a context manager or call ``start()`` / ``stop()``.

    Args:
        behaviour: ``(prompt, n) -> action``; actions: ``ok("SCORE: 0.3")``, ``{"status": 429}`` (optionally with
            ``"headers": {"Retry-After": "2"}``),
            ``{"status": 500}``, ``{"sleep": 5.0, **ok(...)}``, ``{"malformed": True}``, ``ok(REFUSAL)``;
            ``"echo_auth": True`` in an action echoes the request's Authorization header into the answer or error.
        answer: the default answer when ``behaviour`` is None.
            ``{"status": 401}`` / ``403`` / ``404`` / ``{"status": 429, "code": "insufficient_quota"}`` (OpenAI's
            wording for each), any status with ``"message"``.
        answer: the default answer when ``behaviour`` is None.
        delay: seconds to wait before every answer (simulated model latency), inside a slot.
        max_requests: requests served at most; later ones get 503.
        lifetime: seconds after which the server stops itself.
        slots: requests processed at once (None: all); the others queue. A queued request whose client gave up
            (timed out) by the time its slot frees is dropped, as vLLM and llama-server drop closed connections.
        context_tokens: prompts longer than this (~4 characters per token, all messages) get llama.cpp's 400
            "the request exceeds the available context size".
        record: keep every request's messages in ``requests`` (tests of re-asks).
    """

    def __init__(self, behaviour: Callable[[str, int], Action] | None = None, answer: str = "SCORE: 0.5",
                 delay: float = 0.0, max_requests: int = 100_000, lifetime: float = 300.0, port: int = 0,
                 slots: int | None = None, context_tokens: int | None = None, record: bool = False):
        self.behaviour = behaviour or (lambda prompt, n: ok(answer))
        self.delay, self.max_requests = delay, max_requests
        self.context_tokens, self.record = context_tokens, record
        self._slots = threading.Semaphore(slots) if slots else None
        self.requests: list[list[dict[str, Any]]] = []  # messages of every request (record=True)
        self.open_requests = 0  # requests received and not yet answered (queued + in a slot)
        self.open_at_arrival: list[int] = []  # open requests (this one included) when each request arrived
        self.counts: Counter[str] = Counter()  # requests per prompt key
        self.successes: Counter[str] = Counter()  # 200 answers sent per prompt key
        self.statuses: Counter[int | str] = Counter()
        self.arrivals: list[float] = []  # time.monotonic() of every request, in arrival order
        self.prompts: dict[str, str] = {}
        self.total = 0
        self._lock = threading.Lock()
        self._listen(port, lifetime)

    def _register(self, prompt: str, messages: list[dict[str, Any]]) -> tuple[int, int]:
        key = prompt_key(prompt)
        with self._lock:
            self.arrivals.append(time.monotonic())
            self.total += 1
            self.counts[key] += 1
            self.prompts[key] = prompt
            self.open_requests += 1
            self.open_at_arrival.append(self.open_requests)
            if self.record:
                self.requests.append(messages)
            return self.total, self.counts[key]

    def _done(self) -> None:
        with self._lock:
            self.open_requests -= 1

    def _serve(self, action: Action, connection: socket.socket) -> bool:
        """The model's time, in a slot when slots are limited (queued requests wait for one); False when the client
        had gone by the time the slot was free (the request is then dropped unanswered)."""
        if self._slots is None:
            time.sleep(self.delay + float(action.get("sleep", 0.0)))
            return True
        with self._slots:
            if _closed(connection):
                with self._lock:
                    self.statuses["abandoned"] += 1
                return False
            time.sleep(self.delay + float(action.get("sleep", 0.0)))
        return True

    def _handler(self):
        stub = self

        class Handler(JsonHandler):
            def do_POST(self):  # noqa: N802 -- http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except json.JSONDecodeError:
                    return self._send(400, {"error": {"message": "bad request body"}})
                if not self.path.rstrip("/").endswith("chat/completions"):
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                messages = body.get("messages") or [{}]
                users = [m for m in messages if m.get("role") == "user"] or messages
                prompt = str(users[0].get("content", ""))
                total, n = stub._register(prompt, messages)
                try:
                    if total > stub.max_requests:
                        return self._send(503, {"error": {"message": "stub server request limit reached"}})
                    size = sum(len(str(m.get("content", ""))) for m in messages) // 4
                    if stub.context_tokens is not None and size > stub.context_tokens:
                        stub.statuses["context"] += 1
                        return self._send(400, {"error": {
                            "code": 400, "type": "exceed_context_size_error", "n_prompt_tokens": size,
                            "message": f"the request exceeds the available context size ({size} > "
                                       f"{stub.context_tokens} tokens), try increasing it"}})
                    action = stub.behaviour(prompt, n)
                    if stub._serve(action, self.connection):
                        self._answer(action, body, prompt)
                finally:
                    stub._done()

            def _answer(self, action: Action, body: dict, prompt: str) -> None:
                status = int(action.get("status", 200))
                stub.statuses[status if not action.get("malformed") else "malformed"] += 1
                if action.get("malformed"):
                    return self._send_raw(200, b'{"id": "chatcmpl-broken", "choices": [{"message": {"content": ')
                # A leaky provider: echo the request's credentials back (secret-redaction tests).
                leak = f" (auth: {self.headers.get('Authorization', '')})" if action.get("echo_auth") else ""
                if status != 200:
                    kind = action.get("code") or _CODES.get(status, "error")
                    message = action.get("message") or _MESSAGES.get(kind) or f"injected {status}"
                    payload = {"error": {"message": message + leak, "type": kind, "code": kind}}
                    return self._send(status, payload, action.get("headers"))
                with stub._lock:
                    stub.successes[prompt_key(prompt)] += 1
                content = action["content"] + leak
                self._send(200, completion(body.get("model", "stub"), content, prompt, action.get("logprobs")))

        return Handler


def _closed(connection: socket.socket) -> bool:
    """Whether the client closed its end (a readable socket with nothing to read)."""
    try:
        readable, _, _ = select.select([connection], [], [], 0)
        return bool(readable) and connection.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def completion(model: str, content: str, prompt: str, logprobs: dict[str, float] | None = None) -> dict[str, Any]:
    """A chat-completion response body; usage counts ~4 characters per token."""
    choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
    if logprobs:
        top = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in logprobs.items()]
        first = max(logprobs, key=logprobs.get)
        choice["logprobs"] = {"content": [{"token": first, "logprob": logprobs[first], "bytes": list(first.encode()),
                                           "top_logprobs": top}]}
    prompt_tokens = max(1, len(prompt) // 4)
    completion_tokens = max(1, len(content) // 4)
    return {
        "id": "chatcmpl-stub", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [choice],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="OpenAI-compatible stub server on 127.0.0.1.")
    parser.add_argument("--answer", default="SCORE: 0.5")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--lifetime", type=float, default=600.0)
    parser.add_argument("--max_requests", type=int, default=10_000_000)
    parser.add_argument("--slots", type=int, default=None)
    args = parser.parse_args(argv)
    server = StubOpenAIServer(answer=args.answer, delay=args.delay, port=args.port, lifetime=args.lifetime,
                              max_requests=args.max_requests, slots=args.slots).start()
    print(server.port, flush=True)
    server._thread.join()


if __name__ == "__main__":
    sys.exit(main())


_KILLED_CHILD = """
import sys
sys.path.insert(0, sys.argv[3])
from {module} import FAST, POLL, _pairs
from zelo_hf.judging.litellm_judge import LiteLLMJudge
from zelo_hf.judging.preferences import judge_pairs
judge = LiteLLMJudge({model!r}, api_base=sys.argv[1], **FAST)
judge_pairs(_pairs(["ok"] * 12), judge, cache=sys.argv[2], **POLL)
"""


def kill_while_polling(server, test_module: str, model: str, cache) -> None:
    """Run ``zelo judge --batch``'s core on 12 pairs in a child process through ``server`` (a batch stub with a
    ``batch_delay``) and SIGKILL it once it polls, i.e. after the batch id was committed to ``cache``. The test module
    provides ``FAST``, ``POLL`` and ``_pairs``; the caller then restarts the same judging in-process."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    tests = Path(__file__).parent
    env = {**os.environ, "PYTHONPATH": str(tests.parent)}
    child = subprocess.Popen([sys.executable, "-c", _KILLED_CHILD.format(module=test_module, model=model), server.url,
                              str(cache), str(tests)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while server.calls["retrieve"] < 2 and time.time() < deadline and child.poll() is None:
        time.sleep(0.01)  # polling has begun: the batch id was committed before the first poll
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL and server.calls["create"] == 1
