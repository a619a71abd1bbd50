"""What a run shows about itself as it goes: search attributes and details (the Web UI, `stakeflow list`), the
routing decision on each span and step record, usage against the token budget, the cost of failed calls.

A mixin of AgentTaskWorkflow; it uses the workflow's ``_req``, ``_progress``, ``_sensitivity`` and the approval
gate's ``_awaiting``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from opentelemetry import trace as otel_trace

    from stakeflow.agents.types import RouteDecision, StepRecord, Usage
    from stakeflow.core import semconv as sc
    from stakeflow.core.contracts import KEYS
    from stakeflow.workflows.display import checklist
    from stakeflow.workflows.failures import StepFailure, call_failure
    from stakeflow.workflows.tally import tally

if TYPE_CHECKING:
    from temporalio.common import SearchAttributeUpdate

    from stakeflow.agents.types import Progress, Sensitivity, TaskRequest

# Search attributes are for finding runs, and each upsert is a history event and a write to the visibility store:
# upserting every count after every step was the dearest thing a fast step did (bench/README.md, "overhead.py",
# 2026-12-07: ~4 ms a step of the dev server's and the worker's time). A change of what a search filters runs by
# goes at once; the counts that move every step (open steps, cost) at most every PROGRESS_EVERY of workflow time,
# and all of them before the run waits on a person, continues as new, or ends. The run's details (the checklist),
# its progress query and its events are current after every step, as before.
THROTTLED_PROGRESS = "throttled-progress-attributes"
PROGRESS_EVERY = timedelta(seconds=2)
_FOUND_BY = frozenset({"stakes", "sensitivity", "escalations", "frontier_steps"})


class Bookkeeping:
    """Counts, costs and what the Web UI shows, kept current step by step."""

    _req: TaskRequest
    _progress: Progress
    _sensitivity: Sensitivity
    _awaiting: dict[int, str]

    def __init__(self) -> None:
        self._throttled = False  # workflow.patched(THROTTLED_PROGRESS), asked as the run starts
        self._published: dict[str, Any] = {}  # the progress search attributes as last upserted
        self._published_at: datetime | None = None

    def _published_start(self, **values: Any) -> None:
        """The run's first upsert set these (``stakes``, ``sensitivity``): a step that leaves them alone sends none."""
        self._published.update(values)
        self._published_at = workflow.now()

    def _run_attributes(self) -> dict:
        t = tally(self._progress.steps)
        cost = self._progress.cost
        calls = cost.open_calls + cost.frontier_calls
        attributes: dict[str, str | int | float | bool | list[str]] = {
            sc.STEP_COUNT: t.step_count,
            sc.OPEN_STEPS: t.open_steps,
            sc.FRONTIER_STEPS: t.frontier_steps,
            sc.ESCALATIONS: t.escalations,
            sc.SENSITIVITY: self._sensitivity,
            sc.STAKES: t.stakes,
            sc.UNPRICED_CALLS: cost.unpriced_calls,
            sc.MODEL_CALLS: calls,
            sc.DOWNGRADED_BY_BUDGET: self._progress.budget_downgrades,
        }
        if self._progress.replans:
            attributes[sc.REPLANS] = self._progress.replans
        if self._progress.answer_supported is not None:
            attributes[sc.ANSWER_SUPPORTED] = self._progress.answer_supported
            attributes[sc.UNSUPPORTED_CLAIMS] = self._progress.unsupported_claims
        if cost.budgets:
            attributes[sc.BUDGETS] = ", ".join(cost.budgets)
        if not calls or cost.unpriced_calls < calls:  # no price at all is no amount, never "$0"
            attributes[sc.COST_USD] = cost.total_usd
            attributes[sc.FRONTIER_EQUIVALENT_USD] = cost.frontier_equivalent_usd
        return attributes

    def _publish(self, *, final: bool = False) -> None:
        """Search attributes and details after a step (``final``: as the run ends): what the Web UI and
        `stakeflow list` show. The details at once; the search attributes as THROTTLED_PROGRESS says."""
        self._upsert_progress(after_step=True, final=final)
        self._show_checklist()

    def _publish_pending(self) -> None:
        """Every progress search attribute current, before the run continues as new or stops on an error."""
        self._upsert_progress(after_step=False)

    def _upsert_progress(self, *, after_step: bool, final: bool = False) -> None:
        updates = self._progress_updates(after_step=after_step, final=final)
        if updates:
            workflow.upsert_search_attributes(updates)

    def _progress_updates(self, *, after_step: bool, final: bool = False) -> list[SearchAttributeUpdate]:
        """The progress search attributes to upsert now (the caller upserts them, alone or with its own)."""
        t = tally(self._progress.steps)
        values = {
            "stakes": t.stakes,
            "sensitivity": self._sensitivity,
            "open_steps": t.open_steps,
            "frontier_steps": t.frontier_steps,
            "escalations": t.escalations,
            "cost_usd": round(self._progress.cost.total_usd, 6),
        }
        if not self._throttled:  # a run from before: all of them after every step, no more
            return [KEYS[k].value_set(v) for k, v in values.items()] if after_step else []
        changed = {k: v for k, v in values.items() if k not in self._published or self._published[k] != v}
        now = workflow.now()
        due = (
            final
            or not after_step
            or bool(changed.keys() & _FOUND_BY)
            or self._published_at is None
            or now - self._published_at >= PROGRESS_EVERY
        )
        if not changed or not due:
            return []
        self._published.update(changed)
        self._published_at = now
        return [KEYS[k].value_set(v) for k, v in changed.items()]

    @staticmethod
    def _mark(d: RouteDecision) -> None:
        """The routing decision on the current step span (plan, step or answer)."""
        otel_trace.get_current_span().set_attributes(
            {
                sc.ROUTE: d.route,
                sc.STAKES: d.stakes,
                sc.REASON: d.reason,
                sc.ESCALATED: d.escalated,
                sc.MODEL: d.model,
            }
        )

    def _apply(self, record: StepRecord, d: RouteDecision) -> None:
        self._mark(d)
        record.route, record.model, record.stakes, record.reason = d.route, d.model, d.stakes, d.reason
        record.needs_approval, record.downgraded = d.needs_approval, d.downgraded
        record.escalated = record.escalated or d.escalated
        record.fallback = record.fallback or d.fallback

    def _note_decision(self, index: int, d: RouteDecision) -> None:
        if d.downgraded:
            self._progress.notices.append(f"step {index}: high stakes ran on the open model: frontier not configured")
        if d.needs_approval:
            self._progress.notices.append(
                f"step {index}: private + high stakes kept on the open model; flagged for approval"
            )

    def _count_failed_call(self, route: str, e: ActivityError) -> None:
        """A failed attempt's tokens were spent too: count its usage and cost."""
        failure = call_failure(e)
        if failure is None or failure.cost is None:
            return
        self._progress.cost.add(route, failure.cost)
        self._progress.usage = self._progress.usage + failure.usage

    def _add_usage(self, usage: Usage, label: str) -> None:
        self._progress.usage = self._progress.usage + usage
        budget = self._req.budget_tokens
        if budget is not None and self._progress.usage.total_tokens > budget:
            raise StepFailure(
                f"token budget exceeded after {label}: {self._progress.usage.total_tokens} > {budget} tokens; "
                "raise --budget-tokens or simplify the goal"
            )

    def _show_checklist(self) -> None:
        workflow.set_current_details(checklist(self._progress, self._awaiting, workflow.info().workflow_id))
