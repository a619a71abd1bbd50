"""Scripted model servers for tests: real HTTP, so the real openai/anthropic clients and pydantic-ai run.

``FakeOpenAIServer`` speaks the OpenAI Chat Completions API (``POST /v1/chat/completions``,
``GET /v1/models``), as vLLM and llama.cpp's server do; ``.url`` ends in ``/v1`` (give it as
STAKEFLOW_OPEN_BASE_URL). ``FakeAnthropicServer`` speaks the Anthropic Messages API (``POST /v1/messages``);
``.url`` is the root (give it as ANTHROPIC_BASE_URL). Both run on 127.0.0.1 in a thread:

    with FakeOpenAIServer() as server:             # or server.start() ... server.stop()
        server.script(lambda body: {"steps": [{"title": "t", "tool": None, "stakes": "low"}]})
        server.fail_next(429, headers={"retry-after": "7"})   # queued replies go first
        ...
        server.calls[0].body["response_format"]   # every request is recorded (parsed JSON, raw, headers)

A responder (called with the parsed request body) or a queued item (``enqueue``) gives what the model
should "say":

- a ``dict`` or pydantic model: the structured output. The fake wraps it in the wire format the request
  asked for: a call of the request's output tool (pydantic-ai's ``final_result``) when the request offers
  tools, else JSON text content (``response_format`` json_schema / json_object, or prompted output).
- a ``str``: plain text content (an answer).
- a ``Reply``: full control: ``Reply.raw(text)`` (content sent verbatim, e.g. invalid JSON),
  ``Reply(tool_call=(name, args))``, ``Reply.error(status, message, headers=...)``,
  ``Reply.delayed(seconds, then)``, and per-reply ``usage``, ``model``, ``finish_reason``.

``purpose_of(body)`` ("plan" / "step" / "answer"), ``output_schema(body)`` and ``prompt_text(body)`` help a
responder decide what to answer. Usage is ``server.usage`` (provider keys; fixed defaults), reported model
is the requested one unless ``server.reported_model`` is set, and ``models=[...]`` makes any other model
name a 404 in the provider's own words.

A request with ``"stream": true`` is answered as Server-Sent Events in the provider's streaming format (the same
reply, its text in word-sized chunks ``chunk_delay_s`` apart), unless ``server.streams`` says otherwise:
``False`` refuses it (400, as a server that cannot stream), ``"ignore"`` answers with one JSON body.
"""

from __future__ import annotations

import hashlib
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

Responder = Callable[[dict[str, Any]], Any]


@dataclass
class Reply:
    """One scripted answer. Set ``status`` >= 400 for an error; otherwise the first of
    ``content`` (raw assistant text, sent verbatim), ``tool_call`` ((name, input) sent as a tool call)
    or ``output`` (wrapped as the module docstring says) that is set is sent."""

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


@dataclass
class RecordedRequest:
    """What reached the fake: method, path, headers (lower-cased keys), parsed JSON body, raw text."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    raw: str

    @property
    def api_key(self) -> str | None:
        """The API key the client sent: ``x-api-key``, or a bearer ``authorization`` (anthropic>=2 sends that)."""
        if "x-api-key" in self.headers:
            return self.headers["x-api-key"]
        scheme, _, token = self.headers.get("authorization", "").partition(" ")
        return token if scheme.lower() == "bearer" and token else None


# --- helpers for responders: what is the request asking for? ---------------------------------


def output_tool_name(tool_names: list[str]) -> str | None:
    """The output tool among ``tool_names``: pydantic-ai's ``final_result...``, or the only tool."""
    for name in tool_names:
        if name.startswith("final_result"):
            return name
    return tool_names[0] if len(tool_names) == 1 else None


def _tool_schemas(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    schemas: dict[str, dict[str, Any]] = {}
    for tool in body.get("tools") or []:
        if "function" in tool:  # OpenAI
            schemas[tool["function"]["name"]] = tool["function"].get("parameters") or {}
        elif "name" in tool:  # Anthropic
            schemas[tool["name"]] = tool.get("input_schema") or {}
    return schemas


def output_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema the request wants its output to match, or None for a plain-text answer."""
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return fmt["json_schema"].get("schema")
    if fmt.get("type") == "json_object" and "schema" in fmt:
        return fmt["schema"]
    anthropic_fmt = (body.get("output_config") or {}).get("format") or {}
    if anthropic_fmt.get("type") == "json_schema":
        return anthropic_fmt.get("schema")
    schemas = _tool_schemas(body)
    name = output_tool_name(list(schemas))
    return schemas[name] if name else None


def purpose_of(body: dict[str, Any]) -> str:
    """stakeflow's call purpose: "plan", "step" or "answer", read from the output schema."""
    schema = output_schema(body)
    if schema is None:
        return "answer"
    properties = schema.get("properties") or {}
    # A plan is {"steps": [...]}, or {"first": ..., "then": [...]} when the goal names a workspace file.
    return "plan" if "steps" in properties or "first" in properties else "step"


def prompt_text(body: dict[str, Any]) -> str:
    """All message text of a request (system and user), joined by newlines."""
    parts: list[str] = []
    system = body.get("system")
    for block in [system] if isinstance(system, str) else (system or []):
        parts.append(block if isinstance(block, str) else block.get("text", ""))
    for message in body.get("messages") or []:
        content = message.get("content")
        for block in [content] if isinstance(content, str) else (content or []):
            if isinstance(block, str):
                parts.append(block)
            elif block.get("type") == "text":
                parts.append(block.get("text", ""))
    return "\n".join(parts)


# --- the servers -------------------------------------------------------------------------------


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
        self.streams: bool | str = True  # see the module docstring
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


class FakeOpenAIServer(_FakeServer):
    """An OpenAI-compatible server (vLLM / llama.cpp shape). ``.url`` ends in ``/v1``.

    Usage keys: ``prompt_tokens`` (includes cached), ``completion_tokens``, ``cached_tokens``
    (sent as ``prompt_tokens_details.cached_tokens`` when set).
    """

    name = "fake-openai"
    generate_path = "/v1/chat/completions"

    def __init__(self, *, model: str = "fake-open-model", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model = model  # what GET /v1/models lists
        self.fail_models_with: int | None = None  # an HTTP status GET /v1/models answers instead

    @property
    def url(self) -> str:
        return f"{self.root_url}/v1"

    def default_usage(self) -> dict[str, int]:
        return {"prompt_tokens": 100, "completion_tokens": 20, "cached_tokens": 0}

    def handle_get(self, path: str) -> tuple[int, dict[str, str], Any]:
        if path.rstrip("/") == "/v1/models":
            if self.fail_models_with is not None:
                return self.fail_models_with, {}, self.error_body(self.fail_models_with, "scripted /models failure")
            models = self.models if self.models is not None else [self.model]
            return (
                200,
                {},
                {
                    "object": "list",
                    "data": [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in models],
                },
            )
        return super().handle_get(path)

    def error_body(self, status: int, message: str) -> Any:
        kind = {
            400: "invalid_request_error",
            401: "authentication_error",
            403: "permission_error",
            404: "not_found_error",
            429: "rate_limit_error",
        }.get(status, "server_error")
        return {"error": {"message": message, "type": kind, "param": None, "code": None}}

    def unknown_model_body(self, model: str) -> Any:
        # vLLM's wording and shape.
        return {
            "error": {
                "message": f"The model `{model}` does not exist.",
                "type": "NotFoundError",
                "param": None,
                "code": 404,
            }
        }

    def success_body(self, request: dict[str, Any], reply: Reply) -> Any:
        n = self.next_id()
        message: dict[str, Any] = {"role": "assistant", "content": None}
        finish = "stop"
        tool_call = reply.tool_call
        if reply.content is not None:
            message["content"] = reply.content
        elif tool_call is None and isinstance(reply.output, str):
            message["content"] = reply.output
        elif tool_call is None and self._wants_tool_call(request):
            name = output_tool_name(list(_tool_schemas(request)))
            if name is None:
                raise LookupError("fake-openai: request offers tools but none looks like the output tool")
            tool_call = (name, _as_data(reply.output))
        elif tool_call is None:
            message["content"] = json.dumps(_as_data(reply.output))
        if tool_call is not None:
            message["tool_calls"] = [
                {
                    "id": f"call_fake_{n}",
                    "type": "function",
                    "function": {"name": tool_call[0], "arguments": json.dumps(tool_call[1])},
                }
            ]
            finish = "tool_calls"
        usage = {**self.usage, **(reply.usage or {})}
        wire_usage: dict[str, Any] = {
            "prompt_tokens": usage["prompt_tokens"],
            "completion_tokens": usage["completion_tokens"],
            "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"],
        }
        if usage.get("cached_tokens"):
            wire_usage["prompt_tokens_details"] = {"cached_tokens": usage["cached_tokens"]}
        return {
            "id": f"chatcmpl-fake-{n}",
            "object": "chat.completion",
            "created": 1_700_000_000 + n,
            "model": reply.model or self.reported_model or request.get("model"),
            "choices": [
                {"index": 0, "message": message, "finish_reason": reply.finish_reason or finish, "logprobs": None}
            ],
            "usage": wire_usage,
        }

    def stream_events(self, request: dict[str, Any], whole: Any) -> list[str]:
        base = {k: whole[k] for k in ("id", "created", "model")} | {"object": "chat.completion.chunk"}
        choice = whole["choices"][0]
        message = choice["message"]

        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            return _sse({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

        events = [chunk({"role": "assistant", "content": ""})]
        events += [chunk({"content": piece}) for piece in chunks(message["content"] or "") if message["content"]]
        for i, call in enumerate(message.get("tool_calls") or []):
            events.append(chunk({"tool_calls": [{"index": i, **call}]}))
        events.append(chunk({}, choice["finish_reason"]))
        if (request.get("stream_options") or {}).get("include_usage"):
            events.append(_sse({**base, "choices": [], "usage": whole["usage"]}))
        return [*events, _sse("[DONE]")]

    @staticmethod
    def _wants_tool_call(request: dict[str, Any]) -> bool:
        return bool(request.get("tools")) and not request.get("response_format")


class FakeAnthropicServer(_FakeServer):
    """An Anthropic Messages API server. Pass ``.url`` as the client's ``base_url`` (no ``/v1``).

    Usage keys are the API's: ``input_tokens`` (uncached only), ``output_tokens``,
    ``cache_creation_input_tokens``, ``cache_read_input_tokens``. With ``cache=PromptCache()`` the input figures
    follow Anthropic's prompt caching instead of ``usage`` (see PromptCache); a reply's own ``usage`` still wins.
    """

    name = "fake-anthropic"
    generate_path = "/v1/messages"

    def __init__(self, *, cache: PromptCache | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cache = cache

    @property
    def url(self) -> str:
        return self.root_url

    def default_usage(self) -> dict[str, int]:
        return {
            "input_tokens": 100,
            "output_tokens": 20,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }

    def handle_get(self, path: str) -> tuple[int, dict[str, str], Any]:
        if path.rstrip("/") == "/v1/models":  # what `stakeflow models` / `doctor` ask
            ids = self.models if self.models is not None else ["claude-sonnet-4-6"]
            return (
                200,
                {},
                {
                    "data": [{"type": "model", "id": m, "display_name": m} for m in ids],
                    "has_more": False,
                    "first_id": ids[0],
                    "last_id": ids[-1],
                },
            )
        return super().handle_get(path)

    def error_body(self, status: int, message: str) -> Any:
        kind = {
            400: "invalid_request_error",
            401: "authentication_error",
            402: "billing_error",
            403: "permission_error",
            404: "not_found_error",
            413: "request_too_large",
            429: "rate_limit_error",
            504: "timeout_error",
            529: "overloaded_error",
        }.get(status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": message}}

    def unknown_model_body(self, model: str) -> Any:
        return {"type": "error", "error": {"type": "not_found_error", "message": f"model: {model}"}}

    def success_body(self, request: dict[str, Any], reply: Reply) -> Any:
        n = self.next_id()
        tool_call = reply.tool_call
        content: list[dict[str, Any]]
        if reply.content is not None:
            content = [{"type": "text", "text": reply.content}]
        elif tool_call is None and isinstance(reply.output, str):
            content = [{"type": "text", "text": reply.output}]
        elif tool_call is None and request.get("tools"):
            name = output_tool_name(list(_tool_schemas(request)))
            if name is None:
                raise LookupError("fake-anthropic: request offers tools but none looks like the output tool")
            tool_call = (name, _as_data(reply.output))
            content = []
        elif tool_call is None:
            content = [{"type": "text", "text": json.dumps(_as_data(reply.output))}]
        else:
            content = []
        if tool_call is not None:
            content.append({"type": "tool_use", "id": f"toolu_fake_{n}", "name": tool_call[0], "input": tool_call[1]})
        cached = self.cache.usage(request) if self.cache is not None and not reply.usage else {}
        usage = {**self.usage, **cached, **(reply.usage or {})}
        return {
            "id": f"msg_fake_{n}",
            "type": "message",
            "role": "assistant",
            "model": reply.model or self.reported_model or request.get("model"),
            "content": content,
            "stop_reason": reply.finish_reason or ("tool_use" if tool_call is not None else "end_turn"),
            "stop_sequence": None,
            "usage": {
                "input_tokens": usage["input_tokens"],
                "output_tokens": usage["output_tokens"],
                "cache_creation_input_tokens": usage.get("cache_creation_input_tokens", 0),
                "cache_read_input_tokens": usage.get("cache_read_input_tokens", 0),
            },
        }

    def stream_events(self, request: dict[str, Any], whole: Any) -> list[str]:
        usage = whole["usage"]
        start = {**whole, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
        events = [_sse({"type": "message_start", "message": start}, "message_start")]
        for i, block in enumerate(whole["content"]):
            if block["type"] == "text":
                events.append(
                    _sse(
                        {"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}},
                        "content_block_start",
                    )
                )
                for piece in chunks(block["text"]):
                    delta = {"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": piece}}
                    events.append(_sse(delta, "content_block_delta"))
            else:
                events.append(
                    _sse(
                        {"type": "content_block_start", "index": i, "content_block": {**block, "input": {}}},
                        "content_block_start",
                    )
                )
                partial = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
                events.append(
                    _sse({"type": "content_block_delta", "index": i, "delta": partial}, "content_block_delta")
                )
            events.append(_sse({"type": "content_block_stop", "index": i}, "content_block_stop"))
        end = {"stop_reason": whole["stop_reason"], "stop_sequence": None}
        events.append(
            _sse(
                {"type": "message_delta", "delta": end, "usage": {"output_tokens": usage["output_tokens"]}},
                "message_delta",
            )
        )
        return [*events, _sse({"type": "message_stop"}, "message_stop")]


class PromptCache:
    """Anthropic's prompt caching, for FakeAnthropicServer: what each request's input is billed as.

    The prompt is read as Anthropic caches it: tools, then the system blocks, then each message's content blocks,
    in order, each ``chars_per_token`` characters of its JSON a token. A block carrying ``cache_control`` is a
    breakpoint (and the last block, with a top-level ``cache_control``). A request reads from the cache the longest
    prefix that an earlier request wrote, found at a breakpoint or at a block boundary up to ``lookback`` blocks
    before one; it writes the prefix at each later breakpoint that is at least ``min_tokens`` long (shorter ones are
    not cached at all, as on the API). Billed: ``cache_read_input_tokens`` = the prefix read,
    ``cache_creation_input_tokens`` = from there to the last prefix written, ``input_tokens`` = the rest. A prefix
    is the model's and every block's exact content (cache_control aside): one changed character misses. Entries
    do not expire (a test or benchmark is shorter than the API's 5 minutes). ``log`` has every request's figures.
    ``enabled=False`` counts the same tokens and caches nothing: what the same requests cost without a cache.
    """

    def __init__(
        self, *, min_tokens: int = 1024, chars_per_token: int = 4, lookback: int = 20, enabled: bool = True
    ) -> None:
        self.min_tokens, self.chars_per_token, self.lookback = min_tokens, chars_per_token, lookback
        self.enabled = enabled
        self.written: set[str] = set()
        self.log: list[dict[str, int]] = []
        self._lock = threading.Lock()

    def usage(self, request: dict[str, Any]) -> dict[str, int]:
        blocks = _prompt_blocks(request)
        if blocks and request.get("cache_control"):
            blocks[-1] = (blocks[-1][0], True)
        digests, totals = [], []
        running, total = hashlib.sha256(str(request.get("model")).encode()), 0
        for text, _ in blocks:
            running.update(text.encode())
            digests.append(running.hexdigest())
            total += -(-len(text) // self.chars_per_token)
            totals.append(total)
        marks = [i for i, (_, mark) in enumerate(blocks) if mark and self.enabled]
        with self._lock:
            hit = max(
                (j for m in marks for j in range(m, max(-1, m - self.lookback), -1) if digests[j] in self.written),
                default=-1,
            )
            read = totals[hit] if hit >= 0 else 0
            last = hit
            for m in marks:
                if m > hit and totals[m] >= self.min_tokens:
                    self.written.add(digests[m])
                    last = m
            figures = {
                "input_tokens": total - (totals[last] if last >= 0 else 0),
                "cache_creation_input_tokens": (totals[last] if last >= 0 else 0) - read,
                "cache_read_input_tokens": read,
            }
            self.log.append(figures)
        return figures


def _prompt_blocks(request: dict[str, Any]) -> list[tuple[str, bool]]:
    """(the block's content as JSON without its cache_control, whether it is a breakpoint), in cache order."""

    def block(item: Any, where: str) -> tuple[str, bool]:
        item = {"type": "text", "text": item} if isinstance(item, str) else item
        plain = {k: v for k, v in item.items() if k != "cache_control"}
        return json.dumps([where, plain], sort_keys=True), "cache_control" in item

    blocks = [block(tool, "tool") for tool in request.get("tools") or []]
    system = request.get("system")
    blocks += [block(b, "system") for b in ([system] if isinstance(system, str) else system or [])]
    for message in request.get("messages") or []:
        content = message.get("content")
        blocks += [
            block(b, message.get("role", "")) for b in ([content] if isinstance(content, str) else content or [])
        ]
    return blocks
