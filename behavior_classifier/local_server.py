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

Endpoints: ``POST /v1/chat/completions`` (non-streaming) and ``GET /v1/models``. Anything else is a 404.

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

import json
import threading
import time
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

    def __init__(self, handler: Handler | None = None, *, host: str = "127.0.0.1") -> None:
        self.handler: Handler = handler or _default_handler
        self._requests: list[Recorded] = []
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._count = 0
        self._stopping = threading.Event()
        self._httpd = ThreadingHTTPServer((host, 0), self._make_request_handler())
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

    def _make_request_handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class RequestHandler(BaseHTTPRequestHandler):
            # HTTP/1.1 keeps connections alive, as real servers do (and as the openai client expects).
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # silence per-request stderr logging
                pass

            def _send(
                self,
                status: int,
                body: bytes,
                headers: dict[str, str] | None = None,
                content_type: str = "application/json",
                trickle: float = 0.0,
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
                    if server._stopping.wait(trickle):
                        self.close_connection = True
                        return

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/v1/models"):
                    body = {"object": "list", "data": [{"id": "test-model", "object": "model", "created": 0, "owned_by": "test"}]}
                    self._send(200, json.dumps(body).encode())
                else:
                    self._send(404, b'{"error": {"message": "not found"}}')

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    parsed = json.loads(raw)
                except ValueError:
                    parsed = None
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, b'{"error": {"message": "not found"}}')
                    return
                n = server._next()
                try:
                    reply = server.handler(parsed if isinstance(parsed, dict) else {}, n)
                except BaseException as err:  # a broken test handler must show up, not hang the client
                    server.errors.append(err)
                    reply = Reply.error(500, message=f"handler raised {type(err).__name__}")
                record = Recorded(
                    n=n,
                    method="POST",
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    raw_body=raw,
                    json=parsed if isinstance(parsed, dict) else None,
                    reply=reply,
                    received_at=time.monotonic(),
                )
                with server._lock:
                    server._requests.append(record)
                if reply.delay > 0 and server._stopping.wait(reply.delay):
                    self.close_connection = True
                    return
                if reply.drop:
                    # Close without a status line: the client sees a dropped connection.
                    self.close_connection = True
                    return
                if reply.body is not None:
                    body = (
                        reply.body
                        if isinstance(reply.body, bytes)
                        else (reply.body if isinstance(reply.body, str) else json.dumps(reply.body)).encode()
                    )
                elif reply.status == 200:
                    body = json.dumps(_completion_body(record.json or {}, reply, n)).encode()
                else:
                    body = json.dumps({"error": {"message": "scripted error", "code": reply.status}}).encode()
                try:
                    self._send(reply.status, body, reply.headers, reply.content_type, reply.trickle)
                except (BrokenPipeError, ConnectionResetError):
                    # The client gave up (timeout) before the slow reply was ready.
                    self.close_connection = True

        return RequestHandler
