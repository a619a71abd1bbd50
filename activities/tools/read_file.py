"""The read_file tool: one text file from the workspace, at most ``[tools.read_file] max_bytes`` of it.

Only that many bytes are ever read, so a 10 GB log costs the worker no more than a small file; a
refusal lists the folder (``workspace.existing_file``), so the model's next try can name a file that exists.
"""

from __future__ import annotations

import asyncio

from stakeflow.activities.tools.context import ToolContext
from stakeflow.activities.tools.workspace import existing_file, resolve_workspace
from stakeflow.agents.tools import ReadFileArgs
from stakeflow.agents.types import ToolResult
from stakeflow.core.errors import ToolError


async def execute(args: ReadFileArgs, ctx: ToolContext) -> ToolResult:
    """Run ``read_file``; file work blocks, so in a thread: the worker's event loop stays free."""
    return await asyncio.to_thread(_read_file, ctx.workspace, args, ctx.config.read_file.max_bytes)


def _read_file(workspace: str, args: ReadFileArgs, limit: int) -> ToolResult:
    target = existing_file(resolve_workspace(workspace), args.path)
    try:
        with target.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise ToolError(f"cannot read '{args.path}': {e.strerror}") from None
    text = data[:limit].decode("utf-8", errors="replace")
    if len(data) <= limit:
        return ToolResult(output=text)
    note = (
        f"\n[truncated: showing the first {limit} of {target.stat().st_size} bytes; "
        "raise [tools.read_file] max_bytes in stakeflow.toml to read more]"
    )
    return ToolResult(output=text + note, truncated=True)
