"""The workspace: the one folder a run's file tools may touch.

Every tool that names a file goes through here, so "inside the workspace" means the same thing for
reading, writing and querying: real paths, with every symbolic link followed, under the
workspace's real path.
"""

from __future__ import annotations

from pathlib import Path

from stakeflow.core.errors import ToolError


def resolve_workspace(workspace: str) -> Path:
    """The real path of the run's workspace folder; refuses a run that has none or a folder that is missing."""
    if not workspace.strip():
        raise ToolError("this run has no workspace folder, so file tools cannot run: start the run with a workspace")
    ws = Path(workspace).resolve()
    if not ws.is_dir():
        raise ToolError(f"the workspace {ws} is not a folder: create it (mkdir -p {ws}) or use another workspace")
    return ws


def confine(ws: Path, path: str) -> Path:
    """The real path of ``path`` inside the workspace; refuses '..', absolute paths and symlinks out."""
    if not path.strip():
        raise ToolError("the path is empty: give a path relative to the workspace, e.g. notes.txt")
    if Path(path).is_absolute():
        raise ToolError(f"'{path}' is an absolute path: give a path relative to the workspace, e.g. notes.txt")
    try:
        # resolve() follows every symlink that exists, including those in parent folders.
        target = (ws / path).resolve()
    except (OSError, ValueError) as e:
        raise ToolError(f"'{path}' is not a usable path: {e}") from None
    if not target.is_relative_to(ws):
        raise ToolError(
            f"'{path}' leads outside the workspace (through '..' or a symbolic link): give a path inside the workspace"
        )
    return target
