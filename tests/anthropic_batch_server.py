"""A local HTTP server speaking Anthropic's Message Batches protocol, for offline tests (issue #10).

Listens on 127.0.0.1 (an ephemeral port; ``url`` is the API root, as an ``anthropic/...`` judge's ``api_base``) and
answers ``POST /v1/messages/batches`` (``{"requests": [{"custom_id", "params": {model, max_tokens, system,
messages, ...}}]}``), ``GET /v1/messages/batches/{id}`` (``processing_status`` in_progress | ended, with
``request_counts`` and, once ended, ``results_url``) and ``GET {results_url}`` (JSONL: ``{"custom_id", "result":
{"type": "succeeded" | "errored" | "canceled" | "expired", "message" | "error"}}``). Requests need the
``x-api-key`` header (``key``) and ``anthropic-version``; a bad ``custom_id`` (not ``^[a-zA-Z0-9_-]{1,64}$``) or a
repeated one is a 400, as Anthropic answers.

A batch stays ``in_progress`` for ``batch_delay`` seconds after it is created, then runs every request through
``behaviour(prompt, n)`` (as the OpenAI stubs do: ``ok("SCORE: 0.3")`` succeeds, ``{"status": 500}`` is an
``errored`` result). ``expire=True`` lets only the first ``expire_after`` requests run; the others end ``expired``.
Counters say what was created, polled and downloaded, so a test can tell that a restart resubmitted nothing.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from openai_stub_server import Action, JsonHandler, StubServer, ok

_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
                429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def error_body(status: int, message: str) -> dict[str, Any]:
    """Anthropic's error object (the body of a non-2xx answer, and of an ``errored`` result)."""
    return {"type": "error", "error": {"type": _ERROR_TYPES.get(status, "api_error"), "message": message}}


def message(model: str, text: str, prompt: str) -> dict[str, Any]:
    """A Messages API response; usage counts ~4 characters per token."""
    return {"id": f"msg_{uuid.uuid4().hex[:12]}", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": max(1, len(prompt) // 4), "output_tokens": max(1, len(text) // 4)}}


class StubAnthropicBatchServer(StubServer):
    """Anthropic Message Batches stub; a context manager like :class:`openai_batch_server.StubBatchServer`."""

    def __init__(self, behaviour: Callable[[str, int], Action] | None = None, batch_delay: float = 0.2,
                 expire: bool = False, expire_after: int = 0, key: str = "sk-ant-stub", lifetime: float = 300.0):
        self.behaviour = behaviour or (lambda prompt, n: ok("SCORE: 0.5"))
        self.batch_delay, self.expire, self.expire_after, self.key = batch_delay, expire, expire_after, key
        self.batches: dict[str, dict[str, Any]] = {}
        self.results: dict[str, bytes] = {}
        self.requests: dict[str, list[dict[str, Any]]] = {}  # per batch: the requests as received
        self.counts: Counter[str] = Counter()  # per prompt: requests run inside batches
        self.calls: Counter[str] = Counter()  # per route: "create", "retrieve", "results", "rejected"
        self._lock = threading.Lock()
        self._listen(0, lifetime)

    @property
    def url(self) -> str:  # Anthropic's api_base is the root: the client adds /v1/messages/...
        return f"http://127.0.0.1:{self.port}"

    # ---------------------------------------------------------------- protocol

    def create(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        requests = body.get("requests") or []
        problem = _invalid(requests)
        if problem:
            return 400, error_body(400, problem)
        batch_id = f"msgbatch_{uuid.uuid4().hex[:20]}"
        with self._lock:
            self.calls["create"] += 1
            self.requests[batch_id] = requests
            self.batches[batch_id] = {
                "id": batch_id, "type": "message_batch", "processing_status": "in_progress",
                "request_counts": {"processing": len(requests), "succeeded": 0, "errored": 0, "canceled": 0,
                                   "expired": 0},
                "ended_at": None, "created_at": _now(), "expires_at": None, "archived_at": None,
                "cancel_initiated_at": None, "results_url": None, "_started": time.monotonic(),
            }
        return 200, self._public(self.batches[batch_id])

    def retrieve(self, batch_id: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            batch = self.batches.get(batch_id)
            self.calls["retrieve"] += 1
        if batch is None:
            return 404, error_body(404, f"No batch found with id '{batch_id}'.")
        if batch["processing_status"] == "in_progress" and time.monotonic() - batch["_started"] >= self.batch_delay:
            self._run(batch)
        return 200, self._public(batch)

    def _run(self, batch: dict[str, Any]) -> None:
        rows, counts = [], Counter()
        for i, request in enumerate(self.requests[batch["id"]]):
            result = self._result(request["params"]) if not (self.expire and i >= self.expire_after) else \
                {"type": "expired"}
            counts[result["type"]] += 1
            rows.append({"custom_id": request["custom_id"], "result": result})
        with self._lock:
            self.results[batch["id"]] = "".join(json.dumps(r) + "\n" for r in rows).encode("utf-8")
            batch["request_counts"] = {"processing": 0, **{k: counts[k] for k in
                                                           ("succeeded", "errored", "canceled", "expired")}}
            batch.update(processing_status="ended", ended_at=_now(),
                         results_url=f"{self.url}/v1/messages/batches/{batch['id']}/results")

    def _result(self, params: dict[str, Any]) -> dict[str, Any]:
        prompt = str(next(m for m in params["messages"] if m["role"] == "user")["content"])
        with self._lock:
            self.counts[prompt] += 1
            n = self.counts[prompt]
        action = self.behaviour(prompt, n)
        status = int(action.get("status", 200))
        if status == 200:
            return {"type": "succeeded", "message": message(params["model"], action["content"], prompt)}
        return {"type": "errored", "error": error_body(status, action.get("message") or f"injected {status}")}

    @staticmethod
    def _public(batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in batch.items() if not k.startswith("_")}

    def _refusal(self, headers) -> tuple[int, dict[str, Any]] | None:
        """Anthropic's answer to a request without a valid key or version header (None: accepted)."""
        if headers.get("x-api-key") != self.key:
            with self._lock:
                self.calls["rejected"] += 1
            return 401, error_body(401, "invalid x-api-key")
        if not headers.get("anthropic-version"):
            return 400, error_body(400, "anthropic-version: header is required")
        return None

    def _handler(self):
        stub = self

        class Handler(JsonHandler):
            def do_POST(self):  # noqa: N802 -- http.server's naming
                data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if refused := stub._refusal(self.headers):
                    return self._send(*refused)
                if self.path.split("?")[0].rstrip("/") == "/v1/messages/batches":
                    return self._send(*stub.create(json.loads(data or b"{}")))
                self._send(404, error_body(404, f"no route {self.path}"))

            def do_GET(self):  # noqa: N802
                if refused := stub._refusal(self.headers):
                    return self._send(*refused)
                path = self.path.split("?")[0].rstrip("/")
                if match := re.fullmatch(r"/v1/messages/batches/([\w-]+)", path):
                    return self._send(*stub.retrieve(match.group(1)))
                if match := re.fullmatch(r"/v1/messages/batches/([\w-]+)/results", path):
                    with stub._lock:
                        stub.calls["results"] += 1
                        content = stub.results.get(match.group(1))
                    if content is None:
                        return self._send(400, error_body(400, "Batch is still in progress: no results yet."))
                    return self._send_raw(200, content, content_type="application/binary")
                self._send(404, error_body(404, f"no route {self.path}"))

        return Handler


def _invalid(requests: list[dict[str, Any]]) -> str | None:
    """What Anthropic would reject in a batch's requests (None: nothing)."""
    if not requests:
        return "requests: at least one request is required"
    seen = set()
    for request in requests:
        custom_id = request.get("custom_id", "")
        if not _CUSTOM_ID.match(str(custom_id)):
            return f"requests.custom_id: string does not match pattern ^[a-zA-Z0-9_-]{{1,64}}$ (got {custom_id!r})"
        if custom_id in seen:
            return f"requests: custom_id {custom_id!r} is not unique"
        seen.add(custom_id)
        params = request.get("params") or {}
        missing = [k for k in ("model", "max_tokens", "messages") if k not in params]
        if missing:
            return f"requests.params: missing {missing}"
        if any(m.get("role") == "system" for m in params["messages"]):
            return "requests.params.messages: the system prompt goes in params.system, not in messages"
    return None
