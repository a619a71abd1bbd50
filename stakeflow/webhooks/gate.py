"""Webhook storms: each delivery of a hook with ``max_runs_per_minute`` or ``max_concurrent_runs`` asks the hook's
gate (a ``HookGateWorkflow``, by its names) before its run starts. Over a limit, the delivery is answered 429 with
``Retry-After`` and starts nothing, so a sender's redelivery later starts it once (the run's workflow id comes from
the delivery id, as always).

The gate counts in Temporal, so every server process shares one count, exactly, across restarts. At
``max_concurrent_runs`` it names the runs it counts; this side looks them up (a workflow does no I/O) and asks
again without those that ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from datetime import timedelta

from temporalio.client import Client, WithStartWorkflowOperation, WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from stakeflow.agents.gates import Admission, AdmitAsk, GateState
from stakeflow.config import HookConfig, Settings
from stakeflow.core.contracts import ADMIT_UPDATE, HOOK_GATE_WORKFLOW, queue_name

RPC_TIMEOUT = timedelta(seconds=10)
ASK_ATTEMPTS = 15
# An admitted run not found yet may be starting: it counts as running this long.
START_GRACE_S = 30.0


def gated(hook: HookConfig) -> bool:
    return hook.max_runs_per_minute is not None or hook.max_concurrent_runs is not None


async def admit(client: Client, settings: Settings, name: str, hook: HookConfig, workflow_id: str) -> Admission:
    """Whether the delivery's run may start now; its admission is counted in the hook's gate if so."""
    if not gated(hook):
        return Admission()
    ask = AdmitAsk(
        workflow_id=workflow_id,
        max_runs_per_minute=hook.max_runs_per_minute,
        max_concurrent_runs=hook.max_concurrent_runs,
    )
    admission = await _ask(client, settings, name, ask)
    if not admission.admitted and admission.leases:
        ended = await _ended(client, admission.leases)
        if ended:
            admission = await _ask(client, settings, name, ask.model_copy(update={"finished": ended}))
    return admission


# Admissions one server process has in flight to one gate, at most: Temporal refuses a workflow's 11th update in
# flight, and many refused at once make it abort its workflow tasks again and again (activities/budgets.py).
ASK_CONCURRENCY = 4
_lanes: dict[tuple[int, str], asyncio.Semaphore] = {}


async def _ask(client: Client, settings: Settings, name: str, ask: AdmitAsk) -> Admission:
    """The gate's answer, one of ASK_CONCURRENCY in flight from this process."""
    key = (id(asyncio.get_running_loop()), name)
    lane = _lanes.setdefault(key, asyncio.Semaphore(ASK_CONCURRENCY))
    async with lane:
        return await _ask_now(client, settings, name, ask)


async def _ask_now(client: Client, settings: Settings, name: str, ask: AdmitAsk) -> Admission:
    """Temporal lets a workflow have 10 updates in flight (by default): in a storm across many server processes the
    rest are refused, and asked again after a jittered pause; still refused after that, the delivery is held back."""
    for attempt in range(ASK_ATTEMPTS):
        start: WithStartWorkflowOperation[GateState, None] = WithStartWorkflowOperation(
            HOOK_GATE_WORKFLOW,
            GateState(hook=name),
            id=f"{settings.queue_prefix}-hook-gate-{name}",
            task_queue=queue_name("workflows", settings.queue_prefix),
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            static_summary=f"storm gate of hook {name}",
        )
        try:
            return await client.execute_update_with_start_workflow(
                ADMIT_UPDATE, ask, start_workflow_operation=start, result_type=Admission, rpc_timeout=RPC_TIMEOUT
            )
        except WorkflowUpdateFailedError:  # the gate was continuing as new or ending: ask the next one
            pass
        except RPCError as e:
            if e.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED):
                raise
        finally:
            with contextlib.suppress(BaseException):  # the start's own future holds the same error: retrieve it
                await asyncio.wait_for(start.workflow_handle(), 0.01)
        await asyncio.sleep(random.uniform(0.5, 1.0) * min(1.0, 0.05 * 2**attempt))
    return Admission(admitted=False, reason=f"hook '{name}' is taking more deliveries at once than it can count",
                     retry_after_s=5.0)  # fmt: skip


async def _ended(client: Client, leases: dict[str, float]) -> list[str]:
    """The counted runs that are no longer running (or never started, past a grace for their start)."""

    async def ended(workflow_id: str, age_s: float) -> bool:
        try:
            desc = await client.get_workflow_handle(workflow_id).describe(rpc_timeout=RPC_TIMEOUT)
        except RPCError as e:
            if e.status == RPCStatusCode.NOT_FOUND:
                return age_s > START_GRACE_S
            raise
        return desc.status != WorkflowExecutionStatus.RUNNING

    found = await asyncio.gather(*(ended(k, age) for k, age in leases.items()))
    return [k for k, done in zip(leases, found, strict=True) if done]
