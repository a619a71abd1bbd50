"""Human approval of a step: the ``approve_step`` update, its validator, and the wait.

A mixin of AgentTaskWorkflow (Temporal collects the handlers of base classes too). It uses the workflow's
``_req``, ``_progress`` and ``_show_checklist``. The rule for the race between a decision and the approval
timeout: the first decision wins — an approval accepted in the same activation as the timer stands.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from stakeflow.agents.types import ApprovalRecord, ApprovalRequest, RouteDecision, StepRecord, ToolCall
    from stakeflow.core.contracts import APPROVE_UPDATE, KEYS
    from stakeflow.workflows.display import describe_call

if TYPE_CHECKING:
    from stakeflow.agents.types import Progress, TaskRequest


class ApprovalGate:
    """Which steps wait for a person, what each waits with, and the decisions made."""

    _req: TaskRequest
    _progress: Progress

    def __init__(self) -> None:
        self._awaiting: dict[int, str] = {}  # step -> what waits (its tool calls), while it waits
        self._waiting_calls: dict[int, list[ToolCall]] = {}
        self._decisions: dict[int, ApprovalRecord] = {}

    def _show_checklist(self) -> None:  # the workflow's
        raise NotImplementedError

    if TYPE_CHECKING:  # RunEvents', which AgentTaskWorkflow also has (defined here, it would shadow it)

        def _emit(self, kind: str, **fields: Any) -> None: ...

        def _progress_updates(self, *, after_step: bool, final: bool = False) -> list[Any]: ...  # Bookkeeping's

    @workflow.update(name=APPROVE_UPDATE)
    async def approve_step(self, request: ApprovalRequest) -> ApprovalRecord:
        """A person's decision on a step waiting for approval."""
        record = ApprovalRecord(
            decision="approved" if request.decision == "approve" else "rejected",
            note=request.note,
            by=request.by or "unknown",
            at=workflow.now().isoformat(),
            waiting_for=self._awaiting.get(request.step, ""),
            edited_calls=request.tool_calls if request.decision == "approve" else None,
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
        if request.tool_calls is not None:
            waiting_tools = sorted(c.tool for c in self._waiting_calls.get(request.step, []))
            changed = sorted(c.tool for c in request.tool_calls)
            if changed != waiting_tools:
                raise ValueError(
                    f"an approval may change the arguments, not the tools: step {request.step} "
                    f"waits with {', '.join(waiting_tools) or 'no calls'}, not {', '.join(changed) or 'none'}"
                )

    def _needs_approval(self, decision: RouteDecision, spec: Any) -> bool:
        if decision.needs_approval:
            return True
        return decision.stakes == "high" and spec is not None and spec.risk in self._req.approvals.risks

    async def _await_approval(
        self,
        index: int,
        record: StepRecord,
        calls: list[ToolCall],
        *,
        exact: bool = False,
        private_egress: bool = False,
    ) -> ApprovalRecord:
        """Pause until a person decides (``approve_step``), or the timeout rejects the step.

        ``exact``: the approver sees every argument whole, as it would be sent (private data about to leave).
        ``private_egress``: the step would send private data to an open-world tool (``[policy] private_egress =
        "approve"``): that is a person's decision, which ``--auto-approve`` (for unattended high-stakes actions)
        does not make. Runs recorded before this rule auto-approved it: behind a patch, their replays still do.
        """
        policy = self._req.approvals
        what = "; ".join(describe_call(c, exact=exact) for c in calls)
        # A later round of the same step that acts again asks again: the earlier decision covered other calls.
        self._decisions.pop(index, None)
        record.needs_approval = True  # whatever the route said: this step needed a decision
        if policy.auto_approve and not (private_egress and workflow.patched("auto-approve-not-private-egress")):
            return ApprovalRecord(
                decision="auto_approved", by="--auto-approve", at=workflow.now().isoformat(), waiting_for=what
            )
        if policy.auto_approve:
            record.reason += " (a person's: --auto-approve does not cover private data leaving)"
            self._progress.notices.append(
                f"step {index}: --auto-approve does not cover private data leaving for an open-world tool: it waits "
                f"for a person (stakeflow approve {workflow.info().workflow_id} {index}, or reject)"
            )
        return await self._wait_for_decision(index, record, what, calls)

    async def _wait_for_decision(
        self, index: int, record: StepRecord, what: str, calls: list[ToolCall] | None = None
    ) -> ApprovalRecord:
        """Wait for a person's decision on step ``index``, which sees ``what``; the timeout rejects it.

        Without ``calls`` (a frontier call over its budget, before the step has any tool call) the decision is
        the step's for that wait only: a later wait of the same step (its tool calls) gets its own decision.
        """
        policy = self._req.approvals
        record.needs_approval = True
        self._awaiting[index] = what
        self._waiting_calls[index] = list(calls or [])
        record.status, record.waiting_for = "awaiting_approval", what  # what `run` and `status` show
        self._progress.awaiting_approval = sorted(self._awaiting)
        # The counts as they are, too: a run that waits on a person is one the list should show as it stands.
        workflow.upsert_search_attributes(
            [KEYS["awaiting_approval"].value_set(True), *self._progress_updates(after_step=False)]
        )
        self._show_checklist()
        self._emit("waiting_for_approval", step=index, title=record.title, what=what)
        try:
            await workflow.wait_condition(lambda: index in self._decisions, timeout=timedelta(seconds=policy.timeout_s))
            decision = self._decisions[index]
        except TimeoutError:
            # An approval accepted in the same activation as the timer wins: the approver was told so.
            decision = self._decisions.get(index) or ApprovalRecord(
                decision="timed_out",
                note=f"no decision within {policy.timeout_s:g}s",
                by="timeout",
                at=workflow.now().isoformat(),
                waiting_for=what,
            )
            self._decisions[index] = decision
        finally:
            self._awaiting.pop(index, None)
            self._waiting_calls.pop(index, None)
            self._progress.awaiting_approval = sorted(self._awaiting)
            workflow.upsert_search_attributes([KEYS["awaiting_approval"].value_set(bool(self._awaiting))])
        record.status, record.waiting_for = "running", ""  # the decision keeps it (waiting_for)
        if calls is None:
            self._decisions.pop(index, None)
        return decision
