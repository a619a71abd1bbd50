"""The webhook server's Temporal side: one client, connected on first use, and the start of a
delivery's run.

A delivery's run is started by `tasks.start_run` like any other, but with ``join_running=False``
(id conflict policy FAIL; the reuse policy is REJECT_DUPLICATE for every run): Temporal's refusal of
a second start is how a redelivery is known (``duplicate: true``), with no local table and no race
between two concurrent redeliveries.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Awaitable, Callable

from temporalio.client import Client
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from agents.types import TaskRequest
from stakeflow import tasks
from stakeflow.core.errors import ServiceError
from stakeflow.settings import Settings
from stakeflow.webhooks.refused import Refused, unavailable

CONNECT_TIMEOUT_S = 5.0
RPC_TIMEOUT = timedelta(seconds=10)


class TemporalLink:
    """The server's one Temporal client: connected on first use, dropped after a failure."""

    def __init__(self, settings: Settings, connect: Callable[[Settings], Awaitable[Client]] | None = None) -> None:
        from stakeflow.connection import connect as default_connect

        self._settings = settings
        self._connect = connect or default_connect
        self._client: Client | None = None
        self._lock = asyncio.Lock()

    async def client(self) -> Client:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                try:
                    self._client = await asyncio.wait_for(self._connect(self._settings), CONNECT_TIMEOUT_S)
                except (ServiceError, asyncio.TimeoutError, OSError, RuntimeError):
                    raise unavailable(f"Temporal at {self._settings.address} is unreachable: retry later") from None
            return self._client

    def drop(self) -> None:
        self._client = None

    async def healthy(self) -> bool:
        try:
            client = await self.client()
            return await client.service_client.check_health(timeout=timedelta(seconds=2))
        except Refused:
            return False
        except (RPCError, RuntimeError, asyncio.TimeoutError):
            self.drop()
            return False


def is_unavailable(e: RPCError) -> bool:
    """True for the RPC failures that mean Temporal did not answer (a retry may succeed)."""
    return e.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED)


async def start_delivery(client: Client, settings: Settings, req: TaskRequest, workflow_id: str) -> tuple[str, bool]:
    """Start the run for a delivery; (run id, duplicate). Temporal's refusal marks a duplicate."""
    try:
        handle = await tasks.start_run(client, settings, req, workflow_id, join_running=False, rpc_timeout=RPC_TIMEOUT)
        return handle.result_run_id or "", False
    except WorkflowAlreadyStartedError as e:
        run_id = e.run_id
        if not run_id:
            run_id = (await client.get_workflow_handle(workflow_id).describe(rpc_timeout=RPC_TIMEOUT)).run_id
        return run_id, True
