"""The webhook server's Temporal side: one client, connected on first use, and the start of a
delivery's run.

A delivery's run is started by `runs.start_run` like any other, but with ``join_running=False``
(id conflict policy FAIL; the reuse policy is REJECT_DUPLICATE for every run): Temporal's refusal of
a second start is how a redelivery is known (``duplicate: true``), with no local table and no race
between two concurrent redeliveries.

The delivery id is not covered by any signature, so it cannot be what stops a replay: anyone holding
one signed body could send it again under a fresh id. Before the run, the server therefore claims a
*seal*: a workflow whose id derives from the signed bytes (``signatures.seal_id_for``) and whose memo
names the run it was claimed for. Claiming uses the same Temporal refusal, so it is atomic across any
number of server processes and survives their restarts, with no store of our own (a local file or
SQLite table would be one per host, and a shared database a new dependency):

- a seal claimed for another run means the same signed bytes came under another delivery id: the
  answer is that run's, as a duplicate, and nothing starts;
- a seal claimed for this very run is a redelivery (or a retry after a crash between seal and run):
  the run's start goes ahead and Temporal deduplicates it as before.

A seal never runs code: it is started with a start delay longer than its execution timeout, so no
workflow task is ever scheduled and no worker is needed. It stays open for twice the hook's
``timestamp_tolerance_s`` (a timestamp is accepted that far on either side of the server's clock, so a
body signed ahead of it stays fresh that long after it first arrives), then times out and, closed, still
refuses its id for the namespace's retention. A timestamped body is therefore recognised for as long as
it is fresh, whatever the retention; a GitHub-style body, which carries no timestamp, for that plus the
retention (at least a day; `temporal operator namespace update --retention` sets it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from stakeflow.agents.types import TaskRequest
from stakeflow.config import Settings
from stakeflow.core.contracts import Public
from stakeflow.core.errors import ConfigError, ServiceError
from stakeflow.services import runs
from stakeflow.webhooks.refused import Refused, unavailable

log = logging.getLogger("stakeflow.webhooks")
CONNECT_TIMEOUT_S = 5.0
RPC_TIMEOUT = timedelta(seconds=10)
# A seal is a workflow of this type that no worker implements, on a queue no worker polls: it is only
# ever started, never run (see the module docstring).
SEAL_WORKFLOW = "StakeflowDeliverySeal"
SEAL_TASK_QUEUE = "stakeflow-hook-seals"
SEAL_MEMO_KEY = "run"


@dataclass(frozen=True)
class Seal:
    """The record of one delivery's signed bytes: its workflow id, and how long it stays open."""

    workflow_id: str
    hold: timedelta
    summary: str = ""


@dataclass(frozen=True)
class Started:
    """What POST /hooks/<name> answers: the delivery's run, and whether it existed already."""

    workflow_id: str
    run_id: str  # "" when a replay names a run its first delivery has not started yet
    duplicate: bool


class TemporalLink:
    """The server's one Temporal client: connected on first use, dropped after a failure."""

    def __init__(self, settings: Settings, connect: Callable[[Settings], Awaitable[Client]] | None = None) -> None:
        from stakeflow.temporal.connection import connect as default_connect

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
                except (TimeoutError, ServiceError, ConfigError, OSError, RuntimeError) as e:
                    # The reason (a TLS file, a refused certificate) is for the operator's log, not the sender.
                    log.warning("cannot connect to Temporal: %s", e or type(e).__name__)
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
        except (TimeoutError, RPCError, RuntimeError):
            self.drop()
            return False


def is_unavailable(e: RPCError) -> bool:
    """True for the RPC failures that mean Temporal did not answer (a retry may succeed)."""
    return e.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED)


async def start_delivery(
    client: Client, settings: Settings, req: TaskRequest, workflow_id: str, seal: Seal | None = None
) -> Started:
    """Start the run for a delivery, once. With a seal, the signed bytes are claimed first, so a replay
    under another delivery id answers as a duplicate of the run they first started."""
    if seal is not None:
        owner = await _claim(client, seal, workflow_id)
        if owner != workflow_id:
            # Another delivery id's seal; one without an owner (not written by this server) refuses too.
            shown = owner or workflow_id
            return Started(shown, await _run_id(client, shown), True)
    try:
        handle = await runs.start_run(client, settings, req, workflow_id, join_running=False, rpc_timeout=RPC_TIMEOUT)
        return Started(workflow_id, handle.result_run_id or "", False)
    except WorkflowAlreadyStartedError as e:
        return Started(workflow_id, e.run_id or await _run_id(client, workflow_id), True)


async def _claim(client: Client, seal: Seal, workflow_id: str) -> str | None:
    """The workflow id the seal was claimed for: ``workflow_id`` when this call claimed it (or one before
    it, for the same delivery); None for a seal whose memo names no run."""
    for _ in range(2):
        try:
            await client.start_workflow(
                SEAL_WORKFLOW,
                id=seal.workflow_id,
                task_queue=SEAL_TASK_QUEUE,
                execution_timeout=seal.hold,
                start_delay=seal.hold + timedelta(minutes=1),
                # Public: readable in the Web UI without the codec server; it is a workflow id, never encrypted anyway.
                memo={SEAL_MEMO_KEY: Public(workflow_id)},
                static_summary=seal.summary or None,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                rpc_timeout=RPC_TIMEOUT,
            )
            return workflow_id
        except WorkflowAlreadyStartedError:
            try:
                desc = await client.get_workflow_handle(seal.workflow_id).describe(rpc_timeout=RPC_TIMEOUT)
            except RPCError as e:
                if e.status != RPCStatusCode.NOT_FOUND:
                    raise
                continue  # retention removed it between the refusal and the lookup: claim it again
            owner = await desc.memo_value(SEAL_MEMO_KEY, default=None)
            return owner if isinstance(owner, str) and owner else None
    raise RPCError(f"seal {seal.workflow_id} could be neither claimed nor read", RPCStatusCode.UNAVAILABLE, b"")


async def _run_id(client: Client, workflow_id: str) -> str:
    """The run id of ``workflow_id``'s latest execution; "" when it has not been started."""
    try:
        return (await client.get_workflow_handle(workflow_id).describe(rpc_timeout=RPC_TIMEOUT)).run_id
    except RPCError as e:
        if e.status == RPCStatusCode.NOT_FOUND:
            return ""
        raise


async def run_exists(client: Client, workflow_id: str) -> bool:
    """True when a run under ``workflow_id`` was started (running or ended)."""
    return bool(await _run_id(client, workflow_id))
