"""The cost review and a run's trace as the client returns them: typed, field for field what `stakeflow costs --json`
and `stakeflow trace --json` print (``stakeflow.traces.cost_report`` and ``trace_tree`` rows).

A figure the trace store adds later still arrives (``extra="allow"``: readable as an attribute, and in
``model_dump``), so the client never refuses a report the CLI would print; tests/test_client.py holds the named
fields to the ones the store gives today.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict


class CostReport(BaseModel):
    """Totals and one breakdown of model calls (``by``), as `stakeflow costs --json`. Money is USD; a call with no
    price is counted in ``unpriced_calls`` and left out of every sum, never taken as $0."""

    model_config = ConfigDict(extra="allow")

    by: str = "model"
    since: float | None = None  # the window, in seconds; None: all time
    run_id: str | None = None
    frontier_model: str | None = None
    calls: int = 0
    priced_calls: int = 0
    total_usd: float = 0.0
    open_usd: float = 0.0
    frontier_usd: float = 0.0
    frontier_equivalent_usd: float = 0.0  # what the same calls would have cost on the frontier
    saved_usd: float = 0.0
    unpriced_calls: int = 0
    no_equivalent_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    shadow_calls: int = 0  # shadow evaluation's own calls and spend: never in the totals above
    shadow_usd: float = 0.0
    rows: list[dict[str, Any]] = []  # one per group, keyed by ``by`` (e.g. {"model": ..., "calls": ..., ...})
    agreement: str | None = None  # the open path's measured agreement, as the bill says it

    def summary(self) -> str:
        """The line `stakeflow costs` prints under its table ("total $0.0278 (open ... · frontier ...) · ...")."""
        from stakeflow.traces import summary_line

        return summary_line(self.model_dump())


class TraceSpan(BaseModel):
    """One span of a run's trace, in tree order (``depth`` 0 is the run): a step, a model call (``operation``
    "chat") or a tool call, with its route, model, tokens and cost."""

    model_config = ConfigDict(extra="allow")

    depth: int = 0
    name: str = ""
    span_id: str = ""
    parent_span_id: str | None = None
    start_time: datetime | None = None
    duration_ms: float | None = None
    step: int | None = None
    purpose: str | None = None
    route: str | None = None
    model: str | None = None
    tool: str | None = None
    operation: str | None = None
    attempt: int | None = None
    status: str | None = None
    error_type: str | None = None
    input_tokens: int | None = None
    raw_input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    cost_usd: float | None = None  # None: unpriced (``unpriced``) or not a model call
    unpriced: bool = False


class Trace(BaseModel):
    """A run's spans, as `stakeflow trace` shows them."""

    workflow_id: str = ""
    spans: list[TraceSpan] = []

    def text(self) -> str:
        """The tree as `stakeflow trace` prints it: indented span names, route, model, tokens, cost."""
        from stakeflow.traces import render_tree

        return render_tree([span.model_dump() for span in self.spans])
