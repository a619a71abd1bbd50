"""Prometheus metrics of a worker: the Temporal SDK's own, and stakeflow's calls, cost and escalations.

One endpoint per worker (``STAKEFLOW_METRICS_PORT``, on ``STAKEFLOW_METRICS_HOST``), served by the
Temporal runtime's Prometheus exporter, so the SDK's metrics (task slots, poll and schedule-to-start
latencies, activity and workflow task failures: what shows a worker pool is too small) and
stakeflow's come from one scrape target. The runtime must exist before the worker's client connects,
which is why ``start`` is called first and its runtime handed to ``connect``.

Stakeflow's metrics are derived from the spans this process ends (a span processor), not counted a
second time in the activities: the model-call span already carries route, model, tokens and cost,
exactly as the trace store records them, so the two never disagree.

- ``stakeflow_model_calls{route,model,status}``: model calls (every attempt, failed ones included);
- ``stakeflow_model_cost_usd{route,model}``: a histogram of priced calls' cost (``_sum`` is the spend);
  calls without a price add to ``stakeflow_model_unpriced_calls{route,model}`` instead, never $0;
- ``stakeflow_model_tokens{route,model,kind=input|output}``;
- ``stakeflow_escalations{route}``: steps escalated from the open model to the frontier (counted by
  the workflow worker, which ends step spans);
- ``stakeflow_runs{status}``: runs ended (also the workflow worker's);
- ``stakeflow_budget_downgrades{budget}``: steps whose frontier call a spent budget kept on the open model
  (the workflow worker's; agents/budgets.py).

Each process counts what it did: the open worker its open calls, the frontier worker its frontier
calls; Prometheus sums the pods. A workflow task that did not complete and runs again live ends its
step span again: that step is then counted twice (rare; the trace store dedupes by span id, a
counter cannot).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

from stakeflow.core import semconv as sc
from stakeflow.core.errors import ServiceError

if TYPE_CHECKING:
    from temporalio.runtime import Runtime

    from stakeflow.config import Settings


def start(settings: Settings) -> Runtime | None:
    """A Temporal runtime exporting Prometheus metrics on the configured port; None when none is set."""
    if settings.metrics_port is None:
        return None
    from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

    bind = f"{settings.metrics_host}:{settings.metrics_port}"
    try:
        return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=bind)))
    except Exception as e:  # the bridge raises a plain exception when the port is taken
        raise ServiceError(
            f"cannot serve metrics on {bind} ({e}): free the port or set another STAKEFLOW_METRICS_PORT"
        ) from None


class SpanMetrics(SpanProcessor):
    """Counts model calls, cost, tokens, escalations and runs from the spans this process ends."""

    def __init__(self, runtime: Runtime) -> None:
        meter = runtime.metric_meter
        self._calls = meter.create_counter("stakeflow_model_calls", "model calls, every attempt", "1")
        self._cost = meter.create_histogram_float("stakeflow_model_cost_usd", "cost of each priced model call", "USD")
        self._unpriced = meter.create_counter("stakeflow_model_unpriced_calls", "model calls without a price", "1")
        self._tokens = meter.create_counter("stakeflow_model_tokens", "tokens of model calls", "1")
        self._escalations = meter.create_counter("stakeflow_escalations", "steps escalated to the frontier", "1")
        self._runs = meter.create_counter("stakeflow_runs", "runs ended", "1")
        self._downgrades = meter.create_counter(
            "stakeflow_budget_downgrades", "steps a spent frontier budget kept on the open model", "1"
        )

    def on_end(self, span: ReadableSpan) -> None:
        attrs = span.attributes or {}
        try:
            if attrs.get(sc.GEN_AI_OPERATION) == "chat":
                self._call(attrs)
            elif span.name == sc.SPAN_STEP:
                if attrs.get(sc.ESCALATED):
                    self._escalations.add(1, {"route": str(attrs.get(sc.ROUTE, ""))})
                if attrs.get(sc.BUDGET_DOWNGRADED):
                    self._downgrades.add(1, {"budget": str(attrs[sc.BUDGET_DOWNGRADED])})
            elif span.name == sc.SPAN_RUN:
                self._runs.add(1, {"status": str(attrs.get(sc.STATUS, "unknown"))})
        except Exception:  # a metric must never fail the work it measures
            return

    def _call(self, attrs) -> None:
        labels = {"route": str(attrs.get(sc.ROUTE, "")), "model": str(attrs.get(sc.GEN_AI_REQUEST_MODEL, ""))}
        self._calls.add(1, {**labels, "status": str(attrs.get(sc.STATUS, "ok"))})
        cost = attrs.get(sc.COST_USD)
        if cost is not None:
            self._cost.record(float(cost), labels)
        elif attrs.get(sc.UNPRICED):
            self._unpriced.add(1, labels)
        for kind, key in (("input", sc.GEN_AI_INPUT_TOKENS), ("output", sc.GEN_AI_OUTPUT_TOKENS)):
            value = attrs.get(key)
            if isinstance(value, int) and value > 0:
                self._tokens.add(value, {**labels, "kind": kind})

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
