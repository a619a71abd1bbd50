"""MCP servers' tools as stakeflow tools: their descriptions (with risk from the MCP annotations) and their calls.

Risk, as the MCP spec's tool annotations say and default (a hint that is absent means: not read-only,
destructive, not idempotent, open-world), so an unannotated tool is treated as the riskiest kind:

- ``readOnlyHint: true``  -> read_only
- ``destructiveHint: true`` (or absent) -> irreversible
- otherwise -> side_effect

``[mcp.<server>.tools.<tool>]`` overrides win, and each tool says where its risk came from. A tool's
``isError`` result goes back to the model as a tool error; a failure of the connection is raised so that
Temporal retries it — except for a tool that is not idempotent once its request may have reached the
server: that is reported, never retried behind the user's back.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from mcp.shared.exceptions import MCPError

from stakeflow.activities.mcp.sessions import McpSessions, ServerUnavailable
from stakeflow.agents.types import Risk, ToolRequest, ToolResult, ToolsetRef, ToolsetResult, ToolSpecView
from stakeflow.catalog_config import McpServerConfig, ToolOverride

SEPARATOR = "."  # "git.git_status": the server's name, then the tool's
MAX_DESCRIPTION_CHARS = 600


def qualified(server: str, tool: str) -> str:
    return f"{server}{SEPARATOR}{tool}"


def split(name: str) -> tuple[str, str]:
    server, _, tool = name.partition(SEPARATOR)
    return server, tool


def risk_of(annotations: Any, override: ToolOverride | None, distrusted_by: str = "") -> tuple[Risk, str, bool, bool]:
    """(risk, where it came from, open_world, idempotent) for one tool.

    ``distrusted_by``: why the server's annotations are not believed (``trust_annotations = false``): then every
    tool is of the riskiest kind, as if it had none, and only the team's own overrides change that.
    """
    if distrusted_by:
        annotations = None
    read_only = getattr(annotations, "read_only_hint", None)
    destructive = getattr(annotations, "destructive_hint", None)
    idempotent = getattr(annotations, "idempotent_hint", None)
    open_world = getattr(annotations, "open_world_hint", None)
    if read_only:
        risk: Risk = "read_only"
        source = "readOnlyHint"
    elif destructive is None or destructive:
        risk = "irreversible"
        source = "destructiveHint" if destructive else "no annotations: MCP defaults (destructive)"
    else:
        risk = "side_effect"
        source = "readOnlyHint false, destructiveHint false"
    if annotations is None:
        source = "no annotations: MCP defaults (destructive, open-world)"
    if distrusted_by:
        source = f"annotations not trusted ({distrusted_by}): the riskiest kind"
    opened = True if open_world is None else bool(open_world)
    # Read-only calls cannot act, so retrying one is always safe; otherwise only what the server promises.
    repeatable = bool(read_only) or bool(idempotent)
    if override is not None:
        if override.risk is not None:
            risk, source = override.risk, "config override"
        if override.open_world is not None:
            opened = override.open_world
        if override.idempotent is not None:
            repeatable = override.idempotent
    return risk, source, opened, repeatable


def describe(
    server: str, cfg: McpServerConfig, tools: list[Any], patterns: list[str] | None = None, distrusted_by: str = ""
) -> list[ToolSpecView]:
    """The server's tools (``mcp.types.Tool``) as stakeflow tool views (see ``risk_of`` for ``distrusted_by``)."""
    if not cfg.trust_annotations and not distrusted_by:  # this worker's own config says so too
        distrusted_by = f"[mcp.{server}] trust_annotations = false"
    from fnmatch import fnmatchcase

    views: list[ToolSpecView] = []
    for tool in tools:
        if patterns is not None and not any(fnmatchcase(tool.name, p) for p in patterns):
            continue
        override = cfg.tools.get(tool.name)
        risk, source, open_world, idempotent = risk_of(tool.annotations, override, distrusted_by)
        description = (tool.description or tool.title or tool.name).strip()
        views.append(
            ToolSpecView(
                name=qualified(server, tool.name),
                description=description[:MAX_DESCRIPTION_CHARS],
                risk=risk,
                args_schema=dict(tool.input_schema or {"type": "object", "properties": {}}),
                source="mcp",
                server=server,
                open_world=open_world,
                idempotent=idempotent,
                private=cfg.private or bool(override and override.private),
                risk_from=source,
                task_queue=cfg.task_queue or "",
                timeout_s=cfg.timeout_s,
            )
        )
    return views


# What is kept of one result's text: the blocks are cut as they are joined, so a big answer costs no second copy
# of itself. Below the dispatcher's 20,000-character cap with the note, so the note states the true size.
MAX_RESULT_CHARS = 19_900


def _text_of(result: Any, limit: int = MAX_RESULT_CHARS) -> tuple[str, bool]:
    """A CallToolResult as text: its text blocks, else its structured content as JSON; cut to ``limit`` characters
    (and whether it was)."""
    parts: list[str] = []
    for block in result.content or []:
        kind = getattr(block, "type", "")
        if kind == "text":
            parts.append(block.text)
        elif kind == "resource" and getattr(block.resource, "text", None):
            parts.append(block.resource.text)
        else:
            parts.append(f"[{kind or 'content'} omitted]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    total = sum(len(p) for p in parts) + max(0, len(parts) - 1)
    if total <= limit:
        return "\n".join(parts), False
    kept: list[str] = []
    room = limit
    for part in parts:
        kept.append(part[:room])
        room -= len(kept[-1]) + 1
        if room <= 0:
            break
    return "\n".join(kept)[:limit] + f"\n[... {total - limit} more characters not kept]", True


class McpToolbox:
    """What a worker does with MCP: describe a server's tools, call one."""

    def __init__(self, servers: dict[str, McpServerConfig]) -> None:
        self.sessions = McpSessions(servers)
        self._servers = servers

    def serves(self, tool: str) -> bool:
        server, name = split(tool)
        return bool(name) and server in self._servers

    async def describe(self, ref: ToolsetRef) -> ToolsetResult:
        try:
            cfg = self.sessions.config(ref.name)
            session = await self.sessions.session(ref.name)
            listed = await asyncio.wait_for(session.list_tools(), cfg.timeout_s)
        except ServerUnavailable as e:
            return ToolsetResult(error=str(e))
        except (TimeoutError, MCPError, OSError) as e:
            self.sessions.mark_dead(ref.name)
            return ToolsetResult(error=f"MCP server '{ref.name}' did not list its tools: {type(e).__name__}: {e}")
        distrusted_by = "" if ref.trust_annotations else ref.distrusted_by or "the run's policy"
        return ToolsetResult(tools=describe(ref.name, cfg, list(listed.tools), ref.patterns, distrusted_by))

    async def call(self, req: ToolRequest, idempotent: bool) -> ToolResult:
        """One tools/call. Raises ServerUnavailable / ConnectionError for Temporal to retry (when safe)."""
        server, name = split(req.tool)
        cfg = self.sessions.config(server)
        session = await self.sessions.session(server)  # ServerUnavailable: nothing was sent yet
        try:
            result = await session.call_tool(name, req.args, read_timeout_seconds=cfg.timeout_s)
        except MCPError as e:
            if _too_big(e):  # the transport's own cap (1 MB per message over HTTP): the session is fine, no retry helps
                return ToolResult(
                    ok=False,
                    error=f"{req.tool} answered more than the MCP transport accepts ({e.message}): ask for less",
                )
            if _connection_lost(e):
                self.sessions.mark_dead(server)
                raise _lost(server, name, idempotent, str(e)) from None
            return ToolResult(ok=False, error=f"{req.tool} refused the call: {e.message}")
        except (OSError, EOFError, Exception) as e:
            self.sessions.mark_dead(server)
            raise _lost(server, name, idempotent, f"{type(e).__name__}: {e}") from None
        text, cut = _text_of(result)
        if result.is_error:
            return ToolResult(ok=False, error=text or f"{req.tool} reported an error")
        return ToolResult(output=text, truncated=cut)

    async def close(self) -> None:
        await self.sessions.close()


class CallMayHaveActed(Exception):
    """A non-idempotent tool's connection broke after its request was sent: it may have acted."""


def _too_big(e: MCPError) -> bool:
    return "exceeded the" in e.message and "byte limit" in e.message


def _connection_lost(e: MCPError) -> bool:
    return e.code in (-32000, -32001) or "closed" in e.message.lower() or "timed out" in e.message.lower()


def _lost(server: str, tool: str, idempotent: bool, why: str) -> Exception:
    if idempotent:
        return ConnectionError(f"MCP server '{server}' dropped the call to {tool} ({why}); Temporal retries it")
    return CallMayHaveActed(
        f"MCP server '{server}' dropped the call to {tool} after it was sent ({why}); {tool} is not idempotent, "
        "so it may have acted and is not retried: check the server's state before asking for it again"
    )
