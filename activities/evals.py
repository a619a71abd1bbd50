"""The activities of shadow evaluation: the daily budget, the evals row, and the agreement table a run routes by.

- The budget is a ``BudgetWorkflow`` per UTC day (agents/budgets.py), reached by update-with-start, so any number
  of workers and shadows share one exact, durable count, with no database of their own.
- The row goes to the trace store as a record file (``stakeflow.traces.RecordWriter``), keyed by the eval's id: a
  retry after a crash writes a row that is ignored, so each comparison is stored once.
- The agreement table is read from the trace store once per run and returned into the run's history.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeGuard, get_args

from temporalio import activity

from stakeflow.activities.budgets import ask_budget
from stakeflow.activities.parameters import EvalParameters
from stakeflow.agents.budgets import SHADOW_BUDGET, BudgetAsk, BudgetGrant
from stakeflow.agents.evals import (
    AGREEMENT_DAYS,
    AgreementTable,
    EvalRecord,
    ReplayExample,
    ReplayPage,
    ReplayPageRequest,
    StepLabel,
)
from stakeflow.agents.types import (
    ExampleTurn,
    ModelCallRequest,
    ModelCallResult,
    Plan,
    Purpose,
    StepAction,
    ToolSpecView,
)
from stakeflow.core.contracts import (
    LOAD_REPLAY_EXAMPLES,
    READ_AGREEMENT,
    RECORD_EVAL,
    RECORD_LABEL,
    RESERVE_SHADOW_BUDGET,
    RESERVE_UPDATE,
    SETTLE_SHADOW_BUDGET,
    SETTLE_UPDATE,
    QueueRole,
)
from stakeflow.stores.datasets import collect
from stakeflow.traces import RecordWriter, agreement_table, spool_dir_for


class EvalActivities:
    """The shadow evaluation's activities (and the replay's examples), all on the workflows queue."""

    def __init__(self, params: EvalParameters) -> None:
        self._params = params
        self._writer: RecordWriter | None = None
        self._labels: RecordWriter | None = None

    def activities(self, role: QueueRole) -> list[Callable[..., Any]]:
        if role != "workflows":
            return []
        return [
            self.reserve_shadow_budget,
            self.settle_shadow_budget,
            self.record_eval,
            self.read_agreement,
            self.record_label,
            self.load_replay_examples,
        ]

    async def _budget(self, update: str, ask: BudgetAsk) -> BudgetGrant:
        """The day's shadow budget (a BudgetWorkflow, by its names), started if it is not yet."""
        ask = ask.model_copy(update={"name": SHADOW_BUDGET})
        return await ask_budget(activity.client(), self._params.queue_prefix, update, ask)

    @activity.defn(name=RESERVE_SHADOW_BUDGET)
    async def reserve_shadow_budget(self, ask: BudgetAsk) -> BudgetGrant:
        return await self._budget(RESERVE_UPDATE, ask)

    @activity.defn(name=SETTLE_SHADOW_BUDGET)
    async def settle_shadow_budget(self, ask: BudgetAsk) -> BudgetGrant:
        return await self._budget(SETTLE_UPDATE, ask)

    @activity.defn(name=RECORD_EVAL)
    async def record_eval(self, record: EvalRecord) -> None:
        if self._writer is None:
            self._writer = RecordWriter(spool_dir_for(self._params.traces_path), "evals")
        row = record.model_dump()
        await asyncio.to_thread(self._writer.write, [row])

    @activity.defn(name=RECORD_LABEL)
    async def record_label(self, label: StepLabel) -> None:
        if self._labels is None:
            self._labels = RecordWriter(spool_dir_for(self._params.traces_path), "labels")
        a = label.approval
        row = {
            "label_id": f"{label.run_id}/{label.step}",
            "recorded_at": a.at or None,
            "run_id": label.run_id,
            "step": label.step,
            "decision": a.decision,
            "by": a.by,
            "note": a.note,
            "edited_calls": [c.model_dump() for c in a.edited_calls] if a.edited_calls else None,
        }
        await asyncio.to_thread(self._labels.write, [row])

    @activity.defn(name=LOAD_REPLAY_EXAMPLES)
    async def load_replay_examples(self, req: ReplayPageRequest) -> ReplayPage:
        return await asyncio.to_thread(replay_page, self._params.traces_path, req)

    @activity.defn(name=READ_AGREEMENT)
    async def read_agreement(self, since_days: int = AGREEMENT_DAYS) -> AgreementTable:
        return await asyncio.to_thread(agreement_table, self._params.traces_path, since_days)


def _is_purpose(value: str) -> TypeGuard[Purpose]:
    """True for a model call purpose (captures store it as text)."""
    return value in get_args(Purpose)


def replay_page(traces_path: Path, req: ReplayPageRequest) -> ReplayPage:
    """One page of held-out examples, as ModelCallRequests with their reference answers."""
    f = req.filters
    exported = collect(
        traces_path,
        since=datetime.fromisoformat(f.since) if f.since else None,
        agent=f.agent,
        tool=f.tool,
        sources=tuple(f.sources),
        split=f.split,
        with_requests=True,
    )
    part = exported.test if f.part == "test" else exported.train
    page = part[req.offset : req.offset + req.limit]
    examples = []
    for e in page:
        r = e.request or {}
        purpose = e.purpose
        if not _is_purpose(purpose):
            raise ValueError(
                f"captured call {e.run_id}/{e.step} has purpose '{purpose}', not one of {get_args(Purpose)}"
            )
        call = ModelCallRequest(
            run_id=e.run_id,
            step=e.step,
            purpose=purpose,
            system=r.get("system", ""),
            prompt=r.get("prompt", ""),
            examples=[ExampleTurn.model_validate(x) for x in r.get("examples") or []],
            tools=[ToolSpecView.model_validate(t) for t in r.get("tool_specs") or []],
            max_steps=r.get("max_steps", 6),
            first_step_tools=r.get("first_step_tools") or [],
            max_output_tokens=r.get("max_output_tokens", 1024),
            private=e.private,  # a private example's content stays out of the replay's spans too
        )
        answer = e.messages[-1]["content"]
        reference = ModelCallResult(route="frontier")
        if e.purpose == "plan":
            reference.plan = Plan.model_validate_json(answer)
        elif e.purpose == "step":
            reference.action = StepAction.model_validate_json(answer)
        else:
            reference.text = answer
        examples.append(ReplayExample(example_id=e.digest[:16], goal=r.get("goal", ""), call=call, reference=reference))
    return ReplayPage(examples=examples, more=req.offset + req.limit < len(part))
