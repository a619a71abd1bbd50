"""One MCP client session per configured server, started on first use and started again when it ends.

A stdio server is a child process of the worker: starting one per call would cost a process start (and
for some servers seconds of warm-up) on every tool call, so a worker keeps one session per server. The
session's transport must be entered and left by the same task (anyio's rule), so each session is owned
by a small task that holds it open until it ends; callers use the session from their own tasks.

A session ends, and the next use starts a new one, when:

- the server's message stream ends (a stdio server exited, even while idle: the owner relays the stream
  and sees its end, so a dead session is never handed out);
- a Streamable HTTP server answers 404 (or 400 naming the session) to a message carrying the session's id
  (it restarted and does not know the session: the message was not run, so it can go again on a new one);
- a call fails on the connection (``mark_dead``), or the worker shuts down.

A stdio server dies with the worker, even a SIGKILLed one (``stakeflow.local.parent_death``), and what it
wrote to stderr is passed on to the worker's stderr, its last lines kept for the error when it exits at
start. Everything a dying server costs is in docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sys
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from stakeflow.config import McpServerConfig
from stakeflow.local.parent_death import wrapped

log = logging.getLogger("stakeflow.mcp")
START_TIMEOUT_S = 30.0
STDERR_TAIL_BYTES = 2000  # of a stdio server's stderr, kept for the error that names why it exited
STDERR_TAIL_LINES = 5


class ServerUnavailable(Exception):
    """The MCP server could not be started or reached; nothing was sent to it. The message says which and why."""


class _StderrTail:
    """A stdio server's stderr: passed on to the worker's stderr, its last bytes kept (bounded) for errors.

    A pipe drained by a thread: the server never blocks on a full pipe, and a chatty server costs
    ``STDERR_TAIL_BYTES`` of memory, not a growing file.
    """

    def __init__(self, server: str) -> None:
        read_end, write_end = os.pipe()
        self.file = os.fdopen(write_end, "w")  # the child's stderr; ours is closed once the child has it
        self._tail = bytearray()
        self._drained = threading.Thread(target=self._drain, args=(read_end,), name=f"mcp-{server}-stderr", daemon=True)
        self._drained.start()

    def _drain(self, read_end: int) -> None:
        with os.fdopen(read_end, "rb", buffering=0) as pipe:
            while chunk := pipe.read(4096):
                self._tail += chunk
                del self._tail[:-STDERR_TAIL_BYTES]
                with contextlib.suppress(Exception):
                    sys.stderr.write(chunk.decode(errors="replace"))

    def started(self) -> None:
        """The child has its copy: close ours, so the pipe ends when the server does."""
        self.file.close()

    def text(self, wait_s: float) -> str:
        """The last lines the server wrote; a server that exited gets ``wait_s`` to finish writing them."""
        if wait_s:
            self.file.close()
            self._drained.join(wait_s)
        lines = [line.strip() for line in bytes(self._tail).decode(errors="replace").splitlines() if line.strip()]
        return " | ".join(lines[-STDERR_TAIL_LINES:])


@dataclass
class Wire:
    """What a session's connection has shown, filled in as it happens (by the relays and the HTTP hook)."""

    ended: asyncio.Event = field(default_factory=asyncio.Event)  # stream ended, session refused, or told to stop
    stderr: _StderrTail | None = None  # a stdio server's
    refused: list[int] = field(default_factory=list)  # HTTP statuses answered to this session's id (400/404)
    calls_sent: int = 0  # tools/call requests handed to the transport: one that never was cannot have run


@dataclass
class Live:
    """A started session and its wire."""

    session: ClientSession
    owner: asyncio.Task[None]
    wire: Wire

    @property
    def usable(self) -> bool:
        return not self.wire.ended.is_set()


def _resolve(name: str, cfg: McpServerConfig) -> str:
    """The stdio command's path, or ServerUnavailable naming the fix (the wrapper would only say 'exit 1')."""
    command = cfg.command or ""
    if os.sep in command:
        path = Path(command) if Path(command).is_absolute() else Path(cfg.cwd or ".") / command
        found = str(path) if os.access(path, os.X_OK) and path.is_file() else None
    else:
        found = shutil.which(command)
    if found is None:
        raise ServerUnavailable(
            f"MCP server '{name}' could not be started: command '{command}' not found: install it on this "
            f"worker, or fix [mcp.{name}] command"
        )
    return found


def _transport(name: str, cfg: McpServerConfig, wire: Wire) -> contextlib.AbstractAsyncContextManager:
    """The client transport for ``cfg``: a child process over stdio (its stderr on ``wire``), or Streamable
    HTTP (its refusals of the session on ``wire``)."""
    if cfg.transport == "stdio":
        env = {var: os.environ[var] for var in cfg.env if var in os.environ}
        missing = [var for var in cfg.env if var not in os.environ]
        if missing:
            raise ServerUnavailable(
                f"MCP server '{name}' needs {', '.join(missing)} in the worker's environment: export it there"
            )
        command, args = wrapped(_resolve(name, cfg), cfg.args)
        params = StdioServerParameters(command=command, args=args, cwd=cfg.cwd, env=env or None)
        wire.stderr = _StderrTail(name)
        return stdio_client(params, errlog=wire.stderr.file)
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    headers: dict[str, str] = {}
    for header, var in cfg.headers.items():
        value = os.environ.get(var)
        if value is None:
            raise ServerUnavailable(
                f"MCP server '{name}' needs {var} (for its {header} header) in the worker's environment: export it"
            )
        headers[header] = value

    async def refused(response: Any) -> None:
        # A message POSTed with the session's id and answered 404 (the spec's answer to an unknown session),
        # or 400 naming the session (the reference server-everything's), was not run: the server restarted.
        # Other statuses, and the optional GET stream's answers, say nothing about the session.
        request = response.request
        if request.method != "POST" or not request.headers.get("mcp-session-id"):
            return
        if response.status_code == 404 or (
            response.status_code == 400 and b"session" in (await response.aread()).lower()
        ):
            wire.refused.append(response.status_code)
            wire.ended.set()

    @contextlib.asynccontextmanager
    async def http() -> AsyncIterator:
        client = create_mcp_http_client(headers=headers)
        client.event_hooks = {"response": [refused]}
        async with client, streamable_http_client(cfg.url or "", http_client=client) as streams:
            yield streams

    return http()


async def _relay(source: Any, sink: Any, ended: asyncio.Event) -> None:
    """Pass the server's messages to the session; when the stream ends (the server exited), say so at once."""
    try:
        async with sink:
            async for item in source:
                await sink.send(item)
    except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream):
        pass
    finally:
        ended.set()


async def _forward(source: Any, sink: Any, wire: Wire) -> None:
    """Pass the session's messages to the transport, counting the tool calls handed over (before, so that
    a count that did not move proves the call never left)."""
    with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream):
        async for message in source:
            if getattr(message.message, "method", None) == "tools/call":
                wire.calls_sent += 1
            await sink.send(message)


class McpSessions:
    """The worker's sessions, by server name."""

    def __init__(self, servers: dict[str, McpServerConfig]) -> None:
        self._servers = servers
        self._live: dict[str, Live] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.starts: dict[str, int] = {}  # how many sessions each server has had (restarts show here)

    def config(self, name: str) -> McpServerConfig:
        try:
            return self._servers[name]
        except KeyError:
            known = ", ".join(sorted(self._servers)) or "none"
            raise ServerUnavailable(
                f"MCP server '{name}' is not configured on this worker ([mcp.{name}] in its stakeflow.toml; "
                f"configured here: {known})"
            ) from None

    async def live(self, name: str) -> Live:
        """The usable session for ``name``, starting (or restarting) it if needed."""
        live = self._live.get(name)
        if live is not None and live.usable:
            return live
        async with self._locks.setdefault(name, asyncio.Lock()):
            live = self._live.get(name)
            if live is None or not live.usable:
                live = await self._start(name)
                self._live[name] = live
            return live

    def mark_dead(self, name: str) -> None:
        """Forget a session that failed mid-call (the next use starts a new one)."""
        live = self._live.pop(name, None)
        if live is not None:
            live.wire.ended.set()

    async def _start(self, name: str) -> Live:
        cfg = self.config(name)
        ready: asyncio.Future[ClientSession] = asyncio.get_running_loop().create_future()
        wire = Wire()
        transport = _transport(name, cfg, wire)  # ServerUnavailable: a missing command or variable

        async def own() -> None:
            try:
                async with transport as (read, write):
                    if wire.stderr is not None:
                        wire.stderr.started()
                    inbound, relayed = anyio.create_memory_object_stream[Any](0)
                    outbound, forwarded = anyio.create_memory_object_stream[Any](0)
                    async with anyio.create_task_group() as relays:
                        relays.start_soon(_relay, read, inbound, wire.ended)
                        relays.start_soon(_forward, forwarded, write, wire)
                        async with ClientSession(relayed, outbound) as session:
                            await session.initialize()
                            ready.set_result(session)
                            await wire.ended.wait()
                        relays.cancel_scope.cancel()
            except BaseException as e:
                if not ready.done():
                    ready.set_exception(e)
                elif not isinstance(e, asyncio.CancelledError):
                    log.warning("MCP server %s: session ended (%s)", name, type(e).__name__)
            finally:
                wire.ended.set()
                if wire.stderr is not None:
                    wire.stderr.started()  # also when it never started: the drain thread ends

        owner = asyncio.create_task(own(), name=f"mcp-{name}")
        try:
            session = await asyncio.wait_for(asyncio.shield(ready), START_TIMEOUT_S)
        except TimeoutError:
            owner.cancel()
            said = await stderr_said(wire.stderr, 0)
            raise ServerUnavailable(
                f"MCP server '{name}' did not answer initialize within {START_TIMEOUT_S:g}s{said}"
            ) from None
        except Exception as e:
            said = await stderr_said(wire.stderr, 1.0)  # it exited: what it said on its way out
            raise ServerUnavailable(f"MCP server '{name}' could not be started: {_describe(e, cfg)}{said}") from None
        self.starts[name] = self.starts.get(name, 0) + 1
        log.info("MCP server %s: session %d started", name, self.starts[name])
        return Live(session, owner, wire)

    async def close(self) -> None:
        """End every session (a worker calls this on shutdown): stdio servers are stopped."""
        lives = list(self._live.values())
        self._live.clear()
        for live in lives:
            live.wire.ended.set()
        for live in lives:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(live.owner, 10)


async def stderr_said(stderr: _StderrTail | None, wait_s: float = 0.0) -> str:
    """``; its stderr ends: ...`` for an error about a stdio server, when it wrote anything.

    ``wait_s``: how long a server that exited may take to finish writing (0 for one still running).
    """
    if stderr is None:
        return ""
    text = await asyncio.to_thread(stderr.text, wait_s)
    return f"; its stderr ends: {text}" if text else ""


def _describe(e: BaseException, cfg: McpServerConfig) -> str:
    if isinstance(e, FileNotFoundError):
        return f"command '{cfg.command}' not found: install it on this worker, or fix [mcp.<name>] command"
    if isinstance(e, BaseExceptionGroup):
        return "; ".join(_describe(x, cfg) for x in e.exceptions)
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return f"{type(e).__name__}: {text[:200]}"
