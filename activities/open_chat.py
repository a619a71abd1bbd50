"""The open route's chat models and OpenAI client: pydantic-ai's ``OpenAIChatModel`` and the ``openai`` SDK, with
two per-call costs taken out, and llama-cpp-python's JSON mended.

The client: chat completions go out as pydantic-ai builds them; once the SDK has sent two of a kind, over an aiohttp
session with the SDK's own URL and headers (open_transport.py).

``AsyncCompletions.create`` runs its request parameters through the SDK's type-driven transform before sending
(``openai._utils._transform``: key aliases, date and file formats, pydantic models dumped), walking every message
against the union of message types and the output schema's every node: ~0.35 ms of CPU per call here, a sixth of
a whole ``call_model`` on an idle worker (bench/README.md, "model_request.py", third session). Chat-completion
parameters have no aliases or formats, and what pydantic-ai's ``OpenAIChatModel`` passes is already JSON (dicts,
lists, strings, numbers), so the transform returns what it was given. This client
sends that as the body through the SDK's own ``post``: the same URL, headers, auth, timeout, error classes,
response parsing and SSE streams; only the walk goes. Anything that is not plain JSON (a pydantic model, a tuple,
a date) goes through the SDK's ``create`` as before, so no request changes meaning.

The model: pydantic-ai customizes the request parameters for the model's profile on every request (it walks the
output object's JSON schema with the profile's transformer: ~60 µs a call). ``call_model``'s parameters are one
object per request shape (model_shapes.py's ``ShapeCache``), so each is customized once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Hashable
from functools import cached_property
from typing import Any, cast

from openai import AsyncOpenAI, AsyncStream, NotGiven, Omit
from openai.resources.chat import AsyncChat
from openai.resources.chat.completions import AsyncCompletions
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models import ModelRequestParameters
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.profiles.openai import OpenAIModelProfile
from pydantic_ai.settings import ModelSettings

from stakeflow.activities.open_transport import LENIENT_COMPLETION, PlainSender, body_bytes

# Request parameters customized per model, at most this many (model_shapes.MAX_SHAPES: one per shape).
MAX_CUSTOMIZED = 512

# llama-cpp-python's server reads `max_tokens`, not `max_completion_tokens`, and small chat templates
# expect a single system message.
LLAMACPP_PROFILE = OpenAIModelProfile(
    openai_chat_supports_max_completion_tokens=False,
    openai_chat_supports_multiple_system_messages=False,
)

_JSON_SCALARS = (str, int, float, bool, type(None))
# ``create``'s keyword arguments that are request options, not body fields, and the option each one sets when not
# None (``timeout`` is one whenever given: None is no timeout).
_OPTIONS = {"extra_headers": "headers", "extra_query": "params", "extra_body": "extra_json"}


class _PlainCompletions(AsyncCompletions):
    async def create(self, **kwargs: Any) -> Any:
        given = {k: v for k, v in kwargs.items() if not isinstance(v, Omit | NotGiven)}
        # The bearer key only, as ``create`` sends it (the SDK's default for ``post`` adds an admin key from the
        # environment, OPENAI_ADMIN_KEY, which no open endpoint is to receive).
        options: dict[str, Any] = {"security": {"bearer_auth": True}}
        options.update((_OPTIONS[k], v) for k in _OPTIONS if (v := given.pop(k, None)) is not None)
        if "timeout" in given:
            options["timeout"] = given.pop("timeout")
        if not _plain(given):
            return await super().create(**kwargs)
        stream = bool(given.get("stream"))
        sender = self._client.sender if isinstance(self._client, OpenRouteClient) else None
        token = None
        content = _content(given, options.get("extra_json")) if sender is not None else None
        if sender is not None and content is not None:
            kind = (stream, _kind(options))
            template = sender.template(kind)
            if template is not None:
                sent = await (sender.send_stream if stream else sender.send)(template, content)
                if sent is not None:
                    return sent
            else:
                token = sender.observing(kind, content)  # the SDK's request below, shown to the sender
        try:
            return await self._client.post(
                "/chat/completions",
                cast_to=ChatCompletion,
                body=given,
                options=cast(Any, options),  # the SDK's RequestOptions, a TypedDict of its private _types
                stream=stream,
                stream_cls=AsyncStream[ChatCompletionChunk],
            )
        finally:
            PlainSender.done_observing(token)


def _content(body: dict[str, Any], extra: Any) -> bytes | None:
    """The request body's bytes with ``extra_body`` merged in as the SDK merges it; None if either is not plain JSON
    (the SDK then sends it, and raises what it raises)."""
    if extra is not None and not (isinstance(extra, dict) and _plain(extra)):
        return None
    try:
        return body_bytes({**body, **(extra or {})})
    except ValueError:  # NaN or infinity: not JSON
        return None


def _kind(options: dict[str, Any]) -> Hashable:
    """What makes two requests' URL and headers the same: their request options but ``extra_body``, which is body
    (the sender checks each kind's bodies are serialized as the SDK does, so one merged in differently shows)."""
    return json.dumps({k: v for k, v in options.items() if k != "extra_json"}, sort_keys=True, default=repr)


def _proxy_in_environment() -> bool:
    """Whether any proxy variable is set (``HTTP_PROXY``, ``ALL_PROXY``, ... in either case): the SDK's client and
    aiohttp read them differently, so with one set, the SDK sends everything."""
    return any(k.lower().endswith("_proxy") and k.lower() != "no_proxy" and v for k, v in os.environ.items())


def _plain(value: Any) -> bool:
    """Whether ``value`` is JSON as it stands: what the SDK's transform would return unchanged."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return isinstance(value, _JSON_SCALARS)


class _PlainChat(AsyncChat):
    @cached_property
    def completions(self) -> AsyncCompletions:
        return _PlainCompletions(self._client)


class OpenRouteClient(AsyncOpenAI):
    """``AsyncOpenAI`` whose ``chat.completions.create`` sends plain-JSON parameters without the SDK's transform, and,
    once the SDK has shown how it sends them, over aiohttp (open_transport.py).

    Only to a plain-HTTP endpoint reached directly (as vLLM is inside a cluster): for ``https``, with a proxy in the
    environment, an ``http_client`` of the caller's, or an authentication the SDK works out per request (an API-key
    provider, workload identity, a provider runtime), every request goes through the SDK, whose TLS and proxy
    settings then apply unchanged."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        per_request = ("_provider_runtime", "_workload_identity_auth", "_api_key_provider")
        plain = kwargs.get("http_client") is None and not any(getattr(self, a, None) for a in per_request)
        direct = self.base_url.scheme == "http" and not _proxy_in_environment()
        self.sender = PlainSender(self) if plain and direct and self.custom_auth is None else None

    @cached_property
    def chat(self) -> AsyncChat:
        return _PlainChat(self)

    async def _prepare_request(self, request: Any) -> None:
        await super()._prepare_request(request)
        if self.sender is not None:
            self.sender.observe(request)

    async def close(self) -> None:
        if self.sender is not None:
            await self.sender.close()
        await super().close()


class OpenChatModel(OpenAIChatModel):
    """``OpenAIChatModel`` that customizes each request-parameters object once (see the module's docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # id -> (the parameters, as customized): the parameters are held, so an id is never reused while listed.
        self._customized: dict[int, tuple[ModelRequestParameters, ModelRequestParameters]] = {}

    def customize_request_parameters(self, model_request_parameters: ModelRequestParameters) -> ModelRequestParameters:
        found = self._customized.get(id(model_request_parameters))
        if found is not None and found[0] is model_request_parameters:
            return found[1]
        customized = super().customize_request_parameters(model_request_parameters)
        if len(self._customized) >= MAX_CUSTOMIZED:
            self._customized.clear()
        self._customized[id(model_request_parameters)] = (model_request_parameters, customized)
        return customized

    def _validate_completion(self, response: ChatCompletion) -> Any:
        # OpenRouteClient returns a completion it validated with this very model (open_transport.py) as it stands.
        if LENIENT_COMPLETION is not None and type(response) is LENIENT_COMPLETION:
            return response
        return super()._validate_completion(response)


class LlamaCppChatModel(OpenChatModel):
    r"""OpenChatModel for llama-cpp-python's server, whose JSON output may hold raw control characters.

    Its JSON-schema grammar (0.3.x: ``char ::= [^"\\] | ...``) lets the model put a raw newline or tab
    inside a string, which strict JSON (and so pydantic) rejects; upstream llama.cpp's grammar excludes
    them. Seen with SmolLM2 in about one step action in four. Escaping them keeps that output.
    """

    async def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        response = await super().request(messages, model_settings, model_request_parameters)
        if model_request_parameters.output_mode != "prompted":
            return response  # plain text stays as the model wrote it
        for part in response.parts:
            if isinstance(part, TextPart):
                part.content = escape_control_characters(part.content)
        return response


def escape_control_characters(text: str) -> str:
    """``text`` re-encoded as strict JSON if it is JSON only with raw control characters in strings."""
    try:
        json.loads(text)
        return text
    except ValueError:
        pass
    try:
        return json.dumps(json.loads(text, strict=False), ensure_ascii=False)
    except ValueError:
        return text  # not JSON at all: validation reports it
