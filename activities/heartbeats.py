"""Heartbeats around a long await inside an activity: ``call_model``'s model call and ``run_tool``'s tool call.

Without a beat, a worker that died mid-call is noticed only at the (minutes-long) start-to-close timeout, and a
call that outlived the heartbeat timeout without beating was retried by Temporal while it still ran (a slow
Python or MCP tool started five times).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from temporalio import activity

T = TypeVar("T")


async def heartbeating(call: Awaitable[T], every_s: float | None = None) -> T:
    """Await ``call``, heartbeating three times per heartbeat timeout (so one late beat never times a live call
    out; the SDK throttles what it sends), and at least every ``every_s`` when given. Outside an activity, in a
    local one (which cannot beat), or with nothing to beat for, ``call`` is awaited as it is."""
    info = activity.info() if activity.in_activity() else None
    if info is None or info.is_local:
        return await call
    beats = [t for t in (info.heartbeat_timeout.total_seconds() / 3 if info.heartbeat_timeout else None, every_s) if t]
    if not beats:
        return await call
    every = min(beats)
    task = asyncio.ensure_future(call)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=every)
            if done:
                return task.result()
            activity.heartbeat()
    finally:
        if not task.done():
            task.cancel()  # the attempt was cancelled: so is the call (write_file then stops waiting for its lock)
