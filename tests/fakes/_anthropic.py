"""A fake Anthropic Messages API server, and Anthropic's prompt caching for it."""

from __future__ import annotations

import hashlib
import json
import threading
from typing import Any

from tests.fakes._requests import _tool_schemas, output_tool_name
from tests.fakes._server import Reply, _as_data, _FakeServer, _sse, chunks


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
