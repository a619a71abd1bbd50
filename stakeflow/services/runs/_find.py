"""Runs that exist: finding one by either id, its status and result, cancelling it, deciding its approvals,
listing runs. Used by the CLI and the webhook server (``_start`` starts runs)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError, CancelledError, TerminatedError
from temporalio.exceptions import TimeoutError as TemporalTimeoutError
from temporalio.service import RPCError, RPCStatusCode

from stakeflow.agents.types import ApprovalRecord, ApprovalRequest, Progress, TaskResult, ToolCall
from stakeflow.core.contracts import (
    AGENT_WORKFLOW,
    APPROVE_UPDATE,
    KEYS,
    PROGRESS_QUERY,
)
from stakeflow.core.errors import InputError, ServiceError


@dataclass
class RunInfo:
    workflow_id: str
    run_id: str
    status: str  # running | completed | failed | canceled | terminated | timed_out
    progress: Progress | None
    result: TaskResult | None
    error: str | None


@dataclass(frozen=True)
class ResolvedRun:
    """A run as Temporal knows it: the workflow id (what stakeflow, its traces and the Web UI key runs
    by) and the Temporal run id of the execution the lookup found."""

    workflow_id: str
    run_id: str


def failure_status(cause: BaseException | None) -> str:
    if isinstance(cause, CancelledError):
        return "canceled"
    if isinstance(cause, TerminatedError):
        return "terminated"
    if isinstance(cause, TemporalTimeoutError):
        return "timed_out"
    return "failed"


def failure_text(cause: BaseException | None) -> str:
    if isinstance(cause, ApplicationError):
        return cause.message
    if isinstance(cause, CancelledError):
        return "canceled"
    return str(cause) if cause else "failed"


_STATUS = {
    WorkflowExecutionStatus.RUNNING: "running",
    WorkflowExecutionStatus.COMPLETED: "completed",
    WorkflowExecutionStatus.FAILED: "failed",
    WorkflowExecutionStatus.CANCELED: "canceled",
    WorkflowExecutionStatus.TERMINATED: "terminated",
    WorkflowExecutionStatus.TIMED_OUT: "timed_out",
    WorkflowExecutionStatus.CONTINUED_AS_NEW: "running",
}


# Temporal makes every run id (a UUID); anything else cannot be one, and is never put in a query.
_RUN_ID_SHAPE = re.compile(r"[0-9A-Za-z-]{1,64}")
_NOT_A_WORKFLOW_ID = (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT)


async def resolve_run(client: Client, ident: str) -> ResolvedRun:
    """The run ``ident`` names: a workflow id, or a Temporal run id (what `run --json` prints as ``run_id``).

    1. A workflow id that exists wins (its latest execution's run id is returned);
    2. else a run id, found through visibility: ``RunId = '<ident>'``, restricted to
       ``WorkflowType = AGENT_WORKFLOW``; it maps to its workflow id. stakeflow never reuses a workflow
       id (REJECT_DUPLICATE), so that id names the same run, continued-as-new histories included;
    3. else InputError naming what was searched.

    A workflow of another type is not a run: InputError saying so. Temporal failing to answer is a
    ServiceError, never "no run".
    """
    found = await find_run(client, ident)
    if found is None:
        raise InputError(
            f"no run '{ident}' in namespace {client.namespace}: searched workflow ids and run ids "
            "(stakeflow list shows recent runs)"
        )
    return found


async def find_run(client: Client, ident: str) -> ResolvedRun | None:
    """``resolve_run`` for callers that search elsewhere too: None where it would say "no run"."""
    try:
        desc = await client.get_workflow_handle(ident).describe()
    except RPCError as e:
        if e.status not in _NOT_A_WORKFLOW_ID:
            raise _lookup_failed(client, ident, e) from None
    else:
        if desc.workflow_type != AGENT_WORKFLOW:
            raise InputError(
                f"'{ident}' in namespace {client.namespace} is a {desc.workflow_type} workflow, "
                "not a stakeflow run (stakeflow list shows recent runs)"
            )
        return ResolvedRun(desc.id, desc.run_id)
    if not _RUN_ID_SHAPE.fullmatch(ident):
        return None
    query = f"WorkflowType = '{AGENT_WORKFLOW}' AND RunId = '{ident}'"
    try:
        async for wf in client.list_workflows(query, limit=1):
            return ResolvedRun(wf.id, wf.run_id)
    except RPCError as e:
        raise _lookup_failed(client, ident, e) from None
    return None


def _lookup_failed(client: Client, ident: str, e: RPCError) -> ServiceError:
    return ServiceError(
        f"cannot look up run '{ident}': Temporal at {client.service_client.config.target_host} answered "
        f"{e.status.name} ({e.message}): check it with `stakeflow doctor`"
    )


async def describe_run(client: Client, workflow_id: str, *, with_progress: bool = True) -> RunInfo:
    """Status, progress and (when done) result of a run; InputError for an unknown id."""
    handle = client.get_workflow_handle(workflow_id, result_type=TaskResult)
    try:
        desc = await handle.describe()
    except RPCError:
        raise InputError(
            f"no run '{workflow_id}' in namespace {client.namespace}: check the id (`stakeflow list`)"
        ) from None
    status = _STATUS.get(desc.status, "running") if desc.status else "running"
    progress = None
    if with_progress:
        try:
            progress = await handle.query(PROGRESS_QUERY, result_type=Progress, rpc_timeout=timedelta(seconds=5))
        except Exception:  # a run with no worker to answer still has a status
            progress = None
    result, error = None, None
    if status == "completed":
        result = await handle.result()
    elif status != "running":
        try:
            await handle.result()
        except WorkflowFailureError as e:
            error = failure_text(e.cause)
    return RunInfo(workflow_id, desc.run_id, status, progress, result, error)


async def cancel_run(client: Client, workflow_id: str) -> None:
    handle = client.get_workflow_handle(workflow_id)
    try:
        await handle.cancel()
    except RPCError as e:
        raise InputError(f"cannot cancel '{workflow_id}': {e.message}") from None


async def decide_step(
    client: Client,
    workflow_id: str,
    step: int,
    approve: bool,
    note: str,
    by: str,
    tool_calls: list[ToolCall] | None = None,
) -> ApprovalRecord:
    """Approve or reject a step waiting for approval (the workflow's ``approve_step`` update).

    ``tool_calls``: approve these instead (the same tools with the approver's arguments).
    """
    handle = client.get_workflow_handle(workflow_id)
    request = ApprovalRequest(
        step=step, decision="approve" if approve else "reject", note=note, by=by, tool_calls=tool_calls
    )
    try:
        return await handle.execute_update(APPROVE_UPDATE, request, result_type=ApprovalRecord)
    except WorkflowUpdateFailedError as e:
        cause = e.cause
        message = cause.message if isinstance(cause, ApplicationError) else str(cause or e)
        raise InputError(
            f"cannot {'approve' if approve else 'reject'} step {step} of {workflow_id}: {message}"
        ) from None
    except RPCError as e:
        raise InputError(
            f"cannot reach run '{workflow_id}': {e.message} (is it still running? `stakeflow status {workflow_id}`)"
        ) from None


async def list_runs(client: Client, query: str | None, limit: int = 20) -> list[dict]:
    """Runs matching a visibility query (the Web UI's language), newest first."""
    full = f"WorkflowType = '{AGENT_WORKFLOW}'" + (f" AND ({query})" if query else "")
    rows: list[dict] = []
    try:
        async for wf in client.list_workflows(full, limit=limit):
            sa = wf.typed_search_attributes
            rows.append(
                {
                    "workflow_id": wf.id,
                    "status": _STATUS.get(wf.status, "running") if wf.status else "running",
                    "started": wf.start_time.isoformat(timespec="seconds") if wf.start_time else None,
                    "stakes": sa.get(KEYS["stakes"]),
                    "source": sa.get(KEYS["source"]),
                    "open_steps": sa.get(KEYS["open_steps"]),
                    "frontier_steps": sa.get(KEYS["frontier_steps"]),
                    "cost_usd": sa.get(KEYS["cost_usd"]),
                    "awaiting_approval": sa.get(KEYS["awaiting_approval"]),
                }
            )
    except RPCError as e:
        raise InputError(f"bad --query: {e.message}") from None
    return rows
