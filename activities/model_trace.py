"""The span of one model call: GenAI semantic conventions plus stakeflow's route, stakes and cost.

Prompt and completion text go on the span only when STAKEFLOW_TRACE_CONTENT=1, and a private call's only with
STAKEFLOW_TRACE_PRIVATE_CONTENT=1 as well (the caller decides, ``content``). Keys never do: nothing here reads them.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from temporalio import activity

from stakeflow.agents.types import CallCostRecord, ModelCallRequest, ModelCallResult, Usage
from stakeflow.core import semconv as sc

_tracer = trace.get_tracer("stakeflow.activities")


@contextlib.contextmanager
def model_call_span(req: ModelCallRequest, provider: str, content: bool) -> Iterator[Span]:
    """A CLIENT span named ``chat {model}``, child of the step span the workflow opened."""
    attributes = {
        sc.GEN_AI_OPERATION: "chat",
        sc.GEN_AI_PROVIDER: provider,
        sc.GEN_AI_REQUEST_MODEL: req.endpoint.model,
        sc.RUN_ID: req.run_id,
        sc.STEP: req.step,
        sc.PURPOSE: req.purpose,
        sc.ROUND: req.round,
        sc.ROUTE: req.endpoint.route,
        sc.STAKES: req.stakes,
        sc.REASON: req.reason,
        sc.ESCALATED: req.escalated,
        sc.SOURCE: req.source,
        **({sc.AGENT: req.agent} if req.agent else {}),
        sc.ATTEMPT: activity.info().attempt if activity.in_activity() else 1,
    }
    if content:
        attributes[sc.GEN_AI_INPUT_MESSAGES] = json.dumps(
            [{"role": "system", "content": req.system}, {"role": "user", "content": req.prompt}]
        )
    with _tracer.start_as_current_span(
        f"{sc.SPAN_CHAT} {req.endpoint.model}",
        kind=SpanKind.CLIENT,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        yield span


def record_call(
    span: Span,
    req: ModelCallRequest,
    usage: Usage,
    cost: CallCostRecord,
    result: ModelCallResult | None,
    error_type: str | None = None,
    content: bool = False,
) -> None:
    """Usage, cost and outcome onto the span, in the token definitions of ``Usage`` (input includes the cache;
    raw is the figure the route's API sent)."""
    span.set_attributes(
        {
            sc.GEN_AI_INPUT_TOKENS: usage.total_input_tokens,
            sc.GEN_AI_OUTPUT_TOKENS: usage.output_tokens,
            sc.GEN_AI_CACHE_READ: usage.cache_read_tokens,
            sc.GEN_AI_CACHE_WRITE: usage.cache_write_tokens,
            sc.RAW_INPUT_TOKENS: usage.raw_input_tokens(req.endpoint.route),
            sc.UNPRICED: cost.usd is None,
            sc.STATUS: "ok" if error_type is None else "failed",
        }
    )
    if cost.usd is not None:
        span.set_attribute(sc.COST_USD, cost.usd)
    if cost.frontier_equivalent_usd is not None:
        span.set_attribute(sc.FRONTIER_EQUIVALENT_USD, cost.frontier_equivalent_usd)
    if cost.price_version:
        span.set_attribute(sc.PRICE_VERSION, cost.price_version)
    if result is not None:
        span.set_attribute(sc.GEN_AI_RESPONSE_MODEL, result.model)
        span.set_attribute(sc.DURATION_S, result.latency_ms / 1000)
        if content:
            output = result.text if result.text is not None else (result.plan or result.action)
            text = output if isinstance(output, str) else output.model_dump_json() if output else ""
            span.set_attribute(sc.GEN_AI_OUTPUT_MESSAGES, json.dumps([{"role": "assistant", "content": text}]))
    if error_type is not None:
        span.set_attribute(sc.ERROR_TYPE, error_type)
        span.set_status(Status(StatusCode.ERROR, error_type))
