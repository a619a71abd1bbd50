"""Which tools a run may use, from names and globs: built-ins now, MCP servers' and Python tools' when it plans.

A pattern is a built-in tool's name or glob (``read_file``, ``*``), an MCP server's tool or glob
(``git.git_status``, ``git.*``; the server must be configured), or, when Python tools are configured, a
Python tool's name or glob. The edge resolves what it can without starting anything: built-in names are
checked now; MCP and Python patterns become toolsets the run describes where they run (an activity, so
the catalogue is recorded in the run's history), and a name that matches nothing there fails the run
at its start, naming what is available.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from stakeflow.agents.tools import CATALOGUE
from stakeflow.agents.types import ToolsetRef
from stakeflow.config._settings import Settings
from stakeflow.core.errors import InputError

SEPARATOR = "."


@dataclass
class ResolvedTools:
    builtins: list[str] = field(default_factory=list)
    toolsets: list[ToolsetRef] = field(default_factory=list)


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def default_patterns(settings: Settings) -> list[str]:
    """``[tools] enabled``, else every built-in, every MCP server's tools and every Python tool."""
    if settings.tools.enabled is not None:
        return list(settings.tools.enabled)
    patterns = sorted(CATALOGUE) + [f"{name}{SEPARATOR}*" for name in sorted(settings.mcp)]
    if settings.tools.python:
        patterns.append("python:*")
    return patterns


def resolve(
    settings: Settings, patterns: list[str] | None, *, where: str = "--tools", distrust: str = ""
) -> ResolvedTools:
    """The built-in tools and the toolsets ``patterns`` (None = the default set) name; InputError otherwise.

    ``distrust``: why no MCP server's annotations are to be believed in this run (the agent's policy), or "".
    """
    chosen = default_patterns(settings) if patterns is None else patterns
    allowed = default_patterns(settings)
    resolved = ResolvedTools()
    mcp: dict[str, list[str]] = {}
    python: list[str] = []
    for pattern in chosen:
        if pattern == "*":  # everything there is
            resolved.builtins = sorted(CATALOGUE)
            mcp.update({server: ["*"] for server in settings.mcp})
            python += ["*"] if settings.tools.python else []
            continue
        if pattern.startswith("python:"):
            python.append(pattern.removeprefix("python:"))
            continue
        server, sep, tool = pattern.partition(SEPARATOR)
        if sep:
            if server not in settings.mcp:
                known = ", ".join(sorted(settings.mcp)) or "none"
                raise InputError(
                    f"unknown MCP server '{server}' in tool '{pattern}' ({where}): configure [mcp.{server}] in "
                    f"{settings.config_path} (configured servers: {known})"
                )
            mcp.setdefault(server, []).append(tool or "*")
            continue
        builtins = [name for name in sorted(CATALOGUE) if fnmatchcase(name, pattern)]
        resolved.builtins += [b for b in builtins if b not in resolved.builtins]
        if settings.tools.python and (_is_glob(pattern) or not builtins):
            python.append(pattern)  # checked when the run describes the Python tools
        elif not builtins:
            known = ", ".join([*sorted(CATALOGUE), *(f"{s}.*" for s in sorted(settings.mcp))])
            raise InputError(f"unknown tool '{pattern}' ({where}): known tools are {known}")
    _check_enabled(settings, chosen, allowed, patterns is not None)
    for server, tools in mcp.items():
        cfg = settings.mcp[server]
        why = "" if cfg.trust_annotations else f"[mcp.{server}] trust_annotations = false"
        resolved.toolsets.append(
            ToolsetRef(
                kind="mcp",
                name=server,
                task_queue=cfg.task_queue or "",
                patterns=sorted(set(tools)),
                required=cfg.on_unavailable == "fail",
                trust_annotations=not (why or distrust),
                distrusted_by=why or distrust,
            )
        )
    if python:
        resolved.toolsets.append(ToolsetRef(kind="python", patterns=sorted(set(python))))
    return resolved


def _check_enabled(settings: Settings, chosen: list[str], allowed: list[str], explicit: bool) -> None:
    """A tool the run asks for must be one ``[tools] enabled`` allows (when that list is given)."""
    if not explicit or settings.tools.enabled is None:
        return
    for pattern in chosen:
        if not any(pattern == a or fnmatchcase(pattern, a) for a in allowed):
            raise InputError(f"tool '{pattern}' is disabled in {settings.config_path} [tools] enabled")
