"""The activity calls a run makes, with their queues, timeouts and retry policies.

Temporal owns retries (SDK clients retry nothing), so every policy is here, in one place: model calls
retry what may pass (429, 529, a dropped connection) and fail at once on what cannot (invalid output, a
rejected key); a call nobody picks up fails after ``SCHEDULE_TO_START`` instead of waiting forever.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TypedDict

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError
from temporalio.exceptions import TimeoutError as TemporalTimeoutError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from stakeflow.agents.claims import AnswerCheck, AnswerCheckRequest
    from stakeflow.agents.evals import AGREEMENT_DAYS, AgreementTable, EvalRecord, ShadowBatch, ShadowRequest, StepLabel
    from stakeflow.agents.types import (
        ApprovalRecord,
        ModelCallRequest,
        ModelCallResult,
        ModelEndpoint,
        RouteDecision,
        RoutingConfig,
        TaskRequest,
        ToolRequest,
        ToolResult,
        ToolsetRef,
        ToolsetRequest,
        ToolsetResult,
        ToolSpecView,
    )
    from stakeflow.core import errors
    from stakeflow.core.contracts import (
        CALL_MODEL,
        CHECK_ANSWER,
        DESCRIBE_TOOLS,
        READ_AGREEMENT,
        RECORD_EVAL,
        RECORD_LABEL,
        RUN_TOOL,
        SHADOW_WORKFLOW,
        queue_name,
    )
    from stakeflow.workflows.failures import cause_text


def model_retry(routing: RoutingConfig) -> RetryPolicy:
    return RetryPolicy(
        initial_interval=timedelta(seconds=routing.model_retry_initial_s),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=60),
        maximum_attempts=routing.model_max_attempts,
        non_retryable_error_types=errors.NON_RETRYABLE_MODEL_ERRORS,
    )


TOOL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=5,
    non_retryable_error_types=[errors.TOOL_FAILED],
)
ONCE = RetryPolicy(maximum_attempts=1)


class ActivityOptions(TypedDict):
    """A timeout and retry policy several activity calls share, as ``**options`` that type-check against
    ``workflow.execute_activity`` (a plain dict's values would be one mixed type)."""

    start_to_close_timeout: timedelta
    retry_policy: RetryPolicy


# A call nobody picks up fails instead of waiting forever: no worker polls that queue.
SCHEDULE_TO_START = timedelta(minutes=10)
MODEL_TIMEOUTS = {"open": timedelta(minutes=5), "frontier": timedelta(minutes=3)}


async def call_model(
    req: TaskRequest,
    call: ModelCallRequest,
    decision: RouteDecision,
    label: str,
    tool: str | None,
    private: bool = False,
) -> ModelCallResult:
    """One ``call_model`` activity on the route's queue, summarised for the Web UI's timeline.

    ``private``: the run's data is private at this call, so it is captured only with include_private.
    """
    endpoint = req.routing.open if decision.route == "open" else req.routing.frontier
    call = call.model_copy(
        update={
            "run_id": workflow.info().workflow_id,
            "endpoint": ModelEndpoint(route=decision.route, model=decision.model, provider=endpoint.provider),
            "stakes": decision.stakes,
            "reason": decision.reason,
            "escalated": decision.escalated,
            "source": req.source,
            "agent": req.agent,
            "frontier_model": req.routing.frontier.model,
            "tool": tool or "",
            "capture": req.evals.capture and (not private or req.evals.include_private),
            "private": private,
            # Only the frontier's prompt cache needs them: the open route's input stays as small as it was.
            "shared_tools": call.shared_tools if decision.route == "frontier" else [],
        }
    )
    parts = [label, decision.route, decision.model or "?"]
    if tool:
        parts.append(tool)
    if decision.escalated:
        parts.append("escalated")
    if decision.fallback:
        parts.append("fallback")
    if decision.route == "open" and req.routing.open_local:
        return await local_model_call(req, call, " · ".join([*parts, "local"]))
    return await workflow.execute_activity(
        CALL_MODEL,
        call,
        result_type=ModelCallResult,
        task_queue=decision.task_queue,
        start_to_close_timeout=MODEL_TIMEOUTS[decision.route],
        heartbeat_timeout=timedelta(seconds=req.heartbeat_timeout_s),
        schedule_to_start_timeout=SCHEDULE_TO_START,
        retry_policy=model_retry(req.routing),
        summary=" · ".join(parts),
    )


async def local_model_call(req: TaskRequest, call: ModelCallRequest, summary: str) -> ModelCallResult:
    """An open-model call as a local activity, on the worker running the workflow ([workers] local_model_calls).

    No task queue and no server round trip between the workflow and the call: the worker runs it while it
    holds the workflow task open (heartbeating it past the workflow task timeout), and retries it itself with
    the same policy. A local activity cannot heartbeat: a worker that dies mid-call is noticed when the
    workflow task times out (10 s), and the call starts again on another worker, from the beginning.
    The run records the choice at its start (``RoutingConfig.open_local``), so its replays issue the same
    commands; runs started without it keep regular activities.

    A local activity that fails for good raises its cause bare (an ApplicationError, a TimeoutError), where a
    regular one raises ActivityError with that cause: wrapped here, the run handles both alike (retry on
    invalid output, fallback when unavailable, the failed attempt's usage counted).
    """
    try:
        return await workflow.execute_local_activity(
            CALL_MODEL,
            call,
            result_type=ModelCallResult,
            start_to_close_timeout=MODEL_TIMEOUTS["open"],
            retry_policy=model_retry(req.routing),
            summary=summary,
        )
    except (ApplicationError, TemporalTimeoutError) as e:
        raise ActivityError(
            f"local activity {CALL_MODEL} failed",
            scheduled_event_id=0,
            started_event_id=0,
            identity="",
            activity_type=CALL_MODEL,
            activity_id="",
            retry_state=None,
        ) from e


class ToolMayHaveActed(Exception):
    """A non-idempotent tool's call failed after it may have acted: reported to the model, not retried."""


DESCRIBE_TIMEOUT = timedelta(seconds=60)
DESCRIBE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)


async def describe_tools(req: TaskRequest, ref: ToolsetRef) -> ToolsetResult:
    """The ``describe_tools`` activity on the toolset's queue; a failure to get an answer becomes its error.

    A worker must poll that queue within a minute: a server whose worker is not running is a named
    failure at the run's start, never a run that waits forever.
    """
    queue = ref.task_queue or queue_name("tools", req.queue_prefix)
    what = f"MCP server '{ref.name}'" if ref.kind == "mcp" else "the Python tools"
    try:
        return await workflow.execute_activity(
            DESCRIBE_TOOLS,
            ToolsetRequest(toolset=ref),
            result_type=ToolsetResult,
            task_queue=queue,
            start_to_close_timeout=DESCRIBE_TIMEOUT,
            schedule_to_start_timeout=DESCRIBE_TIMEOUT,
            retry_policy=DESCRIBE_RETRY,
            summary=f"tools of {what}",
        )
    except ActivityError as e:
        if isinstance(e.cause, CancelledError):
            raise
        if isinstance(e.cause, TemporalTimeoutError):
            return ToolsetResult(
                error=f"no worker polls {queue} for {what}: run `stakeflow worker --queues tools` "
                "where that server is configured"
            )
        return ToolsetResult(error=str(getattr(e.cause, "message", e.cause) or e))


def idempotency_key(info: workflow.Info, index: int, n: int) -> str:
    """``<workflow id>/<run id>/<step>/<call>``: the same for every attempt of one call, and only for it.

    Every attempt of an activity belongs to one run, so the run id keeps a call apart from its
    look-alikes: a later run that reuses the workflow id (after retention, or from a client that allows
    duplicates) starts from step 1 again, and a run made by a reset re-runs the steps after its reset
    point; both make new calls, which must write. The first execution run id would not do for the
    second: Temporal documents it as "the very first runId along the chain of ContinueAsNew, Retry,
    Cron and Reset" (WorkflowExecutionStartedEventAttributes), and the dev server here (CLI 1.9.1,
    server 1.32) shows a reset run with the chain's first run id, so a reset run's writes would replay
    (or, with other content, be refused as) the old run's. Continue-as-new changes the run id, which
    costs nothing: a run continues as new only between steps, never with a call in flight, and step
    numbers carry on across it. Keys of the previous release (``<workflow id>/<step>/<call>``), in
    calls already in history, are still honoured by the tools.
    """
    return f"{info.workflow_id}/{info.run_id}/{index}/{n}"


async def run_tool(
    req: TaskRequest, index: int, n: int, spec: ToolSpecView | None, tool: str, args: dict, label: str, round: int = 1
) -> ToolResult:
    """One ``run_tool`` call: a local activity for fast read-only tools, else on the tool's queue.

    On a queue the call heartbeats (``activities/tools/dispatcher.py``), so a worker that dies or stalls
    mid-call is noticed after the run's ``heartbeat_timeout_s``, not the call's timeout.
    """
    info = workflow.info()
    wf_id = info.workflow_id
    tool_req = ToolRequest(
        run_id=wf_id,
        step=index,
        call_index=n,
        tool=tool,
        args=args,
        workspace=req.workspace,
        idempotency_key=idempotency_key(info, index, n),
        round=round,
    )
    summary = f"{label} · tool · {tool}"
    tool_req.idempotent = spec.idempotent if spec else True
    if spec is not None and spec.local:
        return await workflow.execute_local_activity(
            RUN_TOOL,
            tool_req,
            result_type=ToolResult,
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=TOOL_RETRY,
            summary=summary,
        )
    repeatable = spec is None or spec.idempotent
    try:
        return await workflow.execute_activity(
            RUN_TOOL,
            tool_req,
            result_type=ToolResult,
            task_queue=(spec.task_queue if spec else "") or queue_name("tools", req.queue_prefix),
            start_to_close_timeout=timedelta(seconds=(spec.timeout_s if spec else 60) + 5),
            heartbeat_timeout=timedelta(seconds=req.heartbeat_timeout_s),
            schedule_to_start_timeout=SCHEDULE_TO_START,
            # A tool that is not idempotent is never retried: a second attempt could act twice.
            retry_policy=TOOL_RETRY if repeatable else ONCE,
            summary=summary,
        )
    except ActivityError as e:
        if repeatable or isinstance(e.cause, CancelledError):
            raise
        raise ToolMayHaveActed(
            f"{tool} failed ({cause_text(e)}) and is not idempotent, so it was not retried: "
            "it may have acted; check before asking for it again"
        ) from None


async def check_answer(req: AnswerCheckRequest) -> AnswerCheck:
    """The answer check (agents/claims.py) as a local activity: its verdict is in history, so a later release
    that refines the check replays recorded runs as they ran."""
    return await workflow.execute_local_activity(
        CHECK_ANSWER,
        req,
        result_type=AnswerCheck,
        start_to_close_timeout=timedelta(seconds=30),
        retry_policy=RetryPolicy(maximum_attempts=3),
        summary="check the answer against what the run observed",
    )


AGREEMENT_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)


async def read_agreement(req: TaskRequest) -> AgreementTable | None:
    """The agreement table, read once (recorded in history); None, and the run goes on, if the store cannot say."""
    try:
        return await workflow.execute_activity(
            READ_AGREEMENT,
            AGREEMENT_DAYS,
            result_type=AgreementTable,
            task_queue=queue_name("workflows", req.queue_prefix),
            start_to_close_timeout=timedelta(seconds=60),
            schedule_to_start_timeout=timedelta(seconds=60),
            retry_policy=AGREEMENT_RETRY,
            summary="measured agreement of the open path",
        )
    except ActivityError as e:
        if isinstance(e.cause, CancelledError):
            raise
        return None


SHADOWS_PER_BATCH = 20  # runs started before batches were sized by bytes: one child per 20 sampled calls
# A shadow child's input, at most: a quarter of Temporal's 2 MB payload limit (and its 512 kB warning). A child
# whose input is over the limit fails its start in the run's workflow task, retried forever: the run hangs.
SHADOW_BATCH_BYTES = 512 * 1024
# The goal the judge is told (it also sees the call's prompt, which holds the goal whole).
JUDGE_GOAL_CHARS = 4_000


def shadow_request(req: TaskRequest, call: ModelCallRequest, reply: ModelCallResult, tool: str | None) -> ShadowRequest:
    info = workflow.info()
    return ShadowRequest(
        eval_id=f"{info.workflow_id}/{call.step}/{call.purpose}",
        parent_workflow_id=info.workflow_id,
        step=call.step,
        kind=call.purpose,
        tool=tool or "",
        agent=req.agent,
        goal=req.goal,
        call=call,
        open_result=reply,
        frontier=ModelEndpoint(route="frontier", model=req.routing.frontier.model, provider="anthropic"),
        frontier_queue=queue_name("frontier", req.queue_prefix),
        policy=req.evals,
        heartbeat_timeout_s=req.heartbeat_timeout_s,
    )


async def start_shadows(req: TaskRequest, calls: list[ShadowRequest]) -> None:
    """Start ShadowEvalWorkflows for the run's sampled calls: children it neither waits for nor cancels."""
    info = workflow.info()
    if workflow.patched("shadow-batches-by-bytes"):
        batches = shadow_batches(calls)
    else:  # as the run's history recorded them
        batches = [calls[i : i + SHADOWS_PER_BATCH] for i in range(0, len(calls), SHADOWS_PER_BATCH)]
    await asyncio.gather(
        *(
            workflow.start_child_workflow(
                SHADOW_WORKFLOW,
                ShadowBatch(parent_workflow_id=info.workflow_id, calls=batch),
                id=f"{info.workflow_id}-shadow-{batch[0].step}-{batch[0].kind}",
                task_queue=queue_name("workflows", req.queue_prefix),
                parent_close_policy=ParentClosePolicy.ABANDON,
                static_summary=f"shadow evaluation of {info.workflow_id} · {len(batch)} call(s)",
            )
            for batch in batches
        )
    )


async def record_stuck(req: TaskRequest, index: int, tool: str, open_model: str, frontier_model: str, why: str) -> None:
    """An open step that got stuck and then succeeded on the frontier, as a row of the ``evals`` table: a
    disagreement the open path's measured agreement (and routing by it) counts, with ``source = stuck``."""
    info = workflow.info()
    record = EvalRecord(
        eval_id=f"{info.workflow_id}/{index}/stuck",
        recorded_at=workflow.now().isoformat(),
        run_id=info.workflow_id,
        step=index,
        kind="step",
        tool=tool,
        agent=req.agent,
        open_model=open_model,
        frontier_model=frontier_model,
        verdict="frontier_better",
        method="stuck",
        reason=f"open model stuck after {why}; the frontier completed the step",
        source="stuck",
    )
    await workflow.execute_activity(
        RECORD_EVAL,
        record,
        task_queue=queue_name("workflows", req.queue_prefix),
        start_to_close_timeout=timedelta(seconds=30),
        retry_policy=RetryPolicy(maximum_attempts=10, maximum_interval=timedelta(seconds=30)),
        summary=f"record step {index}: open model stuck, frontier did it",
    )


def shadow_batches(calls: list[ShadowRequest]) -> list[list[ShadowRequest]]:
    """The calls in batches of at most SHADOW_BATCH_BYTES (and SHADOWS_PER_BATCH calls), in order.

    Each call's goal is cut to what the judge needs; a call still bigger than a whole batch (a prompt of
    half a megabyte) is not shadowed, and the worker's log says so: shadowing never blocks or fails a run.
    """
    envelope = 256  # the batch's own fields, and a comma per call
    batches: list[list[ShadowRequest]] = []
    size = 0
    for call in calls:
        if len(call.goal) > JUDGE_GOAL_CHARS:
            call = call.model_copy(update={"goal": call.goal[:JUDGE_GOAL_CHARS] + " [...]"})
        n = len(call.model_dump_json()) + 1
        if n > SHADOW_BATCH_BYTES - envelope:
            workflow.logger.warning(
                "not shadowed: step %d (%s) would be a %d-byte shadow input, over %d",
                call.step,
                call.kind,
                n,
                SHADOW_BATCH_BYTES,
            )
            continue
        if batches and size + n <= SHADOW_BATCH_BYTES and len(batches[-1]) < SHADOWS_PER_BATCH:
            batches[-1].append(call)
            size += n
        else:
            batches.append([call])
            size = envelope + n
    return batches


async def record_label(req: TaskRequest, index: int, approval: ApprovalRecord) -> None:
    """The approval of step ``index``, as a dataset label (only for runs whose calls are captured)."""
    info = workflow.info()
    await workflow.execute_activity(
        RECORD_LABEL,
        StepLabel(run_id=info.workflow_id, step=index, approval=approval),
        task_queue=queue_name("workflows", req.queue_prefix),
        start_to_close_timeout=timedelta(seconds=30),
        retry_policy=RetryPolicy(maximum_attempts=10, maximum_interval=timedelta(seconds=30)),
        summary=f"label step {index}: {approval.decision}",
    )
