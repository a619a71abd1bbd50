"""One MCP client session per configured server, started on first use and started again when it dies.

A stdio server is a child process of the worker: starting one per call would cost a process start (and
for some servers seconds of warm-up) on every tool call, so a worker keeps one session per server. The
session's transport must be entered and left by the same task (anyio's rule), so each session is owned
by a small task that holds it open until told to close; callers use the session from their own tasks.
When the server process dies (or an HTTP server drops the session), the owner ends, the session is marked
dead, and the next call starts a new one: a killed server costs one retried call, not the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from stakeflow.config import McpServerConfig

log = logging.getLogger("stakeflow.mcp")
START_TIMEOUT_S = 30.0


class ServerUnavailable(Exception):
    """The MCP server could not be started or reached; the message says which and why."""


@dataclass
class _Live:
    session: ClientSession
    stop: asyncio.Event
    owner: asyncio.Task[None]
    dead: asyncio.Event = field(default_factory=asyncio.Event)


def _transport(name: str, cfg: McpServerConfig) -> contextlib.AbstractAsyncContextManager:
    """The client transport for ``cfg``: a child process over stdio, or Streamable HTTP."""
    if cfg.transport == "stdio":
        env = {var: os.environ[var] for var in cfg.env if var in os.environ}
        missing = [var for var in cfg.env if var not in os.environ]
        if missing:
            raise ServerUnavailable(
                f"MCP server '{name}' needs {', '.join(missing)} in the worker's environment: export it there"
            )
        params = StdioServerParameters(command=cfg.command or "", args=cfg.args, cwd=cfg.cwd, env=env or None)
        return stdio_client(params)
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

    @contextlib.asynccontextmanager
    async def http() -> AsyncIterator:
        async with (
            create_mcp_http_client(headers=headers) as client,
            streamable_http_client(cfg.url or "", http_client=client) as streams,
        ):
            yield streams

    return http()


class McpSessions:
    """The worker's sessions, by server name."""

    def __init__(self, servers: dict[str, McpServerConfig]) -> None:
        self._servers = servers
        self._live: dict[str, _Live] = {}
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

    async def session(self, name: str) -> ClientSession:
        """The live session for ``name``, starting (or restarting) it if needed."""
        live = self._live.get(name)
        if live is not None and not live.dead.is_set():
            return live.session
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            live = self._live.get(name)
            if live is None or live.dead.is_set():
                live = await self._start(name)
                self._live[name] = live
            return live.session

    def mark_dead(self, name: str) -> None:
        """Forget a session that failed mid-call (the next call starts a new one)."""
        live = self._live.pop(name, None)
        if live is not None:
            live.dead.set()
            live.stop.set()

    async def _start(self, name: str) -> _Live:
        cfg = self.config(name)
        ready: asyncio.Future[ClientSession] = asyncio.get_running_loop().create_future()
        stop = asyncio.Event()
        dead = asyncio.Event()

        async def own() -> None:
            try:
                async with _transport(name, cfg) as (read, write), ClientSession(read, write) as session:
                    await session.initialize()
                    ready.set_result(session)
                    await stop.wait()
            except BaseException as e:
                if not ready.done():
                    ready.set_exception(e)
                elif not isinstance(e, asyncio.CancelledError):
                    log.warning("MCP server %s: session ended (%s)", name, type(e).__name__)
            finally:
                dead.set()

        owner = asyncio.create_task(own(), name=f"mcp-{name}")
        try:
            session = await asyncio.wait_for(asyncio.shield(ready), START_TIMEOUT_S)
        except ServerUnavailable:
            raise
        except TimeoutError:
            owner.cancel()
            raise ServerUnavailable(
                f"MCP server '{name}' did not answer initialize within {START_TIMEOUT_S:g}s"
            ) from None
        except Exception as e:
            raise ServerUnavailable(f"MCP server '{name}' could not be started: {_describe(e, cfg)}") from None
        self.starts[name] = self.starts.get(name, 0) + 1
        log.info("MCP server %s: session %d started", name, self.starts[name])
        return _Live(session, stop, owner, dead)

    async def close(self) -> None:
        """End every session (a worker calls this on shutdown): stdio servers are stopped."""
        lives = list(self._live.values())
        self._live.clear()
        for live in lives:
            live.stop.set()
        for live in lives:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(live.owner, 10)


def _describe(e: BaseException, cfg: McpServerConfig) -> str:
    if isinstance(e, FileNotFoundError):
        return f"command '{cfg.command}' not found: install it on this worker, or fix [mcp.<name>] command"
    if isinstance(e, BaseExceptionGroup):
        return "; ".join(_describe(x, cfg) for x in e.exceptions)
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return f"{type(e).__name__}: {text[:200]}"
