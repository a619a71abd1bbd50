"""An OpenAI-compatible fake server (vLLM / llama.cpp shape)."""

from __future__ import annotations

import json
from typing import Any

from tests.fakes._requests import _tool_schemas, output_tool_name
from tests.fakes._server import Reply, _as_data, _FakeServer, _sse, chunks


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
