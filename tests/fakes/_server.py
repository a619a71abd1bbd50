"""The fake servers' shared machinery: replies, the threaded HTTP server, streaming."""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pydantic import BaseModel

from tests.fakes._requests import RecordedRequest

Responder = Callable[[dict[str, Any]], Any]


@dataclass
class Reply:
    """One scripted answer. Set ``status`` >= 400 for an error; otherwise the first of
    ``content`` (raw assistant text, sent verbatim), ``tool_call`` ((name, input) sent as a tool call)
    or ``output`` (wrapped as tests/fakes/__init__.py says) that is set is sent."""

    output: Any = None
    content: str | None = None
    tool_call: tuple[str, dict[str, Any]] | None = None
    status: int = 200
    body: Any = None  # error body; default: the provider's error shape with ``message``
    message: str = "scripted error"
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    usage: dict[str, int] | None = None  # this reply's usage, in the provider's own keys
    model: str | None = None  # the model name to report; default: the one requested
    finish_reason: str | None = None  # OpenAI "length" / Anthropic "max_tokens" for a truncated answer
    # streamed: the pause before each chunk, or before each in turn (a list; none after its end). Default: the server's.
    chunk_delay_s: float | list[float] | None = None

    @classmethod
    def error(
        cls, status: int, message: str = "scripted error", *, body: Any = None, headers: dict[str, str] | None = None
    ) -> Reply:
        return cls(status=status, message=message, body=body, headers=dict(headers or {}))

    @classmethod
    def raw(cls, content: str, **kwargs: Any) -> Reply:
        return cls(content=content, **kwargs)

    @classmethod
    def delayed(cls, seconds: float, then: Any = None) -> Reply:
        reply = then if isinstance(then, Reply) else Reply(output=then)
        reply.delay_s = seconds
        return reply


# --- the server -------------------------------------------------------------------------------


class _FakeServer:
    """Shared machinery: a threaded HTTP server, a reply queue, a responder, a request log."""

    name = "fake"

    def __init__(
        self,
        *,
        responder: Responder | None = None,
        usage: dict[str, int] | None = None,
        models: list[str] | None = None,
        reported_model: str | None = None,
    ) -> None:
        self.requests: list[RecordedRequest] = []
        self.streams: bool | str = True  # see tests/fakes/__init__.py
        self.chunk_delay_s: float | list[float] = 0.0
        self.usage: dict[str, int] = dict(usage or self.default_usage())
        # When set, a request naming another model gets the provider's "unknown model" 404.
        self.models = models
        self.reported_model = reported_model
        self._responder = responder
        self._queue: deque[Any] = deque()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # scripting

    def script(self, responder: Responder) -> None:
        """Answer every request not covered by the queue with ``responder(request_json)``."""
        self._responder = responder

    def enqueue(self, *items: Any) -> None:
        """Answer the next requests, in order, with these items (outputs, strings or Replies)."""
        with self._lock:
            self._queue.extend(items)

    def fail_next(
        self, status: int, body: Any = None, headers: dict[str, str] | None = None, message: str = "scripted error"
    ) -> None:
        """Answer the next request with an error status."""
        self.enqueue(Reply.error(status, message, body=body, headers=headers))

    # inspection

    @property
    def calls(self) -> list[RecordedRequest]:
        """The model calls received (requests to the generation endpoint only)."""
        return [r for r in self.requests if r.method == "POST"]

    def sent_text(self) -> str:
        """Every request body that reached the server, as raw text (to search for data that must not leak)."""
        return "\n".join(r.raw for r in self.requests)

    # lifecycle

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> _FakeServer:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name=f"{self.name}-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> _FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # request handling

    def _next_item(self, body: dict[str, Any]) -> Any:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
        if self._responder is None:
            raise LookupError(f"{self.name}: no scripted reply left and no responder set")
        return self._responder(body)

    def handle(self, method: str, path: str, headers: dict[str, str], raw: str) -> tuple[int, dict[str, str], Any]:
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        with self._lock:
            self.requests.append(RecordedRequest(method, path, headers, body, raw))
        if method == "GET":
            return self.handle_get(path)
        other = self.handle_post(path, body)
        if other is not None:
            return other
        if path != self.generate_path:
            return 404, {}, self.error_body(404, f"{self.name} has no route {method} {path}")
        if not isinstance(body, dict):
            return 400, {}, self.error_body(400, "request body is not a JSON object")
        if body.get("stream") and self.streams is False:
            return 400, {}, self.error_body(400, f"{self.name} does not stream")
        if self.models is not None and body.get("model") not in self.models:
            return 404, {}, self.unknown_model_body(str(body.get("model")))
        try:
            item = self._next_item(body)
        except Exception as e:  # a broken responder must show up in the test, not hang it
            return 500, {}, self.error_body(500, f"fake responder failed: {type(e).__name__}: {e}")
        reply = item if isinstance(item, Reply) else Reply(output=item)
        if reply.delay_s:
            time.sleep(reply.delay_s)
        if reply.status >= 400:
            return (
                reply.status,
                reply.headers,
                reply.body if reply.body is not None else self.error_body(reply.status, reply.message),
            )
        try:
            whole = self.success_body(body, reply)
        except LookupError as e:
            return 500, {}, self.error_body(500, str(e))
        if body.get("stream") and self.streams is True:
            delay = self.chunk_delay_s if reply.chunk_delay_s is None else reply.chunk_delay_s
            return reply.status, reply.headers, Streamed(self.stream_events(body, whole), delay)
        return reply.status, reply.headers, whole

    def next_id(self) -> int:
        return next(self._ids)

    # provider specifics

    generate_path = ""

    def default_usage(self) -> dict[str, int]:
        raise NotImplementedError

    def handle_get(self, path: str) -> tuple[int, dict[str, str], Any]:
        return 404, {}, self.error_body(404, f"no route GET {path}")

    def handle_post(self, path: str, body: Any) -> tuple[int, dict[str, str], Any] | None:
        """Another POST route than the generate path (a subclass's); None: not one."""
        return None

    def error_body(self, status: int, message: str) -> Any:
        raise NotImplementedError

    def unknown_model_body(self, model: str) -> Any:
        raise NotImplementedError

    def success_body(self, request: dict[str, Any], reply: Reply) -> Any:
        raise NotImplementedError

    def stream_events(self, request: dict[str, Any], whole: Any) -> list[str]:
        """``whole`` (the success body) as the provider streams it: the SSE events, each ending in a blank line."""
        raise NotImplementedError


@dataclass
class Streamed:
    """A streamed answer: its SSE events, sent ``delay_s`` apart, or after the pauses it lists in turn (chunked
    transfer encoding)."""

    events: list[str]
    delay_s: float | list[float] = 0.0

    def pause(self, n: int) -> float:
        """The pause before event ``n``."""
        if isinstance(self.delay_s, list):
            return self.delay_s[n] if n < len(self.delay_s) else 0.0
        return self.delay_s


def chunks(text: str) -> list[str]:
    """``text`` in word-sized pieces (each word with the space after it), as a model streams tokens."""
    return re.findall(r"\s*\S+\s*|\s+", text) or [text]


def _sse(data: Any, event: str | None = None) -> str:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out as two writes; with Nagle on, the client's delayed ACK stalls
    # every response by ~40 ms.
    disable_nagle_algorithm = True
    fake: _FakeServer

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length).decode("utf-8") if length else ""
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, extra_headers, payload = self.fake.handle(method, self.path, headers, raw)
        if isinstance(payload, Streamed):
            self._stream(status, extra_headers, payload)
            return
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for key, value in extra_headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, status: int, extra_headers: dict[str, str], streamed: Streamed) -> None:
        self.send_response(status)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        for key, value in extra_headers.items():
            self.send_header(key, value)
        self.end_headers()
        try:
            for n, event in enumerate(streamed.events):
                if pause := streamed.pause(n):
                    time.sleep(pause)
                data = event.encode("utf-8")
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):  # the client went away mid-answer (a killed worker)
            self.close_connection = True

    def do_POST(self) -> None:
        self._serve("POST")

    def do_GET(self) -> None:
        self._serve("GET")

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass


def _as_data(output: Any) -> Any:
    return output.model_dump(mode="json") if isinstance(output, BaseModel) else output
