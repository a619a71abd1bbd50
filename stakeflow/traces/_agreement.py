"""The agreement table: how often the open path agreed with the frontier, per (agent, kind, tool), from ``evals``.

Read by a run once (the ``read_agreement`` activity, recorded in its history) and by `stakeflow evals --routing`,
so both route by the same figures.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from stakeflow.agents.evals import AGREEING, AGREEMENT_DAYS, AgreementRow, AgreementTable
from stakeflow.traces._store import TraceStore


def agreement_table(traces_path: Path, since_days: int = AGREEMENT_DAYS) -> AgreementTable:
    """Agreement per (agent, kind, tool) over the last ``since_days``, and overall."""
    since = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=since_days)
    agreeing = ", ".join(f"'{v}'" for v in AGREEING)
    with TraceStore(traces_path).reader() as con:
        rows = con.execute(
            f"SELECT coalesce(agent, ''), kind, coalesce(tool, ''), count(*), count(*) FILTER (WHERE verdict IN ({agreeing})) "
            "FROM evals WHERE recorded_at >= ? GROUP BY ALL ORDER BY ALL",
            [since],
        ).fetchall()
    table = AgreementTable(
        since_days=since_days, rows=[AgreementRow(agent=a, kind=k, tool=t, n=n, agreeing=g) for a, k, t, n, g in rows]
    )
    if rows:
        table.overall = AgreementRow(n=sum(r[3] for r in rows), agreeing=sum(r[4] for r in rows))
    return table
