"""BudgetWorkflow: one budget's UTC day, its reservations and settlements (see agents/budgets.py).

Reached only by update-with-start (``activities/budgets.py``), so any number of workers, hosts and restarts share
one exact count. Its history grows by a few events per update; before it fills (Temporal terminates a workflow
at its history limit, and the next update would start a fresh one at $0), it continues as new carrying every
figure and every reservation, under the same workflow id. It closes an hour after its day ends.

The update handlers are synchronous, so none is ever half-done when it continues as new; an update that reaches
the closing history is refused by Temporal, and its asker retries it on the next one (the same key, so the same
reservation).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from stakeflow.agents.budgets import (
        CLOSING_GRACE,
        BudgetAsk,
        BudgetGrant,
        BudgetState,
        BudgetTotals,
        Reservation,
        resets_at,
    )
    from stakeflow.core.contracts import BUDGET_QUERY, BUDGET_WORKFLOW, RESERVE_UPDATE, SETTLE_UPDATE


@workflow.defn(name=BUDGET_WORKFLOW)
class BudgetWorkflow:
    """One budget's day: ``reserve`` a worst case before a call, ``settle`` its cost after (both idempotent per key)."""

    @workflow.init
    def __init__(self, state: BudgetState) -> None:
        # Here, not in run(): the update of an update-with-start is handled before run() begins.
        self._state = state

    @workflow.run
    async def run(self, state: BudgetState) -> BudgetTotals:
        closes = resets_at(state.day) + CLOSING_GRACE
        while True:
            left = (closes - _naive(workflow.now())).total_seconds()
            if left <= 0:
                break
            try:
                await workflow.wait_condition(self._history_full, timeout=timedelta(seconds=left))
            except TimeoutError:
                break
            await workflow.wait_condition(workflow.all_handlers_finished)
            workflow.continue_as_new(self._state.model_copy(update={"generation": self._state.generation + 1}))
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.totals()

    def _history_full(self) -> bool:
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested() or info.get_current_history_length() >= self._state.max_history_events
        )

    @workflow.query(name=BUDGET_QUERY)
    def totals(self) -> BudgetTotals:
        s = self._state
        return BudgetTotals(
            name=s.name,
            day=s.day,
            limit_usd=s.limit_usd,
            settled_usd=s.settled_usd,
            reserved_usd=self._reserved(),
            reservations=list(s.reservations.values()),
            calls=s.calls,
            refused=s.refused,
            generation=s.generation,
            resets_at=resets_at(s.day).isoformat() + "Z" if s.day else "",
        )

    def _reserved(self) -> float:
        return sum(r.usd for r in self._state.reservations.values())

    def _grant(self, granted: bool) -> BudgetGrant:
        s = self._state
        reserved = self._reserved()
        return BudgetGrant(
            granted=granted,
            spent_usd=s.settled_usd + reserved,
            left_usd=max(0.0, s.limit_usd - s.settled_usd - reserved),
            settled_usd=s.settled_usd,
            reserved_usd=reserved,
            limit_usd=s.limit_usd,
            name=s.name,
        )

    @workflow.update(name=RESERVE_UPDATE)
    def reserve(self, ask: BudgetAsk) -> BudgetGrant:
        """Hold ``ask.usd`` under ``ask.eval_id`` if the limit allows it (or a person approved going over)."""
        s = self._state
        s.limit_usd = ask.max_usd  # the limit in force where the ask was made
        if ask.eval_id in s.reservations:  # a retried reservation is the same reservation
            return self._grant(True)
        if not ask.force and s.settled_usd + self._reserved() + ask.usd > ask.max_usd + 1e-12:
            s.refused += 1
            return self._grant(False)
        deadline = ""
        if ask.ttl_s > 0:
            deadline = (_naive(workflow.now()) + timedelta(seconds=ask.ttl_s)).isoformat()
        s.reservations[ask.eval_id] = Reservation(usd=ask.usd, deadline=deadline, run_id=ask.run_id)
        return self._grant(True)

    @workflow.update(name=SETTLE_UPDATE)
    def settle(self, ask: BudgetAsk) -> BudgetGrant:
        """Replace the reservation ``ask.eval_id`` with what its call cost. Settling a key that holds nothing
        (settled already: a retried settle) changes nothing."""
        s = self._state
        if s.reservations.pop(ask.eval_id, None) is not None:
            s.settled_usd += ask.usd
            s.calls += int(ask.usd > 0)
        return self._grant(True)


def _naive(moment: datetime) -> datetime:
    """Workflow time as naive UTC, the form every deadline and closing time here has."""
    return moment.replace(tzinfo=None)
