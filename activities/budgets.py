"""Budgets from the activities' side: the update-with-start every ask goes through, and a frontier call's
reserve-before, settle-after (the rules are in agents/budgets.py).

The reservation is made by the ``call_model`` attempt itself, just before its request leaves, under a key of
its own (``<workflow id>/<run id>/<activity id>/<attempt>``): a retried reservation is the same reservation,
and each attempt that may be billed (a retry after a worker died mid-call bills again) holds its own worst
case. A refused call raises ``BUDGET_EXCEEDED`` before anything is sent; the run decides what a breach does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from temporalio import activity
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory
from temporalio.service import RPCError, RPCStatusCode

from stakeflow.agents.budgets import (
    BudgetAsk,
    BudgetGrant,
    BudgetRef,
    BudgetRefusal,
    BudgetState,
    BudgetTotals,
    budget_workflow_id,
)
from stakeflow.agents.types import ModelCallRequest
from stakeflow.core.contracts import BUDGET_WORKFLOW, RESERVE_UPDATE, SETTLE_UPDATE, queue_name
from stakeflow.core.errors import BUDGET_EXCEEDED

log = logging.getLogger("stakeflow.budgets")

# An update is refused, and asked again, when it reaches a budget's history as it continues as new or closes,
# or when the workflow already has Temporal's maximum of updates in flight (10 by default: a storm's asks
# queue up here). The same key makes a repeated ask the same reservation. Up to about a minute in all.
ASK_ATTEMPTS = 40
ASK_BACKOFF_MAX_S = 2.0
_RETRY_STATUSES = (
    RPCStatusCode.RESOURCE_EXHAUSTED,
    RPCStatusCode.UNAVAILABLE,
    RPCStatusCode.DEADLINE_EXCEEDED,
    RPCStatusCode.ABORTED,
    RPCStatusCode.CANCELLED,
)
# A reservation of a call attempt is in doubt once the attempt can no longer be running (its start-to-close
# timeout), plus this margin.
HOLD_MARGIN = timedelta(seconds=60)
DEFAULT_HOLD = timedelta(minutes=15)
ASK_TIMEOUT = timedelta(seconds=10)


def today() -> str:
    """The UTC day a reservation made now counts against."""
    return datetime.now(UTC).date().isoformat()


# Asks one process has in flight to one budget workflow, at most. Temporal refuses a workflow's 11th update in flight,
# and many refused updates at once make it abort its workflow tasks again and again (measured: 50 concurrent asks
# never finished, 5 made 133 updates/s): a storm's asks wait their turn here instead.
ASK_CONCURRENCY = 4
_lanes: dict[tuple[int, str], asyncio.Semaphore] = {}


def _lane(workflow_id: str) -> asyncio.Semaphore:
    key = (id(asyncio.get_running_loop()), workflow_id)
    if key not in _lanes:
        _lanes[key] = asyncio.Semaphore(ASK_CONCURRENCY)
    return _lanes[key]


async def ask_budget(client: Client, prefix: str, update: str, ask: BudgetAsk) -> BudgetGrant:
    """``update`` (reserve or settle) on the budget workflow of ``ask.name`` and ``ask.day``, started if it is not.

    Heartbeats between attempts when it runs in an activity (a model call's reservation may wait its turn)."""
    lane = _lane(budget_workflow_id(prefix, ask.name, ask.day))
    while True:
        try:
            await asyncio.wait_for(lane.acquire(), timeout=5.0)
            break
        except TimeoutError:
            if activity.in_activity() and not activity.info().is_local:
                activity.heartbeat()
    try:
        return await _ask(client, prefix, update, ask)
    finally:
        lane.release()


async def _ask(client: Client, prefix: str, update: str, ask: BudgetAsk) -> BudgetGrant:
    error: Exception | None = None
    for attempt in range(ASK_ATTEMPTS):
        start: WithStartWorkflowOperation[BudgetState, BudgetTotals] = WithStartWorkflowOperation(
            BUDGET_WORKFLOW,
            BudgetState(name=ask.name, day=ask.day, limit_usd=ask.max_usd),
            id=budget_workflow_id(prefix, ask.name, ask.day),
            task_queue=queue_name("workflows", prefix),
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            static_summary=f"budget {ask.name} for {ask.day} (UTC)",
            result_type=BudgetTotals,
        )
        try:
            return await client.execute_update_with_start_workflow(
                update, ask, start_workflow_operation=start, result_type=BudgetGrant, rpc_timeout=ASK_TIMEOUT
            )
        except (WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError) as e:
            error = e
        except RPCError as e:
            if e.status not in _RETRY_STATUSES:
                raise
            error = e
        finally:
            with contextlib.suppress(BaseException):  # the start's own future holds the same error: retrieve it
                await asyncio.wait_for(start.workflow_handle(), 0.01)
        if activity.in_activity() and not activity.info().is_local:
            activity.heartbeat()
        await asyncio.sleep(random.uniform(0.5, 1.0) * min(ASK_BACKOFF_MAX_S, 0.05 * 2**attempt))
    assert error is not None
    raise error


@dataclass
class Held:
    """What one call attempt reserved: its key, its day, and the daily budgets that hold its worst case."""

    key: str
    day: str
    usd: float
    refs: list[BudgetRef] = field(default_factory=list)


class CallBudgets:
    """Reserve a frontier call attempt's worst case against each of its budgets; settle its cost after."""

    def __init__(self, queue_prefix: str) -> None:
        self._prefix = queue_prefix

    async def reserve(self, req: ModelCallRequest, worst_usd: float | None) -> Held | None:
        """Hold ``worst_usd`` against every budget of ``req``; ``BUDGET_EXCEEDED`` naming the first that refuses."""
        if not req.budgets:
            return None
        force = req.over_budget_approved
        if worst_usd is None:  # no price: the call could cost anything
            if not force:
                ref = req.budgets[0]
                raise _refused(BudgetRefusal(name=ref.name, limit_usd=ref.limit_usd, call_usd=None,
                                             on_exceeded=ref.on_exceeded))  # fmt: skip
            worst_usd = 0.0
        for ref in req.budgets:
            if ref.scope == "run" and not force and req.run_frontier_usd + worst_usd > ref.limit_usd:
                raise _refused(BudgetRefusal(name=ref.name, limit_usd=ref.limit_usd, settled_usd=req.run_frontier_usd,
                                             call_usd=worst_usd, on_exceeded=ref.on_exceeded))  # fmt: skip
        if not any(r.scope == "day" for r in req.budgets):
            return None  # a run budget only: the run counts its own spend
        info = activity.info()
        held = Held(
            key=f"{info.workflow_id}/{info.workflow_run_id}/{info.activity_id}/{info.attempt}",
            day=today(),
            usd=worst_usd,
            refs=[r for r in req.budgets if r.scope == "day"],
        )
        hold = (info.start_to_close_timeout or DEFAULT_HOLD) + HOLD_MARGIN
        asks = [self._ask(held, ref, worst_usd, force=force, ttl_s=hold.total_seconds()) for ref in held.refs]
        grants = await asyncio.gather(*(ask_budget(activity.client(), self._prefix, RESERVE_UPDATE, a) for a in asks))
        refused = [(ref, g) for ref, g in zip(held.refs, grants, strict=True) if not g.granted]
        if refused:
            held.refs = [ref for ref, g in zip(held.refs, grants, strict=True) if g.granted]
            await self.settle(held, 0.0)  # give back what the others held for it
            ref, grant = refused[0]
            raise _refused(BudgetRefusal(name=ref.name, limit_usd=ref.limit_usd, settled_usd=grant.settled_usd,
                                         reserved_usd=grant.reserved_usd, call_usd=worst_usd,
                                         on_exceeded=ref.on_exceeded))  # fmt: skip
        return held

    async def settle(self, held: Held | None, usd: float) -> None:
        """Replace the reservations with what the call cost. Never raises: a settlement that cannot be made
        leaves the worst case held (in doubt), which is safe, where failing the call would call again."""
        if held is None or not held.refs:
            return
        client = activity.client()
        results = await asyncio.gather(
            *(ask_budget(client, self._prefix, SETTLE_UPDATE, self._ask(held, ref, usd)) for ref in held.refs),
            return_exceptions=True,
        )
        for ref, result in zip(held.refs, results, strict=True):
            if isinstance(result, BaseException):
                log.warning(
                    "budget %s: call %s not settled (%s); its worst case stays held", ref.name, held.key, result
                )

    @staticmethod
    def _ask(held: Held, ref: BudgetRef, usd: float, *, force: bool = False, ttl_s: float = 0.0) -> BudgetAsk:
        run_id = held.key.split("/", 1)[0]
        return BudgetAsk(day=held.day, eval_id=held.key, usd=usd, max_usd=ref.limit_usd, name=ref.name,
                         ttl_s=ttl_s, force=force, run_id=run_id)  # fmt: skip


def _refused(refusal: BudgetRefusal) -> ApplicationError:
    if refusal.call_usd is None:
        what = 'has no price, so it could cost anything: add [prices."<frontier model>"] to stakeflow.toml'
    else:
        what = f"could cost up to ${refusal.call_usd:.4f}"
    return ApplicationError(
        f"{refusal.reason}: this frontier call {what}",
        refusal.as_details(),
        type=BUDGET_EXCEEDED,
        non_retryable=True,
        category=ApplicationErrorCategory.BENIGN,  # the budget doing its job: no warning with a traceback per call
    )
