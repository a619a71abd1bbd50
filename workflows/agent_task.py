"""AgentTaskWorkflow: a goal becomes a plan, each step runs on the route its stakes call for.

Deterministic orchestration only. Every model call and tool call is an activity; the
StakesPolicy (a pure function) decides where each model call goes, and every decision is
recorded with its reason in the step record, the progress query and the activity summary.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from opentelemetry import trace as otel_trace
    from opentelemetry.trace import Status, StatusCode

    from stakeflow.agents import prompts
    from stakeflow.agents.billing import cost_line
    from stakeflow.agents.evals import AgreementTable, routing_by_agreement
    from stakeflow.agents.policy import decide_route
    from stakeflow.agents.tools import CATALOGUE, constrained, first_step_tools
    from stakeflow.agents.types import (
        ModelCallRequest,
        PlannedStep,
        Progress,
        ResumeState,
        Sensitivity,
        StepRecord,
        TaskRequest,
        TaskResult,
        ToolResult,
    )
    from stakeflow.core import errors
    from stakeflow.core import semconv as sc
    from stakeflow.core.contracts import (
        AGENT_WORKFLOW,
        KEYS,
        PROGRESS_QUERY,
        Public,  # the cost line stays readable in the Web UI with codec keys on
    )
    from stakeflow.workflows.approvals import ApprovalGate
    from stakeflow.workflows.failures import StepFailure, is_cancellation
    from stakeflow.workflows.model_steps import ModelSteps
    from stakeflow.workflows.quality import QualityLoop
    from stakeflow.workflows.run_tools import RunTools
    from stakeflow.workflows.tally import tally


def _tracer():
    # Replay-safe under Temporal's OpenTelemetryPlugin: spans are not re-exported on replay.
    return otel_trace.get_tracer("stakeflow.workflow")


@workflow.defn(name=AGENT_WORKFLOW)
class AgentTaskWorkflow(ModelSteps, RunTools, ApprovalGate):
    """Plan, execute each step on its route, answer."""

    def __init__(self) -> None:
        self._progress = Progress()
        self._req = TaskRequest()
        self._sensitivity: Sensitivity = "public"
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
            except workflow.ContinueAsNewError as e:
                # Not a failure of the workflow, so the replay-safe span would never end: raise it after.
                status, continued = "continued_as_new", e
            except BaseException as e:
                if is_cancellation(e):
                    status = "canceled"
                if isinstance(e, Exception):  # as OpenTelemetry's use_span does: a BaseException is not recorded
                    self._record_failure(span, e)
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
                workflow.upsert_search_attributes(
                    [
                        KEYS["source"].value_set(req.source),
                        KEYS["sensitivity"].value_set(req.sensitivity),
                        KEYS["stakes"].value_set("high" if req.stakes == "high" else "low"),
                        KEYS["awaiting_approval"].value_set(False),
                        *([KEYS["agent"].value_set(req.agent)] if req.agent else []),
                    ]
                )
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
            for i in range(first, len(steps) + 1):
                if i > first and (i - first >= req.steps_per_history or workflow.info().is_continue_as_new_suggested()):
                    await self._continue_as_new(steps, result)
                self._progress.current_step = i
                async with self._step_span(i, "step"):
                    await self._execute_step(i, steps[i - 1])
            self._progress.phase = "answering"
            result.answer = await self._answer(result)
        except StepFailure as e:
            if self._progress.phase == "executing":
                current = self._progress.steps[self._progress.current_step - 1]
                current.status, current.error = "failed", str(e)
            self._progress.phase = "failed"
            self._progress.error = str(e)
            self._publish()
            workflow.upsert_memo({"cost": Public(cost_line(self._progress.cost))})
            await self._started_shadows()
            raise ApplicationError(str(e), type=errors.STEP_FAILED, non_retryable=True) from None
        self._progress.phase = "done"
        self._publish()
        workflow.upsert_memo({"cost": Public(cost_line(self._progress.cost))})
        result.steps = self._progress.steps
        result.usage = self._progress.usage
        result.notices = self._progress.notices
        result.cost = self._progress.cost
        result.sensitivity = self._sensitivity
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
        )
        await self._started_shadows()
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
        async with self._step_span(0, "plan"):
            reply, decision = await self._call_model(call, decision, record, label="plan")
            self._mark(decision)
        result.plan_route = decision  # as it ended: escalated or fallen back, if it was
        if reply.plan is None or not reply.plan.steps:
            raise StepFailure("planning failed: the model returned an empty plan")
        return reply.plan.steps[: req.max_steps]

    async def _execute_step(self, index: int, planned: PlannedStep) -> None:
        req = self._req
        record = self._progress.steps[index - 1]
        spec = self._specs.get(planned.tool) if planned.tool else None
        facts = self._facts(planned.tool, planned.stakes, spec.risk if spec else None)
        low, figure = routing_by_agreement(
            self._agreement, req.agent, "step", planned.tool, req.routing.min_agreement, req.routing.min_samples
        )
        facts = dataclasses.replace(facts, agreement_low=low, agreement=figure)
        decision = decide_route(facts, req.routing, req.queue_prefix)
        self._apply(record, decision)
        record.status = "running"
        self._note_decision(index, decision)
        done = self._progress.steps[: index - 1]
        call = ModelCallRequest(
            purpose="step",
            step=index,
            system=prompts.with_role(req.instructions, prompts.STEP_SYSTEM),
            prompt=prompts.step_prompt(
                req.goal,
                index,
                len(self._progress.steps),
                planned.title,
                spec,
                done,
                req.workspace_files,
            ),
            tools=[constrained(spec, req.workspace_paths)] if spec else [],
        )
        label = f"step {index}/{len(self._progress.steps)}"
        reply, decision = await self._call_model(call, decision, record, label=label, tool=planned.tool)
        self._apply(record, decision)
        action = reply.action
        record.result = action.result if action else (reply.text or "")
        calls = _unique(action.tool_calls) if action else []
        egress = bool(calls) and self._private_egress(spec)
        if egress and req.routing.private_egress == "deny":
            why = f"{spec.name if spec else '?'} is open-world and the run's data is private ([policy] private_egress = deny)"
            record.tool_results = [ToolResult(tool=c.tool, ok=False, error=f"refused: {why}") for c in calls]
            record.reason += f"; egress refused: {why}"
            self._progress.notices.append(f"step {index}: refused to send private data to {spec.name if spec else '?'}")
            record.status = "tool_error"
            self._publish()
            return
        person = egress and req.routing.private_egress == "approve"  # --auto-approve does not decide this one
        if person:
            record.reason += f"; private data to open-world tool {spec.name if spec else '?'}: needs approval"
        if calls and (self._needs_approval(decision, spec) or person):
            record.approval = await self._await_approval(index, record, calls, exact=egress, private_egress=person)
            otel_trace.get_current_span().set_attributes(
                {
                    "stakeflow.approval": record.approval.decision,
                    "stakeflow.approval.by": record.approval.by,
                }
            )
            await self._label(index, record.approval)
            if record.approval.decision in ("rejected", "timed_out"):
                record.status = "skipped"
                record.error = f"{record.approval.decision}: {record.approval.note}".rstrip(": ")
                self._publish()
                return
            if record.approval.edited_calls is not None:  # the approver's arguments are what acts
                calls = list(record.approval.edited_calls)
        for n, tool_call in enumerate(calls):
            private_source = tool_call.tool in req.routing.private_tools or bool(spec and spec.private)
            try:
                tool_result = await self._run_tool(index, n, tool_call.tool, tool_call.args, label)
            except StepFailure:
                if private_source:  # its failure's text is private data too (in the span, the run's error)
                    self._taint(index, tool_call.tool, ran_ok=False)
                raise
            record.tool_results.append(_kept(tool_result))
            if private_source:
                self._taint(index, tool_call.tool, ran_ok=tool_result.ok)
        record.status = "tool_error" if any(not r.ok for r in record.tool_results) else "ok"
        older = index - 1 - prompts.RECENT_STEPS  # the step that just left the prompts' recent window
        if older >= 0:
            self._progress.steps[older] = prompts.compacted(self._progress.steps[older], len(self._progress.steps))
        self._publish()

    def _taint(self, index: int, tool: str, *, ran_ok: bool) -> None:
        """A private tool ran: the rest of the run is private, whatever its outcome.

        A failed call's error text is the private data too (a failed cast quotes the value it could not cast).
        Runs recorded before this rule turned private only on success: behind a patch, their replays keep
        the routes (the task queues) they took.
        """
        if self._sensitivity == "private":
            return
        if not ran_ok and not workflow.patched("private-tool-taints-on-failure"):
            return
        self._sensitivity = "private"
        self._progress.notices.append(
            f"step {index}: {tool} reads a private source, so the rest of the run stays on the open model"
        )

    async def _answer(self, result: TaskResult) -> str:
        req = self._req
        decision = decide_route(self._facts(None, tally(self._progress.steps).stakes), req.routing, req.queue_prefix)
        result.answer_route = decision
        index = len(self._progress.steps) + 1
        call = ModelCallRequest(
            purpose="answer",
            step=index,
            system=prompts.with_role(req.instructions, prompts.ANSWER_SYSTEM),
            prompt=prompts.answer_prompt(req.goal, self._progress.steps),
        )
        record = StepRecord(index=index, title="answer")
        async with self._step_span(index, "answer"):
            reply, decision = await self._call_model(call, decision, record, label="answer")
            self._mark(decision)
        result.answer_route = decision
        return (reply.text or "").strip()


def _kept(result: ToolResult) -> ToolResult:
    """The part of a tool's output and error the run keeps (in history, prompts and the result); see README."""
    limit = prompts.MAX_CONTEXT_CHARS
    if result.error is not None and len(result.error) > limit:
        error = result.error[:limit] + f" [... {len(result.error) - limit} more characters not kept]"
        result = result.model_copy(update={"error": error})
    if len(result.output) <= limit:
        return result
    text = result.output[:limit] + f"\n[... {len(result.output) - limit} more characters not kept]"
    return result.model_copy(update={"output": text, "truncated": True})


def _unique(calls: list) -> list:
    """The calls without exact repeats: a model asking twice for the same thing gets it once."""
    seen: list = []
    for c in calls:
        if c not in seen:
            seen.append(c)
    return seen
