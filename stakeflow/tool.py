"""Declare a team's own Python function as a stakeflow tool.

    from stakeflow.tool import Workspace, WorkspaceFile, tool

    @tool(risk="read_only")
    def word_count(path: WorkspaceFile, workspace: Workspace) -> str:
        '''Count the words of a text file in the workspace.'''
        return str(len((workspace / path).read_text().split()))

and list it in stakeflow.toml: ``[tools] python = ["team_tools:word_count"]`` (or as an entry point in the
``stakeflow.tools`` group). Its typed parameters become the tool's arguments (a parameter typed
``Workspace`` receives the run's workspace folder instead; one typed ``WorkspaceFile`` can only name an
existing workspace file), its docstring is what the model reads, and
its declared risk routes it like any built-in tool: ``read_only``, ``side_effect`` (high stakes, waits for
approval), ``irreversible``. ``open_world=True`` marks a function that reaches outside (a private run's
call then needs approval); ``idempotent=False`` one that must never be retried once it may have acted.
Functions may be ``async``. What they return is shown to the model as text (``str``, or JSON).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, TypeVar, get_args

from stakeflow.agents.types import Risk  # the catalogue's risks: a Python tool routes like a built-in one

RISKS: tuple[str, ...] = get_args(Risk)
WORKSPACE_MARK = "stakeflow:workspace"
WORKSPACE_FILE_MARK = "stakeflow:workspace-file"
Workspace = Annotated[Path, WORKSPACE_MARK]  # a parameter typed so receives the run's workspace folder
# A parameter typed so is the path of an existing workspace file (relative): the model is offered the
# workspace's files as an enum, so even a small model names a real one.
WorkspaceFile = Annotated[str, WORKSPACE_FILE_MARK]

F = TypeVar("F", bound=Callable[..., object])


@dataclass(frozen=True)
class ToolDeclaration:
    risk: Risk
    open_world: bool = False
    idempotent: bool = True
    private: bool = False
    name: str | None = None
    timeout_s: float = 60.0


def tool(
    *,
    risk: Risk,
    open_world: bool = False,
    idempotent: bool = True,
    private: bool = False,
    name: str | None = None,
    timeout_s: float = 60.0,
) -> Callable[[F], F]:
    """Mark ``fn`` as a stakeflow tool with its declared risk (see the module docstring)."""
    if risk not in RISKS:
        raise ValueError(f"risk must be one of {', '.join(RISKS)}, not {risk!r}")

    def mark(fn: F) -> F:
        fn.__stakeflow_tool__ = ToolDeclaration(risk, open_world, idempotent, private, name, timeout_s)  # type: ignore[attr-defined]  # a marker attribute on the user's function
        return fn

    return mark
