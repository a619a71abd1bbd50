"""A team's own Python functions as tools: loaded, checked and described at start-up, called by run_tool.

A function that cannot be imported, lacks type hints, or declares no risk is refused when the worker (or
`stakeflow tools`) starts, with the fix, rather than when a run first needs it. Side-effecting calls follow
the same exactly-once rule as write_file: the idempotency ledger records a call before it runs and its
output after, so a retry replays the output instead of acting again, and a retry that finds the call
started but not finished reports that it may have acted instead of guessing.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import inspect
import json
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from stakeflow.activities.python_tool_threads import DEFAULT_SIZE, ToolThreads, ToolTimedOut
from stakeflow.activities.tools.ledger import Ledger, workspace_ledger
from stakeflow.activities.tools.workspace import existing_file, resolve_workspace
from stakeflow.agents.types import ToolRequest, ToolResult, ToolsetRef, ToolsetResult, ToolSpecView
from stakeflow.core.errors import ConfigError
from stakeflow.tool import WORKSPACE_FILE_MARK, WORKSPACE_MARK, ToolDeclaration

ENTRY_POINT_GROUP = "stakeflow.tools"


@dataclass(frozen=True)
class PythonTool:
    name: str
    fn: Callable[..., Any]
    args_model: type[BaseModel]
    declaration: ToolDeclaration
    workspace_param: str | None
    description: str
    origin: str  # "package.module:function"
    file_args: tuple[str, ...] = ()  # parameters typed WorkspaceFile

    def view(self) -> ToolSpecView:
        d = self.declaration
        return ToolSpecView(
            name=self.name,
            description=self.description,
            risk=d.risk,
            args_schema=self.args_model.model_json_schema(),
            source="python",
            open_world=d.open_world,
            idempotent=d.idempotent,
            private=d.private,
            risk_from=f"declared in {self.origin}",
            timeout_s=d.timeout_s,
            file_args=list(self.file_args),
            reads=["*"] if self.file_args else [],
        )


def _import(spec: str) -> Callable[..., Any]:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"python tool '{spec}': write it as \"package.module:function\" in [tools] python")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(
            f"python tool '{spec}' cannot be imported ({e}): install its package in the worker's environment "
            "or fix the module path in [tools] python"
        ) from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ConfigError(f"python tool '{spec}': {module_name} has no function {attr}")
    return fn


def build(spec: str, fn: Callable[..., Any]) -> PythonTool:
    """Check ``fn`` and describe it as a tool; ConfigError naming the fix when it cannot be one."""
    declaration = getattr(fn, "__stakeflow_tool__", None)
    if not isinstance(declaration, ToolDeclaration):
        raise ConfigError(
            f"python tool '{spec}' declares no risk: decorate it with @stakeflow.tool.tool(risk=\"read_only\" | "
            '"side_effect" | "irreversible")'
        )
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as e:
        raise ConfigError(f"python tool '{spec}': its type hints do not resolve ({e})") from None
    fields: dict[str, Any] = {}
    workspace_param = None
    file_args: list[str] = []
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ConfigError(f"python tool '{spec}': *{param.name} cannot be a tool argument: name each argument")
        hint = hints.get(param.name)
        if hint is None:
            raise ConfigError(f"python tool '{spec}' lacks a type hint for '{param.name}': annotate every argument")
        if WORKSPACE_MARK in getattr(hint, "__metadata__", ()):
            workspace_param = param.name
            continue
        if WORKSPACE_FILE_MARK in getattr(hint, "__metadata__", ()):
            file_args.append(param.name)
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (hint, default)
    name = declaration.name or fn.__name__
    args_model = create_model(f"{name}_args", __config__=ConfigDict(extra="forbid"), **fields)
    description = inspect.getdoc(fn) or f"Call {name}."
    return PythonTool(name, fn, args_model, declaration, workspace_param, description, spec, tuple(file_args))


def load(specs: list[str]) -> dict[str, PythonTool]:
    """The configured functions plus those registered under the ``stakeflow.tools`` entry point group."""
    tools: dict[str, PythonTool] = {}
    found = [(spec, _import(spec)) for spec in specs]
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            found.append((ep.value, ep.load()))
        except Exception as e:
            raise ConfigError(
                f"entry point {ep.name} = {ep.value} ({ENTRY_POINT_GROUP}) cannot be loaded: {e}"
            ) from None
    for spec, fn in found:
        tool = build(spec, fn)
        if tool.name in tools and tools[tool.name].origin != spec:
            raise ConfigError(f"python tools {tools[tool.name].origin} and {spec} are both named '{tool.name}'")
        tools[tool.name] = tool
    return tools


class PythonToolbox:
    """The worker's Python tools: described for a run, called by run_tool (in their own threads, see
    ``python_tool_threads``: a hung tool never takes the threads the built-in tools need)."""

    def __init__(self, tools: dict[str, PythonTool], threads: int = DEFAULT_SIZE) -> None:
        self.tools = tools
        self.threads = ToolThreads(threads)

    def serves(self, name: str) -> bool:
        return name in self.tools

    def describe(self, ref: ToolsetRef) -> ToolsetResult:
        from fnmatch import fnmatchcase

        return ToolsetResult(
            tools=[t.view() for t in self.tools.values() if any(fnmatchcase(t.name, p) for p in ref.patterns)]
        )

    async def call(self, req: ToolRequest) -> ToolResult:
        tool = self.tools[req.tool]
        try:
            validated = tool.args_model.model_validate(req.args)
        except ValidationError as e:
            problems = "; ".join(f"'{'.'.join(map(str, x['loc'])) or 'arguments'}': {x['msg']}" for x in e.errors())
            return ToolResult(ok=False, error=f"invalid arguments for {tool.name}: {problems}")
        # Each argument as validated, not dumped: a parameter typed as a pydantic model receives that model.
        args = {name: getattr(validated, name) for name in tool.args_model.model_fields}
        if tool.file_args:
            # The same confinement as read_file's, whether or not the enum was offered: no '..', no link out.
            ws = await asyncio.to_thread(resolve_workspace, req.workspace)
            for name in tool.file_args:
                target = await asyncio.to_thread(existing_file, ws, args[name])
                args[name] = target.relative_to(ws).as_posix()
        if tool.workspace_param:
            args[tool.workspace_param] = Path(req.workspace)
        ledger = None
        if tool.declaration.risk != "read_only" and req.idempotency_key and req.workspace:
            ledger = Ledger(workspace_ledger(Path(req.workspace).resolve()), req.idempotency_key)
            entry = await asyncio.to_thread(ledger.read)
            if entry is not None and entry.get("status") == "done":
                return ToolResult(output=entry.get("output", ""), replayed=True)
            if entry is not None and not tool.declaration.idempotent:
                return ToolResult(
                    ok=False,
                    error=(
                        f"{tool.name} was started before under this call's key and did not finish; it is not "
                        "idempotent, so it may have acted and is not run again: check before asking for it again"
                    ),
                )
            await asyncio.to_thread(ledger.record, {"key": req.idempotency_key, "tool": tool.name, "status": "started"})
        try:
            value = await self.threads.run(tool.name, tool.fn, args, tool.declaration.timeout_s)
        except ToolTimedOut as e:
            return ToolResult(ok=False, error=str(e))
        except Exception as e:
            return ToolResult(ok=False, error=f"{tool.name} failed: {type(e).__name__}: {e}")
        output = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
        if ledger is not None:
            await asyncio.to_thread(
                ledger.record,
                {
                    "key": req.idempotency_key,
                    "tool": tool.name,
                    "status": "done",
                    "output": output,
                },
            )
        return ToolResult(output=output)
