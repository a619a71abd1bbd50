"""The open route's chat completions sent over aiohttp: the request the openai SDK builds, without the SDK's per-call
machinery around it.

Why: in a worker, one plain chat completion through the SDK's ``post`` costs ~2.2 ms of the main thread's CPU, the
largest part of a ``call_model`` (bench/segments.py), and most of it is the SDK's request options, request and
response objects and httpx's connection layers, not the exchange. The same request over an aiohttp session costs a
fifth of what the SDK's ``post`` does in a hot loop (bench/README.md, "sixth session").

How it stays the SDK's request: the first requests of each kind (one kind per set of request options: extra
headers, query, timeout; streamed or not) go through the SDK as before, and the client's ``_prepare_request`` hook shows
this module the request the SDK built. Once two of them agree on the URL and every header, and each one's body is the
bytes ``body_bytes`` writes, later requests of that kind are sent with those headers to that URL. A kind whose
requests differ (a per-request header, another serializer) stays with the SDK. What comes back is handled as the SDK
handles it: a 2xx JSON chat completion whose messages are plain text and which pydantic-ai's lenient completion model
accepts is returned as that model (pydantic-ai validates with it anyway: ``OpenChatModel`` does not validate it
twice); any other answer becomes the SDK's own response object and goes through the SDK's status errors and parsing;
a timeout raises the SDK's ``APITimeoutError``, a failed connection its ``APIConnectionError``. A streamed answer
is the SDK's own stream (its SSE decoding, its chunks) over the body as aiohttp reads it, failing mid-way with the
errors of the SDK's HTTP library. A redirect (which the SDK's client follows) is not followed here: the request is
sent again through the SDK.

Only a plain-HTTP endpoint reached directly is sent to this way (``OpenRouteClient`` decides): TLS verification and
proxies stay the SDK's own, with no second reading of them to keep in step.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import json
from collections.abc import AsyncIterator, Hashable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, cast

import aiohttp
from openai import APIConnectionError, APITimeoutError, AsyncOpenAI, AsyncStream
from openai._models import FinalRequestOptions
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import ValidationError

# pydantic-ai's model for validating completions (private, of newer releases): without it the SDK parses every answer.
LENIENT_COMPLETION: type[ChatCompletion] | None
try:
    from pydantic_ai.models.openai._chat_completions import LenientChatCompletion as LENIENT_COMPLETION
except ImportError:  # pragma: no cover - depends on the installed pydantic-ai
    LENIENT_COMPLETION = None

# Headers the session writes itself from the URL and body (the SDK's request has them for its own body).
_SESSION_WRITES = frozenset({"content-length", "host", "transfer-encoding"})
# How many distinct kinds of request one client learns or refuses (pydantic-ai sends two: streamed or not); past it,
# the SDK sends every request of a new kind.
MAX_KINDS = 64

# What the SDK's response handling is given for a request sent here (it reads none of it for a chat completion).
_OPTIONS = FinalRequestOptions.construct(method="post", url="/chat/completions")

# The kind of request being sent through the SDK, and its body's bytes, for the client's _prepare_request hook.
_OBSERVING: ContextVar[tuple[Hashable, bytes] | None] = ContextVar("stakeflow_open_request_kind", default=None)


def body_bytes(body: dict[str, Any]) -> bytes:
    """A plain-JSON body as the SDK serializes it (``openai._utils._json.openapi_dumps``: httpx's defaults)."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


@dataclass(frozen=True)
class _Template:
    url: str
    headers: tuple[tuple[str, str], ...]
    request: Any  # the SDK's request object (httpx2 or httpx), for its errors and responses
    timeout: aiohttp.ClientTimeout


class PlainSender:
    """Learns the SDK's request per kind (``observe``) and sends later ones of that kind itself (``send``)."""

    def __init__(self, client: AsyncOpenAI) -> None:
        self._client = client
        self._seen: dict[Hashable, tuple[str, tuple[tuple[str, str], ...]]] = {}
        self._ready: dict[Hashable, _Template] = {}
        self._refused: set[Hashable] = set()
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def template(self, kind: Hashable) -> _Template | None:
        return self._ready.get(kind)

    def observing(self, kind: Hashable, content: bytes) -> Any:
        """Marks the SDK request about to be built (in this task) as one of ``kind``; the token resets it."""
        if kind in self._ready or kind in self._refused:
            return None
        if len(self._seen) + len(self._ready) + len(self._refused) >= MAX_KINDS:
            return None  # every kind past these stays with the SDK: what is kept here is bounded
        return _OBSERVING.set((kind, content))

    @staticmethod
    def done_observing(token: Any) -> None:
        if token is not None:
            _OBSERVING.reset(token)

    def observe(self, request: Any) -> None:
        """The client's ``_prepare_request`` hook: the request the SDK built for the kind this task marked."""
        marked = _OBSERVING.get()
        if marked is None:
            return
        kind, content = marked
        _OBSERVING.set(None)  # one request per mark: a retry's is not compared
        try:
            same_body = request.method == "POST" and request.content == content
        except Exception:  # a streamed body the SDK has not read: not one this module can send
            same_body = False
        headers = tuple((k, v) for k, v in request.headers.multi_items() if k.lower() not in _SESSION_WRITES)
        sample = (str(request.url), headers)
        if not same_body or self._seen.get(kind, sample) != sample:
            self._refused.add(kind)
            self._seen.pop(kind, None)
        elif kind in self._seen:
            del self._seen[kind]
            self._ready[kind] = _Template(sample[0], headers, request, _timeout(request))
        else:
            self._seen[kind] = sample

    async def send(self, template: _Template, content: bytes) -> ChatCompletion | None:
        """The completion for ``content``, or None for a redirect (to be sent through the SDK, which follows it).

        Raises what the SDK raises for the same answer: its status errors, ``APITimeoutError``, ``APIConnectionError``.
        """
        answer = await self._post(template, content)
        raw = await _read(answer, template.request)
        status, headers = answer.status, answer.headers
        if 300 <= status < 400:
            return None
        if 200 <= status < 300 and headers.get("content-type", "").startswith("application/json"):
            completion = _plain_completion(raw)
            if completion is not None:
                return completion
        response = _sdk_response(template.request, status, headers, raw)
        if status >= 400:
            raise self._client._make_status_error_from_response(response)
        return await self._client._process_response(
            cast_to=ChatCompletion, options=_OPTIONS, response=response, stream=False, stream_cls=None
        )

    async def send_stream(self, template: _Template, content: bytes) -> AsyncStream[ChatCompletionChunk] | None:
        """The SDK's stream of chunks for ``content``, read from the answer as it arrives; None for a redirect.

        Raises what the SDK raises before the stream opens (its status errors, ``APITimeoutError``,
        ``APIConnectionError``); a failure while the stream is read is its HTTP library's ``ReadTimeout`` or
        ``RemoteProtocolError``, as the SDK's own stream raises it."""
        answer = await self._post(template, content)
        http = _http_module(template.request)
        if answer.status < 300:
            response = http.Response(
                answer.status,
                headers=_decoded_headers(answer.headers),
                stream=_body_class(http)(answer),
                request=template.request,
            )
            return await self._client._process_response(
                cast_to=cast(Any, ChatCompletion),  # the SDK's post passes the completion's type for a stream too
                options=_OPTIONS,
                response=response,
                stream=True,
                stream_cls=AsyncStream[ChatCompletionChunk],
            )
        if answer.status < 400:
            answer.release()
            return None  # a redirect
        raw = await _read(answer, template.request)
        raise self._client._make_status_error_from_response(
            _sdk_response(template.request, answer.status, answer.headers, raw)
        )

    async def _post(self, template: _Template, content: bytes) -> aiohttp.ClientResponse:
        """``content`` sent as the template says; the answer's head read, its body not yet."""
        with _as_sdk_errors(template.request):
            return await self._open_session().post(
                template.url, data=content, headers=template.headers, allow_redirects=False, timeout=template.timeout
            )

    def _open_session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            # A session belongs to its event loop; one left on another loop is dropped with it.
            self._session = aiohttp.ClientSession(
                # The SDK's httpx pool: at most 1000 connections, an idle one kept 5 s (as long as uvicorn's, vLLM's
                # server, keeps it: aiohttp's default of 15 s would reuse more connections the server is closing).
                connector=aiohttp.TCPConnector(limit=1000, keepalive_timeout=5.0),
                timeout=aiohttp.ClientTimeout(total=None),
                # The template's headers are the SDK's: nothing of the session's own but Host and Content-Length.
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            )
            self._loop = loop
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed and self._loop is asyncio.get_running_loop():
            await self._session.close()
        self._session = self._loop = None


@contextlib.contextmanager
def _as_sdk_errors(request: Any) -> Iterator[None]:
    """A timeout as the SDK's ``APITimeoutError``, any other failure to exchange as its ``APIConnectionError``."""
    try:
        yield
    except TimeoutError as e:
        raise APITimeoutError(request=request) from e
    except aiohttp.ClientError as e:
        raise APIConnectionError(request=request) from e


async def _read(answer: aiohttp.ClientResponse, request: Any) -> bytes:
    """The whole body of ``answer``, its connection released after."""
    try:
        with _as_sdk_errors(request):
            return await answer.read()
    finally:
        answer.release()


def _plain_completion(raw: bytes) -> ChatCompletion | None:
    """The completion in ``raw`` as pydantic-ai's lenient model, if it is one whose messages are text (or none);
    else None, for the SDK's parsing (and pydantic-ai's fill-ins and errors) to handle."""
    if LENIENT_COMPLETION is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(choices := data.get("choices"), list):
        return None
    for choice in choices:
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict) or not isinstance(message.get("content"), str | None):
            return None  # content parts: pydantic-ai reads the raw ones before it validates
    try:
        return LENIENT_COMPLETION.model_validate(data)
    except ValidationError:
        return None


def _sdk_response(request: Any, status: int, headers: Any, raw: bytes) -> Any:
    """The SDK's response object (of its HTTP library, httpx2 or httpx) for a whole answer received here."""
    return _http_module(request).Response(status, headers=_decoded_headers(headers), content=raw, request=request)


def _http_module(request: Any) -> Any:
    """The SDK's HTTP library (httpx2 in newer releases, httpx before), the one its request object is of."""
    return importlib.import_module(type(request).__module__.partition(".")[0])


def _decoded_headers(headers: Any) -> list[tuple[str, str]]:
    """An answer's headers for a body aiohttp has already decoded (it decompresses): without the encoding and the
    length, which no longer apply."""
    return [(k, v) for k, v in headers.items() if k.lower() not in ("content-encoding", "content-length")]


@functools.cache
def _body_class(http: Any) -> type:
    """The SDK HTTP library's async byte stream over an aiohttp answer, failing as that library's own stream does
    (its ``ReadTimeout`` when a read times out, its ``RemoteProtocolError`` when the answer breaks off)."""

    class AiohttpBody(http.AsyncByteStream):  # the library is found at run time
        def __init__(self, answer: aiohttp.ClientResponse) -> None:
            self._answer = answer

        async def __aiter__(self) -> AsyncIterator[bytes]:
            try:
                async for chunk in self._answer.content.iter_any():
                    yield chunk
            except TimeoutError as e:
                raise http.ReadTimeout(str(e) or "timed out reading the stream") from e
            except aiohttp.ClientError as e:
                raise http.RemoteProtocolError(str(e)) from e

        async def aclose(self) -> None:
            self._answer.release()

    return AiohttpBody


def _timeout(request: Any) -> aiohttp.ClientTimeout:
    """The SDK request's timeouts (httpx's per-phase ones, in its extensions) as aiohttp's."""
    phases = request.extensions.get("timeout") or {}
    return aiohttp.ClientTimeout(
        total=None, connect=phases.get("pool"), sock_connect=phases.get("connect"), sock_read=phases.get("read")
    )
