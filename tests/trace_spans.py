"""Spans as stakeflow's workflow and activities trace them, for the trace store tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from stakeflow.core import semconv as sc
from stakeflow.traces import DuckDBSpanExporter, TraceStore


def provider(path: Path, *, resource: dict | None = None) -> TracerProvider:
    tp = TracerProvider(resource=Resource.create({"service.name": "stakeflow", **(resource or {})}))
    tp.add_span_processor(SimpleSpanProcessor(DuckDBSpanExporter(path)))
    return tp


def chat_attributes(run_id: str, step: int, route: str, model: str, **extra) -> dict:
    return {
        sc.GEN_AI_OPERATION: "chat",
        sc.GEN_AI_PROVIDER: "anthropic" if route == "frontier" else "vllm",
        sc.GEN_AI_REQUEST_MODEL: model,
        sc.RUN_ID: run_id,
        sc.STEP: step,
        sc.PURPOSE: "step",
        sc.ROUTE: route,
        sc.STAKES: "high" if route == "frontier" else "low",
        sc.SOURCE: "cli",
        sc.ATTEMPT: 1,
        sc.ESCALATED: False,
        **extra,
    }


def count(store: TraceStore, sql: str = "SELECT count(*) FROM spans"):
    with store.reader() as con:
        return con.execute(sql).fetchone()[0]


def run_tree(tp: TracerProvider, run_id: str = "run-1") -> None:
    """A run as the workflow and activities trace it, with a Temporal span in between."""
    span = tp.get_tracer("test").start_as_current_span
    plan_call = chat_attributes(
        run_id,
        0,
        "open",
        "qwen3-8b",
        **{
            sc.GEN_AI_INPUT_TOKENS: 1200,
            sc.GEN_AI_OUTPUT_TOKENS: 80,
            sc.GEN_AI_CACHE_READ: 0,
            sc.GEN_AI_CACHE_WRITE: 0,
            sc.RAW_INPUT_TOKENS: 1200,
            sc.COST_USD: 0.0004,
            sc.FRONTIER_EQUIVALENT_USD: 0.0048,
            sc.PRICE_VERSION: "config",
            sc.UNPRICED: False,
            sc.STATUS: "ok",
            sc.GEN_AI_RESPONSE_MODEL: "qwen3-8b",
        },
    )
    step_call = chat_attributes(
        run_id,
        1,
        "frontier",
        "claude-sonnet-4-6",
        **{
            # Anthropic: 300 uncached + 2000 cache read + 500 cache write = 2800 input
            sc.GEN_AI_INPUT_TOKENS: 2800,
            sc.GEN_AI_OUTPUT_TOKENS: 150,
            sc.GEN_AI_CACHE_READ: 2000,
            sc.GEN_AI_CACHE_WRITE: 500,
            sc.RAW_INPUT_TOKENS: 300,
            sc.COST_USD: 0.0054,
            sc.FRONTIER_EQUIVALENT_USD: 0.0054,
            sc.PRICE_VERSION: "builtin-2026-11-28",
            sc.UNPRICED: False,
            sc.STATUS: "ok",
            sc.GEN_AI_RESPONSE_MODEL: "claude-sonnet-4-6",
        },
    )
    tool_call = {
        sc.GEN_AI_OPERATION: "execute_tool",
        sc.GEN_AI_TOOL_NAME: "read_file",
        sc.RUN_ID: run_id,
        sc.STEP: 1,
        sc.ATTEMPT: 1,
        sc.STATUS: "ok",
    }
    with span(sc.SPAN_RUN, attributes={sc.RUN_ID: run_id, sc.SOURCE: "cli"}) as run:
        with (
            span(sc.SPAN_STEP, attributes={sc.RUN_ID: run_id, sc.STEP: 0, sc.PURPOSE: "plan"}),
            span("RunActivity:call_model"),  # Temporal's own span: no run id
            span("chat qwen3-8b", kind=SpanKind.CLIENT, attributes=plan_call),
        ):
            pass
        with span(sc.SPAN_STEP, attributes={sc.RUN_ID: run_id, sc.STEP: 1, sc.PURPOSE: "step"}):
            with span("chat claude-sonnet-4-6", kind=SpanKind.CLIENT, attributes=step_call):
                pass
            with span("execute_tool read_file", attributes=tool_call):
                pass
        run.set_attributes(
            {
                sc.STATUS: "ok",
                sc.STEP_COUNT: 1,
                sc.OPEN_STEPS: 0,
                sc.FRONTIER_STEPS: 1,
                sc.ESCALATIONS: 0,
                sc.SENSITIVITY: "internal",
                sc.STAKES: "high",
                sc.COST_USD: 0.0058,
            }
        )  # the run's own total: never summed again


NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
_ids = iter(range(1, 10_000))


def make_span(
    name: str,
    attributes: dict,
    *,
    days_ago: float = 0,
    trace: int = 1,
    span_id: int | None = None,
    parent: int | None = None,
) -> ReadableSpan:
    start = int((NOW - timedelta(days=days_ago)).timestamp() * 1e9)
    sid = span_id or next(_ids)
    return ReadableSpan(
        name=name,
        context=SpanContext(trace, sid, is_remote=False, trace_flags=TraceFlags(1)),
        parent=SpanContext(trace, parent, is_remote=False) if parent else None,
        attributes=attributes,
        start_time=start,
        end_time=start + 1_500_000_000,
        resource=Resource.create({"service.name": "stakeflow"}),
        status=Status(StatusCode.UNSET),
    )


def tool_span(run_id: str, step: int, tool: str) -> ReadableSpan:
    return make_span(
        f"execute_tool {tool}",
        {sc.GEN_AI_OPERATION: "execute_tool", sc.GEN_AI_TOOL_NAME: tool, sc.RUN_ID: run_id, sc.STEP: step},
    )


def export_priced_runs(path: Path) -> TraceStore:
    """Two runs of model and tool calls, exported in two segments and synced.

    Run A (failed, 2 days newer): a replayed open call (the same span twice), a frontier call with its
    stored equivalent, tools on both steps. Run B: an unpriced call, an open call with no frontier
    equivalent, a frontier call that does not carry the attribute (as another producer might send it).
    """
    replayed = make_span(
        "chat qwen",
        chat_attributes(
            "A",
            1,
            "open",
            "qwen",
            **{
                sc.COST_USD: 0.002,
                sc.FRONTIER_EQUIVALENT_USD: 0.03,
                sc.GEN_AI_INPUT_TOKENS: 1000,
                sc.GEN_AI_OUTPUT_TOKENS: 100,
            },
        ),
    )
    spans = [
        make_span(sc.SPAN_RUN, {sc.RUN_ID: "A", sc.STATUS: "failed", sc.SOURCE: "cli", sc.COST_USD: 5.0}),
        replayed,
        replayed,
        tool_span("A", 1, "read_file"),
        make_span(
            "chat claude-sonnet-4-6",
            chat_attributes(
                "A",
                2,
                "frontier",
                "claude-sonnet-4-6",
                **{
                    sc.COST_USD: 0.05,
                    sc.FRONTIER_EQUIVALENT_USD: 0.05,
                    sc.GEN_AI_INPUT_TOKENS: 3000,
                    sc.RAW_INPUT_TOKENS: 1000,
                    sc.GEN_AI_CACHE_READ: 1500,
                    sc.GEN_AI_CACHE_WRITE: 500,
                    sc.GEN_AI_OUTPUT_TOKENS: 200,
                },
            ),
        ),
        tool_span("A", 2, "http_get"),
        tool_span("A", 2, "write_file"),
        tool_span("A", 2, "write_file"),
        make_span(sc.SPAN_RUN, {sc.RUN_ID: "B", sc.STATUS: "ok", sc.SOURCE: "github"}, days_ago=2),
        make_span(
            "chat qwen",
            chat_attributes(
                "B", 1, "open", "qwen", **{sc.UNPRICED: True, sc.SOURCE: "github", sc.GEN_AI_INPUT_TOKENS: 50}
            ),
            days_ago=2,
        ),
        make_span(
            "chat llama",
            chat_attributes("B", 2, "open", "llama", **{sc.COST_USD: 0.001, sc.SOURCE: "github"}),
            days_ago=2,
        ),  # no frontier equivalent
        make_span(
            "chat claude-sonnet-4-6",
            chat_attributes("B", 3, "frontier", "claude-sonnet-4-6", **{sc.COST_USD: 0.1, sc.SOURCE: "github"}),
            days_ago=2,
        ),
    ]
    exporter = DuckDBSpanExporter(path)
    exporter.export(spans[:6])
    exporter.export(spans[6:])
    store = TraceStore(path)
    store.sync()
    return store
