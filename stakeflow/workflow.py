"""Agents inside a team's own Temporal workflows: ``run_agent``, called from workflow code, runs a stakeflow agent as
one step of the team's process and returns its ``TaskResult``.

    from temporalio import workflow

    from stakeflow.workflow import run_agent

    @workflow.defn
    class TriageWorkflow:
        @workflow.run
        async def run(self, ticket: str) -> str:
            result = await run_agent(f"Triage this ticket: {ticket}", agent="triage")
            return result.answer

The run is an ``AgentTaskWorkflow`` child of the team's workflow, on stakeflow's workflows queue, so approvals,
routing, budgets, traces and cost work as for any run, and the Web UI shows it under its parent. Its request is
built and checked as the CLI's is (``stakeflow.services.runs.build_request``: the agent, tools, workspace, the
configuration's routing facts), by the ``stakeflow.prepare_run`` activity on the team's own queue, never in
workflow code: the team's worker must hold it, which a worker built from ``stakeflow.Client``'s Temporal client
(``client.temporal``) or given ``stakeflow.client.plugin(settings)`` does.

Named after ``temporalio.workflow``, the module of what may be called inside workflow code; stakeflow's own
workflows are ``stakeflow.workflows``. Deterministic (no I/O, clock or random: the child's id comes from
``workflow.uuid4``) and passed through the sandbox. Where streaming will attach (issue 25 §3): the child's
workflow stream, read by the caller, not by this function, which returns once with the whole result.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta
from pathlib import PurePath

from temporalio import workflow
from temporalio.common import RetryPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, ChildWorkflowError, TimeoutError
from temporalio.workflow import ParentClosePolicy

from stakeflow.agents.types import PreparedRun, RunOptions, Sensitivity, StakesOverride, TaskResult
from stakeflow.core.contracts import AGENT_WORKFLOW, PREPARE_RUN
from stakeflow.core.errors import ACTIVITY_NOT_REGISTERED, TASK_INVALID, InputError

# Building a request lists the workspace and reads stakeflow.toml: seconds at most. The bound on the whole
# (attempts and waiting for a worker included) is what turns a team worker without the activity into a failure
# that says so, instead of a step that waits for ever.
PREPARE_TIMEOUT = timedelta(seconds=60)
PREPARE_DEADLINE = timedelta(minutes=5)
_NO_ACTIVITY = (
    f"the worker of task queue {{queue}} has no {PREPARE_RUN} activity, which run_agent needs: build the worker "
    "from stakeflow's client (`Worker((await stakeflow.Client.connect()).temporal, ...)`), or give its Temporal "
    "client `stakeflow.client.plugin(settings)`"
)


async def run_agent(
    goal: str,
    *,
    agent: str | None = None,
    stakes: StakesOverride | None = None,
    sensitivity: Sensitivity | None = None,
    tools: Sequence[str] | None = None,
    workspace: str | PurePath | None = None,
    max_steps: int | None = None,
    max_rounds: int | None = None,
    budget_tokens: int | None = None,
    budget_usd: float | None = None,
    auto_approve: bool = False,
    id: str | None = None,
) -> TaskResult:
    """Run ``goal`` as a stakeflow agent, a child of the calling workflow, and return its result.

    The options are `stakeflow run`'s, by the same names. ``id`` is the child's workflow id (default: the parent's
    id and ``-agent-`` and 8 hex digits); stakeflow never reuses one. A request the CLI would refuse (an unknown
    agent or tool, a bad stakes value) fails the calling workflow with an ApplicationError of type
    ``TaskInvalid`` naming the fix; a run that fails (or that someone else cancels) raises Temporal's
    ``ChildWorkflowError``, its cause the run's reason. Cancelling the caller cancels the run, and this raises
    ``asyncio.CancelledError``; the caller closing any other way asks the run to cancel too.
    """
    info = workflow.info()
    try:
        options = RunOptions.checked(
            goal,
            agent=agent,
            stakes=stakes,
            sensitivity=sensitivity,
            tools=tools,
            workspace=workspace,
            max_steps=max_steps,
            max_rounds=max_rounds,
            budget_tokens=budget_tokens,
            budget_usd=budget_usd,
            auto_approve=auto_approve,
            source=f"workflow:{info.workflow_type}",
        )
    except InputError as e:
        raise ApplicationError(f"run_agent: {e}", type=TASK_INVALID, non_retryable=True) from None
    prepared = await _prepare(options, info.task_queue)
    try:
        return await workflow.execute_child_workflow(
            AGENT_WORKFLOW,
            prepared.request,
            id=id or f"{info.workflow_id}-agent-{workflow.uuid4().hex[:8]}",
            task_queue=prepared.task_queue,
            result_type=TaskResult,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            parent_close_policy=ParentClosePolicy.REQUEST_CANCEL,
            static_summary=prepared.summary,
            static_details=prepared.details,
        )
    except ChildWorkflowError as e:
        # The caller was cancelled, so was its run: the caller's await is cancelled, as any await in it is, and a
        # team's `except ChildWorkflowError` (a failed run handed to a person) does not turn its own cancellation
        # into a reply. A run cancelled by someone else stays a ChildWorkflowError.
        if isinstance(e.cause, CancelledError) and workflow.cancellation_reason() is not None:
            raise asyncio.CancelledError(f"{info.workflow_id} was cancelled, and its agent run with it") from e
        raise


async def _prepare(options: RunOptions, queue: str) -> PreparedRun:
    """The checked request and how to start it, from the ``stakeflow.prepare_run`` activity on the caller's queue;
    an ApplicationError naming the fix when the request is refused or no worker there can build it."""
    try:
        return await workflow.execute_activity(
            PREPARE_RUN,
            options,
            result_type=PreparedRun,
            start_to_close_timeout=PREPARE_TIMEOUT,
            schedule_to_close_timeout=PREPARE_DEADLINE,
            retry_policy=RetryPolicy(
                maximum_attempts=3, non_retryable_error_types=[TASK_INVALID, ACTIVITY_NOT_REGISTERED]
            ),
            summary=f"prepare an agent run: {' '.join(options.goal.split())[:80]}",
        )
    except ActivityError as e:
        cause = e.cause
        if isinstance(cause, ApplicationError) and cause.type == TASK_INVALID:
            raise ApplicationError(f"run_agent: {cause.message}", type=TASK_INVALID, non_retryable=True) from None
        if isinstance(cause, ApplicationError) and cause.type == ACTIVITY_NOT_REGISTERED:
            raise ApplicationError(_NO_ACTIVITY.format(queue=queue), type=TASK_INVALID, non_retryable=True) from None
        if isinstance(cause, TimeoutError):
            raise ApplicationError(
                f"no worker built the run's request within {PREPARE_DEADLINE}: " + _NO_ACTIVITY.format(queue=queue),
                type=TASK_INVALID,
                non_retryable=True,
            ) from None
        raise
