"""What the dashboard shows, gathered from the trace store's queries into typed rows; nothing is drawn here.

Every figure comes from the query that `stakeflow costs` or `stakeflow evals` prints it from
(``stakeflow.traces``): the page and those commands cannot disagree about a number. One window
(``since`` back from ``now``) and one agent filter apply to every panel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from stakeflow.agents.evals import AgreementRow
from stakeflow.traces import (
    AgreementGroup,
    CostGroup,
    ObservedRoute,
    RouteEvent,
    RunTiming,
    TraceStore,
    agreement_groups,
    cost_report,
    grouped_costs,
    observed_routing,
    route_events,
    slowest_runs,
    window_start,
)


@dataclass(frozen=True)
class Budget:
    """One frontier budget as `stakeflow budgets --json` lists it (issue 24): limit, settled, reserved, left."""

    name: str
    limit_usd: float
    settled_usd: float
    reserved_usd: float
    left_usd: float
    resets_at: str = ""

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> Budget:
        """A budget from one item of `stakeflow budgets --json` (``name``, ``limit``, ``settled``, ``reserved``,
        ``left``, ``resets_at``)."""
        return cls(
            name=str(item.get("name", "")),
            limit_usd=float(item["limit"]),
            settled_usd=float(item["settled"]),
            reserved_usd=float(item["reserved"]),
            left_usd=float(item["left"]),
            resets_at=str(item.get("resets_at") or ""),
        )


@dataclass(frozen=True)
class RoutingRule:
    """A row of `stakeflow evals --routing`: where the next run sends a step kind, by measured agreement."""

    agent: str
    kind: str
    tool: str
    n: int
    agreement: float
    agreement_low: float
    route: str
    reason: str


@dataclass(frozen=True)
class ReportData:
    """Everything one page shows, for one window and (optionally) one agent."""

    generated_at: datetime
    since: timedelta | None
    agent: str | None
    costs: dict[str, Any]  # cost_report(by="day"): the totals and days of `costs --by day --json`
    spend: list[CostGroup]  # key (day, lane): lane is open, frontier or shadow
    spend_days: list[CostGroup]  # key (day,), shadow excluded: what the runs cost, and all-frontier
    savings: list[CostGroup]  # key (agent, kind), shadow excluded
    agreement_by_day: list[AgreementGroup]  # key (day or week, agent, kind): see ``agreement_period``
    agreement_by_group: list[AgreementGroup]  # key (agent, kind)
    events: list[RouteEvent]
    answer_checks_recorded: bool
    routing_observed: list[ObservedRoute]
    routing_rules: list[RoutingRule]
    top_runs: list[dict[str, Any]]  # cost_report(by="run", limit=10)["rows"]: `costs --by run`
    slowest_runs: list[RunTiming]
    agreement_period: str = "day"  # "week" over windows longer than two weeks: a day's few comparisons say little
    budgets: list[Budget] | None = None  # None: no budgets configured
    ui_urls: dict[str, str] = field(default_factory=dict)  # run id -> its Temporal Web UI page

    @property
    def start(self) -> datetime | None:
        return window_start(self.since, self.generated_at)

    @property
    def agreement(self) -> AgreementRow:
        """Every comparison of the window: the page's headline agreement (as `evals --json`'s total)."""
        return AgreementRow(
            n=sum(g.n for g in self.agreement_by_group), agreeing=sum(g.agreeing for g in self.agreement_by_group)
        )


def gather(
    store: TraceStore,
    since: timedelta | None,
    agent: str | None = None,
    *,
    routing_rules: list[dict[str, Any]] | None = None,
    budgets: list[Budget] | None = None,
    ui_url: Any = None,
    now: datetime | None = None,
) -> ReportData:
    """Run every query of the page once over ``store``.

    ``routing_rules`` are `stakeflow evals --routing`'s rows (they need the settings' policy, so the caller
    computes them); ``budgets`` are issue 24's budgets, None until they exist; ``ui_url(workflow_id)``
    gives a run's Web UI link.
    """
    now = now or datetime.now(UTC)
    start = window_start(since, now)
    costs = cost_report(store, since, "day", now=now, agent=agent)
    top = cost_report(store, since, "run", now=now, agent=agent, limit=10)["rows"]
    events, recorded = route_events(store, start, agent)
    period = "day" if since is not None and since <= timedelta(days=14) else "week"
    slow = slowest_runs(store, start, agent)
    urls = {}
    if ui_url is not None:
        urls = {run_id: ui_url(run_id) for run_id in {r["run"] for r in top} | {r.run_id for r in slow}}
    return ReportData(
        generated_at=now,
        since=since,
        agent=agent,
        costs=costs,
        spend=grouped_costs(store, ("day", "lane"), since, now=now, agent=agent),
        spend_days=grouped_costs(store, ("day",), since, now=now, agent=agent, shadow=False),
        savings=grouped_costs(store, ("agent", "kind"), since, now=now, agent=agent, shadow=False),
        agreement_by_day=agreement_groups(store, (period, "agent", "kind"), start, agent),
        agreement_period=period,
        agreement_by_group=agreement_groups(store, ("agent", "kind"), start, agent),
        events=events,
        answer_checks_recorded=recorded,
        routing_observed=observed_routing(store, start, agent),
        routing_rules=[RoutingRule(**r) for r in routing_rules or [] if agent is None or r["agent"] == agent],
        top_runs=top,
        slowest_runs=slow,
        budgets=budgets,
        ui_urls=urls,
    )
