"""The open route's plain chat completions over aiohttp (activities/open_transport.py): after the SDK has shown two
requests of a kind, the rest go out byte for byte as the SDK would send them, and every answer that is not a plain
completion (errors, odd bodies, redirects, timeouts, refused connections) ends as it does through the SDK."""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

import pytest
from openai import APIConnectionError, APITimeoutError, AsyncOpenAI
from pydantic_ai.direct import model_request, model_request_stream
from pydantic_ai.messages import ModelRequest, ModelResponse, UserPromptPart
from pydantic_ai.providers.openai import OpenAIProvider

from stakeflow.activities.open_chat import OpenChatModel, OpenRouteClient
from tests.fakes import FakeOpenAIServer, Reply

KEY = "open-endpoint-key"
MESSAGES = [ModelRequest(parts=[UserPromptPart("What is 6*7? “naïve” – 1e3")])]


def _completion(content: Any = "It is 42.", **fields: Any) -> dict[str, Any]:
    body = {
        "id": "c1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "served-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13},
    }
    body.update(fields)
    return body


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": "application/json"})
    # A streamed answer instead: these pieces in chunked encoding, ``pause_s`` apart; ``cut``: the connection closes
    # after them without the last chunk.
    pieces: list[bytes] | None = None
    pause_s: float = 0.0
    cut: bool = False


def _sse(*chunks: dict[str, Any], done: bool = True) -> list[bytes]:
    return [f"data: {json.dumps(c)}\n\n".encode() for c in chunks] + ([b"data: [DONE]\n\n"] if done else [])


def _chunk(text: str | None = None, finish: str | None = None, **fields: Any) -> dict[str, Any]:
    delta = {"role": "assistant", "content": text} if text is not None else {}
    body = {
        "id": "s1",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "served-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    body.update(fields)
    return body


STREAM = _sse(_chunk("It is "), _chunk("42."), _chunk(finish="stop"))


def _streamed(pieces: list[bytes], **kwargs: Any) -> Answer:
    return Answer(200, b"", {"content-type": "text/event-stream"}, pieces=pieces, **kwargs)


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    raw: bytes


class RawServer:
    """An HTTP server answering each POST with the next queued ``Answer`` as given (any status, headers, bytes),
    then with a plain completion; it records what reached it."""

    def __init__(self) -> None:
        self.answers: deque[Answer] = deque()
        self.seen: list[Seen] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                outer.seen.append(Seen(self.path, {k.lower(): v for k, v in self.headers.items()}, raw))
                answer = outer.answers.popleft() if outer.answers else outer.default(json.loads(raw))
                self.send_response(answer.status)
                for k, v in answer.headers.items():
                    self.send_header(k, v)
                if answer.pieces is None:
                    self.send_header("content-length", str(len(answer.body)))
                    self.end_headers()
                    self.wfile.write(answer.body)
                    return
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                for piece in answer.pieces:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    self.wfile.flush()
                    time.sleep(answer.pause_s)
                if answer.cut:
                    self.close_connection = True
                    return
                self.wfile.write(b"0\r\n\r\n")

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @staticmethod
    def default(body: dict[str, Any]) -> Answer:
        """A plain completion, streamed if the request asks for a stream."""
        return _streamed(STREAM) if body.get("stream") else Answer(body=json.dumps(_completion()).encode())

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(autouse=True)
def no_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sender is off with a proxy in the environment (tested below): none from the machine running the tests."""
    for name in [k for k in os.environ if k.lower().endswith("_proxy")]:
        monkeypatch.delenv(name)


@pytest.fixture
def raw_server() -> Iterator[RawServer]:
    server = RawServer()
    yield server
    server.close()


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every request the SDK builds for an OpenRouteClient (the ones the sender sends itself are not)."""
    requests: list[object] = []
    real_build = OpenRouteClient._build_request

    def counted(self: OpenRouteClient, *args: Any, **kwargs: Any) -> Any:
        requests.append(args)
        return real_build(self, *args, **kwargs)

    monkeypatch.setattr(OpenRouteClient, "_build_request", counted)
    return requests


def _model(client: AsyncOpenAI) -> OpenChatModel:
    return OpenChatModel("served-model", provider=OpenAIProvider(openai_client=client))


async def _ask(model: OpenChatModel, **settings: Any) -> ModelResponse:
    return await model_request(model, MESSAGES, model_settings=cast(Any, {"temperature": 0.0, **settings}))


async def _warm(client: OpenRouteClient, model: OpenChatModel) -> None:
    """The two requests the SDK sends and shows the sender; after them, requests of this kind are the sender's."""
    for _ in range(2):
        await _ask(model)
    assert client.sender is not None and client.sender._ready, "the kind was not learnt"


def _outcome(response: ModelResponse | None, error: BaseException | None) -> Any:
    """What a caller can see of a request's end: the response without its clock times, or the error as raised."""
    if error is not None:
        return (type(error).__name__, str(error), getattr(error, "status_code", None), getattr(error, "body", None))
    assert response is not None
    seen = {k: v for k, v in vars(response).items() if k not in ("timestamp", "request_timestamp", "duration")}
    return repr(seen)


async def _end(model: OpenChatModel) -> Any:
    """How a request ends, with the answer's every field pydantic-ai can report (its unmapped data included)."""
    try:
        return _outcome(await _ask(model, openai_include_unmapped_response_data=True), None)
    except Exception as e:
        return _outcome(None, e)


async def test_after_two_requests_through_the_sdk_the_rest_go_out_byte_for_byte_through_the_sender(
    raw_server: RawServer, built: list[object]
):
    client = OpenRouteClient(base_url=raw_server.url, api_key=KEY, max_retries=0, timeout=30.0)
    model = _model(client)
    responses = [await _ask(model) for _ in range(5)]
    await client.close()
    assert len(built) == 2  # the SDK built two requests; the sender sent three
    first = raw_server.seen[0]
    for seen in raw_server.seen:
        assert (seen.path, seen.headers, seen.raw) == (first.path, first.headers, first.raw)
    assert first.headers["authorization"] == f"Bearer {KEY}"
    assert {_outcome(r, None) for r in responses} == {_outcome(responses[0], None)}
    assert responses[-1].text == "It is 42." and responses[-1].usage.input_tokens == 9


ODD_ANSWERS = {
    "rate limited, with retry-after": Answer(
        429,
        json.dumps({"error": {"message": "slow down", "type": "rate_limit_error"}}).encode(),
        {"content-type": "application/json", "retry-after": "7"},
    ),
    "server error as text": Answer(500, b"upstream died", {"content-type": "text/plain"}),
    "key refused": Answer(401, json.dumps({"error": {"message": "bad key"}}).encode()),
    "unknown model": Answer(404, json.dumps({"detail": "Not Found"}).encode()),
    "not JSON": Answer(200, b"hello", {"content-type": "text/plain"}),
    "JSON but not a completion": Answer(200, b'{"object": "error"}'),
    "invalid JSON": Answer(200, b'{"choices": ['),
    "no finish reason, null created": Answer(
        200,
        json.dumps(
            _completion(created=None, choices=[{"index": 0, "message": {"role": "assistant", "content": "hi"}}])
        ).encode(),
    ),
    "content as parts": Answer(
        200,
        json.dumps(
            _completion(
                content=[{"type": "text", "text": "It is 42."}, {"type": "image_url", "image_url": {"url": "x"}}]
            )
        ).encode(),
    ),
    "gzip-encoded": None,  # built in the test (bytes of the compressed body)
    "unknown finish reason and extra fields": Answer(
        200,
        json.dumps(
            _completion(
                choices=[{"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": "guardrail"}],
                service_tier="on_demand",
                extra_field={"a": 1},
            )
        ).encode(),
    ),
}


@pytest.mark.parametrize("case", list(ODD_ANSWERS))
async def test_an_answer_that_is_not_a_plain_completion_ends_as_through_the_sdk(raw_server: RawServer, case: str):
    answer = ODD_ANSWERS[case]
    if answer is None:
        import gzip

        answer = Answer(
            200,
            gzip.compress(json.dumps(_completion()).encode()),
            {"content-type": "application/json", "content-encoding": "gzip"},
        )
    sdk = AsyncOpenAI(base_url=raw_server.url, api_key=KEY, max_retries=0)
    raw_server.answers.append(answer)
    expected = await _end(_model(sdk))
    await sdk.close()

    ours = OpenRouteClient(base_url=raw_server.url, api_key=KEY, max_retries=0)
    model = _model(ours)
    await _warm(ours, model)
    raw_server.answers.append(answer)
    got = await _end(model)
    assert got == expected
    assert (await _ask(model)).text == "It is 42."  # and the next request is the sender's again
    await ours.close()
    assert len(raw_server.seen) == 5


async def test_a_redirect_goes_back_to_the_sdk_which_follows_it(raw_server: RawServer):
    client = OpenRouteClient(base_url=raw_server.url, api_key=KEY, max_retries=0)
    model = _model(client)
    await _warm(client, model)
    moved = Answer(307, b"", {"location": "/v2/chat/completions"})
    raw_server.answers.extend([moved, moved])  # the sender's request, then the SDK's, which it follows
    response = await _ask(model)
    await client.close()
    assert response.text == "It is 42."
    assert [s.path for s in raw_server.seen[2:]] == [
        "/v1/chat/completions",
        "/v1/chat/completions",
        "/v2/chat/completions",
    ]


async def test_a_refused_connection_and_a_timeout_raise_the_sdks_errors():
    with FakeOpenAIServer(model="served-model") as server:
        server.script(lambda body: "It is 42.")
        client = OpenRouteClient(base_url=server.url, api_key=KEY, max_retries=0, timeout=0.5)
        model = _model(client)
        await _warm(client, model)
        server.enqueue(Reply.delayed(2.0, "late"))
        with pytest.raises(Exception) as timed_out:
            await _ask(model)
        assert isinstance(timed_out.value.__cause__, APITimeoutError)
    with pytest.raises(Exception) as refused:
        await _ask(model)  # the server is gone
    assert isinstance(refused.value.__cause__, APIConnectionError)
    assert type(refused.value).__name__ == "ModelConnectionError"
    await client.close()


async def test_a_kind_whose_requests_differ_stays_with_the_sdk(raw_server: RawServer, monkeypatch: pytest.MonkeyPatch):
    """A header that changes per request (here the SDK's idempotency key, as a provider that sets one has): the
    sender cannot replay it, so it never sends."""
    client = OpenRouteClient(base_url=raw_server.url, api_key=KEY, max_retries=0)
    monkeypatch.setattr(client, "_idempotency_header", "Idempotency-Key")
    model = _model(client)
    for _ in range(4):
        await _ask(model)
    await client.close()
    assert client.sender is not None and not client.sender._ready
    keys = [s.headers["idempotency-key"] for s in raw_server.seen]
    assert len(set(keys)) == 4


async def test_a_client_given_its_own_http_client_never_uses_the_sender(raw_server: RawServer):
    import httpx

    own = OpenRouteClient(base_url=raw_server.url, api_key=KEY, http_client=httpx.AsyncClient())
    assert own.sender is None
    assert (await _ask(_model(own))).text == "It is 42."
    await own.close()


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "https_proxy", "ALL_PROXY"])
async def test_with_a_proxy_in_the_environment_the_sdk_sends_everything(
    raw_server: RawServer, monkeypatch: pytest.MonkeyPatch, variable: str
):
    """aiohttp and the SDK's client read proxy variables differently (aiohttp ignores ALL_PROXY): with one set,
    requests keep the SDK's reading of it. NO_PROXY covers the test server, so the SDK reaches it directly."""
    monkeypatch.setenv(variable, "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    client = OpenRouteClient(base_url=raw_server.url, api_key=KEY, max_retries=0)
    assert client.sender is None
    model = _model(client)
    for _ in range(3):
        assert (await _ask(model)).text == "It is 42."
    await client.close()


def test_an_https_endpoint_keeps_the_sdks_tls():
    assert OpenRouteClient(base_url="https://vllm.internal:8443/v1", api_key=KEY).sender is None
    assert OpenRouteClient(base_url="http://vllm.internal:8000/v1", api_key=KEY).sender is not None


async def _ask_streamed(model: OpenChatModel) -> ModelResponse:
    async with model_request_stream(model, MESSAGES, model_settings={"temperature": 0.0}) as stream:
        async for _ in stream:
            pass
    return stream.get()


async def _end_streamed(model: OpenChatModel, types_only: bool) -> Any:
    """How a streamed request ends; ``types_only``: the error's type alone (its text is the HTTP library's)."""
    try:
        return _outcome(await _ask_streamed(model), None)
    except Exception as e:
        return type(e).__name__ if types_only else _outcome(None, e)


async def test_streams_after_two_go_out_byte_for_byte_and_read_as_the_sdk_reads_them(
    raw_server: RawServer, built: list[object]
):
    client = OpenRouteClient(base_url=raw_server.url, api_key=KEY, max_retries=0, timeout=30.0)
    model = _model(client)
    responses = [await _ask_streamed(model) for _ in range(4)]
    await client.close()
    assert len(built) == 2
    first = raw_server.seen[0]
    assert json.loads(first.raw)["stream"] is True
    for seen in raw_server.seen:
        assert (seen.path, seen.headers, seen.raw) == (first.path, first.headers, first.raw)
    assert {_outcome(r, None) for r in responses} == {_outcome(responses[0], None)}
    assert responses[-1].text == "It is 42."


ODD_STREAMS = {
    # name: (answer, compare the error's type only)
    "refused before it opens": (Answer(503, json.dumps({"error": {"message": "overloaded"}}).encode()), False),
    "an error event mid-stream": (
        _streamed(_sse(_chunk("It is "), {"error": {"message": "engine died", "type": "server_error"}})),
        False,
    ),
    "no [DONE], no finish reason": (_streamed(_sse(_chunk("It is "), _chunk("42."), done=False)), False),
    "broken off mid-stream": (_streamed(_sse(_chunk("It is "), done=False), cut=True), True),
    "too slow mid-stream": (_streamed(_sse(_chunk("It is "), _chunk("42.")), pause_s=1.5), True),
}


@pytest.mark.parametrize("case", list(ODD_STREAMS))
async def test_a_stream_that_is_not_plain_ends_as_through_the_sdk(raw_server: RawServer, case: str):
    answer, types_only = ODD_STREAMS[case]
    sdk = AsyncOpenAI(base_url=raw_server.url, api_key=KEY, max_retries=0, timeout=1.0)
    raw_server.answers.append(answer)
    expected = await _end_streamed(_model(sdk), types_only)
    await sdk.close()

    ours = OpenRouteClient(base_url=raw_server.url, api_key=KEY, max_retries=0, timeout=1.0)
    model = _model(ours)
    for _ in range(2):
        await _ask_streamed(model)
    assert ours.sender is not None and len(ours.sender._ready) == 1
    raw_server.answers.append(answer)
    got = await _end_streamed(model, types_only)
    assert got == expected
    assert (await _ask_streamed(model)).text == "It is 42."  # and the next stream is the sender's again
    await ours.close()


def test_what_the_sender_keeps_is_bounded_whatever_kinds_come():
    """Kinds that each differ between their two requests (a header that changes every time) are refused, and past
    MAX_KINDS of them nothing more is kept: every request of a new kind goes through the SDK."""
    from types import SimpleNamespace

    from stakeflow.activities.open_transport import MAX_KINDS, PlainSender

    sender = PlainSender(AsyncOpenAI(api_key=KEY, base_url="http://127.0.0.1:9/v1"))

    def request(n: int) -> SimpleNamespace:
        headers = SimpleNamespace(multi_items=lambda: [("x-request", str(n))])
        return SimpleNamespace(method="POST", content=b"{}", headers=headers, url="http://127.0.0.1:9/v1/x")

    marked = 0
    for kind in range(10 * MAX_KINDS):
        for n in range(2):
            token = sender.observing(kind, b"{}")
            if token is not None:
                marked += 1
                sender.observe(request(n))
                sender.done_observing(token)
    assert len(sender._seen) + len(sender._ready) + len(sender._refused) == MAX_KINDS
    # MAX_KINDS - 1 kinds refused after their two requests, the last one's first request fills the last place
    assert not sender._ready and marked == 2 * MAX_KINDS - 1
