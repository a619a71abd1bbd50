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
from mcp_types import CONNECTION_CLOSED, REQUEST_TIMEOUT

from stakeflow.activities.mcp.sessions import Live, McpSessions, ServerUnavailable, stderr_said
from stakeflow.agents.types import Risk, ToolRequest, ToolResult, ToolsetRef, ToolsetResult, ToolSpecView
from stakeflow.config import McpServerConfig, ToolOverride

SEPARATOR = "."  # "git.git_status": the server's name, then the tool's
MAX_DESCRIPTION_CHARS = 600
# A describe answers within its activity's 60 s timeout (calls.py DESCRIBE_TIMEOUT) whatever the server does:
# start (sessions.START_TIMEOUT_S) plus tools/list, all within the budget. A hanging server is then named
# as such, within a minute, instead of the activity timing out (and being retried) three times.
LIST_TIMEOUT_S = 20.0
DESCRIBE_BUDGET_S = 50.0


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
) -> ToolsetResult:
    """The server's tools (``mcp.types.Tool``) that ``patterns`` name, as stakeflow tool views (see ``risk_of`` for
    ``distrusted_by``).

    A tool that requires MCP tasks (``execution.taskSupport = "required"``) is not offered: stakeflow calls
    tools with plain ``tools/call``, which such a tool refuses every time. A pattern that names no offered
    tool is ``missing``, and the error names the tools there are.
    """
    from fnmatch import fnmatchcase

    if not cfg.trust_annotations and not distrusted_by:  # this worker's own config says so too
        distrusted_by = f"[mcp.{server}] trust_annotations = false"

    views: list[ToolSpecView] = []
    skipped: dict[str, str] = {}
    for tool in tools:
        if getattr(getattr(tool, "execution", None), "task_support", None) == "required":
            skipped[tool.name] = "needs MCP tasks (taskSupport required), which stakeflow does not run"
            continue
        if patterns is not None and not any(fnmatchcase(tool.name, p) for p in patterns):
            continue
        views.append(_view(server, cfg, tool, distrusted_by))
    names = [t.name for t in tools if t.name not in skipped]
    missing = [p for p in patterns or [] if not any(fnmatchcase(n, p) for n in names)]
    result = ToolsetResult(
        tools=views, missing=missing, skipped=[f"{qualified(server, t)}: {why}" for t, why in skipped.items()]
    )
    if missing:
        why = "; ".join(f"{p} {skipped[p]}" for p in missing if p in skipped)
        result.error = (
            f"MCP server '{server}' has no tool {', '.join(missing)}{f' ({why})' if why else ''}: "
            f"its tools are {', '.join(sorted(names)) or 'none'}"
        )
    return result


def _view(server: str, cfg: McpServerConfig, tool: Any, distrusted_by: str) -> ToolSpecView:
    override = cfg.tools.get(tool.name)
    risk, source, open_world, idempotent = risk_of(tool.annotations, override, distrusted_by)
    description = (tool.description or tool.title or tool.name).strip()
    return ToolSpecView(
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


# What is kept of one result's text: the blocks are cut as they are joined, so a big answer costs no second copy
# of itself. Below the dispatcher's 20,000-character cap with the note, so the note states the true size.
MAX_RESULT_CHARS = 19_900


def _text_of(result: Any, limit: int = MAX_RESULT_CHARS) -> tuple[str, bool]:
    """A CallToolResult as text: its text blocks (a resource link keeps its URI), else its structured content; cut
    to ``limit`` characters (and whether it was)."""
    parts: list[str] = []
    for block in result.content or []:
        kind = getattr(block, "type", "")
        if kind == "text":
            parts.append(block.text)
        elif kind == "resource_link":
            about = f" ({block.description})" if getattr(block, "description", None) else ""
            parts.append(f"[resource link: {block.name} {block.uri}{about}]")
        elif kind == "resource" and getattr(block.resource, "text", None):
            parts.append(block.resource.text)
        elif kind == "resource":
            parts.append(f"[resource {block.resource.uri}: {block.resource.mime_type or 'binary'} content omitted]")
        else:
            mime = getattr(block, "mime_type", None)
            parts.append(f"[{kind or 'content'}{f' {mime}' if mime else ''} omitted]")
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
        """The server's tools, or an error naming it; always within DESCRIBE_BUDGET_S (below the activity's
        timeout, so a hanging server is reported as itself, never as a missing worker)."""
        try:
            cfg = self.sessions.config(ref.name)
            listed = await asyncio.wait_for(self._list(ref.name, cfg), DESCRIBE_BUDGET_S)
        except ServerUnavailable as e:
            return ToolsetResult(error=str(e))
        except TimeoutError:
            self.sessions.mark_dead(ref.name)
            return ToolsetResult(error=f"MCP server '{ref.name}' did not list its tools within {DESCRIBE_BUDGET_S:g}s")
        distrusted_by = "" if ref.trust_annotations else ref.distrusted_by or "the run's policy"
        return describe(ref.name, cfg, list(listed.tools), ref.patterns, distrusted_by)

    async def _list(self, server: str, cfg: McpServerConfig) -> Any:
        """tools/list; on a session that turns out to be gone, once more on a new one (listing acts on nothing)."""
        wait = min(cfg.timeout_s, LIST_TIMEOUT_S)
        for again in (False, True):
            live = await self.sessions.live(server)
            try:
                return await asyncio.wait_for(live.session.list_tools(), wait)
            except TimeoutError:
                self.sessions.mark_dead(server)
                raise ServerUnavailable(
                    f"MCP server '{server}' answered initialize but not tools/list within {wait:g}s"
                    f"{await stderr_said(live.wire.stderr)}: check the server (it is started again on the next use)"
                ) from None
            except (MCPError, OSError) as e:
                self.sessions.mark_dead(server)
                if again or not _session_gone(e, live):
                    raise ServerUnavailable(
                        f"MCP server '{server}' did not list its tools: {_error_text(e)}{await stderr_said(live.wire.stderr)}"
                    ) from None
        raise AssertionError("unreachable: the second attempt returns or raises")

    async def call(self, req: ToolRequest, idempotent: bool) -> ToolResult:
        """One tools/call. Raises ServerUnavailable (nothing was sent), ConnectionError (Temporal may retry) or
        CallMayHaveActed (sent, connection lost, not idempotent).

        A session found gone before the call (its server exited while idle or during an approval wait), or
        refused by an HTTP server that restarted, ran nothing: the call goes to a new session, once.
        """
        server, name = split(req.tool)
        cfg = self.sessions.config(server)
        for again in (False, True):
            live = await self.sessions.live(server)  # ServerUnavailable: nothing was sent
            sent_before = live.wire.calls_sent
            try:
                result = await live.session.call_tool(name, req.args, read_timeout_seconds=cfg.timeout_s)
            except Exception as e:
                if isinstance(e, MCPError) and _too_big(e):  # the transport's own cap (1 MB per message over HTTP)
                    return ToolResult(
                        ok=False,
                        error=f"{req.tool} answered more than the MCP transport accepts ({e.message}): ask for less",
                    )
                lost = not isinstance(e, MCPError) or _connection_lost(e) or bool(live.wire.refused)
                if not lost:
                    return ToolResult(ok=False, error=f"{req.tool} refused the call: {_error_text(e)}")
                self.sessions.mark_dead(server)
                ran_nothing = live.wire.refused or live.wire.calls_sent == sent_before
                if ran_nothing and not again:
                    continue  # never handed to the transport, or refused with the session: send it on a new one
                said = await stderr_said(live.wire.stderr)
                raise _lost(server, name, idempotent, f"{_error_text(e)}{said}") from None
            text, cut = _text_of(result)
            if result.is_error:
                return ToolResult(ok=False, error=text or f"{req.tool} reported an error")
            return ToolResult(output=text, truncated=cut)
        raise AssertionError("unreachable: the second attempt returns or raises")

    async def close(self) -> None:
        await self.sessions.close()


class CallMayHaveActed(Exception):
    """A non-idempotent tool's connection broke after its request was sent: it may have acted."""


def _connection_lost(e: MCPError) -> bool:
    return e.code in (CONNECTION_CLOSED, REQUEST_TIMEOUT) or "closed" in e.message.lower()


def _too_big(e: MCPError) -> bool:
    return "exceeded the" in e.message and "byte limit" in e.message


def _session_gone(e: BaseException, live: Live) -> bool:
    """The request failed because the session was gone (nothing ran), not because the server answered so."""
    return bool(live.wire.refused) or not live.usable or (isinstance(e, MCPError) and e.code == CONNECTION_CLOSED)


def _error_text(e: BaseException) -> str:
    return e.message if isinstance(e, MCPError) else f"{type(e).__name__}: {e}"


def _lost(server: str, tool: str, idempotent: bool, why: str) -> Exception:
    if idempotent:
        return ConnectionError(f"MCP server '{server}' dropped the call to {tool} ({why})")
    return CallMayHaveActed(
        f"MCP server '{server}' dropped the call to {tool} after it was sent ({why}); {tool} is not idempotent, "
        "so it may have acted and is not retried: check the server's state before asking for it again"
    )
