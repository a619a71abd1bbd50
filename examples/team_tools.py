"""Example: a team's own Python functions as stakeflow tools (see README, "Bring your own tools")."""

from __future__ import annotations

from stakeflow.tool import Workspace, WorkspaceFile, tool


@tool(risk="read_only")
def word_count(path: WorkspaceFile, workspace: Workspace) -> str:
    """Count the words of a text file in the workspace."""
    return f"{path} has {len((workspace / path).read_text(encoding='utf-8').split())} words"
