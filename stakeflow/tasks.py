"""Starting, finding, watching and ending runs: the service functions behind `run`, `status`, `result`,
`cancel`, `approve`, `reject` and `list`.

Used by the CLI and the webhook server, so both build requests and find runs the same way.
"""

from __future__ import annotations

import os
import re
import uuid
from datetime import timedelta
from dataclasses import dataclass
from pathlib import Path

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, CancelledError, TerminatedError, TimeoutError as TemporalTimeoutError
from temporalio.service import RPCError, RPCStatusCode

from agents.tools import CATALOGUE
from agents.types import (
    ApprovalPolicy,
    ApprovalRecord,
    ApprovalRequest,
    EvalPolicy,
    SENSITIVITY_CHOICES,
    STAKES_CHOICES,
    ModelEndpoint,
    Progress,
    RoutingConfig,
    TaskRequest,
    TaskResult,
    ToolCall,
    ToolSpecView,
)
from stakeflow.catalog_config import AgentConfig
from stakeflow.toolsets import resolve as resolve_tools
from stakeflow.core.errors import InputError, ServiceError
from stakeflow.promotions import promoted_model
from stakeflow.settings import Settings
from stakeflow.core.contracts import AGENT_WORKFLOW, APPROVE_UPDATE, KEYS, PROGRESS_QUERY, QueueRole, queue_name

RUN_TIMEOUT_HINT = "see `stakeflow status RUN_ID`"


class RunFailed(Exception):
    """A run ended without a result; the message says which step failed and why."""

    def __init__(self, message: str, status: str = "failed") -> None:
        super().__init__(message)
        self.status = status


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


def routing_config(settings: Settings) -> RoutingConfig:
    """The routing facts the policy needs, from settings (no secrets)."""
    return RoutingConfig(
        open=ModelEndpoint(route="open", model=settings.open_model_id, provider="openai-compatible", available=True),
        frontier=ModelEndpoint(
            route="frontier", model=settings.frontier_model, provider="anthropic",
            available=settings.frontier_configured,
        ),
        escalate_on_invalid=settings.policy.escalate_on_invalid,
        fallback_on_unavailable=settings.policy.fallback_on_unavailable,
        model_max_attempts=settings.policy.model_max_attempts,
        model_retry_initial_s=settings.policy.model_retry_initial_s,
        downgrade_when_frontier_missing=settings.policy.on_frontier_missing == "downgrade",
        open_attempts=settings.policy.open_attempts,
        high_risk=settings.policy.high_risk,
        private_tools=settings.policy.private_tools,
        private_egress=settings.policy.private_egress,
        first_step_reads=settings.policy.first_step_reads == "always"
        or (settings.policy.first_step_reads == "auto" and settings.embedded),
        min_agreement=settings.policy.min_agreement,
        min_samples=settings.policy.min_samples,
    )


def agent_config(settings: Settings, agent: str | None) -> AgentConfig | None:
    """The named agent's configuration; InputError listing the agents when there is no such one."""
    if agent is None:
        return None
    if agent not in settings.agents:
        known = ", ".join(sorted(settings.agents)) or "none configured"
        raise InputError(f"unknown agent '{agent}': add [agents.{agent}] to {settings.config_path} (agents: {known})")
    return settings.agents[agent]


def build_request(
    settings: Settings,
    goal: str,
    *,
    stakes: str | None = None,
    sensitivity: str | None = None,
    tools: list[str] | None = None,
    workspace: str | Path | None = None,
    source: str = "cli",
    max_steps: int | None = None,
    budget_tokens: int | None = None,
    auto_approve: bool = False,
    agent: str | None = None,
) -> TaskRequest:
    """A validated TaskRequest; InputError naming the fix for anything wrong.

    With ``agent``, its configuration fills in what the caller did not say (stakes, sensitivity, tools,
    max steps, budget, open model); what the caller says wins.
    """
    named = agent_config(settings, agent)
    if named is not None:
        stakes = stakes or named.stakes
        sensitivity = sensitivity or named.sensitivity
        tools = tools if tools is not None else named.tools
        max_steps = max_steps or named.max_steps
        budget_tokens = budget_tokens or named.budget_tokens
    stakes = stakes or "auto"
    sensitivity = sensitivity or "public"
    goal = goal.strip()
    if not goal:
        raise InputError('the goal is empty: say what the task should achieve, e.g. stakeflow run "Summarise notes.txt"')
    if stakes not in STAKES_CHOICES:
        raise InputError(f"unknown stakes '{stakes}': use one of {', '.join(STAKES_CHOICES)}")
    if sensitivity not in SENSITIVITY_CHOICES:
        raise InputError(f"unknown sensitivity '{sensitivity}': use one of {', '.join(SENSITIVITY_CHOICES)}")
    chosen = resolve_tools(settings, tools, where=f"agent {agent}" if named and tools is named.tools else "--tools")
    ws = Path(workspace).expanduser() if workspace else settings.default_workspace
    if workspace and not ws.is_dir():
        raise InputError(f"workspace {ws} is not a folder: create it or pass another --workspace")
    ws.mkdir(parents=True, exist_ok=True)
    if stakes == "high" and sensitivity == "public" and not settings.frontier_configured:
        if settings.policy.on_frontier_missing == "fail":
            raise InputError(
                "--stakes high needs the frontier model but ANTHROPIC_API_KEY is not set: export it, "
                "or run with --stakes low"
            )
    return TaskRequest(
        workspace_files=list_workspace(ws),
        workspace_paths=workspace_paths(ws),
        tool_specs=[_private(CATALOGUE[name].view(), settings) for name in chosen.builtins],
        toolsets=chosen.toolsets,
        agent=agent or "",
        instructions=named.instructions if named else "",
        evals=EvalPolicy(
            shadow_rate=settings.evals.shadow_rate if settings.frontier_configured else 0.0,
            max_usd_per_day=settings.evals.max_usd_per_day, judge_model=settings.evals.judge_model or "",
            capture=settings.evals.capture or settings.dataset.capture,
            include_private=settings.dataset.include_private,
        ),
        goal=goal,
        stakes=stakes,  # type: ignore[arg-type]
        sensitivity=sensitivity,  # type: ignore[arg-type]
        tools=chosen.builtins,
        workspace=str(ws.resolve()),
        max_steps=max_steps or settings.policy.max_steps,
        budget_tokens=budget_tokens,
        source=source,
        routing=_agent_routing(settings, routing_config(settings), agent),
        queue_prefix=settings.queue_prefix,
        approvals=ApprovalPolicy(
            risks=settings.approvals.risks, timeout_s=settings.approvals.timeout_s, auto_approve=auto_approve
        ),
    )


def _private(view: ToolSpecView, settings: Settings) -> ToolSpecView:
    """A built-in tool listed in ``[policy] private_tools`` reads private data."""
    return view.model_copy(update={"private": True}) if view.name in settings.policy.private_tools else view


def open_models(settings: Settings, agent: str | None) -> tuple[str, str]:
    """(the open model the agent's runs use, the configured one): a learn-loop promotion stands in for the
    configured model ([agents.<name>] open_model, else the open endpoint's model) until the configuration changes."""
    named = agent_config(settings, agent)
    configured = named.open_model if named is not None and named.open_model else settings.open_model_id
    promoted = promoted_model(settings, agent, configured)
    return (promoted.open_model if promoted is not None else configured), configured


def _agent_routing(settings: Settings, routing: RoutingConfig, agent: str | None) -> RoutingConfig:
    """The run's open model: the agent's own (e.g. a fine-tuned adapter served by vLLM), or a promoted one."""
    model, _ = open_models(settings, agent)
    if model == routing.open.model:
        return routing
    return routing.model_copy(update={"open": routing.open.model_copy(update={"model": model})})


MAX_LISTED_FILES = 40
MAX_ENUM_FILES = 200


def _workspace_files(folder: Path):
    """(relative path, size) of each non-hidden file, sorted; symlinked folders are not followed."""
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            path = Path(root) / name
            if name.startswith(".") or not path.is_file():  # is_file: False for a symlink loop
                continue
            try:
                size = path.stat().st_size
            except OSError:
                continue
            yield path.relative_to(folder).as_posix(), size


def list_workspace(folder: Path, limit: int = MAX_LISTED_FILES) -> list[str]:
    """The workspace's files as prompts show them ("notes.txt (582 bytes)"), at most ``limit``."""
    found: list[str] = []
    for rel, size in _workspace_files(folder):
        if len(found) == limit:
            found.append("(more files not listed)")
            break
        found.append(f"{rel} ({size} bytes)")
    return found


def workspace_paths(folder: Path, limit: int = MAX_ENUM_FILES) -> list[str]:
    """Every file's workspace-relative path, or [] when there are more than ``limit``.

    A partial list is useless as a constraint (the file the goal names might be cut): all or none.
    """
    found: list[str] = []
    for rel, _ in _workspace_files(folder):
        if len(found) == limit:
            return []
        found.append(rel)
    return found


def new_workflow_id() -> str:
    return f"task-{uuid.uuid4().hex[:10]}"


async def has_poller(client: Client, settings: Settings, role: QueueRole) -> bool:
    """True when some worker polls the queue of ``role`` (workflow tasks for "workflows", else activities)."""
    kind = TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW if role == "workflows" else TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY
    req = DescribeTaskQueueRequest(
        namespace=settings.temporal_namespace,
        task_queue=TaskQueue(name=queue_name(role, settings.queue_prefix)),
        task_queue_type=kind,
    )
    resp = await client.workflow_service.describe_task_queue(req)
    return len(resp.pollers) > 0


async def has_workflow_poller(client: Client, settings: Settings) -> bool:
    """True when some worker polls the workflows queue."""
    return await has_poller(client, settings, "workflows")


async def start_run(
    client: Client, settings: Settings, req: TaskRequest, workflow_id: str | None = None, *,
    join_running: bool = True, rpc_timeout: timedelta | None = None,
) -> WorkflowHandle:
    """Start AgentTaskWorkflow under ``workflow_id`` (default: a new one); a workflow id is never reused.

    A workflow id that is already running is joined, not duplicated; with ``join_running=False`` the
    start is refused instead (WorkflowAlreadyStartedError), which is how the webhook server knows a
    redelivery.
    """
    wf_id = workflow_id or new_workflow_id()
    return await client.start_workflow(
        AGENT_WORKFLOW,
        req,
        id=wf_id,
        task_queue=queue_name("workflows", settings.queue_prefix),
        result_type=TaskResult,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING if join_running else WorkflowIDConflictPolicy.FAIL,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        static_summary=run_summary(req.goal),
        static_details=run_details(settings, req),
        rpc_timeout=rpc_timeout,
    )


def run_summary(goal: str, limit: int = 120) -> str:
    """The goal on one line, truncated: the run's static summary in the Web UI."""
    one_line = " ".join(goal.split())
    return one_line if len(one_line) <= limit else one_line[: limit - 1] + "…"


def run_details(settings: Settings, req: TaskRequest) -> str:
    """Policy and endpoints in use (no secrets): the run's static details in the Web UI."""
    r = req.routing
    frontier = f"{r.frontier.model}" if r.frontier.available else "not configured"
    return "\n".join([
        f"**stakes** {req.stakes} · **sensitivity** {req.sensitivity} · **source** {req.source}",
        f"**open** {r.open.model} ({settings.dialect}) · **frontier** {frontier}",
        f"**tools** {', '.join(req.tools) or 'none'}",
        f"**escalation** {'on' if r.escalate_on_invalid else 'off'} after {r.open_attempts} invalid open answers",
    ])


async def wait_result(handle: WorkflowHandle) -> TaskResult:
    """The run's result, or RunFailed with the reason."""
    try:
        return await handle.result()
    except WorkflowFailureError as e:
        raise RunFailed(_failure_text(e.cause), _failure_status(e.cause)) from None


def _failure_status(cause: BaseException | None) -> str:
    if isinstance(cause, CancelledError):
        return "canceled"
    if isinstance(cause, TerminatedError):
        return "terminated"
    if isinstance(cause, TemporalTimeoutError):
        return "timed_out"
    return "failed"


def _failure_text(cause: BaseException | None) -> str:
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
        raise InputError(f"no run '{ident}' in namespace {client.namespace}: searched workflow ids and run ids "
                         "(stakeflow list shows recent runs)")
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
            raise InputError(f"'{ident}' in namespace {client.namespace} is a {desc.workflow_type} workflow, "
                             "not a stakeflow run (stakeflow list shows recent runs)")
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
        raise InputError(f"no run '{workflow_id}' in namespace {client.namespace}: check the id (`stakeflow list`)") from None
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
            error = _failure_text(e.cause)
    return RunInfo(workflow_id, desc.run_id, status, progress, result, error)


async def cancel_run(client: Client, workflow_id: str) -> None:
    handle = client.get_workflow_handle(workflow_id)
    try:
        await handle.cancel()
    except RPCError as e:
        raise InputError(f"cannot cancel '{workflow_id}': {e.message}") from None


async def decide_step(
    client: Client, workflow_id: str, step: int, approve: bool, note: str, by: str,
    tool_calls: list[ToolCall] | None = None,
) -> ApprovalRecord:
    """Approve or reject a step waiting for approval (the workflow's ``approve_step`` update).

    ``tool_calls``: approve these instead (the same tools with the approver's arguments).
    """
    handle = client.get_workflow_handle(workflow_id)
    request = ApprovalRequest(step=step, decision="approve" if approve else "reject", note=note, by=by,
                              tool_calls=tool_calls)
    try:
        return await handle.execute_update(APPROVE_UPDATE, request, result_type=ApprovalRecord)
    except WorkflowUpdateFailedError as e:
        cause = e.cause
        message = cause.message if isinstance(cause, ApplicationError) else str(cause or e)
        raise InputError(f"cannot {'approve' if approve else 'reject'} step {step} of {workflow_id}: {message}") from None
    except RPCError as e:
        raise InputError(f"cannot reach run '{workflow_id}': {e.message} (is it still running? `stakeflow status {workflow_id}`)") from None


async def list_runs(client: Client, query: str | None, limit: int = 20) -> list[dict]:
    """Runs matching a visibility query (the Web UI's language), newest first."""
    full = f"WorkflowType = '{AGENT_WORKFLOW}'" + (f" AND ({query})" if query else "")
    rows: list[dict] = []
    try:
        async for wf in client.list_workflows(full, limit=limit):
            sa = wf.typed_search_attributes
            rows.append({
                "workflow_id": wf.id,
                "status": _STATUS.get(wf.status, "running") if wf.status else "running",
                "started": wf.start_time.isoformat(timespec="seconds") if wf.start_time else None,
                "stakes": sa.get(KEYS["stakes"]),
                "source": sa.get(KEYS["source"]),
                "open_steps": sa.get(KEYS["open_steps"]),
                "frontier_steps": sa.get(KEYS["frontier_steps"]),
                "cost_usd": sa.get(KEYS["cost_usd"]),
                "awaiting_approval": sa.get(KEYS["awaiting_approval"]),
            })
    except RPCError as e:
        raise InputError(f"bad --query: {e.message}") from None
    return rows
