"""The cost report: totals and breakdowns over model-call spans, from one read-only connection.

Money comes back as float USD, summed exactly as DECIMAL in DuckDB; a sum over calls that have no
price is None, never 0. Each call's frontier equivalent is the one the activity stored
(``spans.frontier_equivalent_usd``); the report never prices a call again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import duckdb

from stakeflow.core import semconv as sc
from stakeflow.core.errors import InputError
from stakeflow.traces._rows import one_row
from stakeflow.traces._store import TraceStore
from stakeflow.traces._tables import money

BREAKDOWNS = ("run", "model", "route", "stakes", "tool", "day", "source", "agent")
_KEYS = {
    "run": "run_id",
    "model": "request_model",
    "route": "route",
    "stakes": "stakes",
    "day": "CAST(start_time AS DATE)",
    "source": "source",
    "agent": "agent",
    # Only for grouped_costs (the dashboard), not `costs --by`: a call's step kind, and its lane, where
    # shadow evaluation's calls are their own lane whatever route they took.
    "kind": "purpose",
    "lane": "CASE WHEN source = 'shadow' THEN 'shadow' ELSE coalesce(route, 'open') END",
}
_AGGREGATES = """
    count(*) AS calls,
    count(*) FILTER (WHERE unpriced) AS unpriced_calls,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cache_read_tokens) AS cache_read_tokens,
    sum(cache_write_tokens) AS cache_write_tokens,
    sum(cost_usd) AS cost_usd,
    sum(cost_usd) FILTER (WHERE route IS DISTINCT FROM 'frontier') AS open_usd,
    sum(cost_usd) FILTER (WHERE route = 'frontier') AS frontier_usd,
    sum(frontier_equivalent_usd) FILTER (WHERE unpriced IS NOT TRUE) AS frontier_equivalent_usd,
    sum(frontier_equivalent_usd - cost_usd) AS saved_usd,
    count(*) FILTER (WHERE NOT unpriced AND frontier_equivalent_usd IS NULL) AS no_equivalent_calls"""
_ROW_COLUMNS = (
    "calls",
    "unpriced_calls",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cost_usd",
    "frontier_equivalent_usd",
    "saved_usd",
)
_MONEY = ("cost_usd", "open_usd", "frontier_usd", "frontier_equivalent_usd", "saved_usd")


def cost_report(
    store: TraceStore,
    since: timedelta | None = None,
    by: str = "model",
    run_id: str | None = None,
    frontier_model: str | None = None,
    *,
    limit: int | None = None,
    now: datetime | None = None,
    agent: str | None = None,
) -> dict[str, Any]:
    """Totals and a breakdown ``by`` run|model|route|stakes|tool|day|source, from model-call spans only.

    ``total_usd`` sums priced calls (``open_usd`` + ``frontier_usd``); ``unpriced_calls`` are counted
    and left out of every sum, never taken as $0. When there are calls and none is priced
    (``priced_calls`` = 0), the totals are 0.0 only as sums over nothing: ``summary_line`` prints
    "unpriced" instead, and a row's ``cost_usd`` is None, as in the ``runs`` view.
    ``frontier_equivalent_usd`` is what the calls would have cost on the frontier, as each call stored
    it (a frontier call's is its own cost).
    ``saved_usd`` = equivalent - cost over priced calls that have an equivalent (``no_equivalent_calls``
    counts those that lack one). ``by="tool"`` gives each tool the model calls of the steps that used
    it, so a step using two tools counts under both. ``frontier_model`` names the model the stored
    equivalents were priced against (each call was priced when it ran); it does not reprice.
    Days are UTC; ``since`` is measured back from ``now`` (default: the current time). ``agent`` keeps
    the calls of that named agent's runs only.
    """
    if by not in BREAKDOWNS:
        raise InputError(f"unknown breakdown '{by}': use one of {', '.join(BREAKDOWNS)}")
    calls, params = _calls(since, now, run_id, agent)
    with store.reader() as con:
        # Shadow evaluation spends on its own (source "shadow"): its own line, never in the totals of runs.
        total = _fetch_dicts(
            con, f"WITH {calls} SELECT {_AGGREGATES} FROM calls WHERE source IS DISTINCT FROM 'shadow'", params
        )[0]
        shadow = one_row(con, f"WITH {calls} SELECT count(*), sum(cost_usd) FROM calls WHERE source = 'shadow'", params)
        rows = _fetch_dicts(con, _breakdown_sql(calls, by, limit), params)
        downgraded = _budget_downgrades(con, since, now, run_id, agent)
    report: dict[str, Any] = {
        "by": by,
        "since": since.total_seconds() if since is not None else None,
        "run_id": run_id,
        "frontier_model": frontier_model,
        "calls": total["calls"],
        "priced_calls": total["calls"] - total["unpriced_calls"],
        "total_usd": money(total["cost_usd"]) or 0.0,
        **{k: money(total[k]) or 0.0 for k in ("open_usd", "frontier_usd", "frontier_equivalent_usd", "saved_usd")},
        "unpriced_calls": total["unpriced_calls"],
        "no_equivalent_calls": total["no_equivalent_calls"],
        **{k: total[k] or 0 for k in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")},
        "shadow_calls": shadow[0],
        "shadow_usd": money(shadow[1]) or 0.0,
        "downgraded_by_budget": downgraded,
    }
    report["rows"] = [_report_row(by, row) for row in rows]
    return report


def summary_line(report: dict[str, Any]) -> str:
    """The report's totals as one line (what `stakeflow costs` prints under its table), never "$0" for
    calls that have no price: when none has one, the line says so instead of an amount."""
    warning = (
        f"\nWARNING: {report['unpriced_calls']} model calls have no price and are not in these totals: "
        'add [prices."<model id>"] to stakeflow.toml (input_per_mtok/output_per_mtok, or gpu_hour_usd)'
    )
    if report["calls"] and not report["priced_calls"]:
        return f"total unpriced ({report['calls']} model calls, none with a price)" + warning
    line = (
        f"total ${report['total_usd']:.4f} (open ${report['open_usd']:.4f} · frontier ${report['frontier_usd']:.4f})"
        f" · all-frontier would be ${report['frontier_equivalent_usd']:.4f} · saved ${report['saved_usd']:.4f}"
        f" · {report.get('agreement') or 'agreement not measured'}"
    )
    if report.get("shadow_calls"):
        line += (
            f"\nshadow evaluation ${report['shadow_usd']:.4f} ({report['shadow_calls']} calls, not in the total above)"
        )
    if report.get("downgraded_by_budget"):
        line += (
            f"\n{report['downgraded_by_budget']} model calls downgraded to the open model by a spent frontier budget"
        )
    return line + (warning if report["unpriced_calls"] else "")


@dataclass(frozen=True)
class CostGroup:
    """One group of model calls: the figures ``cost_report`` gives each of its rows, in the same SQL."""

    key: tuple[Any, ...]
    calls: int
    unpriced_calls: int
    cost_usd: float | None  # None: no call of the group has a price (never $0)
    open_usd: float | None
    frontier_usd: float | None
    frontier_equivalent_usd: float | None
    saved_usd: float | None


def grouped_costs(
    store: TraceStore,
    keys: tuple[str, ...],
    since: timedelta | None = None,
    *,
    now: datetime | None = None,
    agent: str | None = None,
    shadow: bool = True,
) -> list[CostGroup]:
    """Model calls grouped by several keys at once (``day``, ``lane``, ``agent``, ``kind``, ...), shadow
    evaluation included (its lane is ``shadow``): the dashboard's spend per day and route, and its saving
    per agent and step kind. Each figure is ``_AGGREGATES``', so it equals `costs` for the same calls.
    ``shadow=False`` leaves shadow evaluation out, as the report's totals do."""
    unknown = [k for k in keys if k not in _KEYS]
    if unknown or not keys:
        raise InputError(f"unknown cost grouping {unknown or keys}: use some of {', '.join(_KEYS)}")
    calls, params = _calls(since, now, None, agent)
    where = "TRUE" if shadow else "source IS DISTINCT FROM 'shadow'"
    columns = ", ".join(f"{_KEYS[k]} AS k{i}" for i, k in enumerate(keys))
    order = ", ".join(f"k{i}" for i in range(len(keys)))
    with store.reader() as con:
        rows = _fetch_dicts(
            con,
            f"WITH {calls} SELECT {columns}, {_AGGREGATES} FROM calls WHERE {where} GROUP BY ALL ORDER BY {order}",
            params,
        )
    return [
        CostGroup(
            key=tuple(_plain(row[f"k{i}"]) for i in range(len(keys))),
            calls=row["calls"],
            unpriced_calls=row["unpriced_calls"],
            **{m: money(row[m]) for m in _MONEY},
        )
        for row in rows
    ]


def window_start(since: timedelta | None, now: datetime | None = None) -> datetime | None:
    """The first instant of a ``since`` window ending at ``now`` (default: the current time), naive UTC
    as the store's timestamps are; None for no window."""
    if since is None:
        return None
    now = now or datetime.now(UTC)
    return (now.astimezone(UTC) if now.tzinfo else now).replace(tzinfo=None) - since


def _where(
    time_column: str, since: timedelta | None, now: datetime | None, run_id: str | None, agent: str | None
) -> tuple[list[str], list[Any]]:
    """The filters (and their parameters) of a window, a run and an agent, over a table whose window is timed by
    ``time_column``: what the ``calls`` CTE and the ``runs`` view's downgrades are both narrowed by."""
    filters: list[str] = []
    params: list[Any] = []
    start = window_start(since, now)
    if start is not None:
        filters.append(f"{time_column} >= ?")
        params.append(start)
    if run_id is not None:
        filters.append("run_id = ?")
        params.append(run_id)
    if agent is not None:
        filters.append("agent = ?")
        params.append(agent)
    return filters, params


def _calls(
    since: timedelta | None, now: datetime | None, run_id: str | None, agent: str | None
) -> tuple[str, list[Any]]:
    """The ``calls`` CTE every cost query reads (model-call spans in the window), and its parameters."""
    filters, params = _where("start_time", since, now, run_id, agent)
    where = " AND ".join(["operation = 'chat'", *filters])
    return f"calls AS (SELECT * FROM spans WHERE {where})", params


def _budget_downgrades(
    con: duckdb.DuckDBPyConnection, since: timedelta | None, now: datetime | None, run_id: str | None, agent: str | None
) -> int:
    """Model calls a spent frontier budget kept on the open model, over the runs that started in the window (the
    ``runs`` view's ``downgraded_by_budget``)."""
    filters, params = _where("started_at", since, now, run_id, agent)
    where = " AND ".join(["TRUE", *filters])
    return int(one_row(con, f"SELECT coalesce(sum(downgraded_by_budget), 0) FROM runs WHERE {where}", params)[0])


def _plain(key: Any) -> Any:
    return key.isoformat() if isinstance(key, date) else key


def _breakdown_sql(calls: str, by: str, limit: int | None) -> str:
    order = "key" if by == "day" else "cost_usd DESC NULLS LAST, calls DESC, key"
    tail = f" ORDER BY {order}" + (f" LIMIT {int(limit)}" if limit is not None else "")
    if by == "tool":
        return f"""WITH {calls}, tools AS (
                SELECT DISTINCT run_id, step, tool_name FROM spans
                WHERE operation = 'execute_tool' AND run_id IS NOT NULL)
            SELECT t.tool_name AS key, {_AGGREGATES}
            FROM calls c LEFT JOIN tools t ON c.run_id = t.run_id AND c.step = t.step
            GROUP BY t.tool_name{tail}"""
    if by == "run":
        return f"""WITH {calls}, run_status AS (
                SELECT run_id, arg_max(status, end_time) AS status FROM spans
                WHERE name = '{sc.SPAN_RUN}' AND run_id IS NOT NULL GROUP BY run_id),
            per_run AS (SELECT run_id AS key, {_AGGREGATES} FROM calls GROUP BY run_id)
            SELECT per_run.*, run_status.status FROM per_run LEFT JOIN run_status ON per_run.key = run_status.run_id
            {tail}"""
    return f"WITH {calls} SELECT {_KEYS[by]} AS key, {_AGGREGATES} FROM calls GROUP BY ALL{tail}"


def _report_row(by: str, row: dict[str, Any]) -> dict[str, Any]:
    key = row["key"]
    if isinstance(key, date):
        key = key.isoformat()
    elif key is None:
        key = "(no tool)" if by == "tool" else "(none)"
    out: dict[str, Any] = {by: key}
    if by == "run":
        out["status"] = row["status"]
    for column in _ROW_COLUMNS:
        value = row[column]
        out[column] = money(value) if column in _MONEY else (value or 0)
    return out


def _fetch_dicts(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    result = con.execute(sql, params)
    names = [d[0] for d in result.description]
    return [dict(zip(names, row, strict=True)) for row in result.fetchall()]
