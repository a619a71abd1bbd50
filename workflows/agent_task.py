"""AgentTaskWorkflow: a goal becomes a plan, each step runs on the route its stakes call for.

Deterministic orchestration only. Every model call and tool call is an activity; the
StakesPolicy (a pure function) decides where each model call goes, and every decision is
recorded with its reason in the step record, the progress query and the activity summary.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError
from temporalio.exceptions import TimeoutError as TemporalTimeoutError

with workflow.unsafe.imports_passed_through():
    from agents import prompts
    from agents.policy import StepFacts, decide_route, escalate, fallback
    from agents.tools import CATALOGUE, first_step_tools
    from agents.types import (
        ApprovalRecord,
        ApprovalRequest,
        CallCostRecord,
        ModelCallRequest,
        ModelCallResult,
        ModelEndpoint,
        PlannedStep,
        Progress,
        ResumeState,
        RouteDecision,
        Stakes,
        StepRecord,
        TaskRequest,
        TaskResult,
        ToolRequest,
        ToolResult,
        Usage,
    )
    from opentelemetry import trace as otel_trace

    from stakeflow.core import errors
    from stakeflow.core import semconv as sc
    from stakeflow.core.billing import cost_line
    from stakeflow.core.contracts import (
        AGENT_WORKFLOW, APPROVE_UPDATE, CALL_MODEL, KEYS, PROGRESS_QUERY, RUN_TOOL, queue_name,
    )

def _model_retry(routing) -> RetryPolicy:
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
# A call nobody picks up fails instead of waiting forever: no worker polls that queue.
SCHEDULE_TO_START = timedelta(minutes=10)
MODEL_TIMEOUTS = {"open": timedelta(minutes=5), "frontier": timedelta(minutes=3)}


def _tracer():
    # Replay-safe under Temporal's OpenTelemetryPlugin: spans are not re-exported on replay.
    return otel_trace.get_tracer("stakeflow.workflow")


class StepFailure(Exception):
    """Raised inside the workflow when a step cannot complete; becomes the run's failure."""


@workflow.defn(name=AGENT_WORKFLOW)
class AgentTaskWorkflow:
    """Plan, execute each step on its route, answer."""

    def __init__(self) -> None:
        self._progress = Progress()
        self._req = TaskRequest()
        self._sensitivity = "public"
        self._awaiting: dict[int, str] = {}  # step -> what waits (tool calls), while it waits
        self._decisions: dict[int, ApprovalRecord] = {}

    @workflow.query(name=PROGRESS_QUERY)
    def progress(self) -> Progress:
        """Current step, per-step status and route, usage so far."""
        return self._progress

    @workflow.update(name=APPROVE_UPDATE)
    async def approve_step(self, request: ApprovalRequest) -> ApprovalRecord:
        """A person's decision on a step waiting for approval."""
        record = ApprovalRecord(
            decision="approved" if request.decision == "approve" else "rejected",
            note=request.note, by=request.by or "unknown", at=workflow.now().isoformat(),
            waiting_for=self._awaiting.get(request.step, ""),
        )
        self._decisions[request.step] = record
        return record

    @approve_step.validator
    def _check_approval(self, request: ApprovalRequest) -> None:
        if request.step in self._decisions:
            done = self._decisions[request.step]
            raise ValueError(f"step {request.step} was already {done.decision.replace('_', ' ')} by {done.by}")
        if request.step not in self._awaiting:
            waiting = ", ".join(str(i) for i in sorted(self._awaiting)) or "none"
            raise ValueError(f"step {request.step} is not waiting for approval (steps waiting: {waiting})")
        if request.decision == "reject" and not request.note.strip():
            raise ValueError("a rejection needs a note saying why (--note)")

    @workflow.run
    async def run(self, req: TaskRequest) -> TaskResult:
        self._req = req
        self._sensitivity = req.sensitivity
        attributes = {
            sc.RUN_ID: workflow.info().workflow_id, sc.SOURCE: req.source,
            sc.SENSITIVITY: req.sensitivity, sc.STAKES: req.stakes,
        }
        with _tracer().start_as_current_span(sc.SPAN_RUN, attributes=attributes) as span:
            status = "failed"
            try:
                result = await self._run(req)
                status = "completed"
                return result
            except BaseException as e:
                if isinstance(e, workflow.ContinueAsNewError):
                    status = "continued_as_new"
                elif _is_cancellation(e):
                    status = "canceled"
                raise
            finally:
                span.set_attributes({**self._run_attributes(), sc.STATUS: status})

    async def _run(self, req: TaskRequest) -> TaskResult:
        self._validate(req)
        result = TaskResult(goal=req.goal, sensitivity=req.sensitivity)
        try:
            if req.resume is not None:
                steps, first = self._resume(req.resume, result), (req.resume.progress or Progress()).current_step + 1
            else:
                workflow.upsert_search_attributes([
                    KEYS["source"].value_set(req.source),
                    KEYS["sensitivity"].value_set(req.sensitivity),
                    KEYS["stakes"].value_set("high" if req.stakes == "high" else "low"),
                    KEYS["awaiting_approval"].value_set(False),
                ])
                steps, first = await self._plan(result), 1
                self._progress.phase = "executing"
                self._progress.total_steps = len(steps)
                self._progress.steps = [StepRecord(index=i, title=s.title, tools=[s.tool] if s.tool else [])
                                        for i, s in enumerate(steps, start=1)]
                self._show_checklist()
            for i in range(first, len(steps) + 1):
                if i > first and (i - first >= req.steps_per_history or workflow.info().is_continue_as_new_suggested()):
                    await self._continue_as_new(steps, result)
                self._progress.current_step = i
                with self._step_span(i, "step"):
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
            workflow.upsert_memo({"cost": cost_line(self._progress.cost)})
            raise ApplicationError(str(e), type=errors.STEP_FAILED, non_retryable=True) from None
        self._progress.phase = "done"
        self._publish()
        workflow.upsert_memo({"cost": cost_line(self._progress.cost)})
        result.steps = self._progress.steps
        result.usage = self._progress.usage
        result.notices = self._progress.notices
        result.cost = self._progress.cost
        result.sensitivity = self._sensitivity  # type: ignore[assignment]
        return result

    def _resume(self, state: ResumeState, result: TaskResult) -> list[PlannedStep]:
        """Pick up a run that continued as new: its plan and what it has done."""
        self._progress = state.progress or Progress()
        self._sensitivity = state.sensitivity
        result.plan_route = state.plan_route
        return state.plan

    async def _continue_as_new(self, steps: list[PlannedStep], result: TaskResult) -> None:
        """Start a fresh history for the rest of the plan (the run keeps its workflow id)."""
        await workflow.wait_condition(workflow.all_handlers_finished)
        generation = self._req.resume.generation + 1 if self._req.resume else 2
        state = ResumeState(plan=steps, progress=self._progress, sensitivity=self._sensitivity,  # type: ignore[arg-type]
                            plan_route=result.plan_route, generation=generation)
        workflow.continue_as_new(self._req.model_copy(update={"resume": state}))

    def _step_span(self, index: int, purpose: str):
        return _tracer().start_as_current_span(
            sc.SPAN_STEP, attributes={sc.RUN_ID: workflow.info().workflow_id, sc.STEP: index, sc.PURPOSE: purpose}
        )

    def _run_attributes(self) -> dict:
        p = self._progress
        executed = [s for s in p.steps if s.status not in ("pending", "skipped")]
        return {
            sc.STEP_COUNT: len(p.steps),
            sc.OPEN_STEPS: sum(1 for s in executed if s.route == "open"),
            sc.FRONTIER_STEPS: sum(1 for s in executed if s.route == "frontier"),
            sc.ESCALATIONS: sum(1 for s in p.steps if s.escalated),
            sc.SENSITIVITY: self._sensitivity,
            sc.STAKES: "high" if any(s.stakes == "high" for s in executed) else "low",
            sc.COST_USD: p.cost.total_usd,
            sc.FRONTIER_EQUIVALENT_USD: p.cost.frontier_equivalent_usd,
        }

    # --- phases ------------------------------------------------------------------------

    def _validate(self, req: TaskRequest) -> None:
        if not req.goal.strip():
            raise ApplicationError("the goal is empty: say what the task should achieve",
                                   type=errors.TASK_INVALID, non_retryable=True)
        unknown = [t for t in req.tools if t not in CATALOGUE]
        if unknown:
            raise ApplicationError(
                f"unknown tool(s) {', '.join(unknown)}: known tools are {', '.join(sorted(CATALOGUE))}",
                type=errors.TASK_INVALID, non_retryable=True,
            )
        if not req.workspace and any(t in ("read_file", "write_file", "sql_query") for t in req.tools):
            raise ApplicationError("no workspace given for file tools: pass --workspace DIR",
                                   type=errors.TASK_INVALID, non_retryable=True)

    async def _plan(self, result: TaskResult) -> list[PlannedStep]:
        req = self._req
        decision = decide_route(self._facts(None, "low"), req.routing, req.queue_prefix)
        result.plan_route = decision
        call = ModelCallRequest(
            purpose="plan",
            system=prompts.PLAN_SYSTEM,
            prompt=prompts.plan_prompt(req.goal, self._tool_views(req.tools), req.max_steps, req.workspace_files),
            examples=prompts.plan_examples(req.goal, self._tool_views(req.tools), req.max_steps),
            tools=self._tool_views(req.tools),
            max_steps=req.max_steps,
            first_step_tools=first_step_tools(req.goal, req.workspace_paths, req.tools),
        )
        record = StepRecord(index=0, title="plan")
        with self._step_span(0, "plan"):
            reply, _ = await self._call_model(call, decision, record, label="plan")
        if reply.plan is None or not reply.plan.steps:
            raise StepFailure("planning failed: the model returned an empty plan")
        return reply.plan.steps[: req.max_steps]

    async def _execute_step(self, index: int, planned: PlannedStep) -> None:
        req = self._req
        record = self._progress.steps[index - 1]
        spec = CATALOGUE.get(planned.tool) if planned.tool else None
        facts = self._facts(planned.tool, planned.stakes, spec.risk if spec else None)
        decision = decide_route(facts, req.routing, req.queue_prefix)
        self._apply(record, decision)
        record.status = "running"
        self._note_decision(index, decision)
        done = self._progress.steps[: index - 1]
        call = ModelCallRequest(
            purpose="step",
            step=index,
            system=prompts.STEP_SYSTEM,
            prompt=prompts.step_prompt(
                req.goal, index, len(self._progress.steps), planned.title, spec.view() if spec else None, done,
                req.workspace_files,
            ),
            tools=[spec.view(req.workspace_paths)] if spec else [],
        )
        label = f"step {index}/{len(self._progress.steps)}"
        reply, decision = await self._call_model(call, decision, record, label=label, tool=planned.tool)
        self._apply(record, decision)
        action = reply.action
        record.result = action.result if action else (reply.text or "")
        calls = _unique(action.tool_calls) if action else []
        if calls and self._needs_approval(decision, spec):
            record.approval = await self._await_approval(index, record, calls)
            otel_trace.get_current_span().set_attributes({
                "stakeflow.approval": record.approval.decision, "stakeflow.approval.by": record.approval.by,
            })
            if record.approval.decision in ("rejected", "timed_out"):
                record.status = "skipped"
                record.error = f"{record.approval.decision}: {record.approval.note}".rstrip(": ")
                self._publish()
                return
        for n, tool_call in enumerate(calls):
            tool_result = await self._run_tool(index, n, tool_call.tool, tool_call.args, label)
            record.tool_results.append(_kept(tool_result))
            if tool_result.ok and tool_call.tool in req.routing.private_tools and self._sensitivity != "private":
                self._sensitivity = "private"
                self._progress.notices.append(
                    f"step {index}: {tool_call.tool} reads a private source, so the rest of the run stays on the open model"
                )
        record.status = "tool_error" if any(not r.ok for r in record.tool_results) else "ok"
        self._publish()

    async def _answer(self, result: TaskResult) -> str:
        req = self._req
        highest: Stakes = "high" if any(s.stakes == "high" for s in self._progress.steps) else "low"
        decision = decide_route(self._facts(None, highest), req.routing, req.queue_prefix)
        result.answer_route = decision
        index = len(self._progress.steps) + 1
        call = ModelCallRequest(
            purpose="answer",
            step=index,
            system=prompts.ANSWER_SYSTEM,
            prompt=prompts.answer_prompt(req.goal, self._progress.steps),
        )
        record = StepRecord(index=index, title="answer")
        with self._step_span(index, "answer"):
            reply, decision = await self._call_model(call, decision, record, label="answer")
        result.answer_route = decision
        return (reply.text or "").strip()

    # --- activities --------------------------------------------------------------------

    async def _call_model(
        self, call: ModelCallRequest, decision: RouteDecision, record: StepRecord, *, label: str, tool: str | None = None
    ) -> tuple[ModelCallResult, RouteDecision]:
        """One model call with the policy's retry-then-escalate rule; raises StepFailure."""
        routing = self._req.routing
        failures = 0
        while True:
            try:
                reply = await self._model_activity(call, decision, label, tool)
            except ActivityError as e:
                if isinstance(e.cause, CancelledError):
                    raise  # the run was cancelled: end as cancelled, not as a failed step
                cause = _cause(e)
                kind = _error_type(e)
                record.attempts.append(f"{decision.route}: {cause}")
                self._count_failed_call(decision.route, e)
                if _unavailable(e, kind) and decision.route == "open":
                    moved, why_not = fallback(decision, self._sensitivity, routing, self._req.queue_prefix)  # type: ignore[arg-type]
                    if moved is None:
                        raise StepFailure(
                            f"{label} '{record.title}' failed: open model unavailable ({cause}); no fallback: {why_not}"
                        ) from None
                    self._progress.notices.append(f"{label}: {moved.reason.rsplit('; ', 1)[-1]}")
                    decision = moved
                    continue
                if kind != errors.MODEL_OUTPUT_INVALID:
                    raise StepFailure(f"{label} '{record.title}' failed on the {decision.route} model: {cause}") from None
                failures += 1
                if decision.route == "open" and failures < routing.open_attempts:
                    continue
                escalated, why_not = escalate(decision, self._sensitivity, routing, failures, self._req.queue_prefix)  # type: ignore[arg-type]
                if escalated is None:
                    raise StepFailure(
                        f"{label} '{record.title}' failed: {decision.route} model output invalid "
                        f"{failures}x ({cause}); not escalated: {why_not}"
                    ) from None
                self._progress.notices.append(f"{label}: {escalated.reason.rsplit('; ', 1)[-1]}")
                decision = escalated
                continue
            record.attempts.append(f"{decision.route}: ok")
            record.usage = record.usage + reply.usage
            self._progress.cost.add(decision.route, reply.cost)
            if record.cost_usd is not None:
                record.cost_usd = None if reply.cost.usd is None else record.cost_usd + reply.cost.usd
            self._add_usage(reply.usage, label)
            return reply, decision

    async def _model_activity(
        self, call: ModelCallRequest, decision: RouteDecision, label: str, tool: str | None
    ) -> ModelCallResult:
        req = self._req
        endpoint = req.routing.open if decision.route == "open" else req.routing.frontier
        call = call.model_copy(update={
            "run_id": workflow.info().workflow_id,
            "endpoint": ModelEndpoint(route=decision.route, model=decision.model, provider=endpoint.provider),
            "stakes": decision.stakes,
            "reason": decision.reason,
            "escalated": decision.escalated,
            "source": req.source,
            "frontier_model": req.routing.frontier.model,
        })
        parts = [label, decision.route, decision.model or "?"]
        if tool:
            parts.append(tool)
        if decision.escalated:
            parts.append("escalated")
        if decision.fallback:
            parts.append("fallback")
        return await workflow.execute_activity(
            CALL_MODEL,
            call,
            result_type=ModelCallResult,
            task_queue=decision.task_queue,
            start_to_close_timeout=MODEL_TIMEOUTS[decision.route],
            heartbeat_timeout=timedelta(seconds=req.heartbeat_timeout_s),
            schedule_to_start_timeout=SCHEDULE_TO_START,
            retry_policy=_model_retry(req.routing),
            summary=" · ".join(parts),
        )

    async def _run_tool(self, index: int, n: int, tool: str, args: dict, label: str) -> ToolResult:
        req = self._req
        wf_id = workflow.info().workflow_id
        tool_req = ToolRequest(
            run_id=wf_id, step=index, call_index=n, tool=tool, args=args, workspace=req.workspace,
            idempotency_key=f"{wf_id}/{index}/{n}",
        )
        spec = CATALOGUE.get(tool)
        summary = f"{label} · tool · {tool}"
        try:
            if spec is not None and spec.local:
                return await workflow.execute_local_activity(
                    RUN_TOOL, tool_req, result_type=ToolResult,
                    start_to_close_timeout=timedelta(seconds=60), retry_policy=TOOL_RETRY, summary=summary,
                )
            return await workflow.execute_activity(
                RUN_TOOL, tool_req, result_type=ToolResult,
                task_queue=queue_name("tools", req.queue_prefix),
                start_to_close_timeout=timedelta(seconds=60),
                schedule_to_start_timeout=SCHEDULE_TO_START,
                retry_policy=TOOL_RETRY, summary=summary,
            )
        except ActivityError as e:
            if isinstance(e.cause, CancelledError):
                raise
            raise StepFailure(f"{label} tool {tool} failed: {_cause(e)}") from None

    # --- approvals -----------------------------------------------------------------------

    def _needs_approval(self, decision: RouteDecision, spec) -> bool:
        if decision.needs_approval:
            return True
        return decision.stakes == "high" and spec is not None and spec.risk in self._req.approvals.risks

    async def _await_approval(self, index: int, record: StepRecord, calls: list) -> ApprovalRecord:
        """Pause until a person decides (``approve_step``), or the timeout rejects the step."""
        policy = self._req.approvals
        what = "; ".join(_describe_call(c) for c in calls)
        if policy.auto_approve:
            return ApprovalRecord(decision="auto_approved", by="--auto-approve", at=workflow.now().isoformat(),
                                  waiting_for=what)
        self._awaiting[index] = what
        record.status = "awaiting_approval"
        self._progress.awaiting_approval = sorted(self._awaiting)
        workflow.upsert_search_attributes([KEYS["awaiting_approval"].value_set(True)])
        self._show_checklist()
        try:
            await workflow.wait_condition(lambda: index in self._decisions, timeout=timedelta(seconds=policy.timeout_s))
            decision = self._decisions[index]
        except asyncio.TimeoutError:
            decision = ApprovalRecord(decision="timed_out", note=f"no decision within {policy.timeout_s:g}s",
                                      by="timeout", at=workflow.now().isoformat(), waiting_for=what)
            self._decisions[index] = decision
        finally:
            self._awaiting.pop(index, None)
            self._progress.awaiting_approval = sorted(self._awaiting)
            workflow.upsert_search_attributes([KEYS["awaiting_approval"].value_set(bool(self._awaiting))])
        record.status = "running"
        return decision

    def _publish(self) -> None:
        """Search attributes and details after a step: what the Web UI and `stakeflow list` show."""
        p = self._progress
        executed = [s for s in p.steps if s.status not in ("pending", "skipped", "running", "awaiting_approval")]
        workflow.upsert_search_attributes([
            KEYS["stakes"].value_set("high" if any(s.stakes == "high" for s in executed) else "low"),
            KEYS["sensitivity"].value_set(self._sensitivity),
            KEYS["open_steps"].value_set(sum(1 for s in executed if s.route == "open")),
            KEYS["frontier_steps"].value_set(sum(1 for s in executed if s.route == "frontier")),
            KEYS["escalations"].value_set(sum(1 for s in p.steps if s.escalated)),
            KEYS["cost_usd"].value_set(round(p.cost.total_usd, 6)),
        ])
        self._show_checklist()

    # --- bookkeeping -------------------------------------------------------------------

    def _facts(self, tool: str | None, planner_stakes: Stakes, risk=None) -> StepFacts:
        return StepFacts(tool=tool, tool_risk=risk, planner_stakes=planner_stakes,
                         override=self._req.stakes, sensitivity=self._sensitivity)  # type: ignore[arg-type]

    def _tool_views(self, names: list[str]):
        return [CATALOGUE[n].view() for n in names if n in CATALOGUE]

    def _apply(self, record: StepRecord, d: RouteDecision) -> None:
        otel_trace.get_current_span().set_attributes({
            sc.ROUTE: d.route, sc.STAKES: d.stakes, sc.REASON: d.reason, sc.ESCALATED: d.escalated,
            sc.GEN_AI_REQUEST_MODEL: d.model,
        })
        record.route, record.model, record.stakes, record.reason = d.route, d.model, d.stakes, d.reason
        record.needs_approval, record.downgraded = d.needs_approval, d.downgraded
        record.escalated = record.escalated or d.escalated
        record.fallback = record.fallback or d.fallback

    def _note_decision(self, index: int, d: RouteDecision) -> None:
        if d.downgraded:
            self._progress.notices.append(f"step {index}: high stakes ran on the open model: frontier not configured")
        if d.needs_approval:
            self._progress.notices.append(f"step {index}: private + high stakes kept on the open model; flagged for approval")

    def _count_failed_call(self, route: str, e: ActivityError) -> None:
        """A failed attempt's tokens were spent too: count its usage and cost."""
        c = e.cause
        details = c.details[0] if isinstance(c, ApplicationError) and c.details else None
        if not isinstance(details, dict) or "cost" not in details:
            return
        self._progress.cost.add(route, CallCostRecord.model_validate(details["cost"]))
        self._progress.usage = self._progress.usage + Usage.model_validate(details.get("usage") or {})

    def _add_usage(self, usage: Usage, label: str) -> None:
        self._progress.usage = self._progress.usage + usage
        budget = self._req.budget_tokens
        if budget is not None and self._progress.usage.total_tokens > budget:
            raise StepFailure(
                f"token budget exceeded after {label}: {self._progress.usage.total_tokens} > {budget} tokens; "
                "raise --budget-tokens or simplify the goal"
            )

    def _show_checklist(self) -> None:
        marks = {"ok": "x", "tool_error": "x", "failed": "!", "skipped": "-", "running": " ", "pending": " ",
                 "awaiting_approval": "?"}
        lines = [f"**{self._progress.phase}**"]
        for s in self._progress.steps:
            route = f" · {s.route}" if s.status != "pending" else ""
            extra = {"running": " (running)", "tool_error": " (tool error)", "skipped": f" (skipped: {s.error})",
                     "awaiting_approval": " (**waiting for approval**)"}.get(s.status, "")
            lines.append(f"- [{marks[s.status]}] {s.index}. {s.title}{route}{extra}")
        for index, what in sorted(self._awaiting.items()):
            why = self._progress.steps[index - 1].reason
            lines.append(f"\n**Waiting for approval: step {index}** · {what}\nwhy: {why}\n"
                         f"`stakeflow approve {workflow.info().workflow_id} {index}` or "
                         f"`stakeflow reject {workflow.info().workflow_id} {index} --note ...`")
        lines.append(f"\n{cost_line(self._progress.cost)}")
        if self._progress.error:
            lines.append(f"\nfailed: {self._progress.error}")
        workflow.set_current_details("\n".join(lines))


def _kept(result: ToolResult) -> ToolResult:
    """The part of a tool's output the run keeps (in history, prompts and the result); see README."""
    if len(result.output) <= prompts.MAX_CONTEXT_CHARS:
        return result
    cut = len(result.output) - prompts.MAX_CONTEXT_CHARS
    text = result.output[: prompts.MAX_CONTEXT_CHARS] + f"\n[... {cut} more characters not kept]"
    return result.model_copy(update={"output": text, "truncated": True})


def _describe_call(call) -> str:
    args = ", ".join(f"{k}={_preview(v)}" for k, v in call.args.items())
    return f"{call.tool}({args})"


def _preview(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _unavailable(e: ActivityError, kind: str | None) -> bool:
    """The endpoint could not answer through all retries (or no worker took the call)."""
    if kind == errors.MODEL_UNAVAILABLE:
        return True
    return isinstance(e.cause, TemporalTimeoutError)


def _is_cancellation(e: BaseException) -> bool:
    if isinstance(e, (asyncio.CancelledError, CancelledError)):
        return True
    return isinstance(e, ActivityError) and isinstance(e.cause, CancelledError)


def _unique(calls: list) -> list:
    """The calls without exact repeats: a model asking twice for the same thing gets it once."""
    seen: list = []
    for c in calls:
        if c not in seen:
            seen.append(c)
    return seen


def _error_type(e: ActivityError) -> str | None:
    c = e.cause
    return c.type if isinstance(c, ApplicationError) else None


def _cause(e: ActivityError) -> str:
    c = e.cause
    if isinstance(c, TemporalTimeoutError):
        return f"timed out ({c.type.name.lower() if c.type else 'timeout'}): is a worker polling the queue? run `stakeflow worker`"
    return str(c.message if hasattr(c, "message") else c) if c else str(e)
