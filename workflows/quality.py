"""The run's part in measuring and improving the open path: the agreement table it routes by, the shadow
evaluations it samples, and the labels a person's decisions give the dataset.

A mixin of AgentTaskWorkflow; it uses the workflow's ``_req``, ``_progress`` and ``_sensitivity``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from stakeflow.agents.evals import AgreementTable, ShadowRequest, agreement_text, sampled
    from stakeflow.agents.types import ApprovalRecord, ModelCallRequest, ModelCallResult, RouteDecision
    from stakeflow.workflows.calls import read_agreement, record_label, shadow_request, start_shadows

if TYPE_CHECKING:
    from stakeflow.agents.types import Progress, Sensitivity, TaskRequest


class QualityLoop:
    """Agreement read once per run, shadows sampled as calls return and started as the run ends, labels."""

    _req: TaskRequest
    _progress: Progress
    _sensitivity: Sensitivity

    def __init__(self) -> None:
        self._agreement: AgreementTable | None = None  # as read when the run started (recorded)
        self._shadowed: set[tuple[int, str]] = set()
        self._shadow_queue: list[ShadowRequest] = []
        self._agreement_read: asyncio.Future[AgreementTable | None] | None = None

    async def _label(self, index: int, approval: ApprovalRecord) -> None:
        """A person's decision on a step, for the dataset (captured runs only): approved, rejected, or edited."""
        if not self._req.evals.capture or (self._sensitivity == "private" and not self._req.evals.include_private):
            return
        await record_label(self._req, index, approval)

    def _read_agreement(self) -> None:
        """Start reading the measured agreement of the open path, once per run, when routing or the bill uses it.

        It is read while the run plans (off its critical path) and awaited before the first step routes.
        """
        req = self._req
        if req.routing.min_agreement is None and req.evals.shadow_rate <= 0:
            return
        self._agreement_read = asyncio.ensure_future(read_agreement(req))

    async def _agreement_known(self) -> None:
        if self._agreement_read is None:
            return
        read, self._agreement_read = self._agreement_read, None
        self._agreement = await read
        if self._agreement is not None:
            self._progress.cost.agreement = agreement_text(self._agreement.overall, self._agreement.since_days)

    def _shadow(
        self, call: ModelCallRequest, decision: RouteDecision, reply: ModelCallResult, tool: str | None
    ) -> None:
        """Start a shadow evaluation of this open call if it is sampled — and never for private data."""
        req = self._req
        key = (call.step, call.purpose)
        if (
            decision.route != "open"
            or self._sensitivity != "public"
            or not req.routing.frontier.available
            or key in self._shadowed
            or call.purpose == "judge"
        ):
            return
        if not sampled(workflow.info().workflow_id, call.step, call.purpose, req.evals.shadow_rate):
            return
        if not workflow.patched("shadow-evaluation"):  # runs started before shadowing existed never start one
            return
        self._shadowed.add(key)
        self._shadow_queue.append(shadow_request(req, call, reply, tool))

    async def _started_shadows(self) -> None:
        """Start the sampled shadows, all at once, as the run (or this generation of it) ends.

        Started during the run, each shadow's completion would reach the run as an event, and a workflow
        task, while it works (measured: +117 ms on a 5 s run, bench/shadow.py); started at its end they
        cost it one round trip, and they finish after it. Awaited: a start still pending when the run
        ends would be lost.
        """
        if not self._shadow_queue:
            return
        queued, self._shadow_queue = self._shadow_queue, []
        try:
            await start_shadows(self._req, queued)
        except Exception as e:
            self._progress.notices.append(f"{len(queued)} shadow evaluation(s) could not start: {e}")
