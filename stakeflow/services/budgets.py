"""Frontier budgets as `stakeflow budgets` and the dashboard show them: each configured daily budget, today.

A budget's figures live in its ``BudgetWorkflow`` (agents/budgets.py), asked by its ``budget`` query: a worker on
the workflows queue answers it (as for a run's progress). A budget nothing has drawn on today has no workflow yet:
its figures are its limit and zeros. The items' names are what the dashboard reads (``Budget.from_json``).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.client import Client, WorkflowQueryFailedError
from temporalio.service import RPCError, RPCStatusCode

from stakeflow.agents.budgets import (
    GLOBAL_BUDGET,
    SHADOW_BUDGET,
    BudgetTotals,
    agent_budget,
    budget_workflow_id,
    hook_budget,
    resets_at,
)
from stakeflow.config import Settings
from stakeflow.core.contracts import BUDGET_QUERY
from stakeflow.core.errors import ServiceError

log = logging.getLogger("stakeflow.budgets")
QUERY_TIMEOUT = timedelta(seconds=5)


def configured_budgets(settings: Settings) -> list[tuple[str, float]]:
    """Every daily budget stakeflow.toml sets, as (name, limit in USD)."""
    found: list[tuple[str, float]] = []
    if settings.budgets.frontier_usd_per_day is not None:
        found.append((GLOBAL_BUDGET, settings.budgets.frontier_usd_per_day))
    found += [(agent_budget(n), a.usd_per_day) for n, a in sorted(settings.agents.items()) if a.usd_per_day is not None]
    found += [(hook_budget(n), h.usd_per_day) for n, h in sorted(settings.hooks.items()) if h.usd_per_day is not None]
    if settings.evals.max_usd_per_day is not None:
        found.append((SHADOW_BUDGET, settings.evals.max_usd_per_day))
    return found


async def budget_items(client: Client, settings: Settings, now: datetime | None = None) -> list[dict[str, Any]]:
    """Each configured daily budget's figures today (UTC): ``name``, ``limit``, ``settled``, ``reserved``, ``left``,
    ``resets_at``, and ``in_doubt`` / ``in_doubt_calls`` (reservations whose call never settled: held, see
    agents/budgets.py), ``calls``, ``refused``, ``day``. ServiceError naming the fix when no worker answers."""
    now = (now or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
    day = now.date().isoformat()
    items = []
    for name, limit in configured_budgets(settings):
        totals = await _totals(client, settings, name, day) or BudgetTotals(name=name, day=day, limit_usd=limit)
        totals.limit_usd = limit  # the limit in force here, whatever the last ask said
        doubtful, doubt_usd = totals.in_doubt(now)
        items.append(
            {
                "name": name,
                "limit": limit,
                "settled": round(totals.settled_usd, 9),
                "reserved": round(totals.reserved_usd, 9),
                "left": round(totals.left_usd, 9),
                "resets_at": resets_at(day).isoformat() + "Z",
                "in_doubt": round(doubt_usd, 9),
                "in_doubt_calls": doubtful,
                "calls": totals.calls,
                "refused": totals.refused,
                "day": day,
            }
        )
    return items


async def _totals(client: Client, settings: Settings, name: str, day: str) -> BudgetTotals | None:
    handle = client.get_workflow_handle(budget_workflow_id(settings.queue_prefix, name, day))
    try:
        return await handle.query(BUDGET_QUERY, result_type=BudgetTotals, rpc_timeout=QUERY_TIMEOUT)
    except RPCError as e:
        if e.status == RPCStatusCode.NOT_FOUND:
            return None  # nothing drew on it today
        raise ServiceError(
            f"budget {name}: no answer from its workflow ({e.message}): is `stakeflow worker` running "
            f"(it answers on {settings.queue_prefix}-workflows)?"
        ) from None
    except WorkflowQueryFailedError as e:  # an earlier release's shadow budget, still open today, has no query
        log.warning("budget %s: %s", name, e)
        return None


def budget_lines(items: list[dict[str, Any]], settings: Settings) -> list[str]:
    """`stakeflow budgets` as text: one line per budget, and the per-run cap if one is set."""
    lines = []
    for b in items:
        doubt = f" · {b['in_doubt_calls']} call(s) in doubt ${b['in_doubt']:.2f}" if b["in_doubt_calls"] else ""
        lines.append(
            f"{b['name']}: ${b['limit']:.2f} · settled ${b['settled']:.2f} · reserved ${b['reserved']:.2f} · "
            f"left ${b['left']:.2f} · resets {b['resets_at']}{doubt}"
        )
    if settings.budgets.run_usd is not None:
        lines.append(f"run_usd: ${settings.budgets.run_usd:.2f} per run (each run's own frontier spend)")
    return lines or ["no budgets configured: set [budgets] frontier_usd_per_day (see README, Frontier budgets)"]


def report_budgets(settings: Settings) -> list[dict[str, Any]] | None:
    """The items for the dashboard, from a thread with no event loop (the report is built in one); None when no
    budget is configured, or when Temporal cannot say (logged: the rest of the page still renders)."""
    if not configured_budgets(settings):
        return None
    import asyncio

    from stakeflow.temporal.connection import connect

    async def ask() -> list[dict[str, Any]]:
        return await budget_items(await connect(settings), settings)

    try:
        return asyncio.run(ask())
    except Exception as e:
        log.warning("the dashboard's budgets are left out: %s", e)
        return None
