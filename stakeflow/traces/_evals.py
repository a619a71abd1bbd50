"""Shadow evaluation's agreement, grouped: what `stakeflow evals` prints and the dashboard charts.

Agreement = verdicts in ``AGREEING`` (the open path was at least as good), with its Wilson 95% interval
(``stakeflow.agents.evals.wilson``): one definition for the table, the chart and the routing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from stakeflow.agents.evals import AGREEING, wilson
from stakeflow.core.errors import InputError
from stakeflow.traces._store import TraceStore

# Grouping keys of the ``evals`` table: `stakeflow evals --by` offers each.
EVAL_KEYS = {
    "tool": "coalesce(tool, '')",
    "kind": "kind",
    "agent": "coalesce(agent, '')",
    "model": "open_model",
    "day": "CAST(recorded_at AS DATE)",
    "week": "CAST(date_trunc('week', recorded_at) AS DATE)",  # its Monday
    "source": "source",  # shadow (sampled comparisons) or stuck (an open step escalated after its rounds failed)
}


@dataclass(frozen=True)
class AgreementGroup:
    """Shadow comparisons of one group: how many, how many agreed, and what each side cost."""

    key: tuple[str, ...]
    n: int
    agreeing: int
    judged: int
    open_cost_usd: float | None
    frontier_cost_usd: float | None
    judge_cost_usd: float | None
    open_p50_ms: float | None
    frontier_p50_ms: float | None

    @property
    def rate(self) -> float:
        return self.agreeing / self.n if self.n else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.agreeing, self.n)


def agreement_groups(
    store: TraceStore, keys: tuple[str, ...], start: datetime | None, agent: str | None = None
) -> list[AgreementGroup]:
    """Comparisons recorded since ``start`` (naive UTC; None: all), grouped by ``keys`` of ``EVAL_KEYS``."""
    unknown = [k for k in keys if k not in EVAL_KEYS]
    if unknown or not keys:
        raise InputError(f"unknown breakdown {', '.join(unknown or keys)}: use one of {', '.join(EVAL_KEYS)}")
    agreeing = ", ".join(f"'{v}'" for v in AGREEING)
    columns = ", ".join(f"{EVAL_KEYS[k]} AS k{i}" for i, k in enumerate(keys))
    filters: list[str] = ["TRUE"]
    params: list[Any] = []
    if start is not None:
        filters.append("recorded_at >= ?")
        params.append(start)
    if agent is not None:
        filters.append("agent = ?")
        params.append(agent)
    with store.reader() as con:
        rows = con.execute(
            f"""
            SELECT {columns}, count(*), count(*) FILTER (WHERE verdict IN ({agreeing})),
                count(*) FILTER (WHERE method = 'judge'),
                sum(open_cost_usd), sum(frontier_cost_usd), sum(judge_cost_usd),
                median(open_latency_ms), median(frontier_latency_ms)
            FROM evals WHERE {" AND ".join(filters)} GROUP BY ALL ORDER BY ALL
            """,
            params,
        ).fetchall()
    width = len(keys)
    return [AgreementGroup(tuple(_text(v) for v in row[:width]), *row[width:]) for row in rows]


def _text(value: Any) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)
