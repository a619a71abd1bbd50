"""HookGateWorkflow: one hook's admissions, so a storm of deliveries starts no more runs than its limits allow.

Reached by update-with-start from every webhook server process (stakeflow/webhooks/gate.py): an ``admit`` is
atomic, so concurrent deliveries on many servers never overshoot. It counts runs admitted in the last minute
(``max_runs_per_minute``) and runs admitted and not yet found ended (``max_concurrent_runs``: the asker tells it
which have ended, since a workflow may do no I/O). A retried ``admit`` of the same run is the same admission. It
continues as new before its history fills, and ends after ten idle minutes (the next delivery starts it again).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from stakeflow.agents.gates import WINDOW_S, Admission, AdmitAsk, GateState
    from stakeflow.core.contracts import ADMIT_UPDATE, HOOK_GATE_WORKFLOW

IDLE = timedelta(minutes=10)
# A run at max_concurrent_runs is checked again after this long, at the earliest.
CONCURRENT_RETRY_S = 10.0


@workflow.defn(name=HOOK_GATE_WORKFLOW)
class HookGateWorkflow:
    """Admit a delivery's run if the hook's limits allow it; else say when to come back."""

    @workflow.init
    def __init__(self, state: GateState) -> None:
        self._state = state  # set before the first update (an update-with-start's) is handled

    @workflow.run
    async def run(self, state: GateState) -> None:
        while True:
            try:
                await workflow.wait_condition(self._history_full, timeout=IDLE)
            except TimeoutError:
                if not self._state.leases and not self._recent():
                    break
                continue
            await workflow.wait_condition(workflow.all_handlers_finished)
            workflow.continue_as_new(self._state.model_copy(update={"generation": self._state.generation + 1}))
        await workflow.wait_condition(workflow.all_handlers_finished)

    def _history_full(self) -> bool:
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested() or info.get_current_history_length() >= self._state.max_history_events
        )

    def _now(self) -> datetime:
        return workflow.now().replace(tzinfo=None)

    def _recent(self) -> dict[str, str]:
        """Admissions of the last minute (older ones are forgotten)."""
        cutoff = self._now() - timedelta(seconds=WINDOW_S)
        self._state.admitted = {k: v for k, v in self._state.admitted.items() if datetime.fromisoformat(v) >= cutoff}
        return self._state.admitted

    @workflow.update(name=ADMIT_UPDATE)
    def admit(self, ask: AdmitAsk) -> Admission:
        s, now = self._state, self._now()
        for ended in ask.finished:
            s.leases.pop(ended, None)
        recent = self._recent()
        if ask.workflow_id in recent or ask.workflow_id in s.leases:
            return Admission()  # a retried admission is the same admission
        if ask.max_runs_per_minute is not None and len(recent) >= ask.max_runs_per_minute:
            oldest = min(datetime.fromisoformat(v) for v in recent.values())
            wait = max(1.0, (oldest + timedelta(seconds=WINDOW_S) - now).total_seconds())
            return Admission(
                admitted=False,
                reason=f"hook '{s.hook}' started {len(recent)} runs in the last minute (max_runs_per_minute = "
                f"{ask.max_runs_per_minute})",
                retry_after_s=wait,
            )
        if ask.max_concurrent_runs is not None and len(s.leases) >= ask.max_concurrent_runs:
            return Admission(
                admitted=False,
                reason=f"hook '{s.hook}' has {len(s.leases)} runs running (max_concurrent_runs = {ask.max_concurrent_runs})",
                retry_after_s=CONCURRENT_RETRY_S,
                leases={k: (now - datetime.fromisoformat(v)).total_seconds() for k, v in s.leases.items()},
            )
        recent[ask.workflow_id] = now.isoformat()
        if ask.max_concurrent_runs is not None:
            s.leases[ask.workflow_id] = now.isoformat()
        return Admission()
