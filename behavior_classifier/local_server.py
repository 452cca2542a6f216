"""A real OpenAI-compatible chat-completions server on 127.0.0.1, scriptable per request.

Tests of anything that talks to an LLM run against this server instead of a patched client,
so the real `openai` client, its HTTP stack, retries and timeouts are exercised end to end;
bench scripts measure the LLM judge's throughput against it. Standard library only
(``http.server``); `behavior_classifier` does not import it, so it costs nothing unless used.

Usage::

    from behavior_classifier.local_server import OpenAIServer, Reply

    def handler(request: dict, n: int) -> Reply:
        # `request` is the parsed JSON body of POST /v1/chat/completions,
        # `n` the 0-based arrival number of the request across the server's lifetime.
        if n == 0:
            return Reply.error(429, retry_after=0.1)
        return Reply.ok('{"verification": 1}')

    with OpenAIServer(handler) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-test")
        ...
        server.requests        # list[Recorded], in arrival order (thread-safe snapshot)
        server.requests[0].headers["authorization"]

Endpoints: ``POST /v1/chat/completions`` (non-streaming), ``GET /v1/models``, and the minimal Files and Batch
API (below). Anything else is a 404.

``OpenAIServer(handler, reasoning=True)`` behaves like OpenAI's reasoning models (o-series): a request with
``max_tokens``, or with a ``temperature`` other than 1, is refused with the 400 OpenAI sends (``param`` set,
the message naming the parameter) before the handler sees it; such refusals are recorded like any request.

Files and Batch API (what ``classify --batch`` uses): ``POST /v1/files`` (multipart upload, ``purpose=batch``),
``GET /v1/files/{id}`` and ``/v1/files/{id}/content``; ``POST /v1/batches``, ``GET /v1/batches/{id}`` and
``GET /v1/batches``. A batch moves one status per retrieve, ``validating`` -> ``in_progress`` -> ``finalizing`` ->
`OpenAIServer.batch_outcome` (``completed`` by default; ``expired`` or ``failed`` to script those). On reaching
``completed`` or ``expired`` each line of its input file goes through the handler like a chat request (recorded
with ``method="BATCH"``; with ``expired`` only the first half does); 200 replies go to the output file, others
to the error file, in OpenAI's line format (``custom_id``, ``response.status_code``, ``response.body``).
``server.batches`` and ``server.files`` hold what was created.

What a `Reply` can script (combine freely):
- ``Reply.ok(content)``: a 200 chat completion whose assistant message is ``content`` (any text:
  plain JSON, fenced JSON, prose, garbage), with ``usage`` filled in.
- ``Reply.error(status, retry_after=None)``: an OpenAI-style error body with that status (429, 500, 400...)
  and an optional ``Retry-After`` header (seconds).
- ``Reply.dropped()``: the connection is closed without any response (a dropped connection).
- ``delay=seconds`` on any reply: wait before answering (a slow server / client timeout; 0.05 for benches).
- ``body=...``: a raw HTTP body instead of a chat completion (e.g. malformed JSON at the HTTP level),
  with ``content_type=...`` (e.g. ``text/html`` for a proxy's error page served with status 200).
- ``extra={...}``: fields merged into the generated chat completion (e.g. ``{"usage": "n/a"}``: a malformed usage).
- ``trickle=seconds``: send the body one byte at a time, this long apart (a server that keeps every read
  alive but never finishes in time; the headers go out at once).

The default handler answers every request with ``Reply.ok("{}")``. A handler that raises makes the
server answer 500 and appends the exception to ``server.errors`` (so a test can assert there were none).
"""

from __future__ import annotations

import email.parser
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Reply:
    """What the server does with one request."""

    status: int = 200
    """HTTP status code."""
    content: str | None = None
    """Assistant message content of a 200 chat completion (ignored when `body` is given)."""
    body: bytes | str | dict[str, Any] | None = None
    """Raw response body; a dict is JSON-encoded. Overrides the generated chat completion/error."""
    headers: dict[str, str] = field(default_factory=dict)
    """Extra response headers (e.g. ``Retry-After``)."""
    delay: float = 0.0
    """Seconds to wait before answering."""
    drop: bool = False
    """Close the connection without sending anything."""
    usage: tuple[int, int] | None = None
    """(prompt_tokens, completion_tokens); default: a rough count of 4 characters per token."""
    content_type: str = "application/json"
    """The Content-Type header of the reply."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Fields merged into a generated chat completion (overriding e.g. `usage`)."""
    trickle: float = 0.0
    """Seconds between body bytes (0: the body at once)."""

    @classmethod
    def ok(
        cls,
        content: str,
        *,
        delay: float = 0.0,
        usage: tuple[int, int] | None = None,
        extra: dict[str, Any] | None = None,
        trickle: float = 0.0,
    ) -> Reply:
        return cls(status=200, content=content, delay=delay, usage=usage, extra=extra or {}, trickle=trickle)

    @classmethod
    def error(cls, status: int, *, retry_after: float | None = None, message: str = "scripted error", delay: float = 0.0) -> Reply:
        headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
        body = {"error": {"message": message, "type": "server_error" if status >= 500 else "invalid_request_error", "code": status}}
        return cls(status=status, body=body, headers=headers, delay=delay)

    @classmethod
    def dropped(cls, *, delay: float = 0.0) -> Reply:
        return cls(drop=True, delay=delay)


@dataclass(frozen=True)
class Recorded:
    """One request as the server saw it, with the reply it chose."""

    n: int
    """0-based arrival number."""
    method: str
    path: str
    headers: dict[str, str]
    """Request headers, names lower-cased."""
    raw_body: bytes
    json: dict[str, Any] | None
    """Parsed body, or None if it was not JSON."""
    reply: Reply
    received_at: float
    """time.monotonic() at arrival."""


Handler = Callable[[dict[str, Any], int], Reply]


def _default_handler(request: dict[str, Any], n: int) -> Reply:
    return Reply.ok("{}")


def reasoning_refusal(request: dict[str, Any]) -> Reply | None:
    """The 400 OpenAI's reasoning models send for `max_tokens` or a non-default `temperature`, or None."""
    if "max_tokens" in request:
        message = "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead."
        param, code = "max_tokens", "unsupported_parameter"
    elif "temperature" in request and request["temperature"] != 1:
        message = f"Unsupported value: 'temperature' does not support {request['temperature']} with this model. Only the default (1) value is supported."
        param, code = "temperature", "unsupported_value"
    else:
        return None
    return Reply(status=400, body={"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}})


def _completion_body(request: dict[str, Any], reply: Reply, n: int) -> dict[str, Any]:
    content = reply.content or ""
    if reply.usage is not None:
        prompt_tokens, completion_tokens = reply.usage
    else:
        prompt_chars = sum(len(str(m.get("content", ""))) for m in request.get("messages", []) if isinstance(m, dict))
        prompt_tokens, completion_tokens = max(1, prompt_chars // 4), max(1, len(content) // 4)
    return {
        **{
            "id": f"chatcmpl-test-{n}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": str(request.get("model", "test-model")),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop", "logprobs": None}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        },
        **reply.extra,
    }


class OpenAIServer:
    """Threaded HTTP server speaking the chat-completions protocol; a context manager.

    ``base_url`` is ``http://127.0.0.1:<port>/v1`` (a free port picked by the OS).
    """

    def __init__(self, handler: Handler | None = None, *, host: str = "127.0.0.1", reasoning: bool = False) -> None:
        self.handler: Handler = handler or _default_handler
        self.reasoning = reasoning
        """Refuse `max_tokens` and non-default `temperature` as OpenAI's reasoning models do."""
        self.batch_outcome = "completed"
        """Final status of batches: 'completed', 'expired' (half the requests answered) or 'failed' (none)."""
        self.files: dict[str, dict[str, Any]] = {}
        """Uploaded and generated files by id: the file object plus its bytes under 'content'."""
        self.batches: dict[str, dict[str, Any]] = {}
        """Batch objects by id, in creation order."""
        self._requests: list[Recorded] = []
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._count = 0
        self._stopping = threading.Event()
        self._httpd = _HTTPServer((host, 0), _RequestHandler)
        self._httpd.app = self
        self._httpd.daemon_threads = True  # slow replies must not block shutdown
        self._thread: threading.Thread | None = None
        host_, port = self._httpd.server_address[:2]
        self.base_url = f"http://{host_}:{port}/v1"

    @property
    def requests(self) -> list[Recorded]:
        """A snapshot of the recorded requests, in arrival order."""
        with self._lock:
            return list(self._requests)

    def _next(self) -> int:
        with self._lock:
            n = self._count
            self._count += 1
            return n

    def chat_reply(self, parsed: Any, raw: bytes, method: str, path: str, headers: dict[str, str]) -> tuple[Reply, Recorded]:
        """Decide and record the reply to one chat request (over HTTP or from a batch's input file)."""
        request = parsed if isinstance(parsed, dict) else {}
        n = self._next()
        refusal = reasoning_refusal(request) if self.reasoning else None
        if refusal is not None:
            reply = refusal
        else:
            try:
                reply = self.handler(request, n)
            except BaseException as err:  # a broken test handler must show up, not hang the client
                self.errors.append(err)
                reply = Reply.error(500, message=f"handler raised {type(err).__name__}")
        record = Recorded(
            n=n,
            method=method,
            path=path,
            headers=headers,
            raw_body=raw,
            json=request if isinstance(parsed, dict) else None,
            reply=reply,
            received_at=time.monotonic(),
        )
        with self._lock:
            self._requests.append(record)
        return reply, record

    def add_file(self, content: bytes, filename: str, purpose: str) -> dict[str, Any]:
        file_id = f"file-{uuid.uuid4().hex[:24]}"
        obj = {"id": file_id, "object": "file", "bytes": len(content), "created_at": int(time.time()), "filename": filename,
               "purpose": purpose, "status": "processed"}  # fmt: skip
        with self._lock:
            self.files[file_id] = {**obj, "content": content}
        return obj

    def create_batch(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        input_id = body.get("input_file_id")
        if input_id not in self.files:
            return 400, {
                "error": {"message": f"No such File object: {input_id}", "type": "invalid_request_error", "param": "input_file_id"}
            }
        if body.get("endpoint") != "/v1/chat/completions":
            return 400, {"error": {"message": "only /v1/chat/completions batches are served here", "type": "invalid_request_error"}}
        lines = [line for line in self.files[input_id]["content"].decode().splitlines() if line.strip()]
        batch = {
            "id": f"batch_{uuid.uuid4().hex[:24]}",
            "object": "batch",
            "endpoint": body["endpoint"],
            "errors": None,
            "input_file_id": input_id,
            "completion_window": body.get("completion_window", "24h"),
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": int(time.time()),
            "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
            "metadata": body.get("metadata"),
        }
        with self._lock:
            self.batches[batch["id"]] = batch
        return 200, batch

    def retrieve_batch(self, batch_id: str) -> dict[str, Any] | None:
        """The batch, moved on by one status (a retrieve is how time passes for a batch here)."""
        with self._lock:
            batch = self.batches.get(batch_id)
            if batch is None:
                return None
            status = batch["status"]
            following = {"validating": "in_progress", "in_progress": "finalizing", "finalizing": self.batch_outcome}
            if status not in following:
                return dict(batch)
            batch["status"] = following[status]
        if batch["status"] in ("completed", "expired"):
            self._run_batch(batch)
        return dict(batch)

    def _run_batch(self, batch: dict[str, Any]) -> None:
        lines = [json.loads(line) for line in self.files[batch["input_file_id"]]["content"].decode().splitlines() if line.strip()]
        if batch["status"] == "expired":
            lines = lines[: len(lines) // 2]
        out, errors = [], []
        for k, line in enumerate(lines):
            body = line.get("body") or {}
            reply, record = self.chat_reply(body, json.dumps(body).encode(), "BATCH", str(line.get("url")), {})
            if reply.drop or reply.status != 200:
                error_body = reply.body if isinstance(reply.body, dict) else {"error": {"message": "scripted error", "code": reply.status}}
                status = 500 if reply.drop else reply.status
                errors.append({"id": f"batch_req_{k}", "custom_id": line.get("custom_id"),
                               "response": {"status_code": status, "request_id": f"req_{k}", "body": error_body}, "error": None})  # fmt: skip
            else:
                out.append({"id": f"batch_req_{k}", "custom_id": line.get("custom_id"),
                            "response": {"status_code": 200, "request_id": f"req_{k}", "body": _completion_body(body, reply, record.n)},
                            "error": None})  # fmt: skip

        def as_file(rows: list[dict[str, Any]], name: str) -> str | None:
            return str(self.add_file("".join(json.dumps(r) + "\n" for r in rows).encode(), name, "batch_output")["id"]) if rows else None

        output_id, error_id = as_file(out, "output.jsonl"), as_file(errors, "errors.jsonl")
        with self._lock:
            batch["output_file_id"], batch["error_file_id"] = output_id, error_id
            batch["request_counts"] = {**batch["request_counts"], "completed": len(out), "failed": len(errors)}

    def __enter__(self) -> OpenAIServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()  # wakes handlers sleeping in a scripted delay
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


class _HTTPServer(ThreadingHTTPServer):
    """The HTTP server, knowing the `OpenAIServer` whose requests it serves."""

    app: OpenAIServer


class _RequestHandler(BaseHTTPRequestHandler):
    """One HTTP connection: routes each request to the `OpenAIServer` behind ``self.server``."""

    # HTTP/1.1 keeps connections alive, as real servers do (and as the openai client expects).
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    @property
    def app(self) -> OpenAIServer:
        return self.server.app

    def log_message(self, format: str, *args: Any) -> None:  # silence per-request stderr logging
        pass

    # -- writing ------------------------------------------------------------------------------------------------
    def _send(
        self, status: int, body: bytes, headers: dict[str, str] | None = None, content_type: str = "application/json", trickle: float = 0.0
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if trickle <= 0:
            self.wfile.write(body)
            return
        for i in range(len(body)):
            self.wfile.write(body[i : i + 1])
            self.wfile.flush()
            if self.app._stopping.wait(trickle):
                self.close_connection = True
                return

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj).encode())

    def _not_found(self) -> None:
        self._send(404, b'{"error": {"message": "not found", "type": "invalid_request_error"}}')

    # -- GET: models, batches, files ------------------------------------------------------------------------------
    def do_GET(self) -> None:
        app = self.app
        path = self.path.split("?")[0].rstrip("/")
        parts = path.split("/")
        if path.endswith("/v1/models"):
            body = {"object": "list", "data": [{"id": "test-model", "object": "model", "created": 0, "owned_by": "test"}]}
            self._send(200, json.dumps(body).encode())
        elif path.endswith("/v1/batches"):
            with app._lock:
                data = list(app.batches.values())
            self._json(200, {"object": "list", "data": data[::-1], "first_id": None, "last_id": None, "has_more": False})
        elif len(parts) >= 2 and parts[-2] == "batches":
            batch = app.retrieve_batch(parts[-1])
            self._json(200, batch) if batch is not None else self._not_found()
        elif len(parts) >= 3 and parts[-3] == "files" and parts[-1] == "content" and parts[-2] in app.files:
            self._send(200, app.files[parts[-2]]["content"], content_type="application/octet-stream")
        elif len(parts) >= 2 and parts[-2] == "files" and parts[-1] in app.files:
            self._json(200, {k: v for k, v in app.files[parts[-1]].items() if k != "content"})
        else:
            self._not_found()

    # -- POST: files, batches, chat completions -------------------------------------------------------------------
    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        path = self.path.split("?")[0].rstrip("/")
        if path.endswith("/v1/files"):
            self._upload(raw)
            return
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        if path.endswith("/v1/batches"):
            self._json(*self.app.create_batch(parsed if isinstance(parsed, dict) else {}))
        elif path.endswith("/chat/completions"):
            self._chat(parsed, raw)
        else:
            self._not_found()

    def _upload(self, raw: bytes) -> None:
        # multipart/form-data, parsed with the stdlib's email parser (the cgi module is gone in 3.13).
        head = f"Content-Type: {self.headers.get('Content-Type', '')}\r\n\r\n".encode()
        message = email.parser.BytesParser().parsebytes(head + raw)
        fields: dict[str, tuple[bytes, str | None]] = {}
        for part in message.get_payload() if message.is_multipart() else []:
            name = part.get_param("name", header="content-disposition")
            fields[str(name)] = (part.get_payload(decode=True) or b"", part.get_filename())
        if "file" not in fields:
            self._json(400, {"error": {"message": "no file in the upload", "type": "invalid_request_error", "param": "file"}})
            return
        content, filename = fields["file"]
        purpose = fields.get("purpose", (b"batch", None))[0].decode()
        self._json(200, self.app.add_file(content, filename or "upload.jsonl", purpose))

    def _chat(self, parsed: Any, raw: bytes) -> None:
        """Answer one chat request as the server's handler scripts it (delay, drop, body, trickle)."""
        headers = {k.lower(): v for k, v in self.headers.items()}
        reply, record = self.app.chat_reply(parsed, raw, "POST", self.path, headers)
        if reply.delay > 0 and self.app._stopping.wait(reply.delay):
            self.close_connection = True
            return
        if reply.drop:
            # Close without a status line: the client sees a dropped connection.
            self.close_connection = True
            return
        try:
            self._send(reply.status, _reply_body(reply, record), reply.headers, reply.content_type, reply.trickle)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (timeout) before the slow reply was ready.
            self.close_connection = True


def _reply_body(reply: Reply, record: Recorded) -> bytes:
    """The HTTP body of a scripted reply: its raw `body`, a generated chat completion, or an error object."""
    if isinstance(reply.body, bytes):
        return reply.body
    if reply.body is not None:
        return (reply.body if isinstance(reply.body, str) else json.dumps(reply.body)).encode()
    if reply.status == 200:
        return json.dumps(_completion_body(record.json or {}, reply, record.n)).encode()
    return json.dumps({"error": {"message": "scripted error", "code": reply.status}}).encode()
