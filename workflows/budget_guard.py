"""The run's side of frontier budgets (agents/budgets.py): which budgets a frontier call draws on, and what a
refusal does: ``downgrade`` (the step runs on the open model, the reason recorded), ``approve`` (the step waits
for a person, who sees the budget and the call's cost) or ``fail`` (the run fails naming the budget).

A mixin of AgentTaskWorkflow, used by ModelSteps around each model call: the call itself reserves (activities/
budgets.py) and is refused with ``BUDGET_EXCEEDED`` before anything is sent. Runs started before budgets carry
none, so they never reach this code: their replays issue the commands they recorded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from opentelemetry import trace as otel_trace

    from stakeflow.agents.budgets import BudgetRefusal
    from stakeflow.agents.policy import downgrade_for_budget
    from stakeflow.agents.types import ApprovalRecord, ModelCallRequest, RouteDecision, StepRecord, ToolCall
    from stakeflow.core import semconv as sc
    from stakeflow.workflows.failures import StepFailure

if TYPE_CHECKING:
    from stakeflow.agents.types import Progress, TaskRequest


class BudgetGuard:
    """Budgets on each frontier call, and the run's answer when one is spent."""

    _req: TaskRequest
    _progress: Progress
    if TYPE_CHECKING:  # ApprovalGate's, which AgentTaskWorkflow also has (defined here, it would shadow it)

        async def _wait_for_decision(
            self, index: int, record: StepRecord, what: str, calls: list[ToolCall] | None = None
        ) -> ApprovalRecord: ...

    def _budgeted(self, call: ModelCallRequest, decision: RouteDecision) -> ModelCallRequest:
        """The call with the budgets it draws on, if it goes to the frontier."""
        if decision.route != "frontier" or not self._req.budgets:
            return call
        return call.model_copy(
            update={"budgets": self._req.budgets, "run_frontier_usd": self._progress.cost.frontier_usd}
        )

    def _drew_on_budgets(self, decision: RouteDecision) -> None:
        """The bill names every budget a frontier call of the run drew on."""
        if decision.route != "frontier":
            return
        for ref in self._req.budgets:
            if ref.name not in self._progress.cost.budgets:
                self._progress.cost.budgets.append(ref.name)

    async def _over_budget(
        self, e: ActivityError, call: ModelCallRequest, decision: RouteDecision, record: StepRecord, label: str
    ) -> tuple[ModelCallRequest, RouteDecision]:
        """The call and route to go on with after a budget refused ``call``; StepFailure when the run cannot."""
        cause = e.cause
        refusal = BudgetRefusal.from_details(cause.details if isinstance(cause, ApplicationError) else None)
        refusal = refusal or BudgetRefusal(name="(unknown)")
        why = refusal.reason
        if refusal.on_exceeded == "fail":
            raise StepFailure(f"{label} '{record.title}' failed: {why} ([budgets] on_exceeded = fail)")
        if refusal.on_exceeded == "approve":
            cost = "unknown (no price)" if refusal.call_usd is None else f"up to ${refusal.call_usd:.4f}"
            what = f"frontier call ({decision.model}) over budget: {why}; this call costs {cost}"
            approval = await self._wait_for_decision(call.step, record, what)
            record.approval = approval
            if approval.decision == "approved":
                self._progress.notices.append(f"{label}: {why}; approved over budget by {approval.by}")
                return call.model_copy(update={"over_budget_approved": True}), decision
            why = f"{why}; over-budget call {approval.decision.replace('_', ' ')}"
        if decision.escalated or decision.fallback:
            # The open model already failed this call (invalid output, or unreachable): nowhere left to go.
            raise StepFailure(f"{label} '{record.title}' failed: the frontier was refused: {why}")
        downgraded = downgrade_for_budget(decision, why, self._req.routing, self._req.queue_prefix)
        self._progress.notices.append(f"{label}: downgraded: {why}")
        self._progress.budget_downgrades += 1
        otel_trace.get_current_span().set_attribute(sc.BUDGET_DOWNGRADED, refusal.name)
        return call, downgraded
