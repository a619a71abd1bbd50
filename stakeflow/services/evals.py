"""`stakeflow evals`: the measured quality of the open path, beside what it costs, and the routing it implies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from stakeflow.agents.evals import AgreementRow, routing_by_agreement
from stakeflow.config import Settings
from stakeflow.core.errors import InputError
from stakeflow.traces import EVAL_KEYS, AgreementGroup, TraceStore, agreement_groups, agreement_table

BREAKDOWNS = EVAL_KEYS


def parse_since(since: str) -> datetime:
    """``7d``, ``24h``, ``30m`` or an ISO date: the start of the window (UTC)."""
    now = datetime.now(UTC).replace(tzinfo=None)
    units = {"d": "days", "h": "hours", "m": "minutes"}
    if since[:-1].isdigit() and since[-1:] in units:
        return now - timedelta(**{units[since[-1]]: int(since[:-1])})
    try:
        return datetime.fromisoformat(since)
    except ValueError:
        raise InputError(f"--since '{since}': write it as 7d, 24h, 30m or an ISO date like 2026-11-30") from None


def report(settings: Settings, by: str = "kind", since: str = "7d") -> dict[str, Any]:
    """Agreement (agree, tie or open better) per group with its Wilson 95% interval, n, costs and p50 latency."""
    if by not in BREAKDOWNS:
        raise InputError(f"unknown breakdown '{by}': use one of {', '.join(BREAKDOWNS)}")
    start = parse_since(since)
    out = [agreement_dict(by, g) for g in agreement_groups(TraceStore(settings.traces_path), (by,), start)]
    total = AgreementRow(n=sum(r["n"] for r in out), agreeing=sum(r["agreeing"] for r in out))
    return {
        "by": by,
        "since": start.isoformat(timespec="seconds"),
        "rows": out,
        "total": {"n": total.n, "agreeing": total.agreeing, "agreement": round(total.rate, 4) if total.n else None},
    }


def agreement_dict(by: str, group: AgreementGroup) -> dict[str, Any]:
    """One row of `evals --json`: the group's key under ``by``, n, agreement and its interval, costs, latency."""
    low, high = group.interval
    return {
        by: group.key[0],
        "n": group.n,
        "agreeing": group.agreeing,
        "agreement": round(group.rate, 4),
        "agreement_low": round(low, 4),
        "agreement_high": round(high, 4),
        "judged": group.judged,
        "open_cost_usd": group.open_cost_usd,
        "frontier_cost_usd": group.frontier_cost_usd,
        "judge_cost_usd": group.judge_cost_usd,
        "open_p50_ms": group.open_p50_ms,
        "frontier_p50_ms": group.frontier_p50_ms,
    }


def routing(settings: Settings) -> list[dict[str, Any]]:
    """The routing the next run would use, per (agent, kind, tool) with measurements."""
    table = agreement_table(settings.traces_path)
    rows = []
    for r in table.rows:
        frontier, why = routing_by_agreement(
            table, r.agent, r.kind, r.tool, settings.policy.min_agreement, settings.policy.min_samples
        )
        if settings.policy.min_agreement is None:
            why = "no [policy] min_agreement: routing does not follow the measurement"
        elif not why:
            why = f"fewer than {settings.policy.min_samples} comparisons ([policy] min_samples)"
        low, high = r.interval
        rows.append(
            {
                "agent": r.agent,
                "kind": r.kind,
                "tool": r.tool,
                "n": r.n,
                "agreement": round(r.rate, 4),
                "agreement_low": round(low, 4),
                "route": "frontier" if frontier else "open",
                "reason": why,
            }
        )
    return rows
