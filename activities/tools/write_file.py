"""The write_file tool: write or append inside the workspace, exactly once per idempotency key.

Its side effect is why it is here and not just a file write: Temporal may run the same call twice
(a retry after a lost completion, on this host or another; an attempt that stalled past its timeout
and wakes up after its retry ran), and other runs may write the same file meanwhile (webhook runs
share the default workspace). So, for each call, with the file's lock held (``file_lock.py``):

1. settle the last write on this file that may not have finished: its *intent* (key, offset, size and
   hash of what it writes) is recorded before it writes, so whoever holds the lock next tells
   exactly whether those bytes landed (nobody else could write in between) and records that
   call "done" if they did;
2. look the key up in the ledger (``ledger.py``, in the workspace): "done" replays the recorded
   result and writes nothing;
3. record this call's intent, write (appends with ``O_APPEND``), record "done", clear the intent.

Bytes are never cut away: an append that has to be redone is appended again, after whatever others
appended since. The check is exact rather than a search for the same bytes further on, so two runs
that append the same line both get it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from stakeflow.activities.tools.context import ToolContext
from stakeflow.activities.tools.ledger import Ledger, workspace_ledger, write_atomically
from stakeflow.activities.tools.workspace import confine, lock_path, resolve_workspace
from stakeflow.agents.tools import WriteFileArgs
from stakeflow.agents.types import ToolResult
from stakeflow.core.errors import ToolError
from stakeflow.stores.file_lock import exclusive

log = logging.getLogger("stakeflow.tools")


async def execute(args: WriteFileArgs, ctx: ToolContext) -> ToolResult:
    """Run ``write_file``; file work blocks, so in a thread: the worker's event loop stays free."""
    cancelled = threading.Event()
    try:
        return await asyncio.to_thread(_write_file, ctx, args, cancelled)
    except asyncio.CancelledError:
        # A cancelled attempt (its heartbeat timed out, the worker is stopping) stops waiting for
        # the lock; one that is already writing finishes, and the ledger keeps that exact-once.
        cancelled.set()
        raise


def _write_file(ctx: ToolContext, args: WriteFileArgs, cancelled: threading.Event) -> ToolResult:
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
    ws = resolve_workspace(ctx.workspace)
    target = confine(ws, args.path)
    if target.is_dir():
        raise ToolError(f"'{args.path}' is a folder: give a file path")
    relative = target.relative_to(ws).as_posix()
    facts = {
        "key": key,
        "tool": "write_file",
        "path": relative,  # relative: hosts may mount the workspace at different paths
        "append": args.append,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    ledger = Ledger(workspace_ledger(ws), key, ctx.legacy_ledger_dir)
    lock = lock_path(ws, relative)
    intent = lock.with_suffix(".intent.json")
    with exclusive(lock, cancelled=cancelled):
        _settle(intent, target, workspace_ledger(ws))
        entry = ledger.read() or _from_legacy(ledger.read_legacy(), target, relative)
        if entry is not None and any(entry.get(k) != v for k, v in facts.items()):
            raise ToolError(
                f"idempotency key '{key}' was already used for a different write "
                f"({entry.get('path')}): every write needs its own key"
            )
        if entry is not None and entry.get("status") == "done":
            log.info(
                "write_file %s: already done (by an earlier attempt, maybe on another host); not writing again", key
            )
            return ToolResult.model_validate(entry["result"]).model_copy(update={"replayed": True})
        if entry is not None and "original_size" in entry:
            # The previous release's "pending" append: done if it landed where that release recorded.
            original = int(entry["original_size"])
            if _appended_at(target, original, facts):
                return _done(ledger, facts, _appended(args.path, len(data), original + len(data)))
        return _write(ledger, facts, intent, target, args, data)


def _write(
    ledger: Ledger, facts: dict[str, Any], intent: Path, target: Path, args: WriteFileArgs, data: bytes
) -> ToolResult:
    """Record the intent, write, record "done" (the file's lock is held)."""
    offset = _size(target) if args.append else 0
    planned = _appended(args.path, len(data), offset + len(data)) if args.append else _replaced(args.path, len(data))
    write_atomically(intent, json.dumps({**facts, "offset": offset, "result": planned.model_dump()}).encode("utf-8"))
    try:
        if args.append:
            result = _appended(args.path, len(data), _append(target, data))
        else:
            # Replacing is idempotent in itself; the intent still matters, so a later writer knows
            # whether this call's content is in the file before it changes the file again.
            write_atomically(target, data)
            result = planned
    except OSError as e:
        intent.unlink(missing_ok=True)  # this attempt knows it did not finish: nothing to settle
        raise ToolError(f"cannot write '{args.path}': {e.strerror}") from None
    return _done(ledger, facts, result, intent)


def _settle(intent_path: Path, target: Path, ledger_folder: Path) -> None:
    """Decide whether the file's last recorded intent landed, and record it "done" if it did.

    Whoever holds the lock next does this (a retry of that call, or another writer), before anything
    else changes the file: only then is "are those bytes at that offset" an exact question.
    """
    try:
        intent = json.loads(intent_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return
    other = Ledger(ledger_folder, intent["key"])
    if other.read() is None:
        offset = int(intent["offset"])
        landed = _appended_at(target, offset, intent) if intent["append"] else _holds(target, intent)
        if landed:
            facts = {k: intent[k] for k in ("key", "tool", "path", "append", "bytes", "sha256")}
            other.record({**facts, "status": "done", "result": intent["result"]})
    intent_path.unlink(missing_ok=True)


def _done(ledger: Ledger, facts: dict[str, Any], result: ToolResult, intent: Path | None = None) -> ToolResult:
    ledger.record({**facts, "status": "done", "result": result.model_dump()})
    if intent is not None:
        intent.unlink(missing_ok=True)
    return result


def _from_legacy(entry: dict[str, Any] | None, target: Path, relative: str) -> dict[str, Any] | None:
    """The previous release's record (absolute path of this host, "original_size" for a pending append)."""
    if entry is None:
        return None
    if entry.get("path") == str(target):
        entry = {**entry, "path": relative}
    return entry


def _append(target: Path, data: bytes) -> int:
    """Append with O_APPEND (after whatever is there now) and fsync; returns the file's size after it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        return os.lseek(fd, 0, os.SEEK_CUR)
    finally:
        os.close(fd)


def _appended_at(target: Path, offset: int, facts: dict[str, Any]) -> bool:
    """True when the file holds exactly the described bytes at ``offset``."""
    size = int(facts["bytes"])
    try:
        with target.open("rb") as f:
            f.seek(offset)
            found = f.read(size)
    except FileNotFoundError:
        return False
    return len(found) == size and hashlib.sha256(found).hexdigest() == facts["sha256"]


def _holds(target: Path, facts: dict[str, Any]) -> bool:
    """True when the file's whole content is the described bytes."""
    return _size(target) == int(facts["bytes"]) and _appended_at(target, 0, facts)


def _size(target: Path) -> int:
    try:
        return target.stat().st_size
    except FileNotFoundError:
        return 0


def _appended(path: str, n: int, size: int) -> ToolResult:
    return ToolResult(output=f"appended {n} bytes to {path} (now {size} bytes)")


def _replaced(path: str, n: int) -> ToolResult:
    return ToolResult(output=f"wrote {n} bytes to {path}")
