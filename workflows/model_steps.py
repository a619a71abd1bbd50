"""The run's model calls: the policy's retry-then-escalate-or-fall-back rule around each call, and the facts
the stakes policy decides on.

A mixin of AgentTaskWorkflow, built on the two it reports to: Bookkeeping (usage, failed calls) and
QualityLoop (shadow samples). It uses the workflow's ``_req``, ``_progress`` and ``_sensitivity``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from temporalio import workflow
from temporalio.exceptions import ActivityError, CancelledError

with workflow.unsafe.imports_passed_through():
    from stakeflow.agents.policy import StepFacts, escalate, fallback
    from stakeflow.agents.types import ModelCallRequest, ModelCallResult, RouteDecision, Stakes, StepRecord
    from stakeflow.core import errors
    from stakeflow.workflows.bookkeeping import Bookkeeping
    from stakeflow.workflows.budget_guard import BudgetGuard
    from stakeflow.workflows.calls import call_model
    from stakeflow.workflows.failures import StepFailure, cause_text, error_type, unavailable
    from stakeflow.workflows.quality import QualityLoop

if TYPE_CHECKING:
    from stakeflow.agents.types import Progress, Sensitivity, TaskRequest


class ModelSteps(Bookkeeping, QualityLoop, BudgetGuard):
    """Model calls as the stakes policy routes them, retried, escalated or moved as it allows."""

    _req: TaskRequest
    _progress: Progress
    _sensitivity: Sensitivity

    async def _call_model(
        self,
        call: ModelCallRequest,
        decision: RouteDecision,
        record: StepRecord,
        *,
        label: str,
        tool: str | None = None,
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
                cause = cause_text(e)
                kind = error_type(e)
                record.attempts.append(f"{decision.route}: {cause}")
                if kind == errors.BUDGET_EXCEEDED:  # nothing was sent: the budget's rule decides
                    call, decision = await self._over_budget(e, call, decision, record, label)
                    continue
                self._count_failed_call(decision.route, e)
                if unavailable(e, kind) and decision.route == "open":
                    moved, why_not = fallback(decision, self._sensitivity, routing, self._req.queue_prefix)
                    if moved is None:
                        raise StepFailure(
                            f"{label} '{record.title}' failed: open model unavailable ({cause}); no fallback: {why_not}"
                        ) from None
                    self._progress.notices.append(f"{label}: {moved.reason.rsplit('; ', 1)[-1]}")
                    decision = moved
                    continue
                if kind != errors.MODEL_OUTPUT_INVALID:
                    raise StepFailure(
                        f"{label} '{record.title}' failed on the {decision.route} model: {cause}"
                    ) from None
                failures += 1
                if decision.route == "open" and failures < routing.open_attempts:
                    continue
                escalated, why_not = escalate(decision, self._sensitivity, routing, failures, self._req.queue_prefix)
                if escalated is None:
                    raise StepFailure(
                        f"{label} '{record.title}' failed: {decision.route} model output invalid "
                        f"{failures}x ({cause}); not escalated: {why_not}"
                    ) from None
                self._progress.notices.append(f"{label}: {escalated.reason.rsplit('; ', 1)[-1]}")
                decision = escalated
                continue
            record.attempts.append(f"{decision.route}: ok")
            self._drew_on_budgets(decision)
            self._shadow(call, decision, reply, tool)
            record.usage = record.usage + reply.usage
            self._progress.cost.add(decision.route, reply.cost)
            if record.cost_usd is not None:
                record.cost_usd = None if reply.cost.usd is None else record.cost_usd + reply.cost.usd
            self._add_usage(reply.usage, label)
            return reply, decision

    async def _model_activity(
        self, call: ModelCallRequest, decision: RouteDecision, label: str, tool: str | None
    ) -> ModelCallResult:
        call = self._budgeted(call, decision)
        return await call_model(self._req, call, decision, label, tool, private=self._sensitivity == "private")

    def _facts(self, tool: str | None, planner_stakes: Stakes, risk=None) -> StepFacts:
        return StepFacts(
            tool=tool,
            tool_risk=risk,
            planner_stakes=planner_stakes,
            override=self._req.stakes,
            sensitivity=self._sensitivity,
        )
