"""Shadow evaluation workflows: re-run one open-routed call on the frontier, compare, record; and the daily budget.

A run starts one ShadowEvalWorkflow, with all its sampled calls, as a child it neither waits for nor cancels (parent close policy
ABANDON), so the shadow never delays, fails or changes the run: it has its own retries, on the frontier
queue, and its spend is its own (source ``shadow``, never in the run's bill). Its spans carry its own
workflow id as the run id, and its memo names the run it shadows (the Web UI also shows the parent).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from stakeflow.agents.budgets import SHADOW_BUDGET, BudgetAsk, BudgetGrant
    from stakeflow.agents.evals import (
        JUDGE_SYSTEM,
        EvalRecord,
        JudgeVerdict,
        ShadowBatch,
        ShadowRequest,
        combine,
        compare_actions,
        judge_prompt,
        rendered,
    )
    from stakeflow.agents.types import ModelCallRequest, ModelCallResult
    from stakeflow.core import errors
    from stakeflow.core.contracts import (
        CALL_MODEL,
        RECORD_EVAL,
        RESERVE_SHADOW_BUDGET,
        RESERVE_UPDATE,
        SETTLE_SHADOW_BUDGET,
        SETTLE_UPDATE,
        SHADOW_BUDGET_WORKFLOW,
        SHADOW_WORKFLOW,
        Public,  # a workflow id: readable with codec keys on
    )
    from stakeflow.workflows.calls import ActivityOptions
    from stakeflow.workflows.failures import spent_usd

SHADOW_MODEL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    maximum_interval=timedelta(seconds=60),
    maximum_attempts=5,
    non_retryable_error_types=errors.NON_RETRYABLE_MODEL_ERRORS,
)
BOOKKEEPING = ActivityOptions(
    start_to_close_timeout=timedelta(seconds=30),
    retry_policy=RetryPolicy(maximum_attempts=10, maximum_interval=timedelta(seconds=30)),
)
# A shadow's reservation is an estimate held for the whole comparison: in doubt if unsettled after this long.
SHADOW_HOLD_S = 3600.0
# A judged comparison makes two more frontier calls of about the open call's size.
JUDGE_COST_FACTOR = 3.0


class Judging:
    """The comparison a shadow evaluation and a replay evaluation share: exact for step actions, else a judge
    in both orders. ``req`` carries where the frontier (and the judge) is, and what was asked."""

    async def _frontier(self, req: ShadowRequest, call: ModelCallRequest) -> ModelCallResult:
        """One frontier call (a reference or a judgement) on the frontier queue, with its own retries."""
        call = call.model_copy(
            update={
                "run_id": workflow.info().workflow_id,
                "endpoint": req.frontier,
                "source": "shadow",
                "capture": req.policy.capture and call.purpose != "judge",
                "private": False,
                "agent": req.agent,
                "tool": req.tool,
                "reason": f"shadow of {req.parent_workflow_id} step {req.step}",
            }
        )
        return await workflow.execute_activity(
            CALL_MODEL,
            call,
            result_type=ModelCallResult,
            task_queue=req.frontier_queue,
            start_to_close_timeout=timedelta(minutes=3),
            retry_policy=SHADOW_MODEL_RETRY,
            heartbeat_timeout=timedelta(seconds=req.heartbeat_timeout_s),
            summary=f"shadow · {req.kind} · frontier · {req.frontier.model}",
        )

    async def _compare(self, req: ShadowRequest, reference: ModelCallResult) -> tuple[str, str, str, float | None]:
        if req.kind == "step" and req.open_result.action is not None and reference.action is not None:
            verdict, why = compare_actions(req.open_result.action, reference.action)
            if verdict is not None:
                return verdict, "exact", why, None
        judge = req.frontier.model_copy(update={"model": req.policy.judge_model or req.frontier.model})
        a, b = rendered(req.open_result), rendered(reference)
        cost = 0.0
        verdicts: list[JudgeVerdict] = []
        for first, second in ((a, b), (b, a)):  # both orders: judges favour the first position
            call = ModelCallRequest(
                purpose="judge",
                system=JUDGE_SYSTEM,
                stakes="low",
                prompt=judge_prompt(req.goal, req.call.prompt, first, second),
                max_output_tokens=300,
            )
            try:
                result = await self._frontier(req.model_copy(update={"frontier": judge}), call)
            except ActivityError as e:  # a judgement that failed (invalid output) was billed all the same
                cost += spent_usd(e)
                return "tie", "judge", "the judge could not answer; counted as a tie", cost or None
            cost += result.cost.usd or 0.0
            verdicts.append(result.verdict or JudgeVerdict(winner="tie", reason="no verdict"))
        verdict, reason = combine(verdicts[0], verdicts[1])
        return verdict, "judge", reason, cost


@workflow.defn(name=SHADOW_WORKFLOW)
class ShadowEvalWorkflow(Judging):
    """The sampled calls of one run, each: budget, frontier reference, comparison (exact, else a two-order
    judge), one row. Calls are evaluated side by side; the memo shows each one's verdict."""

    def __init__(self) -> None:
        self._verdicts: dict[str, str] = {}

    @workflow.run
    async def run(self, batch: ShadowBatch) -> list[EvalRecord | None]:
        workflow.upsert_memo({"shadow_of": Public(batch.parent_workflow_id)})
        return list(await asyncio.gather(*(self._one(req) for req in batch.calls)))

    def _verdict(self, req: ShadowRequest, verdict: str) -> None:
        label = req.kind if req.kind != "step" else f"step {req.step}" + (f" ({req.tool})" if req.tool else "")
        self._verdicts[label] = verdict
        workflow.upsert_memo({"verdicts": dict(self._verdicts)})

    async def _one(self, req: ShadowRequest) -> EvalRecord | None:
        open_cost = req.open_result.cost
        estimate = (open_cost.frontier_equivalent_usd or 0.0) * (1 + JUDGE_COST_FACTOR)
        day = workflow.now().date().isoformat()
        if req.policy.max_usd_per_day is not None:
            grant = await workflow.execute_activity(
                RESERVE_SHADOW_BUDGET,
                BudgetAsk(
                    day=day,
                    eval_id=req.eval_id,
                    usd=estimate,
                    max_usd=req.policy.max_usd_per_day,
                    name=SHADOW_BUDGET,
                    ttl_s=SHADOW_HOLD_S,
                ),
                result_type=BudgetGrant,
                **BOOKKEEPING,
            )
            if not grant.granted:
                self._verdict(req, "skipped: daily shadow budget spent")
                return None
        try:
            reference = await self._frontier(req, req.call.model_copy(update={"escalated": False}))
        except ActivityError as e:  # e.g. invalid output: no reference to compare with, but the call was billed
            await self._settle(req, day, spent_usd(e))
            self._verdict(req, "skipped: the frontier call failed")
            return None
        verdict, method, reason, judge_cost = await self._compare(req, reference)
        record = EvalRecord(
            eval_id=req.eval_id,
            recorded_at=workflow.now().isoformat(),
            run_id=req.parent_workflow_id,
            shadow_run_id=workflow.info().workflow_id,
            step=req.step,
            kind=req.kind,
            tool=req.tool,
            agent=req.agent,
            open_model=req.open_result.model or req.call.endpoint.model,
            frontier_model=req.frontier.model,
            verdict=verdict,
            method=method,
            reason=reason[:500],
            open_cost_usd=open_cost.usd,
            frontier_cost_usd=reference.cost.usd,
            judge_cost_usd=judge_cost,
            open_latency_ms=req.open_result.latency_ms,
            frontier_latency_ms=reference.latency_ms,
        )
        if req.policy.capture:
            record.prompt, record.open_output, record.frontier_output = (
                req.call.prompt,
                rendered(req.open_result),
                rendered(reference),
            )
        await workflow.execute_activity(RECORD_EVAL, record, **BOOKKEEPING)
        await self._settle(req, day, (reference.cost.usd or 0.0) + (judge_cost or 0.0))
        self._verdict(req, verdict)
        return record

    async def _settle(self, req: ShadowRequest, day: str, usd: float) -> None:
        if req.policy.max_usd_per_day is None:
            return
        await workflow.execute_activity(
            SETTLE_SHADOW_BUDGET,
            BudgetAsk(day=day, eval_id=req.eval_id, usd=usd, max_usd=req.policy.max_usd_per_day, name=SHADOW_BUDGET),
            result_type=BudgetGrant,
            **BOOKKEEPING,
        )


@workflow.defn(name=SHADOW_BUDGET_WORKFLOW)
class ShadowBudgetWorkflow:
    """Earlier releases' shadow budget, one per UTC day, kept registered for the day of an upgrade: the shadow
    budget's asks now start a ``BudgetWorkflow`` (workflows/budget_day.py) under the same id, and reach this one
    while it is still open. It never continues as new (issue 21, item 10): do not start new ones."""

    def __init__(self) -> None:
        self._reserved: dict[str, float] = {}
        self._settled: dict[str, float] = {}

    def _spent(self) -> float:
        return sum(self._settled.values()) + sum(v for k, v in self._reserved.items() if k not in self._settled)

    @workflow.run
    async def run(self, day: str) -> float:
        # Open until the day is over (and a little after, for the last settlements), then closed.
        await workflow.sleep(timedelta(hours=25))
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._spent()

    @workflow.update(name=RESERVE_UPDATE)
    def reserve(self, ask: BudgetAsk) -> BudgetGrant:
        if ask.eval_id in self._reserved:  # a retried reservation gets the same answer
            return BudgetGrant(granted=True, spent_usd=self._spent(), left_usd=ask.max_usd - self._spent())
        if self._spent() + ask.usd > ask.max_usd:
            return BudgetGrant(granted=False, spent_usd=self._spent(), left_usd=max(0.0, ask.max_usd - self._spent()))
        self._reserved[ask.eval_id] = ask.usd
        return BudgetGrant(granted=True, spent_usd=self._spent(), left_usd=ask.max_usd - self._spent())

    @workflow.update(name=SETTLE_UPDATE)
    def settle(self, ask: BudgetAsk) -> BudgetGrant:
        self._settled[ask.eval_id] = ask.usd
        return BudgetGrant(granted=True, spent_usd=self._spent(), left_usd=max(0.0, ask.max_usd - self._spent()))
