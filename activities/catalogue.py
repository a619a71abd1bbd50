"""The describe_tools activity: the tools an MCP server or the team's Python tools offer, for one run.

It runs where those tools run (the server's task queue), when the run plans; its result is recorded in the
run's history, so a replay or a retry sees the same catalogue even if the server's tools change meanwhile.
A server that cannot be reached is an answer (``error``), not an exception: the workflow decides, by the
server's ``on_unavailable``, whether the run fails naming it or goes on without its tools.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import activity

from stakeflow.activities.mcp.toolbox import McpToolbox
from stakeflow.activities.python_tools import PythonToolbox
from stakeflow.agents.types import ToolsetRequest, ToolsetResult
from stakeflow.core.contracts import DESCRIBE_TOOLS, QueueRole


class CatalogueActivities:
    """Bound to the worker's MCP sessions and Python tools."""

    def __init__(self, mcp: McpToolbox | None, python: PythonToolbox | None) -> None:
        self._mcp = mcp
        self._python = python

    def activities(self, role: QueueRole) -> list[Callable[..., Any]]:
        """``describe_tools`` where the tools run: the tools queue (and each MCP server's own, a tools queue too)."""
        return [self.describe_tools] if role == "tools" else []

    @activity.defn(name=DESCRIBE_TOOLS)
    async def describe_tools(self, req: ToolsetRequest) -> ToolsetResult:
        ref = req.toolset
        if ref.kind == "python":
            if self._python is None:
                return ToolsetResult(error="no Python tools are configured on this worker ([tools] python)")
            return self._python.describe(ref)
        if self._mcp is None:
            return ToolsetResult(error=f"no MCP servers are configured on this worker (expected [mcp.{ref.name}])")
        return await self._mcp.describe(ref)
