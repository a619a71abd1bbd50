"""One step of a plan as rounds: the model asks for tool calls, the tools run, the model sees what they returned
and fixes what failed — until the step has its result, its rounds are spent, or it is stuck.

A mixin of AgentTaskWorkflow. Each round is one model call on the step's route (an activity, routed and
retried like every call) and the tool calls it asked for (activities; approvals and the private-egress rule
apply to every round). A round whose calls all succeed ends the step: the next step and the answer see its
results, and a plan that needs more comes from replanning (workflows/replanning.py), so a step that works
costs one model call, as before. A round with a failed call gives the model the error, with the tool's own
fix message, in the next round. A call asked for again exactly as before is not run again: a repeat of a
failed call is counted (the model is stuck), a repeat of a successful one changes nothing.

A step stuck on the open model is re-run on the frontier when sensitivity and policy allow
(``[policy] escalate_when_stuck``), the open rounds' errors in view; a private run never escalates, and the
step ends with ``tool_error`` and its ``stuck`` reason, which the answer prompt and the answer check read.

Runs of earlier releases carry ``RoutingConfig.max_rounds = 1`` and ``escalate_when_stuck = False``: one
round, the commands they recorded.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from opentelemetry import trace as otel_trace

    from stakeflow.agents import prompts
    from stakeflow.agents.arithmetic_grammar import operands_constrained
    from stakeflow.agents.evals import routing_by_agreement
    from stakeflow.agents.policy import decide_route, escalate_stuck
    from stakeflow.agents.sql_grammar import sql_constrained
    from stakeflow.agents.tools import constrained, named_files
    from stakeflow.agents.types import (
        MAX_ROUNDS,
        ModelCallRequest,
        PlannedStep,
        RoundRecord,
        RoundTurn,
        RouteDecision,
        StepAction,
        StepRecord,
        ToolCall,
        ToolResult,
        ToolSpecView,
    )
    from stakeflow.core import semconv as sc
    from stakeflow.workflows.approvals import ApprovalGate
    from stakeflow.workflows.calls import record_stuck
    from stakeflow.workflows.failures import StepFailure
    from stakeflow.workflows.model_steps import ModelSteps
    from stakeflow.workflows.run_tools import RunTools

if TYPE_CHECKING:
    from stakeflow.agents.evals import AgreementTable


# The plan's tools ride in every frontier step's call: past this many characters of schemas (a plan naming many
# large MCP tools, a workspace of many files in each file argument's enum) a step sends its own tool alone, so a
# call's input stays bounded whatever the plan says.
MAX_SHARED_TOOLS_CHARS = 32_000


def shared_tools(steps: list[StepRecord], specs: dict[str, ToolSpecView], paths: list[str]) -> list[ToolSpecView]:
    """Every tool the plan's steps use, by name, each offering the workspace's files: one output-tool schema for all
    the steps of a frontier run (``ModelCallRequest.shared_tools``), so each step reads the cache the last one wrote.
    Empty past ``MAX_SHARED_TOOLS_CHARS``."""
    tools = [constrained(specs[n], paths) for n in sorted({t for s in steps for t in s.tools if t in specs})]
    return tools if sum(len(t.model_dump_json()) for t in tools) <= MAX_SHARED_TOOLS_CHARS else []


@dataclasses.dataclass
class _StepState:
    """What one step has done so far, across its rounds."""

    record: StepRecord
    spec: ToolSpecView | None
    tool: str | None  # the step's planned tool
    label: str
    decision: RouteDecision
    turns: list[RoundTurn] = dataclasses.field(default_factory=list)
    seen: dict[str, ToolResult] = dataclasses.field(default_factory=dict)  # call -> its result, this step
    failed: int = 0  # tool calls that failed (repeats included)
    stuck: str = ""


class StepLoop(ModelSteps, RunTools, ApprovalGate):
    """A step's rounds, its stuck escalation, and the private-data rules on every tool call."""

    _agreement: AgreementTable | None

    async def _execute_step(self, index: int, planned: PlannedStep) -> None:
        req = self._req
        record = self._progress.steps[index - 1]
        spec = self._specs.get(planned.tool) if planned.tool else None
        facts = self._facts(planned.tool, planned.stakes, spec.risk if spec else None)
        low, figure = routing_by_agreement(
            self._agreement, req.agent, "step", planned.tool, req.routing.min_agreement, req.routing.min_samples
        )
        decision = decide_route(
            dataclasses.replace(facts, agreement_low=low, agreement=figure), req.routing, req.queue_prefix
        )
        self._apply(record, decision)
        record.status = "running"
        self._note_decision(index, decision)
        state = _StepState(record, spec, planned.tool, f"step {index}/{len(self._progress.steps)}", decision)
        call = self._step_call(index, planned, spec, frontier=decision.route == "frontier")
        rounds = max(1, min(req.routing.max_rounds, MAX_ROUNDS))
        done = await self._rounds(index, call, state, rounds)
        if not done and not state.stuck:
            return  # refused, rejected or timed out: the step's status says so
        if state.stuck and state.decision.route == "open":
            escalated, why_not = escalate_stuck(
                state.decision, self._sensitivity, req.routing, state.stuck, req.queue_prefix
            )
            if escalated is not None:
                self._progress.notices.append(f"{state.label}: {escalated.reason.rsplit('; ', 1)[-1]}")
                open_model, why = state.decision.model, state.stuck
                state.decision, state.stuck = escalated, ""
                self._apply(record, escalated)
                shared = self._plan_tools() if spec else []
                done = await self._rounds(index, call.model_copy(update={"shared_tools": shared}), state, rounds)
                if done:  # the open path failed where the frontier did not: a measured disagreement
                    await record_stuck(req, index, state.tool or "", open_model, escalated.model, why)
            elif req.routing.escalate_when_stuck:
                self._progress.notices.append(
                    f"{state.label}: open model stuck after {state.stuck}; not escalated: {why_not}"
                )
        record.stuck = state.stuck
        if state.stuck:
            otel_trace.get_current_span().set_attribute(sc.STUCK, state.stuck)
        record.status = "ok" if done else "tool_error"
        # The steps that just left the frontier prompts' recent window, the longer one (in jumps: none, or
        # RECENT_STEPS of them); an open prompt shows some of those kept whole as a line already.
        for older in range(prompts.shown_as_lines(index - 1), prompts.shown_as_lines(index)):
            self._progress.steps[older] = prompts.compacted(self._progress.steps[older], len(self._progress.steps))
        self._publish()

    def _step_call(
        self, index: int, planned: PlannedStep, spec: ToolSpecView | None, *, frontier: bool
    ) -> ModelCallRequest:
        """The step's model call; ``frontier``: with the plan's tools for the prompt cache (the open route's call
        need not carry them, nor the workflow build them: open steps are the many)."""
        req = self._req
        blocks = prompts.step_prompt_blocks(
            req.goal,
            index,
            len(self._progress.steps),
            planned.title,
            spec,
            self._progress.steps[: index - 1],
            req.workspace_files,
            jumps=frontier,
        )
        return ModelCallRequest(
            purpose="step",
            step=index,
            system=prompts.with_role(req.instructions, prompts.STEP_SYSTEM),
            prompt="".join(blocks),
            prompt_blocks=prompts.block_ends(blocks),
            tools=[self._offered_tool(index, spec, frontier=frontier)] if spec else [],
            shared_tools=self._plan_tools() if spec and frontier else [],
        )

    def _offered_tool(self, index: int, spec: ToolSpecView, *, frontier: bool) -> ToolSpecView:
        """The step's tool as its model call offers it: file arguments limited to the files it may name, and on
        the open route with ``sql_grammar`` its SQL held to the workspace's tables (agents/sql_grammar.py), with
        ``calculator_grammar`` its arithmetic to the figures the run has seen (agents/arithmetic_grammar.py)."""
        view = constrained(spec, self._offered_paths(index, spec))
        if self._req.routing.sql_grammar and not frontier:
            view = sql_constrained(view, self._req.workspace_tables)
        if self._req.routing.calculator_grammar and not frontier:
            seen = [r.output for s in self._progress.steps[: index - 1] for r in s.tool_results if r.ok]
            view = operands_constrained(view, self._req.goal, seen)
        return view

    def _plan_tools(self) -> list[ToolSpecView]:
        return shared_tools(self._progress.steps, self._specs, self._req.workspace_paths)

    def _offered_paths(self, index: int, spec: ToolSpecView) -> list[str]:
        """The files a step's file arguments may name: the workspace's, or for the first step of a run whose goal
        names files (``first_step_reads``, the plan starts by reading them) just those."""
        req = self._req
        if index == 1 and req.routing.first_step_reads and spec.file_args:
            named = named_files(req.goal, req.workspace_paths)
            if named:
                return named
        return req.workspace_paths

    async def _rounds(self, index: int, call: ModelCallRequest, state: _StepState, limit: int) -> bool:
        """Rounds until the step is done (True), stuck (False with ``state.stuck``) or stopped by a person or
        the egress rule (False). Round numbers go on across an escalation."""
        record = state.record
        first = len(record.rounds) + 1
        for r in range(first, first + limit):
            self._progress.current_round = r
            label = state.label if r == 1 else f"{state.label} · round {r}"
            # Round 1 must call the step's tool (the plan chose it); a later round may give up with no call.
            required = r == 1 and state.spec is not None and self._req.routing.max_rounds > 1
            this = call.model_copy(update={"round": r, "rounds": list(state.turns), "require_tool_call": required})
            reply, state.decision = await self._call_model(this, state.decision, record, label=label, tool=state.tool)
            self._apply(record, state.decision)
            action = reply.action or StepAction(result=reply.text or "")
            calls = _unique(action.tool_calls)
            fresh = [c for c in calls if _key(c) not in state.seen]
            repeats_failed = [c for c in calls if _key(c) in state.seen and not state.seen[_key(c)].ok]
            record.rounds.append(
                RoundRecord(
                    round=r,
                    route=state.decision.route,
                    model=state.decision.model,
                    escalated=state.decision.escalated,
                    tool_calls=calls,
                    note=action.result,
                    repeated=len(calls) - len(fresh),
                )
            )
            record.result = action.result
            if not fresh:
                if repeats_failed:
                    state.failed += len(repeats_failed)
                    state.stuck = f"{_failed_calls(state)} (it asked for the same failing call again)"
                    return False
                return True  # nothing (new) to run: the step is done
            results = await self._act(index, r, fresh, state, label)
            if results is None:
                return False
            if all(res.ok for res in results):
                return True
            state.failed += sum(1 for res in results if not res.ok)
            state.turns.append(RoundTurn(action=action, results=[prompts.clipped_result(res) for res in results]))
        state.stuck = _failed_calls(state)
        return False

    async def _act(
        self, index: int, r: int, calls: list[ToolCall], state: _StepState, label: str
    ) -> list[ToolResult] | None:
        """The round's tool calls, after the egress rule and any approval; None when none may run."""
        req, record, spec = self._req, state.record, state.spec
        egress = self._private_egress(spec)
        if egress and req.routing.private_egress == "deny":
            why = f"{spec.name if spec else '?'} is open-world and the run's data is private ([policy] private_egress = deny)"
            record.tool_results += [ToolResult(tool=c.tool, ok=False, error=f"refused: {why}", round=r) for c in calls]
            record.reason += f"; egress refused: {why}"
            self._progress.notices.append(f"step {index}: refused to send private data to {spec.name if spec else '?'}")
            record.status = "tool_error"
            self._publish()
            return None
        person = egress and req.routing.private_egress == "approve"  # --auto-approve does not decide this one
        why = f"private data to open-world tool {spec.name if spec else '?'}: needs approval"
        if person and why not in record.reason:  # said once, however many rounds wait
            record.reason += f"; {why}"
        if self._needs_approval(state.decision, spec) or person:
            record.approval = await self._await_approval(index, record, calls, exact=egress, private_egress=person)
            otel_trace.get_current_span().set_attributes(
                {"stakeflow.approval": record.approval.decision, "stakeflow.approval.by": record.approval.by}
            )
            await self._label(index, record.approval)
            if record.approval.decision in ("rejected", "timed_out"):
                record.status = "skipped"
                record.error = f"{record.approval.decision}: {record.approval.note}".rstrip(": ")
                self._publish()
                return None
            if record.approval.edited_calls is not None:  # the approver's arguments are what acts
                calls = list(record.approval.edited_calls)
        results = []
        for tool_call in calls:
            n = len(record.tool_results)  # numbered across rounds: each call its own idempotency key
            private_source = tool_call.tool in req.routing.private_tools or bool(spec and spec.private)
            try:
                result = await self._run_tool(index, n, tool_call.tool, tool_call.args, label, r)
            except StepFailure:
                if private_source:  # its failure's text is private data too (in the span, the run's error)
                    self._taint(index, tool_call.tool, ran_ok=False)
                raise
            result = _kept(result).model_copy(update={"round": r})
            record.tool_results.append(result)
            state.seen[_key(tool_call)] = result
            results.append(result)
            if private_source:
                self._taint(index, tool_call.tool, ran_ok=result.ok)
        return results

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


def _failed_calls(state: _StepState) -> str:
    tool = state.spec.name if state.spec else "tool"
    return f"{state.failed} failed {tool} call{'s' if state.failed != 1 else ''}"


def _key(call: ToolCall) -> str:
    return call.model_dump_json()


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


def _unique(calls: list[ToolCall]) -> list[ToolCall]:
    """The calls without exact repeats: a model asking twice for the same thing gets it once."""
    seen: list[ToolCall] = []
    for c in calls:
        if c not in seen:
            seen.append(c)
    return seen
