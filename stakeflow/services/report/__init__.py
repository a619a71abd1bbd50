"""The cost-and-quality dashboard: one self-contained HTML page from the trace store.

`stakeflow report --html FILE` writes it; `stakeflow serve` serves the same page at ``GET /dashboard``.
Gathering and drawing are apart, one job per module:

* ``_data``: ``gather`` runs the trace store's queries (``stakeflow.traces``, the ones `costs` and `evals`
  print from) into ``ReportData``, typed rows and nothing drawn;
* ``_charts``: Vega-Lite specs from those rows, with altair;
* ``_tables``: the numbers beside each chart, the routing table, the top and slowest runs;
* ``_page``: the page itself, with the Vega scripts inline (no request to any other host).
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from stakeflow.services.report._data import Budget, ReportData, RoutingRule, gather
from stakeflow.services.report._page import render_page, vega_scripts

if TYPE_CHECKING:
    from stakeflow.config import Settings

__all__ = ["Budget", "ReportData", "RoutingRule", "build_report", "gather", "render_page", "vega_scripts"]


def build_report(settings: Settings, since: timedelta | None, agent: str | None = None) -> str:
    """The page for the configured trace store: what `stakeflow report` writes and `/dashboard` serves."""
    from stakeflow.services.budgets import report_budgets
    from stakeflow.services.evals import routing
    from stakeflow.services.reports import open_store

    store = open_store(settings)
    items = report_budgets(settings)  # as `stakeflow budgets --json` lists them
    budgets = None if items is None else [Budget.from_json(item) for item in items]
    data = gather(store, since, agent, routing_rules=routing(settings), ui_url=settings.ui_url, budgets=budgets)
    return render_page(data)
