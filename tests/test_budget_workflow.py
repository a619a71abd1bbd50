"""BudgetWorkflow (agents/budgets.py, workflows/budget_day.py): one budget's UTC day, exact under concurrency, and
whole across continue-as-new.

Issue 21, item 10: the shadow budget of earlier releases never continued as new, so at Temporal's history limit it
was terminated and the next ask started a fresh one at $0 (with the limit lowered to 400 events, 250 asks of $0.01
were all granted against $1.00). These tests run on a dev server of their own with that limit.
"""

from __future__ import annotations

import asyncio
import shutil
from datetime import UTC, datetime

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from stakeflow.activities.budgets import ask_budget, today
from stakeflow.activities.evals import EvalActivities
from stakeflow.activities.parameters import EvalParameters
from stakeflow.agents.budgets import SHADOW_BUDGET, BudgetAsk, BudgetTotals, budget_workflow_id
from stakeflow.core.contracts import BUDGET_QUERY, RESERVE_UPDATE, SETTLE_UPDATE
from stakeflow.local.services import dev_server_args
from tests.support import make_settings, running_workers

HISTORY_LIMIT = ["--dynamic-config-value", "limit.historyCount.error=400",
                 "--dynamic-config-value", "limit.historyCount.suggestContinueAsNew=300"]  # fmt: skip


@pytest.fixture(scope="module")
async def small_history_client():
    """A dev server whose workflows are terminated at 400 history events (Temporal's default is 51,200)."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=shutil.which("temporal"),
        data_converter=pydantic_data_converter,
        ip="127.0.0.1",
        dev_server_extra_args=[*dev_server_args(log_level="error"), *HISTORY_LIMIT],
    )
    yield env.client
    await env.shutdown()


async def totals(client: Client, prefix: str, name: str, day: str) -> BudgetTotals:
    handle = client.get_workflow_handle(budget_workflow_id(prefix, name, day))
    return await handle.query(BUDGET_QUERY, result_type=BudgetTotals)


async def test_shadow_budget_holds_its_total_across_a_full_history(small_history_client, tmp_path):
    """250 shadow reservations of $0.01 against $1.00, ten at a time: exactly 100 granted, through several histories."""
    client = small_history_client
    settings = make_settings(tmp_path)
    evals = EvalActivities(EvalParameters.from_settings(settings))
    day = today()
    async with running_workers(client, settings, roles=("workflows",)):
        env = ActivityEnvironment(client=client)
        granted = 0
        for batch in range(25):
            asks = [BudgetAsk(day=day, eval_id=f"e{batch}-{i}", usd=0.01, max_usd=1.0) for i in range(10)]
            grants = await asyncio.gather(*(env.run(evals.reserve_shadow_budget, a) for a in asks))
            granted += sum(g.granted for g in grants)
        again = await env.run(evals.reserve_shadow_budget, BudgetAsk(day=day, eval_id="e0-0", usd=0.01, max_usd=1.0))
        state = await totals(client, settings.queue_prefix, SHADOW_BUDGET, day)
    assert granted == 100
    assert again.granted and round(again.reserved_usd, 6) == 1.0  # a retried reservation is the same one
    assert round(state.reserved_usd, 6) == 1.0 and state.refused == 150
    assert state.generation > 1, "the history never filled: nothing was proved"


async def test_reservations_are_idempotent_settled_once_and_in_doubt_after_their_deadline(client, tmp_path):
    settings = make_settings(tmp_path)
    prefix, day, name = settings.queue_prefix, today(), "frontier_usd_per_day"

    async def ask(update: str, key: str, usd: float, **kw) -> object:
        return await ask_budget(
            client, prefix, update, BudgetAsk(day=day, eval_id=key, usd=usd, max_usd=1.0, name=name, **kw)
        )

    async with running_workers(client, settings, roles=("workflows",)):
        assert (await ask(RESERVE_UPDATE, "a", 0.6, ttl_s=600)).granted
        assert (await ask(RESERVE_UPDATE, "a", 0.6, ttl_s=600)).granted  # the same reservation, not a second
        refused = await ask(RESERVE_UPDATE, "b", 0.5, ttl_s=600)
        assert not refused.granted and round(refused.reserved_usd, 6) == 0.6
        settled = await ask(SETTLE_UPDATE, "a", 0.25)
        await ask(SETTLE_UPDATE, "a", 0.25)  # a retried settlement counts once
        assert round(settled.settled_usd, 6) == 0.25 and settled.reserved_usd == 0.0
        assert (await ask(RESERVE_UPDATE, "c", 0.5, ttl_s=0.5)).granted
        await asyncio.sleep(1.0)
        state = await totals(client, prefix, name, day)
        # Its worker died mid-call: the provider may have billed it, so its worst case stays held.
        doubt = state.in_doubt(datetime.now(UTC).replace(tzinfo=None))
        assert (doubt[0], round(doubt[1], 6), round(state.left_usd, 6)) == (1, 0.5, 0.25)
        approved = await ask(RESERVE_UPDATE, "d", 0.5, force=True)  # a person approved it over the budget
        assert approved.granted and round(approved.spent_usd, 6) == 1.25
