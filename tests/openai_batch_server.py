"""A local HTTP server speaking the OpenAI files + batches protocol (the Batch API), for offline tests.

Listens on 127.0.0.1 (an ephemeral port) and answers what ``litellm.acreate_file`` / ``acreate_batch`` /
``aretrieve_batch`` / ``afile_content`` send: ``POST /v1/files`` (multipart upload), ``POST /v1/batches``,
``GET /v1/batches/{id}``, ``GET /v1/files/{id}/content``. A batch stays ``in_progress`` for ``batch_delay`` seconds
after it is created, then runs every request line through ``behaviour(prompt, n)`` (as the chat stub does): a
200 goes to the output file, any other status to the error file. ``expire=True`` lets only the first
``expire_after`` lines run and the batch ends ``expired`` (the others in the error file with ``batch_expired``).
Counters say what was uploaded, created and polled, so a test can tell that a restart resubmitted nothing.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

from openai_stub_server import _CODES, _MESSAGES, Action, JsonHandler, StubServer, completion, ok


class StubBatchServer(StubServer):
    """OpenAI Batch API stub; a context manager like :class:`openai_stub_server.StubOpenAIServer`."""

    def __init__(self, behaviour: Callable[[str, int], Action] | None = None, batch_delay: float = 0.2,
                 expire: bool = False, expire_after: int = 0, lifetime: float = 300.0):
        self.behaviour = behaviour or (lambda prompt, n: ok("SCORE: 0.5"))
        self.batch_delay, self.expire, self.expire_after = batch_delay, expire, expire_after
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.counts: Counter[str] = Counter()  # per prompt: requests run inside batches
        self.calls: Counter[str] = Counter()  # per route: "upload", "create", "retrieve", "content"
        self._lock = threading.Lock()
        self._listen(0, lifetime)

    # ---------------------------------------------------------------- protocol

    def upload(self, filename: str, data: bytes) -> dict[str, Any]:
        file_id = f"file-{uuid.uuid4().hex[:12]}"
        with self._lock:
            self.files[file_id] = data
            self.calls["upload"] += 1
        return {"id": file_id, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                "filename": filename, "purpose": "batch", "status": "processed"}

    def create(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if body.get("input_file_id") not in self.files:
            return 400, {"error": {"message": f"no file {body.get('input_file_id')!r}", "type": "invalid_request_error"}}
        batch_id = f"batch_{uuid.uuid4().hex[:12]}"
        lines = self.files[body["input_file_id"]].decode("utf-8").splitlines()
        with self._lock:
            self.calls["create"] += 1
            self.batches[batch_id] = {
                "id": batch_id, "object": "batch", "endpoint": body.get("endpoint"), "errors": None,
                "input_file_id": body["input_file_id"], "completion_window": body.get("completion_window", "24h"),
                "status": "in_progress", "output_file_id": None, "error_file_id": None,
                "created_at": int(time.time()), "metadata": body.get("metadata"),
                "request_counts": {"total": len(lines), "completed": 0, "failed": 0}, "_started": time.monotonic(),
            }
        return 200, self._public(self.batches[batch_id])

    def retrieve(self, batch_id: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            batch = self.batches.get(batch_id)
            self.calls["retrieve"] += 1
        if batch is None:
            return 404, {"error": {"message": f"No batch found with id '{batch_id}'.", "type": "invalid_request_error"}}
        if batch["status"] == "in_progress" and time.monotonic() - batch["_started"] >= self.batch_delay:
            self._run(batch)
        return 200, self._public(batch)

    def _run(self, batch: dict[str, Any]) -> None:
        output, errors = [], []
        lines = [json.loads(line) for line in self.files[batch["input_file_id"]].decode("utf-8").splitlines()]
        for i, line in enumerate(lines):
            if self.expire and i >= self.expire_after:
                errors.append({"id": f"batch_req_{i}", "custom_id": line["custom_id"], "response": None, "error": {
                    "code": "batch_expired",
                    "message": "This request could not be executed before the completion window expired."}})
                continue
            messages = line["body"]["messages"]
            prompt = str(next(m for m in messages if m["role"] == "user")["content"])
            with self._lock:
                self.counts[prompt] += 1
                n = self.counts[prompt]
            action = self.behaviour(prompt, n)
            status = int(action.get("status", 200))
            if status == 200:
                body = completion(line["body"].get("model", "stub"), action["content"], prompt, action.get("logprobs"))
                output.append({"id": f"batch_req_{i}", "custom_id": line["custom_id"],
                               "response": {"status_code": 200, "request_id": f"req_{i}", "body": body}, "error": None})
            else:
                kind = action.get("code") or _CODES.get(status, "error")
                error = {"message": action.get("message") or _MESSAGES.get(kind) or f"injected {status}", "type": kind}
                errors.append({"id": f"batch_req_{i}", "custom_id": line["custom_id"],
                               "response": {"status_code": status, "request_id": f"req_{i}", "body": {"error": error}},
                               "error": None})
        with self._lock:
            for name, rows in (("output_file_id", output), ("error_file_id", errors)):
                if rows:
                    file_id = f"file-{uuid.uuid4().hex[:12]}"
                    self.files[file_id] = "".join(json.dumps(r) + "\n" for r in rows).encode("utf-8")
                    batch[name] = file_id
            batch["request_counts"] = {"total": len(lines), "completed": len(output), "failed": len(errors)}
            batch["status"] = "expired" if self.expire else "completed"

    @staticmethod
    def _public(batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in batch.items() if not k.startswith("_")}

    def _handler(self):
        stub = self

        class Handler(JsonHandler):
            def do_POST(self):  # noqa: N802 -- http.server's naming
                data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                path = self.path.split("?")[0].rstrip("/")
                if path.endswith("/files"):
                    filename, content = _multipart_file(self.headers.get("Content-Type", ""), data)
                    return self._send(200, stub.upload(filename, content))
                if path.endswith("/batches"):
                    return self._send(*stub.create(json.loads(data or b"{}")))
                self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_GET(self):  # noqa: N802
                path = self.path.split("?")[0].rstrip("/")
                if match := re.search(r"/batches/([\w-]+)$", path):
                    return self._send(*stub.retrieve(match.group(1)))
                if match := re.search(r"/files/([\w-]+)/content$", path):
                    with stub._lock:
                        stub.calls["content"] += 1
                        content = stub.files.get(match.group(1))
                    if content is None:
                        return self._send(404, {"error": {"message": "no such file"}})
                    return self._send_raw(200, content, content_type="application/octet-stream")
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        return Handler


def _multipart_file(content_type: str, data: bytes) -> tuple[str, bytes]:
    """The uploaded file (name, bytes) of a multipart/form-data body."""
    boundary = re.search(r"boundary=\"?([^\";]+)", content_type)
    if not boundary:
        return "upload.jsonl", data
    for part in data.split(b"--" + boundary.group(1).encode()):
        head, _, body = part.partition(b"\r\n\r\n")
        if b'name="file"' in head:
            name = re.search(rb'filename="([^"]*)"', head)
            return (name.group(1).decode() if name else "upload.jsonl"), body.rstrip(b"\r\n")
    return "upload.jsonl", b""
