"""``GET /runs/<id>/events``: a run's events (agents/types/events.py) as Server-Sent Events, as they happen.

Each event is ``id: <offset>``, ``event: <kind>``, ``data: <the event as JSON>``. A client that reconnects sends the
last id it saw as ``Last-Event-ID`` (browsers' EventSource does it by itself) and gets what came after it, nothing
twice; one that connects late, or without it, gets the run's events from the start. The stream ends after ``done``.
A comment line every ``KEEPALIVE_S`` keeps proxies from closing a quiet stream (a step waiting for approval).

Each open stream polls the run's worker by query (services/runs/_events.py): at most ``MAX_OPEN`` per server
process, so a token holder cannot turn the server into a load on the workers; the next gets 429 until one ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

from starlette.responses import StreamingResponse
from temporalio.client import Client

from stakeflow.agents.types import RunEvent
from stakeflow.services import runs
from stakeflow.webhooks.refused import Refused

KEEPALIVE_S = 15.0
MAX_OPEN = 32
_open = 0  # streams open in this process (one event loop: no lock needed)


def first_offset(last_event_id: str | None) -> int:
    """Where a stream starts: after ``Last-Event-ID``, or at 0; 400 naming the fix for an id that is no offset."""
    if last_event_id is None or not last_event_id.strip():
        return 0
    value = last_event_id.strip()
    if not value.isdigit():
        raise Refused(400, f"Last-Event-ID '{value[:40]}' is not an event id: send the id of the last event received")
    return int(value) + 1


def sse(event: RunEvent) -> str:
    """One event: its fields that are not their defaults (``kind`` and ``offset`` always) as the data."""
    data = {"kind": event.kind, **event.model_dump(exclude_defaults=True, exclude={"kind", "offset"})}
    return f"id: {event.offset}\nevent: {event.kind}\ndata: {json.dumps({**data, 'offset': event.offset})}\n\n"


def event_stream(client: Client, workflow_id: str, from_offset: int) -> StreamingResponse:
    """The response; 429 when ``MAX_OPEN`` streams are open already."""
    if _open >= MAX_OPEN:
        raise Refused(429, f"{MAX_OPEN} event streams are open on this server: retry later", {"Retry-After": "5"})
    return StreamingResponse(
        _lines(client, workflow_id, from_offset),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _lines(client: Client, workflow_id: str, from_offset: int) -> AsyncIterator[str]:
    global _open
    queue: asyncio.Queue[RunEvent | None] = asyncio.Queue(maxsize=256)

    async def read() -> None:
        try:
            async for event in runs.run_events(client, workflow_id, from_offset):
                await queue.put(event)
        finally:
            await queue.put(None)

    _open += 1
    reader = asyncio.create_task(read())
    try:
        yield ": stakeflow run events\n\n"  # headers and a first byte at once: the client knows it is connected
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            if event is None:
                break
            yield sse(event)
    finally:
        _open -= 1
        reader.cancel()
        with contextlib.suppress(BaseException):
            await reader
