"""AgentTaskWorkflow: a goal becomes a plan, each step runs on the route its stakes call for.

Deterministic orchestration only. Every model call and tool call is an activity; the
StakesPolicy (a pure function) decides where each model call goes, and every decision is
recorded with its reason in the step record, the progress query and the activity summary.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from opentelemetry import trace as otel_trace
    from opentelemetry.trace import Status, StatusCode
    from temporalio.contrib.workflow_streams import WorkflowStream

    from stakeflow.agents import prompts
    from stakeflow.agents.billing import cost_line
    from stakeflow.agents.evals import AgreementTable
    from stakeflow.agents.policy import decide_route
    from stakeflow.agents.tools import CATALOGUE, first_step_tools
    from stakeflow.agents.types import (
        ModelCallRequest,
        PlannedStep,
        Progress,
        ResumeState,
        RunEvent,
        Sensitivity,
        StepRecord,
        TaskRequest,
        TaskResult,
    )
    from stakeflow.core import errors
    from stakeflow.core import semconv as sc
    from stakeflow.core.contracts import (
        AGENT_WORKFLOW,
        EVENTS_TOPIC,
        KEYS,
        PROGRESS_QUERY,
        Public,  # the cost line stays readable in the Web UI with codec keys on
    )
    from stakeflow.workflows.answering import Answering
    from stakeflow.workflows.approvals import ApprovalGate
    from stakeflow.workflows.bookkeeping import THROTTLED_PROGRESS, Bookkeeping
    from stakeflow.workflows.failures import StepFailure, is_cancellation
    from stakeflow.workflows.quality import QualityLoop
    from stakeflow.workflows.replanning import Replanning
    from stakeflow.workflows.run_events import RunEvents
    from stakeflow.workflows.run_tools import RunTools
    from stakeflow.workflows.step_loop import StepLoop


def _tracer():
    # Replay-safe under Temporal's OpenTelemetryPlugin: spans are not re-exported on replay.
    return otel_trace.get_tracer("stakeflow.workflow")


@workflow.defn(name=AGENT_WORKFLOW)
class AgentTaskWorkflow(StepLoop, Replanning, Answering, RunEvents):
    """Plan, execute each step in rounds on its route (revising the plan when a step fails), answer, check it."""

    @workflow.init
    def __init__(self, req: TaskRequest) -> None:
        # The event stream's handlers (a signal, an update, two queries) are registered here; a continued run
        # picks its log up where the last generation left it. Registering handlers issues no command.
        self._stream = WorkflowStream(prior_state=req.resume.events if req.resume else None)
        self._events = self._stream.topic(EVENTS_TOPIC, type=RunEvent)
        self._progress = Progress()
        self._req = TaskRequest()
        self._sensitivity: Sensitivity = "public"
        Bookkeeping.__init__(self)
        ApprovalGate.__init__(self)
        RunTools.__init__(self)
        QualityLoop.__init__(self)

    @workflow.query(name=PROGRESS_QUERY)
    def progress(self) -> Progress:
        """Current step, per-step status and route, usage so far."""
        return self._progress

    @workflow.run
    async def run(self, req: TaskRequest) -> TaskResult:
        self._req = req
        # Asked once, first, so the answer never depends on where a run first publishes (bookkeeping.py).
        self._throttled = workflow.patched(THROTTLED_PROGRESS)
        # The tools as the run started with them; runs from before the snapshot read the catalogue.
        self._specs = {v.name: v for v in req.tool_specs} or {n: CATALOGUE[n].view() for n in CATALOGUE}
        self._allowed = list(req.tools)
        self._sensitivity = req.sensitivity
        attributes = {
            sc.RUN_ID: workflow.info().workflow_id,
            sc.SOURCE: req.source,
            **({sc.AGENT: req.agent} if req.agent else {}),
            sc.SENSITIVITY: req.sensitivity,
            sc.STAKES: req.stakes,
        }
        continued: workflow.ContinueAsNewError | None = None
        # The failure goes on the span by hand: a private run's message may quote private data (see _traced_reason).
        with _tracer().start_as_current_span(
            sc.SPAN_RUN, attributes=attributes, record_exception=False, set_status_on_exception=False
        ) as span:
            status = "failed"
            try:
                result = await self._run(req)
                status = "completed"
                self._emit("done", status=status, text=result.answer)
            except workflow.ContinueAsNewError as e:
                # Not a failure of the workflow, so the replay-safe span would never end: raise it after.
                status, continued = "continued_as_new", e
            except BaseException as e:
                if is_cancellation(e):
                    status = "canceled"
                if isinstance(e, Exception):  # as OpenTelemetry's use_span does: a BaseException is not recorded
                    self._record_failure(span, e)
                if isinstance(e, Exception) or status == "canceled":  # not an eviction from the worker's cache
                    self._publish_pending()
                    why = "the run was canceled" if status == "canceled" else self._progress.error or str(e)
                    self._emit("done", status=status, error=why)
                raise
            finally:
                span.set_attributes({**self._run_attributes(), sc.STATUS: status})
        if continued is not None:
            raise continued
        return result

    async def _run(self, req: TaskRequest) -> TaskResult:
        self._validate(req)
        result = TaskResult(goal=req.goal, sensitivity=req.sensitivity)
        try:
            if req.resume is not None:
                steps, first = self._resume(req.resume, result), (req.resume.progress or Progress()).current_step + 1
            else:
                stakes = "high" if req.stakes == "high" else "low"
                workflow.upsert_search_attributes(
                    [
                        KEYS["source"].value_set(req.source),
                        KEYS["sensitivity"].value_set(req.sensitivity),
                        KEYS["stakes"].value_set(stakes),
                        KEYS["awaiting_approval"].value_set(False),
                        *([KEYS["agent"].value_set(req.agent)] if req.agent else []),
                    ]
                )
                self._published_start(stakes=stakes, sensitivity=req.sensitivity)
                await self._describe_toolsets()
                self._read_agreement()
                steps, first = await self._plan(result), 1
                await self._agreement_known()
                self._progress.phase = "executing"
                self._progress.total_steps = len(steps)
                self._progress.steps = [
                    StepRecord(index=i, title=s.title, tools=[s.tool] if s.tool else [])
                    for i, s in enumerate(steps, start=1)
                ]
                self._show_checklist()
            i = first
            while i <= len(steps):  # a revised plan (replanning.py) changes what remains
                if i > first and (i - first >= req.steps_per_history or workflow.info().is_continue_as_new_suggested()):
                    await self._continue_as_new(steps, result)
                self._progress.current_step = i
                self._emit("step_started", step=i, title=steps[i - 1].title)
                async with self._step_span(i, "step"):
                    await self._execute_step(i, steps[i - 1])
                self._emit_finished(self._progress.steps[i - 1])
                steps = await self._revised(i, steps)
                i += 1
            self._progress.phase = "answering"
            result.answer = await self._answer(result)
        except StepFailure as e:
            if self._progress.phase == "executing":
                current = self._progress.steps[self._progress.current_step - 1]
                current.status, current.error = "failed", str(e)
            self._progress.phase = "failed"
            self._progress.error = str(e)
            self._publish(final=True)
            workflow.upsert_memo({"cost": Public(cost_line(self._progress.cost))})
            await self._started_shadows()
            raise ApplicationError(str(e), type=errors.STEP_FAILED, non_retryable=True) from None
        self._progress.phase = "done"
        self._publish(final=True)
        workflow.upsert_memo({"cost": Public(cost_line(self._progress.cost))})
        result.steps = self._progress.steps
        result.usage = self._progress.usage
        result.notices = self._progress.notices
        result.cost = self._progress.cost
        result.sensitivity = self._sensitivity
        result.replans = self._progress.replans
        result.answer_supported = self._progress.answer_supported
        result.unsupported_claims = self._progress.unsupported_claims
        await self._started_shadows()
        return result

    def _resume(self, state: ResumeState, result: TaskResult) -> list[PlannedStep]:
        """Pick up a run that continued as new: its plan and what it has done."""
        self._progress = state.progress or Progress()
        self._sensitivity = state.sensitivity
        self._add_tools(state.tool_specs)
        self._agreement = AgreementTable.model_validate(state.agreement) if state.agreement else None
        result.plan_route = state.plan_route
        return state.plan

    async def _continue_as_new(self, steps: list[PlannedStep], result: TaskResult) -> None:
        """Start a fresh history for the rest of the plan (the run keeps its workflow id)."""
        self._stream.detach_pollers()  # a reader's long poll (an update) would otherwise hold the handlers open
        await workflow.wait_condition(workflow.all_handlers_finished)
        generation = self._req.resume.generation + 1 if self._req.resume else 2
        state = ResumeState(
            plan=steps,
            progress=self._progress,
            sensitivity=self._sensitivity,
            plan_route=result.plan_route,
            generation=generation,
            tool_specs=self._described,
            agreement=self._agreement,
            events=self._events_state(),
        )
        await self._started_shadows()
        self._publish_pending()
        workflow.continue_as_new(self._req.model_copy(update={"resume": state}))

    @contextlib.asynccontextmanager
    async def _step_span(self, index: int, purpose: str) -> AsyncIterator[None]:
        """The step's span, ended with its outcome also when the step fails, is cancelled or continues as new.

        Temporal's replay-safe span never ends a span an exception escaped unless that exception fails the
        workflow (it would be a workflow-task failure, retried): a StepFailure or a cancellation passing
        through would leave the step out of the trace store, its model calls without a parent. So those
        are caught inside the span, recorded on it, and raised again once it has ended.
        """
        attributes = {sc.RUN_ID: workflow.info().workflow_id, sc.STEP: index, sc.PURPOSE: purpose}
        escaped: BaseException | None = None
        with _tracer().start_as_current_span(sc.SPAN_STEP, attributes=attributes) as span:
            try:
                yield
            except (StepFailure, workflow.ContinueAsNewError) as e:
                escaped = e
            except BaseException as e:
                if not is_cancellation(e):
                    raise  # a bug: the workflow task fails and is retried; no span for that attempt
                escaped = e
            if isinstance(escaped, StepFailure):
                span.set_status(Status(StatusCode.ERROR, self._traced_reason(str(escaped))))
                span.set_attributes({sc.STATUS: "failed", sc.ERROR_TYPE: errors.STEP_FAILED})
            elif escaped is not None and is_cancellation(escaped):
                span.set_attribute(sc.STATUS, "canceled")
        if escaped is not None:
            raise escaped

    def _record_failure(self, span: otel_trace.Span, e: Exception) -> None:
        """The run's failure on its span, its text as ``_traced_reason`` allows.

        A private run's exception is recorded as a stand-in of the same kind (a workflow failure, or not), whose
        message is the traced reason: the replay-safe span ends only for a failure of the workflow (not a failed
        workflow task, which is retried) and tells them apart by the exception it recorded.
        """
        reason = self._traced_reason(f"{type(e).__name__}: {e}")
        if self._sensitivity == "private":
            e = (
                ApplicationError(reason, non_retryable=True)
                if workflow.is_failure_exception(e)
                else RuntimeError(reason)
            )
        span.record_exception(e)
        span.set_status(Status(StatusCode.ERROR, reason))

    def _traced_reason(self, reason: str) -> str:
        """A failure as a span's status says it: a private run's reason may quote the model's output or a private
        tool's error, and spans leave (OTLP), so only what kind of failure it was; the run keeps the rest."""
        if self._sensitivity != "private":
            return reason
        kind = next((k for k in ("output invalid", "unavailable", "token budget exceeded") if k in reason), "failed")
        return f"{kind}; the reason is not traced: the run's data is private (stakeflow status shows it)"

    # --- phases ------------------------------------------------------------------------

    def _validate(self, req: TaskRequest) -> None:
        if not req.goal.strip():
            raise ApplicationError(
                "the goal is empty: say what the task should achieve", type=errors.TASK_INVALID, non_retryable=True
            )
        unknown = [t for t in req.tools if t not in self._specs]
        if unknown:
            raise ApplicationError(
                f"unknown tool(s) {', '.join(unknown)}: known tools are {', '.join(sorted(self._specs))}",
                type=errors.TASK_INVALID,
                non_retryable=True,
            )
        if not req.workspace and any(t in ("read_file", "write_file", "sql_query") for t in req.tools):
            raise ApplicationError(
                "no workspace given for file tools: pass --workspace DIR", type=errors.TASK_INVALID, non_retryable=True
            )

    async def _plan(self, result: TaskResult) -> list[PlannedStep]:
        req = self._req
        decision = decide_route(self._facts(None, "low"), req.routing, req.queue_prefix)
        result.plan_route = decision
        call = ModelCallRequest(
            purpose="plan",
            system=prompts.with_role(req.instructions, prompts.PLAN_SYSTEM),
            prompt=prompts.plan_prompt(req.goal, self._tool_views(self._allowed), req.max_steps, req.workspace_files),
            examples=prompts.plan_examples(req.goal, self._tool_views(self._allowed), req.max_steps),
            tools=self._tool_views(self._allowed),
            max_steps=req.max_steps,
            first_step_tools=first_step_tools(req.goal, req.workspace_paths, self._tool_views(self._allowed))
            if req.routing.first_step_reads
            else [],
        )
        record = StepRecord(index=0, title="plan")
        self._emit("step_started", step=0, title="plan")
        async with self._step_span(0, "plan"):
            reply, decision = await self._call_model(call, decision, record, label="plan")
            self._mark(decision)
        self._emit("step_finished", step=0, title="plan", status="ok", route=decision.route, model=decision.model)
        result.plan_route = decision  # as it ended: escalated or fallen back, if it was
        if reply.plan is None or not reply.plan.steps:
            raise StepFailure("planning failed: the model returned an empty plan")
        return reply.plan.steps[: req.max_steps]
