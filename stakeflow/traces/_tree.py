"""A run's span tree: what ``stakeflow trace`` shows, from one read-only connection of the store."""

from __future__ import annotations

from typing import Any

from stakeflow.core import semconv as sc
from stakeflow.core.errors import InputError
from stakeflow.traces._store import TraceStore
from stakeflow.traces._tables import format_table, money

_TREE_COLUMNS = (
    "span_id",
    "parent_span_id",
    "trace_id",
    "name",
    "kind",
    "start_time",
    "end_time",
    "duration_ms",
    "status_code",
    "status_message",
    "run_id",
    "step",
    "purpose",
    "route",
    "stakes",
    "operation",
    "provider",
    "request_model",
    "response_model",
    "tool_name",
    "input_tokens",
    "raw_input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cost_usd",
    "unpriced",
    "attempt",
    "escalated",
    "status",
    "error_type",
)


# A step's round (model-call and tool spans): kept in the attributes, as a span carries it.
_ROUND = "TRY_CAST(json_extract_string(attributes, '$.\"stakeflow.round\"') AS INTEGER) AS round"


def trace_tree(store: TraceStore, run_id: str) -> list[dict[str, Any]]:
    """The spans of one run in tree order (run, steps, model and tool calls), each with its ``depth``.

    Only spans tagged with the run id are shown; Temporal's own spans between them are skipped and
    their children hang from the nearest shown ancestor. A span whose parent has not arrived yet (a
    run still in flight) is a root.
    """
    with store.reader() as con:
        result = con.execute(
            f"SELECT {', '.join(_TREE_COLUMNS)}, {_ROUND} FROM spans "
            "WHERE trace_id IN (SELECT DISTINCT trace_id FROM spans WHERE run_id = ?)",
            [run_id],
        ).fetchall()
    every = {row[0]: dict(zip((*_TREE_COLUMNS, "round"), row, strict=True)) for row in result}
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
        "depth": depth,
        "name": span["name"],
        "span_id": span["span_id"],
        "parent_span_id": parent,
        "start_time": span["start_time"],
        "duration_ms": span["duration_ms"],
        "step": span["step"],
        "purpose": span["purpose"],
        "round": span["round"],
        "route": span["route"],
        "model": model,
        "tool": span["tool_name"],
        "operation": span["operation"],
        "attempt": span["attempt"],
        "status": status,
        "error_type": span["error_type"],
        "input_tokens": span["input_tokens"],
        "raw_input_tokens": span["raw_input_tokens"],
        "output_tokens": span["output_tokens"],
        "cache_read_tokens": span["cache_read_tokens"],
        "cache_write_tokens": span["cache_write_tokens"],
        "cost_usd": money(span["cost_usd"]),
        "unpriced": bool(span["unpriced"]),
    }


def _label(row: dict[str, Any]) -> str:
    if row["name"] == sc.SPAN_STEP and row["step"] is not None:
        label = f"step {row['step']}" + (f" ({row['purpose']})" if row["purpose"] else "")
    else:
        label = row["name"]
    if row["round"] and row["round"] > 1:
        label += f" (round {row['round']})"
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
        table.append(
            [
                _label(r),
                _duration(r["duration_ms"]),
                r["route"] or "",
                r["model"] or r["tool"] or "",
                r["input_tokens"],
                r["output_tokens"],
                r["cache_read_tokens"],
                r["cache_write_tokens"],
                cost,
                r["status"] or "",
            ]
        )
    calls = [r for r in rows if r["operation"] == sc.SPAN_CHAT]
    priced = [r["cost_usd"] for r in calls if not r["unpriced"] and r["cost_usd"] is not None]
    unpriced = len(calls) - len(priced)
    if calls and not priced:  # no price at all is no amount, never $0
        total = f'{len(calls)} model calls, UNPRICED: add [prices."<model id>"] to stakeflow.toml'
    else:
        total = f"{len(calls)} model calls, ${sum(priced):.6f}"
        if unpriced:
            total += f" (+ {unpriced} UNPRICED, not in the total)"
    return format_table(columns, table, null="", align_left={0, 2, 3, 9}) + "\n" + total
