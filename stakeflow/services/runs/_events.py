"""A run's events as they happen (agents/types/events.py), read from its workflow stream, for the CLI, the webhook
server's ``GET /runs/<id>/events`` and ``Client.stream``.

The stream is ``temporalio.contrib.workflow_streams``'; this reads it with the library's poll *query*, not its
long-poll *update*: an update's result is written to the run's history, once per poll and per reader, so every
reader would copy the events into the history again (and a few readers of a long answer would grow it without
bound). A query writes nothing; the price is polling, every ``POLL_S`` while nothing is new. Offsets are the
stream's: they go on across continue-as-new, and a reader that gives the offset after the last event it saw
(``Last-Event-ID``) misses nothing and sees nothing twice. The query goes to the run's latest generation.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from datetime import timedelta

from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowQueryFailedError
from temporalio.contrib.workflow_streams import PollInput, PollResult
from temporalio.service import RPCError, RPCStatusCode

from stakeflow.agents.types import RunEvent, TaskResult
from stakeflow.core.contracts import EVENTS_TOPIC
from stakeflow.core.errors import InputError
from stakeflow.services.runs._find import _STATUS

# The library's poll query (and update): its protocol's name, as its workers register it.
STREAM_POLL = "__temporal_workflow_stream_poll"
POLL_S = 0.1  # between polls while nothing is new
CLOSED_CHECK_S = 2.0  # how often a quiet reader asks whether the run has ended without a "done" (terminated)
RETRY_S = 0.5  # after a query no worker answered (a worker restarting): the run is durable, so is the reader
QUERY_TIMEOUT = timedelta(seconds=10)


async def run_events(
    client: Client, workflow_id: str, from_offset: int = 0, *, poll_s: float = POLL_S
) -> AsyncIterator[RunEvent]:
    """The run's events from ``from_offset`` on, each with its ``offset``, until its ``done`` (for a run ended
    without one, terminated or timed out, a ``done`` with its status is made up here). InputError for a run that
    does not exist, or whose worker has no stream (a release before streams)."""
    handle = client.get_workflow_handle(workflow_id)
    converter = client.data_converter.payload_converter
    offset, quiet_since = from_offset, 0.0
    loop = asyncio.get_running_loop()
    while True:
        result = await _poll(client, workflow_id, offset)
        if result is None:
            await asyncio.sleep(RETRY_S)
            continue
        for item in result.items:
            payload = Payload()
            payload.ParseFromString(base64.b64decode(item.data))
            event = converter.from_payload(payload, RunEvent)
            event.offset = item.offset
            yield event
            if event.kind == "done":
                return
        offset = result.next_offset
        if result.items or result.more_ready:
            quiet_since = loop.time()
            continue
        if loop.time() - quiet_since >= CLOSED_CHECK_S:
            quiet_since = loop.time()
            try:
                described = (await handle.describe()).status
            except RPCError:  # Temporal restarting: ask again later
                await asyncio.sleep(poll_s)
                continue
            status = _STATUS.get(described, "running") if described else "running"
            if status != "running":
                last = await _poll(client, workflow_id, offset)  # what it published before it ended
                if last is not None and last.items:
                    continue
                yield await _ended(client, workflow_id, status, offset)
                return
        await asyncio.sleep(poll_s)


async def _poll(client: Client, workflow_id: str, offset: int) -> PollResult | None:
    """One read of the stream from ``offset``; None when no worker answered this time."""
    try:
        return await client.get_workflow_handle(workflow_id).query(
            STREAM_POLL,
            PollInput(topics=[EVENTS_TOPIC], from_offset=offset),
            result_type=PollResult,
            rpc_timeout=QUERY_TIMEOUT,
        )
    except WorkflowQueryFailedError as e:
        if "unknown queryType" in str(e) or STREAM_POLL in str(e):
            raise InputError(
                f"run '{workflow_id}' has no event stream: its worker predates streams (upgrade it and restart "
                f"`stakeflow worker`), or read its result with `stakeflow result {workflow_id} --wait`"
            ) from None
        return None
    except RPCError as e:
        if e.status == RPCStatusCode.NOT_FOUND:
            raise InputError(
                f"no run '{workflow_id}' in namespace {client.namespace}: check the id (`stakeflow list`)"
            ) from None
        return None  # Temporal or the run's worker restarting: asked again


async def _ended(client: Client, workflow_id: str, status: str, offset: int) -> RunEvent:
    """The ``done`` of a run that ended with nothing more to read: terminated or timed out (the workflow could not
    say it), or read from past its own ``done``. A completed run's carries its answer."""
    if status == "completed":
        result = await client.get_workflow_handle(workflow_id, result_type=TaskResult).result()
        return RunEvent(kind="done", status=status, text=result.answer, offset=offset)
    return RunEvent(kind="done", status=status, error=f"the run {status.replace('_', ' ')}", offset=offset)
