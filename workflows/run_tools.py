"""The tools of a run: the built-ins it started with, those its MCP servers and Python tools describe when it
plans (recorded, so a replay sees the same catalogue), and each call as an activity.

A mixin of AgentTaskWorkflow; it uses the workflow's ``_req``, ``_progress`` and ``_sensitivity``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from temporalio import workflow
from temporalio.exceptions import ActivityError, CancelledError

with workflow.unsafe.imports_passed_through():
    from stakeflow.agents.types import ToolResult, ToolSpecView
    from stakeflow.workflows.calls import ToolMayHaveActed, describe_tools, run_tool
    from stakeflow.workflows.failures import StepFailure, cause_text

if TYPE_CHECKING:
    from stakeflow.agents.types import Progress, Sensitivity, TaskRequest


class RunTools:
    """Which tools the run may call, by name, and calling one."""

    _req: TaskRequest
    _progress: Progress
    _sensitivity: Sensitivity

    def __init__(self) -> None:
        self._specs: dict[str, ToolSpecView] = {}
        self._allowed: list[str] = []  # the run's tools: built-ins, then those described when it plans
        self._described: list[ToolSpecView] = []

    async def _describe_toolsets(self) -> None:
        """The tools of each MCP server and of the team's Python tools, described where they run (recorded)."""
        for ref in self._req.toolsets:
            what = f"MCP server '{ref.name}'" if ref.kind == "mcp" else "the Python tools"
            found = await describe_tools(self._req, ref)
            if found.error is None and not found.tools:
                found.error = f"no tool matches {', '.join(ref.patterns)}"
            if found.error is not None:
                if ref.required:  # a name it does not have is the run's mistake, not the server's absence
                    raise StepFailure(found.error if found.missing else f"{what} is unavailable: {found.error}")
                self._progress.notices.append(f"went on without {what}'s tools: {found.error}")
                continue
            self._add_tools(found.tools)

    def _add_tools(self, views: list[ToolSpecView]) -> None:
        for view in views:
            self._specs[view.name] = view
            if view.name not in self._allowed:
                self._allowed.append(view.name)
            if view not in self._described:
                self._described.append(view)

    def _private_egress(self, spec: ToolSpecView | None) -> bool:
        """Calling ``spec`` now could carry private data out: the run is private and the tool open-world."""
        return self._sensitivity == "private" and spec is not None and spec.open_world

    def _tool_views(self, names: list[str]) -> list[ToolSpecView]:
        return [self._specs[n] for n in names if n in self._specs]

    async def _run_tool(self, index: int, n: int, tool: str, args: dict, label: str, round: int = 1) -> ToolResult:
        try:
            return await run_tool(self._req, index, n, self._specs.get(tool), tool, args, label, round)
        except ToolMayHaveActed as e:
            return ToolResult(tool=tool, ok=False, error=str(e))
        except ActivityError as e:
            if isinstance(e.cause, CancelledError):
                raise
            raise StepFailure(f"{label} tool {tool} failed: {cause_text(e)}") from None
