"""Where steps went and what moved them: routing events per day, the routing observed, the slowest runs.

Every routing decision is recorded with its reason on its step span (``stakeflow.reason``), and a decision
that changed a step's route appends why to that reason (``agents.policy``): ``...; escalated: open output
failed validation twice``, ``...; fallback: open model endpoint unavailable``, ``...; frontier not
configured (ANTHROPIC_API_KEY unset), so downgraded to the open model``. Frontier budgets (issue 24)
record ``downgraded: frontier budget ...`` the same way. So each kind of event is a pattern over step
spans' reasons, counted once per step span, and its reason is the text from the pattern on.

Unsupported answers (issue 22) are runs whose ``runs.answer_supported`` is false; a store with no checked run
(the column missing or all NULL) has ``answer_checks_recorded`` False and counts no such event.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb

from stakeflow.core import semconv as sc
from stakeflow.stores.readonly_sql import quote_literal
from stakeflow.traces._store import TraceStore

# Event kind -> the reason text that marks it (a LIKE pattern's fixed part); checked in this order.
EVENT_MARKERS: tuple[tuple[str, str], ...] = (
    ("escalation", "escalated:"),
    ("fallback", "fallback:"),
    ("budget downgrade", "downgraded: frontier budget"),
    ("downgrade: no frontier key", "frontier not configured (ANTHROPIC_API_KEY unset), so downgraded"),
)
UNSUPPORTED = "unsupported answer"


@dataclass(frozen=True)
class RouteEvent:
    """How many steps (or runs, for unsupported answers) of one kind happened on ``day`` for ``reason``."""

    day: str
    kind: str
    reason: str
    count: int


@dataclass(frozen=True)
class ObservedRoute:
    """Steps of one kind and tool that went to ``route``, and the reason most of them carried."""

    kind: str
    tool: str
    route: str
    steps: int
    reason: str


@dataclass(frozen=True)
class RunTiming:
    """A run as the ``runs`` view has it, for the slowest-runs table."""

    run_id: str
    status: str | None
    agent: str | None
    started_at: datetime | None
    duration_ms: float | None
    steps: int | None
    cost_usd: float | None


def _window(start: datetime | None, agent: str | None, time: str, run: str = "run_id") -> tuple[str, list[Any]]:
    """A WHERE clause for rows of the window (``time`` >= start) and of one agent's runs."""
    filters: list[str] = []
    params: list[Any] = []
    if start is not None:
        filters.append(f"{time} >= ?")
        params.append(start)
    if agent is not None:
        filters.append(f"{run} IN (SELECT run_id FROM runs WHERE agent = ?)")
        params.append(agent)
    return " AND ".join(filters) or "TRUE", params


def answer_checks_recorded(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether any run in this store had its answer checked (issue 22's ``answer_supported``, set or not).

    The column exists from migration 8 on, but runs of earlier releases (and runs with ``check_answer`` off)
    leave it NULL: a store of only those has no answer checks to show, not "every answer supported".
    """
    found = con.execute(
        "SELECT count(*) FROM duckdb_columns() WHERE table_name = 'runs' AND column_name = 'answer_supported'"
    ).fetchone()
    if not (found and found[0]):
        return False
    checked = con.execute("SELECT count(*) FROM runs WHERE answer_supported IS NOT NULL").fetchone()
    return bool(checked and checked[0])


def route_events(store: TraceStore, start: datetime | None, agent: str | None = None) -> tuple[list[RouteEvent], bool]:
    """Escalations, fallbacks and downgrades per UTC day and reason, and unsupported answers when recorded.

    Returns the events and whether answer checks are recorded in this store at all.
    """
    where, params = _window(start, agent, "start_time")
    kinds = " ".join(
        f"WHEN reason LIKE {quote_literal('%' + marker + '%')} THEN {quote_literal(kind)}"
        for kind, marker in EVENT_MARKERS
    )
    cut = " ".join(
        f"WHEN {quote_literal(kind)} THEN substr(reason, strpos(reason, {quote_literal(marker)}))"
        for kind, marker in EVENT_MARKERS
    )
    steps = f"""
        SELECT CAST(start_time AS DATE) AS day, CASE {kinds} END AS kind, reason FROM spans
        WHERE name = {quote_literal(sc.SPAN_STEP)} AND reason IS NOT NULL AND {where}"""
    with store.reader() as con:
        rows = con.execute(
            f"""SELECT day, kind, CASE kind {cut} END AS why, count(*) FROM ({steps})
                WHERE kind IS NOT NULL GROUP BY ALL ORDER BY day, kind, count(*) DESC, why""",
            params,
        ).fetchall()
        recorded = answer_checks_recorded(con)
        if recorded:
            run_where, run_params = _window(start, agent, "started_at")
            rows += con.execute(
                f"""SELECT CAST(started_at AS DATE), {quote_literal(UNSUPPORTED)}, 'answer not supported by its tools',
                    count(*) FROM runs WHERE answer_supported = false AND {run_where} GROUP BY ALL ORDER BY 1""",
                run_params,
            ).fetchall()
    return [RouteEvent(day.isoformat(), kind, why, n) for day, kind, why, n in rows], recorded


def observed_routing(store: TraceStore, start: datetime | None, agent: str | None = None) -> list[ObservedRoute]:
    """Per step kind (plan, step, answer) and tool: which route its steps took, and the commonest reason."""
    where, params = _window(start, agent, "s.start_time", "s.run_id")
    with store.reader() as con:
        rows = con.execute(
            f"""
            WITH tools AS (
                SELECT run_id, step, string_agg(DISTINCT tool_name, ', ' ORDER BY tool_name) AS tool FROM spans
                WHERE operation = 'execute_tool' AND run_id IS NOT NULL GROUP BY ALL)
            SELECT coalesce(s.purpose, '?'), coalesce(t.tool, ''), coalesce(s.route, '?'), count(*), mode(s.reason)
            FROM spans s LEFT JOIN tools t ON s.run_id = t.run_id AND s.step = t.step
            WHERE s.name = {quote_literal(sc.SPAN_STEP)} AND {where}
            GROUP BY ALL ORDER BY 1, 2, 4 DESC""",
            params,
        ).fetchall()
    return [ObservedRoute(k, t, r, n, why or "") for k, t, r, n, why in rows]


def slowest_runs(
    store: TraceStore, start: datetime | None, agent: str | None = None, limit: int = 10
) -> list[RunTiming]:
    """The ``limit`` longest runs that started in the window (``runs.duration_ms``)."""
    filters: list[str] = ["duration_ms IS NOT NULL"]
    params: list[Any] = []
    if start is not None:
        filters.append("started_at >= ?")
        params.append(start)
    if agent is not None:
        filters.append("agent = ?")
        params.append(agent)
    with store.reader() as con:
        rows = con.execute(
            f"""SELECT run_id, status, agent, started_at, duration_ms, steps, cost_usd FROM runs
                WHERE {" AND ".join(filters)} ORDER BY duration_ms DESC, run_id LIMIT {int(limit)}""",
            params,
        ).fetchall()
    return [
        RunTiming(run_id, status, agent, started, duration, steps, None if cost is None else float(cost))
        for run_id, status, agent, started, duration, steps, cost in rows
    ]
