"""The write_file tool: write or append inside the workspace, exactly once per idempotency key.

Its side effect is why it is here and not just a file write: Temporal may run the same call twice,
so each call is recorded in the ledger (``activities/tools/ledger.py``) and a second delivery
replays the first one's result instead of writing again.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

from activities.tools.context import ToolContext
from activities.tools.ledger import Ledger, write_atomically
from activities.tools.workspace import confine, resolve_workspace
from agents.tools import WriteFileArgs
from agents.types import ToolResult
from stakeflow.core.errors import ToolError


async def execute(args: WriteFileArgs, ctx: ToolContext) -> ToolResult:
    """Run ``write_file``; file work blocks, so in a thread: the worker's event loop stays free."""
    return await asyncio.to_thread(_write_file, ctx, args)


def _write_file(ctx: ToolContext, args: WriteFileArgs) -> ToolResult:
    key = ctx.idempotency_key
    if not key:
        raise ToolError(
            "write_file needs an idempotency key so a retry cannot write twice: "
            "the workflow must set ToolRequest.idempotency_key"
        )
    data = args.content.encode("utf-8")
    limit = ctx.config.write_file.max_bytes
    if len(data) > limit:
        raise ToolError(
            f"content is {len(data)} bytes, over the {limit}-byte limit: write less, "
            "or raise [tools.write_file] max_bytes in stakeflow.toml"
        )
    target = confine(resolve_workspace(ctx.workspace), args.path)
    if target.is_dir():
        raise ToolError(f"'{args.path}' is a folder: give a file path")
    ledger = Ledger(ctx.ledger_dir, key)
    facts = {
        "key": key,
        "tool": "write_file",
        "path": str(target),
        "append": args.append,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    entry = ledger.read()
    if entry is not None and any(entry.get(k) != v for k, v in facts.items()):
        raise ToolError(
            f"idempotency key '{key}' was already used for a different write "
            f"({entry.get('path')}): every write needs its own key"
        )
    if entry is not None and entry.get("status") == "done":
        return ToolResult.model_validate(entry["result"]).model_copy(update={"replayed": True})
    if args.append and entry is None:
        # Recorded before the append: see _append_from for why.
        original = target.stat().st_size if target.exists() else 0
        ledger.record({**facts, "status": "pending", "original_size": original})
    elif args.append:
        original = int(entry["original_size"])
    try:
        if args.append:
            size = _append_from(target, data, original)
            output = f"appended {len(data)} bytes to {args.path} (now {size} bytes)"
        else:
            # Replacing is idempotent in itself: a crash before the ledger says "done" only
            # means the retry writes the same bytes again.
            write_atomically(target, data)
            output = f"wrote {len(data)} bytes to {args.path}"
    except OSError as e:
        raise ToolError(f"cannot write '{args.path}': {e.strerror}") from None
    result = ToolResult(output=output)
    ledger.record({**facts, "status": "done", "result": result.model_dump()})
    return result


def _append_from(target: Path, data: bytes, original: int) -> int:
    """Append ``data`` to the file as it was at ``original`` bytes; returns the new size.

    Appending is not idempotent, and a crash can fall between the append and the ledger's
    "done" record. So the ledger first records "pending" with the file's original size; a
    retry that finds it cuts the file back to that size and appends again, and the bytes
    land exactly once whether the crash came before or after the append. What this cannot
    undo is another writer appending to the same file in that window.
    """
    if target.exists() and target.stat().st_size > original:
        os.truncate(target, original)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("ab") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
        return f.tell()
