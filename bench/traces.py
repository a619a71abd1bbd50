"""Trace store throughput: exporter and ingest rates, and cost-report latency over 1M and 10M spans.

1. Builds synthetic runs as OpenTelemetry ``ReadableSpan`` objects (a run span, plan / step / answer
   spans, one ``chat`` span per step with the GenAI usage and cost attributes stakeflow records, an
   ``execute_tool`` span per tool step, some retried and unpriced calls), in batches of ``--batch``
   (a BatchSpanProcessor with ``max_export_batch_size`` = that). Building the span objects is timed
   apart from exporting them: it is the SDK's cost, paid by the traced code, not the exporter's.
2. Passes each batch to ``DuckDBSpanExporter.export()`` (one Parquet segment per batch): the export rate.
3. ``TraceStore.sync()`` ingests every segment into the DuckDB file: the ingest rate.
4. Times ``cost_report`` by model / day (and run / tool, trace_tree, run_sql) over that store.
5. The ``--big`` store (default 10M spans) is generated directly in DuckDB with SQL, NOT through the
   exporter (10M Python span objects would take most of the time budget), with the same shape of
   runs and attributes; then the same queries are timed.

    python bench/traces.py                         # 1M spans + 10M generated; ~5 min on 2 cores
    python bench/traces.py --spans 100000 --big 0  # a quick look

Every query timing opens its own read-only connection (~30 ms of DuckDB start-up), as the CLI does.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import duckdb
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from stakeflow.core import semconv as sc
from stakeflow.traces import (
    DuckDBSpanExporter,
    TraceStore,
    cost_report,
    format_table,
    run_sql,
    trace_tree,
)

OPEN_MODELS = ("qwen3-8b", "llama-3.3-70b", "smollm2-135m-instruct")
FRONTIER_MODELS = ("claude-sonnet-4-6", "claude-haiku-4-5", "claude-opus-4-7")
TOOLS = ("read_file", "write_file", "http_get", "sql_query", "calculator")
SOURCES = ("cli", "github", "slack")
DAY_NS = 86_400 * 10**9
RESOURCE = Resource.create(
    {
        "service.name": "stakeflow",
        "service.instance.id": "bench-host-4242",
        "stakeflow.process": "worker",
    }
)
STEPS = 3  # plan + 3 steps + answer: 14 spans per run


def synthetic_runs(total: int, seed: int = 7) -> Iterator[ReadableSpan]:
    """Spans of whole runs, children before parents (the order spans end in), ``total`` of them."""
    rng = random.Random(seed)
    now = time.time_ns()
    made, run = 0, 0
    while made < total:
        run += 1
        run_id = f"run-{run:08d}-{rng.getrandbits(32):08x}"
        trace_id = rng.getrandbits(128) | 1
        run_span = rng.getrandbits(64) | 1
        t = now - rng.randrange(30 * DAY_NS)
        source = rng.choice(SOURCES)
        spans: list[ReadableSpan] = []
        frontier_steps = 0
        for step in range(STEPS + 2):
            purpose = "plan" if step == 0 else "answer" if step == STEPS + 1 else "step"
            frontier = purpose == "step" and rng.random() < 0.35
            frontier_steps += frontier
            route = "frontier" if frontier else "open"
            model = rng.choice(FRONTIER_MODELS if frontier else OPEN_MODELS)
            step_span = rng.getrandbits(64) | 1
            step_start = t + step * 3 * 10**9
            cached = rng.randrange(0, 4000) if frontier else 0
            written = rng.randrange(0, 800) if frontier else 0
            raw_in = rng.randrange(200, 3000)
            out = rng.randrange(20, 600)
            unpriced = not frontier and rng.random() < 0.02
            cost = (raw_in * 3 + written * 3.75 + cached * 0.3 + out * 15) / 1e6 if frontier else out * 2e-7
            attrs = {
                sc.GEN_AI_OPERATION: "chat",
                sc.GEN_AI_PROVIDER: "anthropic" if frontier else "vllm",
                sc.GEN_AI_REQUEST_MODEL: model,
                sc.GEN_AI_RESPONSE_MODEL: model,
                sc.GEN_AI_INPUT_TOKENS: raw_in + cached + written,
                sc.GEN_AI_OUTPUT_TOKENS: out,
                sc.GEN_AI_CACHE_READ: cached,
                sc.GEN_AI_CACHE_WRITE: written,
                sc.RAW_INPUT_TOKENS: raw_in,
                sc.RUN_ID: run_id,
                sc.STEP: step,
                sc.PURPOSE: purpose,
                sc.ROUTE: route,
                sc.STAKES: "high" if frontier else "low",
                sc.SOURCE: source,
                sc.ESCALATED: False,
                sc.REASON: "write_file has side effects: high stakes" if frontier else "read-only step: low stakes",
                sc.ATTEMPT: 1,
                sc.UNPRICED: unpriced,
                sc.STATUS: "ok",
                sc.DURATION_S: 2.5,
            }
            if not unpriced:
                attrs[sc.COST_USD] = round(cost, 9)
                attrs[sc.FRONTIER_EQUIVALENT_USD] = round(cost if frontier else cost * 12, 9)
                attrs[sc.PRICE_VERSION] = "builtin-2026-11-28" if frontier else "config"
            spans.append(
                _span(
                    f"chat {model}",
                    trace_id,
                    rng.getrandbits(64) | 1,
                    step_span,
                    step_start + 10**7,
                    2 * 10**9,
                    attrs,
                    SpanKind.CLIENT,
                )
            )
            if purpose == "step":
                tool = rng.choice(TOOLS)
                spans.append(
                    _span(
                        f"execute_tool {tool}",
                        trace_id,
                        rng.getrandbits(64) | 1,
                        step_span,
                        step_start + 21 * 10**8,
                        3 * 10**8,
                        {
                            sc.GEN_AI_OPERATION: "execute_tool",
                            sc.GEN_AI_TOOL_NAME: tool,
                            sc.RUN_ID: run_id,
                            sc.STEP: step,
                            sc.ATTEMPT: 1,
                            sc.STATUS: "ok",
                        },
                    )
                )
            spans.append(
                _span(
                    sc.SPAN_STEP,
                    trace_id,
                    step_span,
                    run_span,
                    step_start,
                    int(2.5 * 10**9),
                    {
                        sc.RUN_ID: run_id,
                        sc.STEP: step,
                        sc.PURPOSE: purpose,
                        sc.ROUTE: route,
                        sc.GEN_AI_REQUEST_MODEL: model,
                    },
                )
            )
        status = "failed" if rng.random() < 0.05 else "ok"
        spans.append(
            _span(
                sc.SPAN_RUN,
                trace_id,
                run_span,
                None,
                t,
                (STEPS + 2) * 3 * 10**9,
                {
                    sc.RUN_ID: run_id,
                    sc.SOURCE: source,
                    sc.SENSITIVITY: "internal",
                    sc.STATUS: status,
                    sc.STEP_COUNT: STEPS,
                    sc.OPEN_STEPS: STEPS - frontier_steps,
                    sc.FRONTIER_STEPS: frontier_steps,
                    sc.ESCALATIONS: 0,
                    sc.STAKES: "high" if frontier_steps else "low",
                },
            )
        )
        yield from spans[: total - made]
        made += len(spans)


def _span(name, trace_id, span_id, parent, start, duration, attributes, kind=SpanKind.INTERNAL) -> ReadableSpan:
    return ReadableSpan(
        name=name,
        context=SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(1)),
        parent=SpanContext(trace_id, parent, is_remote=False) if parent else None,
        resource=RESOURCE,
        # as the SDK hands them to exporters: immutable BoundedAttributes behind a mappingproxy
        attributes=BoundedAttributes(attributes=attributes, immutable=True),
        kind=kind,
        status=Status(StatusCode.UNSET),
        start_time=start,
        end_time=start + duration,
    )


def export_all(path: Path, total: int, batch: int) -> dict[str, float]:
    exporter = DuckDBSpanExporter(path)
    made = exported = 0.0
    spans = synthetic_runs(total)
    count = 0
    while True:
        t0 = time.perf_counter()
        chunk = [s for _, s in zip(range(batch), spans, strict=False)]
        t1 = time.perf_counter()
        if not chunk:
            break
        if exporter.export(chunk).name != "SUCCESS":
            raise SystemExit("export failed")
        t2 = time.perf_counter()
        made += t1 - t0
        exported += t2 - t1
        count += len(chunk)
    exporter.shutdown()
    size = sum(p.stat().st_size for p in exporter.spool_dir.glob("*.parquet"))
    return {"spans": count, "create_s": made, "export_s": exported, "segment_bytes": size}


def generate_big(path: Path, total: int) -> float:
    """``total`` spans of the same run shape, written by SQL straight into a migrated store."""
    TraceStore(path).compact()  # creates the file and the schema
    runs = (total + 13) // 14
    start = time.perf_counter()
    con = duckdb.connect(str(path))
    con.execute("SET preserve_insertion_order = false")
    step_rows = """
        SELECT r AS run, s AS step, (hash(r, s) >> 1)::BIGINT AS h, (hash(r) >> 1)::BIGINT AS hr,
            CASE WHEN s = 0 THEN 'plan' WHEN s = 4 THEN 'answer' ELSE 'step' END AS purpose,
            s BETWEEN 1 AND 3 AND hash(r, s) % 100 < 35 AS frontier
        FROM range(?) t(r), range(5) u(s)"""
    common = """
        'run-' || lpad(run::VARCHAR, 8, '0') AS run_id, printf('%032x', hash(run)) AS trace_id,
        TIMESTAMP '2026-11-28' - to_microseconds(hr % (30 * 86400000000))
            + to_seconds(step * 3) AS start_time,
        ['cli', 'github', 'slack'][1 + hr % 3] AS source, 'stakeflow' AS service_name, 'UNSET' AS status_code"""
    con.execute(
        f"""
        INSERT INTO spans BY NAME
        SELECT printf('%016x', h) AS span_id, printf('%016x', hash(run, step, 'step')) AS parent_span_id,
            'chat ' || model AS name, 'CLIENT' AS kind, start_time + to_milliseconds(10) AS start_time,
            start_time + to_milliseconds(2010) AS end_time, 2000.0 AS duration_ms, run_id, trace_id, source, service_name, status_code,
            json_object('gen_ai.operation.name', 'chat', 'gen_ai.request.model', model, 'stakeflow.run_id', run_id,
                        'stakeflow.step', step, 'stakeflow.route', route, 'gen_ai.usage.input_tokens', input_tokens,
                        'gen_ai.usage.output_tokens', output_tokens, 'stakeflow.cost_usd', cost_usd) AS attributes,
            step, purpose, route, CASE WHEN frontier THEN 'high' ELSE 'low' END AS stakes, 'chat' AS operation,
            CASE WHEN frontier THEN 'anthropic' ELSE 'vllm' END AS provider, model AS request_model,
            model AS response_model, input_tokens, raw_input_tokens, output_tokens, cache_read_tokens,
            cache_write_tokens, cost_usd,
            CASE WHEN unpriced THEN NULL WHEN frontier THEN cost_usd ELSE cost_usd * 12 END AS frontier_equivalent_usd,
            unpriced, 1 AS attempt, false AS escalated, 'ok' AS status
        FROM (
            SELECT *, CASE WHEN unpriced THEN NULL ELSE
                    CASE WHEN frontier THEN (raw_input_tokens * 3 + cache_write_tokens * 3.75
                        + cache_read_tokens * 0.3 + output_tokens * 15) / 1e6 ELSE output_tokens * 2e-7 END
                END::DECIMAL(18, 9) AS cost_usd
            FROM (
                SELECT *, {common},
                    CASE WHEN frontier THEN ['claude-sonnet-4-6', 'claude-haiku-4-5', 'claude-opus-4-7'][1 + h % 3]
                         ELSE ['qwen3-8b', 'llama-3.3-70b', 'smollm2-135m-instruct'][1 + h % 3] END AS model,
                    CASE WHEN frontier THEN 'frontier' ELSE 'open' END AS route,
                    200 + h % 2800 AS raw_input_tokens, 20 + h % 580 AS output_tokens,
                    CASE WHEN frontier THEN h % 4000 ELSE 0 END AS cache_read_tokens,
                    CASE WHEN frontier THEN h % 800 ELSE 0 END AS cache_write_tokens,
                    raw_input_tokens + cache_read_tokens + cache_write_tokens AS input_tokens,
                    NOT frontier AND h % 50 = 0 AS unpriced
                FROM ({step_rows})))
    """,
        [runs],
    )
    con.execute(
        f"""
        INSERT INTO spans BY NAME
        SELECT printf('%016x', hash(run, step, 'step')) AS span_id, printf('%016x', hash(run, 'run')) AS parent_span_id,
            'stakeflow.step' AS name, 'INTERNAL' AS kind, start_time, start_time + to_milliseconds(2500) AS end_time,
            2500.0 AS duration_ms, run_id, trace_id, source, service_name, status_code, step, purpose,
            json_object('stakeflow.run_id', run_id, 'stakeflow.step', step) AS attributes
        FROM (SELECT *, {common} FROM ({step_rows}))
    """,
        [runs],
    )
    con.execute(
        f"""
        INSERT INTO spans BY NAME
        SELECT printf('%016x', hash(run, step, 'tool')) AS span_id, printf('%016x', hash(run, step, 'step')) AS parent_span_id,
            'execute_tool ' || tool AS name, 'INTERNAL' AS kind, start_time + to_milliseconds(2100) AS start_time,
            start_time + to_milliseconds(2400) AS end_time, 300.0 AS duration_ms, run_id, trace_id, source,
            service_name, status_code, step, 'execute_tool' AS operation, tool AS tool_name, 'ok' AS status,
            json_object('gen_ai.operation.name', 'execute_tool', 'gen_ai.tool.name', tool) AS attributes
        FROM (SELECT *, {common}, ['read_file', 'write_file', 'http_get', 'sql_query', 'calculator'][1 + h % 5] AS tool
              FROM ({step_rows}) WHERE purpose = 'step')
    """,
        [runs],
    )
    con.execute(
        f"""
        INSERT INTO spans BY NAME
        SELECT printf('%016x', hash(run, 'run')) AS span_id, 'stakeflow.run' AS name, 'INTERNAL' AS kind,
            start_time, start_time + to_seconds(15) AS end_time, 15000.0 AS duration_ms, run_id, trace_id, source,
            service_name, status_code, CASE WHEN hr % 20 = 0 THEN 'failed' ELSE 'ok' END AS status,
            json_object('stakeflow.run_id', run_id, 'stakeflow.steps', 3) AS attributes
        FROM (SELECT *, {common} FROM (SELECT r AS run, 0 AS step, (hash(r) >> 1)::BIGINT AS hr FROM range(?) t(r)))
    """,
        [runs],
    )
    con.close()
    return time.perf_counter() - start


def timed(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm the page cache
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def query_rows(label: str, store: TraceStore, repeat: int, full: bool) -> list[list[str]]:
    spans = run_sql(store, "SELECT count(*) FROM spans")[1][0][0]
    run_id = run_sql(store, "SELECT run_id FROM spans WHERE run_id IS NOT NULL LIMIT 1")[1][0][0]
    cases = [
        ("cost_report --by model", lambda: cost_report(store, None, "model")),
        ("cost_report --by day", lambda: cost_report(store, None, "day")),
    ]
    if full:
        cases += [
            ("cost_report --by tool", lambda: cost_report(store, None, "tool")),
            ("cost_report --by run (top 20)", lambda: cost_report(store, None, "run", limit=20)),
            ("trace_tree (one run)", lambda: trace_tree(store, run_id)),
            (
                "sql: failed runs' cost",
                lambda: run_sql(store, "SELECT sum(cost_usd) FROM runs WHERE status = 'failed'"),
            ),
        ]
    return [[f"{label}: {name}", f"{spans:,}", f"{timed(fn, repeat) * 1000:.0f} ms", ""] for name, fn in cases]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spans", type=int, default=1_000_000, help="spans through the exporter (default 1M)")
    parser.add_argument("--big", type=int, default=10_000_000, help="spans generated in SQL (default 10M; 0 skips)")
    parser.add_argument("--batch", type=int, default=2048, help="spans per export (max_export_batch_size)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per query (median)")
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()

    work = args.dir or Path(tempfile.mkdtemp(prefix="stakeflow-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"duckdb {duckdb.__version__}, Python {platform.python_version()}, {os.cpu_count()} CPUs; in {work}")
    table: list[list[str]] = []
    try:
        path = work / "traces.duckdb"
        e = export_all(path, args.spans, args.batch)
        n = e["spans"]
        table.append(
            [
                "create ReadableSpans (SDK, not exporter)",
                f"{n:,}",
                f"{e['create_s']:.1f} s",
                f"{n / e['create_s']:,.0f} spans/s",
            ]
        )
        table.append(
            [
                f"export (batches of {args.batch}, Parquet segments)",
                f"{n:,}",
                f"{e['export_s']:.1f} s",
                f"{n / e['export_s']:,.0f} spans/s, {e['segment_bytes'] / n:.0f} B/span",
            ]
        )
        store = TraceStore(path)
        t = time.perf_counter()
        result = store.sync(budget_s=None, wait_s=10)
        ingest = time.perf_counter() - t
        assert result.spans_inserted == n and result.pending == 0, result
        size = path.stat().st_size
        table.append(
            [
                "ingest: sync() into DuckDB",
                f"{n:,}",
                f"{ingest:.1f} s",
                f"{n / ingest:,.0f} spans/s, {size / n:.0f} B/span on disk",
            ]
        )
        table += query_rows("1M" if n == 1_000_000 else f"{n:,}", store, args.repeat, full=True)
        if args.big:
            big = work / "big.duckdb"
            gen = generate_big(big, args.big)
            big_store = TraceStore(big)
            total = run_sql(big_store, "SELECT count(*) FROM spans")[1][0][0]
            table.append(
                ["generate in SQL (not the exporter)", f"{total:,}", f"{gen:.1f} s", f"{total / gen:,.0f} spans/s"]
            )
            table += query_rows("10M" if args.big == 10_000_000 else f"{args.big:,}", big_store, args.repeat, full=True)
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(format_table(["what", "spans", "time", "rate"], table, align_left={0, 3}, max_width=80))


if __name__ == "__main__":
    main()
