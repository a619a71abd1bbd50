"""The dashboard's tables: each chart's numbers beside it, the routing table, the top and slowest runs.

Every value is escaped; run ids link to their Temporal Web UI page and show the `stakeflow trace` command.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from html import escape
from typing import Any

from stakeflow.services.report._charts import saving_rows
from stakeflow.services.report._data import ReportData


def usd(value: float | None) -> str:
    """Dollars as `costs` prints them ($0.0123), whole cents from $100 on; None is `unpriced`, never $0."""
    if value is None:
        return "unpriced"
    return f"${value:,.2f}" if abs(value) >= 100 else f"${value:.4f}"


def figure(name: str, value: Any, text: str | None = None) -> str:
    """A figure as shown, with the query's own value in ``data-value`` (what tests compare with `costs --json`)."""
    raw = "" if value is None else repr(value) if isinstance(value, float) else str(value)
    shown = str(value) if text is None else text
    return f'<span data-figure="{escape(name)}" data-value="{escape(raw)}">{escape(shown)}</span>'


def days_text(since: timedelta | None) -> str:
    if since is None:
        return "all time"
    if since % timedelta(days=1) == timedelta(0):
        return f"{since.days} days"
    return f"{since.total_seconds() / 3600:g} hours"


def _table(columns: Sequence[str], rows: Sequence[Sequence[str]], numeric: set[int], name: str) -> str:
    head = "".join(f"<th{' class=num' if i in numeric else ''}>{escape(c)}</th>" for i, c in enumerate(columns))
    body = "".join(
        "<tr>" + "".join(f"<td{' class=num' if i in numeric else ''}>{cell}</td>" for i, cell in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f'<table data-table="{escape(name)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _details(summary: str, table: str) -> str:
    return f"<details><summary>{escape(summary)}</summary>{table}</details>"


def spend_table(data: ReportData) -> str:
    """Per day: what each lane spent (`costs --by day` is their sum), all-frontier for the runs, the saving."""
    if not data.spend_days and not data.spend:
        return ""
    lanes: dict[str, dict[str, float | None]] = {}
    for g in data.spend:
        lanes.setdefault(g.key[0], {})[g.key[1]] = g.cost_usd
    runs = {g.key[0]: g for g in data.spend_days}
    rows = []
    for day in sorted(lanes):
        r = runs.get(day)
        cells = [escape(day)]
        for lane in ("open", "frontier", "shadow"):
            value = lanes[day].get(lane)
            cells.append(figure(f"day:{day}:{lane}", value, usd(value) if lane in lanes[day] else "–"))
        cells += [
            figure(
                f"day:{day}:equivalent",
                r.frontier_equivalent_usd if r else None,
                usd(r.frontier_equivalent_usd) if r else "–",
            ),  # fmt: skip
            figure(f"day:{day}:saved", r.saved_usd if r else None, usd(r.saved_usd) if r else "–"),
            figure(f"day:{day}:unpriced", r.unpriced_calls if r else 0),
        ]
        rows.append(cells)
    columns = ["day (UTC)", "open", "frontier", "shadow", "all-frontier (runs)", "saved", "unpriced calls"]
    return _details("numbers per day", _table(columns, rows, {1, 2, 3, 4, 5, 6}, "spend"))


def agreement_table(data: ReportData) -> str:
    """Per agent and step kind: n, agreement and its interval, and the saving (`evals --by`'s figures)."""
    rows = [
        [
            escape(r["group"]),
            figure(f"agreement:{r['group']}:n", r["n"]),
            figure(f"agreement:{r['group']}", r["agreement"], f"{r['agreement']:.0%}"),
            f"{r['low']:.0%}–{r['high']:.0%}",
            usd(r["saved_usd"]),
            f"{r['saved_share']:.0%}",
        ]
        for r in saving_rows(data)
    ]
    if not rows:
        return ""
    columns = ["agent · kind", "n", "agreement", "95% interval", "saved", "saved share"]
    return _details("numbers per agent and step kind", _table(columns, rows, {1, 2, 4, 5}, "agreement"))


def events_table(data: ReportData) -> str:
    """Each kind of event with each reason, counted over the window."""
    totals: dict[tuple[str, str], int] = {}
    for e in data.events:
        totals[(e.kind, e.reason)] = totals.get((e.kind, e.reason), 0) + e.count
    if not totals:
        return ""
    rows = [
        [escape(kind), escape(reason), figure(f"events:{kind}:{reason}", n)]
        for (kind, reason), n in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))
    ]
    return _table(["what", "reason", "count"], rows, {2}, "events")


def routing_section(data: ReportData) -> str:
    """Where each step kind went in the window and why, and the routing measured agreement puts in force."""
    observed = [
        [escape(r.kind), escape(r.tool or "–"), escape(r.route), str(r.steps), escape(r.reason)]
        for r in data.routing_observed
    ]
    parts = ['<section id="routing"><h2>The routing table in force</h2>']
    if observed:
        open_steps = sum(r.steps for r in data.routing_observed if r.route == "open")
        share = open_steps / sum(r.steps for r in data.routing_observed)
        parts.append(f'<p class="reading">{share:.0%} of steps ran on the open model in this window.</p>')
        parts.append(_table(["kind", "tool", "route", "steps", "commonest reason"], observed, {3}, "routing-observed"))
    else:
        parts.append('<p class="empty">No steps in this window.</p>')
    rules = [
        [
            escape(r.agent or "(default)"),
            escape(r.kind),
            escape(r.tool or "–"),
            str(r.n),
            f"{r.agreement:.0%}",
            f"{r.agreement_low:.0%}",
            escape(r.route),
            escape(r.reason),
        ]  # fmt: skip
        for r in data.routing_rules
    ]
    reasons = {r.reason for r in data.routing_rules}
    if len(reasons) == 1:
        parts.append(f'<p class="reading">Measured agreement moves no step: {escape(reasons.pop())}.</p>')
    elif rules:
        columns = ["agent", "kind", "tool", "n", "agreement", "95% low", "route", "why"]
        summary = f"the next run's routing by measured agreement (stakeflow evals --routing, {len(rules)} rows)"
        parts.append(_details(summary, _table(columns, rules, {3, 4, 5}, "routing-rules")))
    parts.append("</section>")
    return "".join(parts)


def _run_cell(data: ReportData, run_id: str) -> str:
    url = data.ui_urls.get(run_id)
    name = f'<a href="{escape(url)}">{escape(run_id)}</a>' if url else escape(run_id)
    return f"{name}<br><code>stakeflow trace {escape(run_id)}</code>"


def runs_section(data: ReportData) -> str:
    """The ten dearest runs (`costs --by run`) and the ten slowest (`runs.duration_ms`)."""
    dear = [
        [
            _run_cell(data, r["run"]),
            escape(str(r.get("status") or "–")),
            str(r["calls"]),
            figure(f"run:{r['run']}:cost", r["cost_usd"], usd(r["cost_usd"])),
            usd(r["frontier_equivalent_usd"]),
        ]  # fmt: skip
        for r in data.top_runs
    ]
    slow = [
        [
            _run_cell(data, r.run_id),
            escape(r.agent or "(default)"),
            escape(str(r.status or "–")),
            f"{(r.duration_ms or 0) / 1000:.1f} s",
            usd(r.cost_usd),
        ]  # fmt: skip
        for r in data.slowest_runs
    ]
    if not dear and not slow:
        return '<section id="runs"><h2>Top runs</h2><p class="empty">No runs in this window.</p></section>'
    return (
        '<section id="runs"><h2>Top runs by cost, and the slowest</h2><div class="two"><div>'
        + _table(["run", "status", "calls", "cost", "all-frontier"], dear, {2, 3, 4}, "top-runs")
        + "</div><div>"
        + _table(["run", "agent", "status", "took", "cost"], slow, {3, 4}, "slowest-runs")
        + "</div></div></section>"
    )


def budget_table(data: ReportData) -> str:
    rows = [
        [
            escape(b.name),
            usd(b.limit_usd),
            usd(b.settled_usd),
            usd(b.reserved_usd),
            figure(f"budget:{b.name}:left", b.left_usd, usd(b.left_usd)),
            escape(b.resets_at),
        ]  # fmt: skip
        for b in data.budgets or []
    ]
    return _table(["budget", "limit", "settled", "reserved", "left", "resets at"], rows, {1, 2, 3, 4}, "budgets")
