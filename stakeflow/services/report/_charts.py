"""The dashboard's charts as Vega-Lite specs, built with altair from ``ReportData``'s rows.

Each function returns a spec (a dict) or None when its panel has nothing to draw; the page then says so in
words instead of drawing an empty frame. Data goes inline (``alt.Data(values=...)``), so a spec needs
nothing but the Vega scripts the page carries. Every mark has a tooltip with its figures.
"""

from __future__ import annotations

from typing import Any

import altair as alt

from stakeflow.services.report._data import ReportData

WIDTH = 760
LANE_COLORS = alt.Scale(domain=["open", "frontier", "shadow"], range=["#2a9d8f", "#e76f51", "#9c89b8"])
EVENT_COLORS = alt.Scale(
    domain=["escalation", "fallback", "budget downgrade", "downgrade: no frontier key", "unsupported answer"],
    range=["#e76f51", "#f4a261", "#6d597a", "#b56576", "#264653"],
)


def group_label(agent: str | None, kind: str) -> str:
    """`triage · step`; runs without a named agent are `(default)`."""
    return f"{agent or '(default)'} · {kind}"


def spend_chart(data: ReportData) -> dict[str, Any] | None:
    """Spend per day stacked by lane, with the line of what all-frontier would have cost."""
    if not data.spend:
        return None
    bars = [
        {"day": g.key[0], "lane": g.key[1], "usd": g.cost_usd or 0.0, "calls": g.calls, "unpriced": g.unpriced_calls}
        for g in data.spend
    ]
    line = [
        {
            "day": g.key[0],
            "equivalent": g.frontier_equivalent_usd or 0.0,
            "saved": g.saved_usd or 0.0,
            "series": "all-frontier would be",
        }  # fmt: skip
        for g in data.spend_days
    ]
    x = alt.X("day:T", timeUnit="utcyearmonthdate", title=None, axis=alt.Axis(format="%b %d"))
    stacked = (
        alt.Chart(alt.Data(values=bars))
        .mark_bar()
        .encode(
            x=x,
            y=alt.Y("usd:Q", stack="zero", title="USD per day"),
            color=alt.Color("lane:N", scale=LANE_COLORS, title="route"),
            order=alt.Order("lane:N"),
            tooltip=[
                alt.Tooltip("day:T", timeUnit="utcyearmonthdate", title="day"),
                alt.Tooltip("lane:N", title="route"),
                alt.Tooltip("usd:Q", format="$.4f", title="spent"),
                alt.Tooltip("calls:Q", title="model calls"),
                alt.Tooltip("unpriced:Q", title="unpriced calls"),
            ],
        )
    )
    frontier = (
        alt.Chart(alt.Data(values=line))
        .mark_line(point=alt.OverlayMarkDef(color="#333333"), color="#333333")
        .encode(
            x=x,
            y=alt.Y("equivalent:Q"),
            strokeDash=alt.StrokeDash("series:N", title=None, scale=alt.Scale(range=[[5, 3]])),
            tooltip=[
                alt.Tooltip("day:T", timeUnit="utcyearmonthdate", title="day"),
                alt.Tooltip("equivalent:Q", format="$.4f", title="all-frontier would be"),
                alt.Tooltip("saved:Q", format="$.4f", title="saved"),
            ],
        )
    )
    return alt.layer(stacked, frontier).properties(width=WIDTH, height=260).to_dict()


def agreement_chart(data: ReportData) -> dict[str, Any] | None:
    """Open-path agreement per day (or week) with its Wilson interval: a small chart per agent, a line per kind."""
    if not data.agreement_by_day:
        return None
    rows = []
    for g in data.agreement_by_day:
        low, high = g.interval
        rows.append(
            {
                "day": g.key[0],
                "agent": g.key[1] or "(default)",
                "kind": g.key[2],
                "n": g.n,
                "agreement": g.rate,
                "low": low,
                "high": high,
            }  # fmt: skip
        )
    period = "week of" if data.agreement_period == "week" else "day"
    # The layers carry no data of their own: the facet's rows reach each panel (a layer's own data would
    # show every agent's rows in every panel).
    base = alt.Chart().encode(
        x=alt.X("day:T", timeUnit="utcyearmonthdate", title=period, axis=alt.Axis(format="%b %d")),
        color=alt.Color("kind:N", title="step kind"),
    )
    band = base.mark_area(opacity=0.12).encode(y=alt.Y("low:Q"), y2="high:Q")
    line = base.mark_line(point=True, strokeWidth=2).encode(
        y=alt.Y("agreement:Q", scale=alt.Scale(zero=False, domainMax=1), axis=alt.Axis(format="%"), title="agreement"),
        tooltip=[
            alt.Tooltip("day:T", timeUnit="utcyearmonthdate", title=period),
            "agent:N",
            "kind:N",
            alt.Tooltip("agreement:Q", format=".0%"),
            alt.Tooltip("low:Q", format=".0%", title="95% low"),
            alt.Tooltip("high:Q", format=".0%", title="95% high"),
            "n:Q",
        ],
    )
    agents = sorted({str(r["agent"]) for r in rows})
    return (
        alt.layer(band, line, data=alt.Data(values=rows))
        .properties(width=max(180, WIDTH // max(1, len(agents)) - 40), height=200)
        .facet(column=alt.Column("agent:N", title=None, sort=agents))
        .to_dict()
    )


def saving_chart(data: ReportData) -> dict[str, Any] | None:
    """Per agent and step kind: agreement with its interval, and the saving it earned, as one labelled row."""
    rows = saving_rows(data)
    if not rows:
        return None
    base = alt.Chart(alt.Data(values=rows)).encode(y=alt.Y("group:N", title=None, sort=None))
    tips = [
        "group:N",
        alt.Tooltip("agreement:Q", format=".0%"),
        alt.Tooltip("low:Q", format=".0%", title="95% low"),
        alt.Tooltip("high:Q", format=".0%", title="95% high"),
        "n:Q",
        alt.Tooltip("saved_share:Q", format=".0%", title="saved"),
        alt.Tooltip("saved_usd:Q", format="$.4f", title="saved USD"),
    ]
    interval = base.mark_rule(strokeWidth=3, color="#8ab17d").encode(
        x=alt.X("low:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%"), title="open-path agreement"),
        x2="high:Q",
        tooltip=tips,
    )
    point = base.mark_point(filled=True, size=80, color="#264653").encode(x="agreement:Q", tooltip=tips)
    label = base.mark_text(align="left", dx=8, fontSize=12).encode(x="high:Q", text="sentence:N", tooltip=tips)
    return alt.layer(interval, point, label).properties(width=WIDTH - 260, height=28 * len(rows)).to_dict()


def saving_rows(data: ReportData) -> list[dict[str, Any]]:
    """Groups that have both a measured agreement and a cost: `saved 62% at 94% agreement, n=240`."""
    savings = {(g.key[0] or "", g.key[1]): g for g in data.savings}
    rows = []
    for g in data.agreement_by_group:
        cost = savings.get((g.key[0], g.key[1]))
        equivalent = (cost.frontier_equivalent_usd or 0.0) if cost else 0.0
        saved = (cost.saved_usd or 0.0) if cost else 0.0
        share = saved / equivalent if equivalent else 0.0
        low, high = g.interval
        rows.append(
            {
                "group": group_label(g.key[0], g.key[1]),
                "agreement": g.rate,
                "low": low,
                "high": high,
                "n": g.n,
                "saved_usd": saved,
                "saved_share": share,
                "sentence": f"saved {share:.0%} at {g.rate:.0%} agreement, n={g.n}",
            }
        )
    return rows


def events_chart(data: ReportData) -> dict[str, Any] | None:
    """Escalations, fallbacks, downgrades and unsupported answers per day, stacked by kind."""
    if not data.events:
        return None
    rows = [{"day": e.day, "kind": e.kind, "reason": e.reason, "count": e.count} for e in data.events]
    return (
        alt.Chart(alt.Data(values=rows))
        .mark_bar()
        .encode(
            x=alt.X("day:T", timeUnit="utcyearmonthdate", title=None, axis=alt.Axis(format="%b %d")),
            y=alt.Y("sum(count):Q", title="steps (runs, for answers)"),
            color=alt.Color("kind:N", scale=EVENT_COLORS, title=None, legend=alt.Legend(orient="bottom")),
            tooltip=[
                alt.Tooltip("day:T", timeUnit="utcyearmonthdate", title="day"),
                "kind:N",
                "reason:N",
                alt.Tooltip("count:Q", title="count"),
            ],
        )
        .properties(width=WIDTH, height=200)
        .to_dict()
    )


def budget_chart(data: ReportData) -> dict[str, Any] | None:
    """Each budget's limit split into settled, reserved and left."""
    if not data.budgets:
        return None
    rows = []
    for b in data.budgets:
        for part, usd in (("settled", b.settled_usd), ("reserved", b.reserved_usd), ("left", b.left_usd)):
            rows.append({"budget": b.name, "part": part, "usd": max(0.0, usd), "limit": b.limit_usd})
    colors = alt.Scale(domain=["settled", "reserved", "left"], range=["#e76f51", "#f4a261", "#d9d9d9"])
    return (
        alt.Chart(alt.Data(values=rows))
        .mark_bar()
        .encode(
            y=alt.Y("budget:N", title=None),
            x=alt.X("usd:Q", stack="zero", title="USD"),
            color=alt.Color("part:N", scale=colors, title=None),
            order=alt.Order("part:N", sort="descending"),
            tooltip=["budget:N", "part:N", alt.Tooltip("usd:Q", format="$.2f"), alt.Tooltip("limit:Q", format="$.2f")],
        )
        .properties(width=WIDTH - 200, height=32 * len(data.budgets))
        .to_dict()
    )
