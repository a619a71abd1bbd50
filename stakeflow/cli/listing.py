"""The catalogue as a person sees it: every tool a run could use, with its risk, open-world flag and where
each came from; and the named agents. What `stakeflow tools` and `stakeflow agents` print.

MCP servers are described by starting (stdio) or calling (HTTP) them here, the same way a worker does;
a server that cannot be reached is listed as such, with why, instead of failing the whole listing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from stakeflow.activities.mcp.toolbox import McpToolbox
from stakeflow.activities.python_tools import PythonToolbox
from stakeflow.activities.python_tools import load as load_python_tools
from stakeflow.agents.tools import CATALOGUE
from stakeflow.agents.types import ToolsetRef, ToolsetResult, ToolSpecView
from stakeflow.config import Settings
from stakeflow.config import resolve_tools as resolve


@dataclass
class Listing:
    tools: list[ToolSpecView] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # toolsets that could not be described, and why


async def list_tools(settings: Settings, agent: str | None = None) -> Listing:
    """The tools a run (of ``agent``, if given) may use, described as a worker here would describe them."""
    from stakeflow.services.runs import agent_config, distrust_of

    named = agent_config(settings, agent)
    resolved = resolve(
        settings,
        named.tools if named else None,
        where=f"agent {agent}" if agent else "[tools]",
        distrust=distrust_of(named, agent),
    )
    listing = Listing(
        tools=[
            CATALOGUE[n]
            .view()
            .model_copy(
                update={
                    "risk_from": "built-in",
                    "private": n in settings.policy.private_tools,
                }
            )
            for n in resolved.builtins
        ]
    )
    mcp = McpToolbox(settings.mcp) if any(t.kind == "mcp" for t in resolved.toolsets) else None
    python = PythonToolbox(load_python_tools(settings.tools.python)) if settings.tools.python else None

    async def described(ref: ToolsetRef) -> ToolsetResult:
        if ref.kind == "python":
            return python.describe(ref) if python is not None else ToolsetResult(error="no [tools] python")
        assert mcp is not None
        return await mcp.describe(ref)

    try:  # all at once: a hanging server costs its own timeout, not one after another
        results = await asyncio.gather(*(described(ref) for ref in resolved.toolsets))
    finally:
        if mcp is not None:
            await mcp.close()
    for ref, found in zip(resolved.toolsets, results, strict=True):
        where = f"MCP server {ref.name}" if ref.kind == "mcp" else "Python tools"
        if found.error:
            listing.problems.append(f"{where}: {found.error}")
        listing.problems += [f"{where}: not offered: {why}" for why in found.skipped]
        listing.tools += found.tools
    return listing


def tools_report(settings: Settings, agent: str | None = None) -> Listing:
    return asyncio.run(list_tools(settings, agent))


def tool_row(view: ToolSpecView) -> dict[str, object]:
    return {
        "name": view.name,
        "risk": view.risk,
        "risk_from": view.risk_from or "built-in",
        "open_world": view.open_world,
        "idempotent": view.idempotent,
        "private": view.private,
        "source": view.source if view.source != "mcp" else f"mcp:{view.server}",
        "task_queue": view.task_queue or "(tools queue)",
        "description": view.description,
    }
