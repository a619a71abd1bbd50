"""Queries over the trace store for the CLI: a run's span tree, cost reports, read-only SQL, tables.

Pure functions of a ``TraceStore`` (``stakeflow.tracestore``); each opens one read-only connection,
so pending segments are included and nothing is counted twice. Money comes back as float USD
(summed exactly as DECIMAL in DuckDB); a sum over calls that have no price is None, never 0.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import duckdb

from stakeflow import semconv as sc
from stakeflow.errors import InputError

if TYPE_CHECKING:
    from stakeflow.tracestore import TraceStore

# --- a run's span tree -----------------------------------------------------------------------

_TREE_COLUMNS = (
    "span_id", "parent_span_id", "trace_id", "name", "kind", "start_time", "end_time", "duration_ms",
    "status_code", "status_message", "run_id", "step", "purpose", "route", "stakes", "operation",
    "provider", "request_model", "response_model", "tool_name", "input_tokens", "raw_input_tokens",
    "output_tokens", "cache_read_tokens", "cache_write_tokens", "cost_usd", "unpriced", "attempt",
    "escalated", "status", "error_type",
)


def trace_tree(store: TraceStore, run_id: str) -> list[dict[str, Any]]:
    """The spans of one run in tree order (run, steps, model and tool calls), each with its ``depth``.

    Only spans tagged with the run id are shown; Temporal's own spans between them are skipped and
    their children hang from the nearest shown ancestor. A span whose parent has not arrived yet (a
    run still in flight) is a root.
    """
    with store.reader() as con:
        result = con.execute(
            f"SELECT {', '.join(_TREE_COLUMNS)} FROM spans "
            "WHERE trace_id IN (SELECT DISTINCT trace_id FROM spans WHERE run_id = ?)",
            [run_id],
        ).fetchall()
    every = {row[0]: dict(zip(_TREE_COLUMNS, row)) for row in result}
    shown = {sid: span for sid, span in every.items() if span["run_id"] == run_id}
    if not shown:
        raise InputError(
            f"no spans for run '{run_id}' in {store.path}: check the id with `stakeflow costs --by run` "
            "(a run's spans arrive when its worker exports them, within seconds)"
        )
    children: dict[str | None, list[dict[str, Any]]] = {}
    for span in shown.values():
        parent, seen = span["parent_span_id"], set()
        while parent is not None and parent not in shown and parent not in seen:
            seen.add(parent)
            parent = every[parent]["parent_span_id"] if parent in every else None
        children.setdefault(parent if parent in shown else None, []).append(span)
    rows: list[dict[str, Any]] = []

    def visit(parent: str | None, depth: int) -> None:
        for span in sorted(children.get(parent, []), key=lambda s: (s["start_time"], s["name"], s["span_id"])):
            rows.append(_tree_row(span, depth, parent))
            visit(span["span_id"], depth + 1)

    visit(None, 0)
    return rows


def _tree_row(span: dict[str, Any], depth: int, parent: str | None) -> dict[str, Any]:
    model = span["response_model"] or span["request_model"]
    status = span["status"] or ("error" if span["status_code"] == "ERROR" else None)
    return {
        "depth": depth, "name": span["name"], "span_id": span["span_id"], "parent_span_id": parent,
        "start_time": span["start_time"], "duration_ms": span["duration_ms"], "step": span["step"],
        "purpose": span["purpose"], "route": span["route"], "model": model, "tool": span["tool_name"],
        "operation": span["operation"], "attempt": span["attempt"], "status": status,
        "error_type": span["error_type"], "input_tokens": span["input_tokens"],
        "raw_input_tokens": span["raw_input_tokens"], "output_tokens": span["output_tokens"],
        "cache_read_tokens": span["cache_read_tokens"], "cache_write_tokens": span["cache_write_tokens"],
        "cost_usd": _money(span["cost_usd"]), "unpriced": bool(span["unpriced"]),
    }


def _label(row: dict[str, Any]) -> str:
    if row["name"] == sc.SPAN_STEP and row["step"] is not None:
        label = f"step {row['step']}" + (f" ({row['purpose']})" if row["purpose"] else "")
    else:
        label = row["name"]
    if row["attempt"] and row["attempt"] > 1:
        label += f" [attempt {row['attempt']}]"
    return "  " * row["depth"] + label


def _duration(ms: float | None) -> str:
    if ms is None:
        return ""
    return f"{ms:.0f}ms" if ms < 1000 else f"{ms / 1000:.2f}s"


def render_tree(rows: list[dict[str, Any]]) -> str:
    """``trace_tree`` rows as text: indented span names and aligned columns, then the run's total."""
    columns = ["SPAN", "DURATION", "ROUTE", "MODEL", "IN", "OUT", "CACHE R", "CACHE W", "COST", "STATUS"]
    table = []
    for r in rows:
        is_call = r["operation"] == sc.SPAN_CHAT
        cost = ("unpriced" if r["unpriced"] else f"${r['cost_usd']:.6f}") if is_call else ""
        table.append([
            _label(r), _duration(r["duration_ms"]), r["route"] or "", r["model"] or r["tool"] or "",
            r["input_tokens"], r["output_tokens"], r["cache_read_tokens"], r["cache_write_tokens"],
            cost, r["status"] or "",
        ])
    calls = [r for r in rows if r["operation"] == sc.SPAN_CHAT]
    priced = [r["cost_usd"] for r in calls if not r["unpriced"] and r["cost_usd"] is not None]
    unpriced = len(calls) - len(priced)
    total = f"{len(calls)} model calls, ${sum(priced):.6f}"
    if unpriced:
        total += f" (+ {unpriced} UNPRICED, not in the total)"
    return format_table(columns, table, null="", align_left={0, 2, 3, 9}) + "\n" + total


# --- cost report -----------------------------------------------------------------------------

BREAKDOWNS = ("run", "model", "route", "stakes", "tool", "day", "source")
_KEYS = {
    "run": "run_id", "model": "request_model", "route": "route", "stakes": "stakes",
    "day": "CAST(start_time AS DATE)", "source": "source",
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
    sum(equivalent_usd) AS frontier_equivalent_usd,
    sum(equivalent_usd - cost_usd) AS saved_usd,
    count(*) FILTER (WHERE NOT unpriced AND equivalent_usd IS NULL) AS no_equivalent_calls"""
_ROW_COLUMNS = (
    "calls", "unpriced_calls", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens",
    "cost_usd", "frontier_equivalent_usd", "saved_usd",
)
_MONEY = ("cost_usd", "open_usd", "frontier_usd", "frontier_equivalent_usd", "saved_usd")


def cost_report(
    store: TraceStore, since: timedelta | None = None, by: str = "model", run_id: str | None = None,
    frontier_model: str | None = None, *, limit: int | None = None, now: datetime | None = None,
) -> dict[str, Any]:
    """Totals and a breakdown ``by`` run|model|route|stakes|tool|day|source, from model-call spans only.

    ``total_usd`` sums priced calls (``open_usd`` + ``frontier_usd``); ``unpriced_calls`` are counted
    and left out of every sum, never taken as $0. ``frontier_equivalent_usd`` is what the calls would
    have cost on the frontier: an open call's stored equivalent, a frontier call's own cost.
    ``saved_usd`` = equivalent - cost over priced calls that have an equivalent (``no_equivalent_calls``
    counts those that lack one). ``by="tool"`` gives each tool the model calls of the steps that used
    it, so a step using two tools counts under both. ``frontier_model`` names the model the stored
    equivalents were priced against (each call was priced when it ran); it does not reprice.
    Days are UTC; ``since`` is measured back from ``now`` (default: the current time).
    """
    if by not in BREAKDOWNS:
        raise InputError(f"unknown breakdown '{by}': use one of {', '.join(BREAKDOWNS)}")
    filters, params = ["operation = 'chat'"], []
    if since is not None:
        now = now or datetime.now(UTC)
        cutoff = (now.astimezone(UTC) if now.tzinfo else now).replace(tzinfo=None) - since
        filters.append("start_time >= ?")
        params.append(cutoff)
    if run_id is not None:
        filters.append("run_id = ?")
        params.append(run_id)
    calls = f"""calls AS (
        SELECT *, CASE WHEN unpriced THEN NULL WHEN route = 'frontier' THEN cost_usd
                       ELSE frontier_equivalent_usd END AS equivalent_usd
        FROM spans WHERE {' AND '.join(filters)})"""
    with store.reader() as con:
        total = _fetch_dicts(con, f"WITH {calls} SELECT {_AGGREGATES} FROM calls", params)[0]
        rows = _fetch_dicts(con, _breakdown_sql(calls, by, limit), params)
    report: dict[str, Any] = {
        "by": by, "since": since.total_seconds() if since is not None else None, "run_id": run_id,
        "frontier_model": frontier_model, "calls": total["calls"],
        "total_usd": _money(total["cost_usd"]) or 0.0,
        **{k: _money(total[k]) or 0.0 for k in ("open_usd", "frontier_usd", "frontier_equivalent_usd", "saved_usd")},
        "unpriced_calls": total["unpriced_calls"], "no_equivalent_calls": total["no_equivalent_calls"],
        **{k: total[k] or 0 for k in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")},
    }
    report["rows"] = [_report_row(by, row) for row in rows]
    return report


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
        out[column] = _money(value) if column in _MONEY else (value or 0)
    return out


# --- SQL -------------------------------------------------------------------------------------


def run_sql(store: TraceStore, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run ONE read statement (SELECT, WITH, FROM, DESCRIBE, SHOW, ...) on a read-only connection.

    Anything else (INSERT, COPY, ATTACH, SET, PRAGMA, several statements) is refused. Files outside
    the spool cannot be read from the statement.
    """
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as e:
        raise InputError(f"SQL does not parse: {_first_line(e)}") from None
    if len(statements) != 1:
        raise InputError(f"give exactly one SQL statement, not {len(statements)}")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise InputError(f"only read queries (SELECT ...) are allowed on the trace store, not {kind.name}")
    with store.reader() as con:
        con.execute("SET allowed_directories = ?", [[str(store.spool_dir) + "/"]])
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        try:
            result = con.execute(statements[0].query)
            columns = [d[0] for d in result.description or []]
            return columns, result.fetchall()
        except duckdb.Error as e:
            raise InputError(f"SQL failed: {_first_line(e)}") from None


# --- output ----------------------------------------------------------------------------------


def format_table(
    columns: Sequence[str], rows: Sequence[Sequence[Any]], *, null: str = "NULL", max_width: int = 60,
    align_left: set[int] | None = None,
) -> str:
    """A plain-text table: a header, a rule, one line per row; numbers right-aligned.

    Cells longer than ``max_width`` are cut with "…" (CSV and JSON output keep them whole).
    """
    cells = [[_cell(v, null, max_width) for v in row] for row in rows]
    widths = [len(str(c)) for c in columns]
    for row in cells:
        for i, text in enumerate(row):
            widths[i] = max(widths[i], len(text))
    numeric = [
        all(isinstance(row[i], (int, float, Decimal)) and not isinstance(row[i], bool)
            for row in rows if row[i] is not None) and any(row[i] is not None for row in rows)
        for i in range(len(columns))
    ]
    if align_left is not None:
        numeric = [i not in align_left for i in range(len(columns))]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return "  ".join(parts).rstrip()

    out = [line([str(c) for c in columns]), "  ".join("-" * w for w in widths)]
    out.extend(line(row) for row in cells)
    if not rows:
        out.append("(no rows)")
    return "\n".join(out)


def to_csv(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """CSV text with a header line; None becomes an empty field."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([[_csv_value(v) for v in row] for row in rows])
    return buf.getvalue()


def _cell(value: Any, null: str, max_width: int) -> str:
    if value is None:
        return null
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (float, Decimal)):
        text = f"{value:.6f}"
    elif isinstance(value, datetime):
        text = value.isoformat(sep=" ", timespec="milliseconds")
    else:
        text = str(value)
    text = text.replace("\n", " ")
    return text if len(text) <= max_width else text[: max_width - 1] + "…"


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _money(value: Decimal | float | None) -> float | None:
    return None if value is None else float(value)


def _fetch_dicts(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    result = con.execute(sql, params)
    names = [d[0] for d in result.description]
    return [dict(zip(names, row)) for row in result.fetchall()]


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
