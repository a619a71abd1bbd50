"""What reached a fake server, and helpers for responders: what is the request asking for?"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
