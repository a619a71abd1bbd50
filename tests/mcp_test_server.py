"""A real MCP server for tests (fastmcp), over stdio or Streamable HTTP, that logs every call it receives.

    python tests/mcp_test_server.py stdio LOG
    python tests/mcp_test_server.py http LOG PORT
    python tests/mcp_test_server.py stdio-hanging-list LOG   # answers initialize, never tools/list

Tools, by their annotations:
- ``echo(text)``    read-only, closed world
- ``lookup(key)``   read-only, open world (reaches outside: a private run's call needs approval)
- ``send(text)``    not read-only, not destructive, open world, not idempotent
- ``note(text)``    NO annotations at all: the MCP defaults (destructive, open world) must apply
- ``broken()``      read-only; answers with isError
- ``crash(text)``   not read-only, not idempotent; exits the server process while the call is in flight
- ``huge_error(size)`` read-only, closed world; answers with an isError of ``size`` characters
- ``slow_store(text, seconds)`` not read-only, not destructive, idempotent, closed world; answers after ``seconds``

Each call is appended to LOG as one JSON line (tool, arguments), before it is answered: a test reads the
log to prove what did or did not reach the server.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

from fastmcp import FastMCP
from fastmcp.exceptions import ToolError
from fastmcp.server.middleware import Middleware

mode, log_path = sys.argv[1], sys.argv[2]
server = FastMCP("stakeflow-test")


def _log(tool: str, **args: object) -> None:
    with open(log_path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"tool": tool, "args": args}) + "\n")


class HangingList(Middleware):
    """A server that initializes, then never answers tools/list (it logs that it was asked)."""

    async def on_list_tools(self, context, call_next):
        with open(log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"tool": "tools/list", "at": time.time()}) + "\n")
        await asyncio.sleep(3600)


@server.tool(annotations={"readOnlyHint": True, "openWorldHint": False})
def echo(text: str) -> str:
    """Repeat the text back."""
    _log("echo", text=text)
    return f"echo: {text}"


@server.tool(annotations={"readOnlyHint": True, "openWorldHint": True})
def lookup(key: str) -> str:
    """Look a key up in an outside directory."""
    _log("lookup", key=key)
    return f"{key}: found"


@server.tool(annotations={"readOnlyHint": True, "openWorldHint": True})
def find(key: str) -> str:
    """Look a key up in an outside directory; an empty key is refused."""
    _log("find", key=key)
    if not key.strip():
        raise ToolError("give a key to look up")
    return f"{key}: found"


@server.tool(
    annotations={"readOnlyHint": False, "destructiveHint": False, "idempotentHint": False, "openWorldHint": True}
)
def send(text: str) -> str:
    """Send a message to the outside world."""
    _log("send", text=text)
    return "sent"


@server.tool
def note(text: str) -> str:
    """Write a note somewhere."""
    _log("note", text=text)
    return "noted"


@server.tool(annotations={"readOnlyHint": True})
def broken() -> str:
    """Always fails."""
    _log("broken")
    raise ToolError("the directory is down")


@server.tool(annotations={"readOnlyHint": False, "destructiveHint": False, "idempotentHint": False})
def crash(text: str) -> str:
    """Dies in the middle of the call, after it was received."""
    _log("crash", text=text)
    os._exit(3)


@server.tool(annotations={"readOnlyHint": True, "openWorldHint": False})
def huge_error(size: int) -> str:
    """Always fails, at length."""
    _log("huge_error", size=size)
    raise ToolError("x" * size)


@server.tool(
    annotations={"readOnlyHint": False, "destructiveHint": False, "idempotentHint": True, "openWorldHint": False}
)
async def slow_store(text: str, seconds: float) -> str:
    """Store a text, slowly."""
    _log("slow_store", text=text, seconds=seconds)
    await asyncio.sleep(seconds)
    return "stored"


if __name__ == "__main__":
    if mode == "stdio-hanging-list":
        server.add_middleware(HangingList())
    if mode == "http":
        server.run(transport="http", host="127.0.0.1", port=int(sys.argv[3]), show_banner=False)
    else:
        server.run(transport="stdio", show_banner=False)
