"""The DuckDB trace store: real OpenTelemetry SDK spans, real files, real concurrent processes."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import duckdb
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from stakeflow import semconv as sc
from stakeflow.errors import ConfigError, InputError
from stakeflow.settings import Settings
from stakeflow.tracestore import (
    DuckDBSpanExporter,
    TraceStore,
    build_span_processors,
    cost_report,
    format_table,
    render_tree,
    run_sql,
    to_csv,
    trace_tree,
)

REPO = Path(__file__).resolve().parent.parent
FIX = "move it aside or set STAKEFLOW_TRACES"


@pytest.fixture
def path(tmp_path) -> Path:
    return tmp_path / "traces.duckdb"


def provider(path: Path, *, resource: dict | None = None) -> TracerProvider:
    tp = TracerProvider(resource=Resource.create({"service.name": "stakeflow", **(resource or {})}))
    tp.add_span_processor(SimpleSpanProcessor(DuckDBSpanExporter(path)))
    return tp


def chat_attributes(run_id: str, step: int, route: str, model: str, **extra) -> dict:
    return {
        sc.GEN_AI_OPERATION: "chat", sc.GEN_AI_PROVIDER: "anthropic" if route == "frontier" else "vllm",
        sc.GEN_AI_REQUEST_MODEL: model, sc.RUN_ID: run_id, sc.STEP: step, sc.PURPOSE: "step",
        sc.ROUTE: route, sc.STAKES: "high" if route == "frontier" else "low", sc.SOURCE: "cli",
        sc.ATTEMPT: 1, sc.ESCALATED: False, **extra,
    }


def count(store: TraceStore, sql: str = "SELECT count(*) FROM spans"):
    with store.reader() as con:
        return con.execute(sql).fetchone()[0]


def run_tree(tp: TracerProvider, run_id: str = "run-1") -> None:
    """A run as the workflow and activities trace it, with a Temporal span in between."""
    span = tp.get_tracer("test").start_as_current_span
    plan_call = chat_attributes(run_id, 0, "open", "qwen3-8b", **{
        sc.GEN_AI_INPUT_TOKENS: 1200, sc.GEN_AI_OUTPUT_TOKENS: 80, sc.GEN_AI_CACHE_READ: 0,
        sc.GEN_AI_CACHE_WRITE: 0, sc.RAW_INPUT_TOKENS: 1200, sc.COST_USD: 0.0004,
        sc.FRONTIER_EQUIVALENT_USD: 0.0048, sc.PRICE_VERSION: "config", sc.UNPRICED: False,
        sc.STATUS: "ok", sc.GEN_AI_RESPONSE_MODEL: "qwen3-8b"})
    step_call = chat_attributes(run_id, 1, "frontier", "claude-sonnet-4-6", **{
        # Anthropic: 300 uncached + 2000 cache read + 500 cache write = 2800 input
        sc.GEN_AI_INPUT_TOKENS: 2800, sc.GEN_AI_OUTPUT_TOKENS: 150, sc.GEN_AI_CACHE_READ: 2000,
        sc.GEN_AI_CACHE_WRITE: 500, sc.RAW_INPUT_TOKENS: 300, sc.COST_USD: 0.0054,
        sc.FRONTIER_EQUIVALENT_USD: 0.0054, sc.PRICE_VERSION: "builtin-2026-11-28",
        sc.UNPRICED: False, sc.STATUS: "ok", sc.GEN_AI_RESPONSE_MODEL: "claude-sonnet-4-6"})
    tool_call = {sc.GEN_AI_OPERATION: "execute_tool", sc.GEN_AI_TOOL_NAME: "read_file", sc.RUN_ID: run_id,
                 sc.STEP: 1, sc.ATTEMPT: 1, sc.STATUS: "ok"}
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
        run.set_attributes({sc.STATUS: "ok", sc.STEP_COUNT: 1, sc.OPEN_STEPS: 0, sc.FRONTIER_STEPS: 1,
                            sc.ESCALATIONS: 0, sc.SENSITIVITY: "internal", sc.STAKES: "high",
                            sc.COST_USD: 0.0058})  # the run's own total: never summed again


# --- round trip ------------------------------------------------------------------------------


def test_round_trip_of_a_span_tree(path):
    run_tree(provider(path))
    store = TraceStore(path)
    assert not path.exists()  # the exporter never opens the DuckDB file
    result = store.sync()
    assert (result.segments, result.spans_inserted, result.pending) == (7, 7, 0)
    assert store.pending_segments() == []

    rows = trace_tree(store, "run-1")
    assert ["  " * r["depth"] + r["name"] for r in rows] == [
        "stakeflow.run",
        "  stakeflow.step",
        "    chat qwen3-8b",
        "  stakeflow.step",
        "    chat claude-sonnet-4-6",
        "    execute_tool read_file",
    ]
    frontier = rows[4]
    assert (frontier["input_tokens"], frontier["raw_input_tokens"], frontier["output_tokens"],
            frontier["cache_read_tokens"], frontier["cache_write_tokens"]) == (2800, 300, 150, 2000, 500)
    assert frontier["cost_usd"] == 0.0054 and frontier["route"] == "frontier"
    text = render_tree(rows)
    assert "    chat claude-sonnet-4-6" in text and "$0.005400" in text
    assert text.splitlines()[-1] == "2 model calls, $0.005800"

    with store.reader() as con:
        stored = con.execute(
            "SELECT kind, status_code, service_name, operation, provider, request_model, response_model, "
            "price_version, unpriced, attempt, escalated, status, stakes, source, step, purpose, "
            "start_time <= end_time, duration_ms >= 0, typeof(start_time) "
            "FROM spans WHERE name = 'chat claude-sonnet-4-6'"
        ).fetchone()
        run = con.execute("SELECT run_id, status, source, stakes, sensitivity, steps, frontier_steps, "
                          "model_calls, unpriced_calls, cost_usd FROM runs").fetchall()
        migrations = con.execute("SELECT version, description FROM schema_migrations").fetchall()
    assert stored == ("CLIENT", "UNSET", "stakeflow", "chat", "anthropic", "claude-sonnet-4-6",
                      "claude-sonnet-4-6", "builtin-2026-11-28", False, 1, False, "ok", "high", "cli",
                      1, "step", True, True, "TIMESTAMP")
    assert [r[:9] for r in run] == [("run-1", "ok", "cli", "high", "internal", 1, 1, 2, 0)]
    assert float(run[0][9]) == 0.0058  # the calls' sum, not the run span's own attribute
    assert migrations == [(1, "spans table and runs view")]


def test_unknown_run_id_is_an_input_error(path):
    run_tree(provider(path))
    with pytest.raises(InputError, match="no spans for run 'nope'.*stakeflow costs --by run"):
        trace_tree(TraceStore(path), "nope")


def test_readers_see_pending_segments_before_any_sync(path):
    run_tree(provider(path))
    store = TraceStore(path)
    assert count(store) == 7 and len(store.pending_segments()) == 7  # read from the spool, not ingested
    assert cost_report(store)["total_usd"] == 0.0058
    assert path.exists()  # the reader created the (empty) store: it holds it while reading the spool


# --- nothing counted twice -------------------------------------------------------------------


def test_the_same_span_exported_twice_is_stored_once(path):
    memory = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(memory))
    run_tree(tp)
    spans = memory.get_finished_spans()
    exporter = DuckDBSpanExporter(path)
    exporter.export(spans)
    exporter.export(spans[:3])  # a replayed workflow exports the same span ids again
    store = TraceStore(path)
    assert count(store) == 7  # the spool view deduplicates too
    result = store.sync()
    assert (result.spans_read, result.spans_inserted, result.duplicates) == (10, 7, 3)
    exporter.export(spans)  # and again, after they are stored
    assert count(store) == 7
    assert store.sync().spans_inserted == 0
    assert count(store, "SELECT count(DISTINCT span_id) FROM spans") == 7
    assert cost_report(store)["total_usd"] == 0.0058


def test_a_crash_between_commit_and_delete_reingests_harmlessly(path, tmp_path):
    run_tree(provider(path))
    store = TraceStore(path)
    kept = tmp_path / "kept"
    shutil.copytree(store.spool_dir, kept)
    store.sync()
    assert count(store) == 7
    # The commit happened but the segment files were not deleted: put them back.
    for segment in kept.glob("*.parquet"):
        shutil.copy(segment, store.spool_dir / segment.name)
    assert count(store) == 7  # readers skip spooled spans already stored
    result = store.sync()
    assert (result.segments, result.spans_read, result.spans_inserted) == (7, 7, 0)
    assert count(store) == 7 and store.pending_segments() == []


def test_an_unreadable_segment_is_quarantined_not_blocking(path):
    run_tree(provider(path))
    store = TraceStore(path)
    (store.spool_dir / "host-1-dead-00000000.parquet").write_bytes(b"PAR1 truncated by a power loss")
    result = store.sync()
    assert (result.spans_inserted, result.quarantined, result.pending) == (7, 1, 0)
    assert (store.spool_dir / "quarantine" / "host-1-dead-00000000.parquet").exists()


_WORKER = """
import sys, time
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from stakeflow import semconv as sc
from stakeflow.tracestore import DuckDBSpanExporter

path, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
tp = TracerProvider()
tp.add_span_processor(BatchSpanProcessor(DuckDBSpanExporter(path), max_export_batch_size=37, schedule_delay_millis=5))
tracer = tp.get_tracer("worker")
for i in range(n):
    with tracer.start_as_current_span("chat m", attributes={
        sc.GEN_AI_OPERATION: "chat", sc.RUN_ID: name, sc.STEP: i % 5, sc.ROUTE: "open",
        sc.GEN_AI_REQUEST_MODEL: "m", sc.COST_USD: 0.001, sc.FRONTIER_EQUIVALENT_USD: 0.01,
        sc.GEN_AI_INPUT_TOKENS: 10, sc.GEN_AI_OUTPUT_TOKENS: 1}):
        pass
    if i % 20 == 0:
        time.sleep(0.02)  # spread the spans over a few seconds, as a busy worker would
tp.shutdown()
"""

_READER = """
import os, sys
from stakeflow.tracestore import TraceStore, cost_report
store = TraceStore(sys.argv[1])
locked = loops = 0
while not os.path.exists(sys.argv[2]):
    locked += store.sync(wait_s=0.05).locked
    cost_report(store, by="run")
    loops += 1
print(loops, locked)
"""


def test_two_workers_and_two_readers_lose_nothing_and_count_nothing_twice(path, tmp_path):
    n = 3000
    (tmp_path / "worker.py").write_text(_WORKER)
    (tmp_path / "reader.py").write_text(_READER)
    stop = tmp_path / "stop"
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    workers = [
        subprocess.Popen([sys.executable, str(tmp_path / "worker.py"), str(path), f"w{k}", str(n)],
                         cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
        for k in (1, 2)
    ]
    # A second reader process contends for the lock: syncs give way, readers fall back to the spool.
    other = subprocess.Popen([sys.executable, str(tmp_path / "reader.py"), str(path), str(stop)], cwd=REPO,
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    store = TraceStore(path)
    seen, locked = [], 0
    while any(w.poll() is None for w in workers) or len(seen) < 3:
        locked += store.sync(wait_s=0.05).locked
        report = cost_report(store, by="run")
        seen.append(report["calls"])
        assert report["calls"] <= 2 * n
        assert report["total_usd"] == pytest.approx(report["calls"] * 0.001, abs=1e-9)
    stop.touch()
    out, err = other.communicate(timeout=60)
    assert other.returncode == 0, err
    for w in workers:
        assert w.wait(timeout=60) == 0, w.stderr.read()
    other_loops, other_locked = map(int, out.split())
    assert len(seen) >= 5 and other_loops >= 3  # both readers really ran alongside the workers
    print(f"main: {len(seen)} reads, {locked} syncs locked out; other: {other_loops} reads, {other_locked} locked out")

    assert seen == sorted(seen), "a reader saw fewer spans than an earlier one"
    store.compact()
    assert store.pending_segments() == []
    with store.reader() as con:
        assert con.execute("SELECT run_id, count(*), count(DISTINCT span_id) FROM spans "
                           "GROUP BY run_id ORDER BY run_id").fetchall() == [("w1", n, n), ("w2", n, n)]
    report = cost_report(store, by="run")
    assert report["calls"] == 2 * n
    assert report["total_usd"] == pytest.approx(2 * n * 0.001, abs=1e-9)
    assert sorted((r["run"], r["calls"]) for r in report["rows"]) == [("w1", n), ("w2", n)]


def _hold(path: Path, read_only: bool) -> subprocess.Popen:
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import duckdb, sys
            con = duckdb.connect({str(path)!r}, read_only={read_only})
            print("holding", flush=True)
            sys.stdin.readline()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout.readline().strip() == "holding"
    return holder


def test_a_busy_write_lock_falls_back_to_the_spool(path):
    tp = provider(path)
    run_tree(tp, "run-1")
    store = TraceStore(path, lock_wait_s=5)
    store.sync()
    run_tree(tp, "run-2")
    holder = _hold(path, read_only=True)  # another reader: sync cannot get the write lock
    try:
        started = time.monotonic()
        result = store.sync(wait_s=0.3)
        assert result.locked and result.pending == 7
        assert time.monotonic() - started < 3
        report = cost_report(store, by="run")
        assert [(r["run"], r["calls"]) for r in report["rows"]] == [("run-1", 2), ("run-2", 2)]
        assert count(store) == 14
    finally:
        holder.communicate("\n")
    assert store.sync().spans_inserted == 7


def test_a_reader_waits_out_a_short_write(path):
    run_tree(provider(path))
    store = TraceStore(path, lock_wait_s=10)
    store.sync()
    holder = _hold(path, read_only=False)
    threading.Timer(0.5, lambda: holder.communicate("\n")).start()
    assert count(store) == 7  # waited for the writer instead of failing


def test_a_writer_that_never_finishes_is_a_clear_error(path):
    from stakeflow.errors import ServiceError

    run_tree(provider(path))
    TraceStore(path).sync()
    holder = _hold(path, read_only=False)
    try:
        with pytest.raises(ServiceError, match=r"locked by process \d+ for more than 0.3s"):
            cost_report(TraceStore(path, lock_wait_s=0.3))
    finally:
        holder.communicate("\n")


# --- cost report -----------------------------------------------------------------------------

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
_ids = iter(range(1, 10_000))


def make_span(name: str, attributes: dict, *, days_ago: float = 0, trace: int = 1, span_id: int | None = None,
              parent: int | None = None) -> ReadableSpan:
    start = int((NOW - timedelta(days=days_ago)).timestamp() * 1e9)
    sid = span_id or next(_ids)
    return ReadableSpan(
        name=name, context=SpanContext(trace, sid, is_remote=False, trace_flags=TraceFlags(1)),
        parent=SpanContext(trace, parent, is_remote=False) if parent else None,
        attributes=attributes, start_time=start, end_time=start + 1_500_000_000,
        resource=Resource.create({"service.name": "stakeflow"}), status=Status(StatusCode.UNSET),
    )


def tool_span(run_id: str, step: int, tool: str) -> ReadableSpan:
    return make_span(f"execute_tool {tool}", {sc.GEN_AI_OPERATION: "execute_tool", sc.GEN_AI_TOOL_NAME: tool,
                                             sc.RUN_ID: run_id, sc.STEP: step})


@pytest.fixture
def priced_store(path) -> TraceStore:
    replayed = make_span("chat qwen", chat_attributes("A", 1, "open", "qwen", **{
        sc.COST_USD: 0.002, sc.FRONTIER_EQUIVALENT_USD: 0.03, sc.GEN_AI_INPUT_TOKENS: 1000,
        sc.GEN_AI_OUTPUT_TOKENS: 100}))
    spans = [
        make_span(sc.SPAN_RUN, {sc.RUN_ID: "A", sc.STATUS: "failed", sc.SOURCE: "cli", sc.COST_USD: 5.0}),
        replayed, replayed,
        tool_span("A", 1, "read_file"),
        make_span("chat claude-sonnet-4-6", chat_attributes("A", 2, "frontier", "claude-sonnet-4-6", **{
            sc.COST_USD: 0.05, sc.FRONTIER_EQUIVALENT_USD: 0.05, sc.GEN_AI_INPUT_TOKENS: 3000,
            sc.RAW_INPUT_TOKENS: 1000, sc.GEN_AI_CACHE_READ: 1500, sc.GEN_AI_CACHE_WRITE: 500,
            sc.GEN_AI_OUTPUT_TOKENS: 200})),
        tool_span("A", 2, "http_get"), tool_span("A", 2, "write_file"), tool_span("A", 2, "write_file"),
        make_span(sc.SPAN_RUN, {sc.RUN_ID: "B", sc.STATUS: "ok", sc.SOURCE: "github"}, days_ago=2),
        make_span("chat qwen", chat_attributes("B", 1, "open", "qwen", **{
            sc.UNPRICED: True, sc.SOURCE: "github", sc.GEN_AI_INPUT_TOKENS: 50}), days_ago=2),
        make_span("chat llama", chat_attributes("B", 2, "open", "llama", **{
            sc.COST_USD: 0.001, sc.SOURCE: "github"}), days_ago=2),  # no frontier equivalent
        make_span("chat claude-sonnet-4-6", chat_attributes("B", 3, "frontier", "claude-sonnet-4-6", **{
            sc.COST_USD: 0.1, sc.SOURCE: "github"}), days_ago=2),
    ]
    exporter = DuckDBSpanExporter(path)
    exporter.export(spans[:6])
    exporter.export(spans[6:])
    store = TraceStore(path)
    store.sync()
    return store


def test_cost_report_totals_in_exact_dollars(priced_store):
    r = cost_report(priced_store, None, "model", None, "claude-sonnet-4-6")
    assert r["calls"] == 5
    assert r["total_usd"] == 0.153
    assert (r["open_usd"], r["frontier_usd"]) == (0.003, 0.15)
    assert r["frontier_equivalent_usd"] == 0.18  # 0.03 (qwen's equivalent) + 0.05 + 0.1 (their own cost)
    assert r["saved_usd"] == 0.028  # only qwen saved; llama has no equivalent, so it is not in saved
    assert (r["unpriced_calls"], r["no_equivalent_calls"]) == (1, 1)
    assert (r["input_tokens"], r["cache_read_tokens"], r["cache_write_tokens"]) == (4050, 1500, 500)
    assert r["frontier_model"] == "claude-sonnet-4-6"
    assert [(x["model"], x["calls"], x["unpriced_calls"], x["cost_usd"], x["saved_usd"]) for x in r["rows"]] == [
        ("claude-sonnet-4-6", 2, 0, 0.15, 0.0),
        ("qwen", 2, 1, 0.002, 0.028),  # the unpriced call is counted, not priced at $0
        ("llama", 1, 0, 0.001, None),
    ]


@pytest.mark.parametrize(("by", "expected"), [
    ("run", [("B", 0.101, 3), ("A", 0.052, 2)]),
    ("route", [("frontier", 0.15, 2), ("open", 0.003, 3)]),
    ("stakes", [("high", 0.15, 2), ("low", 0.003, 3)]),
    ("source", [("github", 0.101, 3), ("cli", 0.052, 2)]),
    ("day", [("2026-11-18", 0.101, 3), ("2026-11-20", 0.052, 2)]),
    ("tool", [("(no tool)", 0.101, 3), ("http_get", 0.05, 1), ("write_file", 0.05, 1), ("read_file", 0.002, 1)]),
])
def test_cost_report_breakdowns(priced_store, by, expected):
    rows = cost_report(priced_store, None, by)["rows"]
    assert [(r[by], r["cost_usd"], r["calls"]) for r in rows] == expected


def test_cost_of_failed_runs(priced_store):
    rows = cost_report(priced_store, by="run")["rows"]
    assert [(r["run"], r["status"]) for r in rows] == [("B", "ok"), ("A", "failed")]
    _, result = run_sql(priced_store, "SELECT sum(cost_usd) FROM runs WHERE status = 'failed'")
    assert float(result[0][0]) == 0.052


def test_a_run_in_flight_is_in_runs_without_a_status(path):
    DuckDBSpanExporter(path).export([
        make_span("chat qwen", chat_attributes("C", 1, "open", "qwen", **{sc.COST_USD: 0.25})),
    ])
    _, rows = run_sql(TraceStore(path), "SELECT run_id, status, ended_at, model_calls, cost_usd FROM runs")
    assert [(r[0], r[1], r[2], r[3], float(r[4])) for r in rows] == [("C", None, None, 1, 0.25)]


def test_cost_report_since_and_run(priced_store):
    recent = cost_report(priced_store, timedelta(days=1), "model", now=NOW)
    assert (recent["calls"], recent["total_usd"]) == (2, 0.052)
    one = cost_report(priced_store, None, "model", "B")
    assert (one["calls"], one["total_usd"], one["unpriced_calls"]) == (3, 0.101, 1)


def test_unknown_breakdown_lists_the_valid_ones(priced_store):
    with pytest.raises(InputError) as e:
        cost_report(priced_store, None, "colour")
    assert str(e.value) == "unknown breakdown 'colour': use one of run, model, route, stakes, tool, day, source"


def test_an_empty_store_reports_zero_and_creates_nothing(path):
    report = cost_report(TraceStore(path))
    assert (report["calls"], report["total_usd"], report["rows"]) == (0, 0.0, [])
    assert not path.exists()


# --- SQL ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("sql", [
    "INSERT INTO spans (span_id, trace_id, name, start_time) VALUES ('x', 'y', 'z', now())",
    "COPY spans TO '/tmp/stolen.csv'",
    "ATTACH '/tmp/other.duckdb' AS other",
    "DROP TABLE spans",
    "DELETE FROM spans",
    "SET enable_external_access = true",
    "SELECT 1; DROP TABLE spans",
    "CREATE TABLE t AS SELECT 1",
])
def test_write_sql_is_refused(priced_store, sql):
    with pytest.raises(InputError, match="only read queries|exactly one SQL statement"):
        run_sql(priced_store, sql)
    assert count(priced_store) == 11


def test_read_sql_runs_and_cannot_reach_other_files(priced_store):
    columns, rows = run_sql(priced_store, "SELECT request_model, count(*) AS n FROM spans "
                                          "WHERE operation = 'chat' GROUP BY ALL ORDER BY n DESC, 1")
    assert columns == ["request_model", "n"]
    assert rows == [("claude-sonnet-4-6", 2), ("qwen", 2), ("llama", 1)]
    with pytest.raises(InputError, match="SQL failed"):
        run_sql(priced_store, "SELECT * FROM read_csv('/etc/passwd')")
    with pytest.raises(InputError, match="SQL does not parse"):
        run_sql(priced_store, "SELEKT 1")


def test_format_table_and_csv():
    columns, rows = ["model", "calls", "cost_usd"], [["qwen", 2, 0.002], ["a-long-model-name", 10, None]]
    assert format_table(columns, rows) == (
        "model              calls  cost_usd\n"
        "-----------------  -----  --------\n"
        "qwen                   2  0.002000\n"
        "a-long-model-name     10      NULL"
    )
    assert to_csv(columns, rows) == "model,calls,cost_usd\nqwen,2,0.002\na-long-model-name,10,\n"


# --- bad files -------------------------------------------------------------------------------


def test_a_text_file_is_a_config_error_naming_the_fix(path):
    path.write_text("not a database\n")
    for attempt in (lambda s: s.sync(), lambda s: cost_report(s), lambda s: run_sql(s, "SELECT 1")):
        with pytest.raises(ConfigError) as e:
            attempt(TraceStore(path))
        assert str(path) in str(e.value) and FIX in str(e.value)


def test_a_foreign_duckdb_file_is_a_config_error(path):
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE customers (id INTEGER)")
    con.close()
    run_tree(provider(path))  # pending segments: sync opens the file for writing
    with pytest.raises(ConfigError, match=f"{path} is a DuckDB file but not a stakeflow trace store.*{FIX}"):
        TraceStore(path).sync()
    with pytest.raises(ConfigError, match="customers"):
        trace_tree(TraceStore(path), "run-1")
    con = duckdb.connect(str(path))
    assert con.execute("SELECT table_name FROM duckdb_tables()").fetchall() == [("customers",)]  # untouched


def test_a_store_from_a_newer_stakeflow_is_refused(path):
    TraceStore(path).compact()
    con = duckdb.connect(str(path))
    con.execute("INSERT INTO schema_migrations VALUES (99, 'future', now()::TIMESTAMP)")
    con.close()
    with pytest.raises(ConfigError, match="newer stakeflow \\(schema version 99"):
        cost_report(TraceStore(path))


# --- secrets -----------------------------------------------------------------------------------

SECRET = "sk-ant-do-not-store-me"


def test_secret_attributes_are_dropped(path):
    tp = provider(path, resource={"deployment.api_key": SECRET})
    with tp.get_tracer("t").start_as_current_span("chat m", attributes={
        **chat_attributes("r", 1, "frontier", "m"),
        "anthropic.api_key": SECRET, "http.request.header.authorization": SECRET, "oauth.client_secret": SECRET,
        "session.token": SECRET, "http.request.header.x-api-key": SECRET, "db.password": SECRET,
        sc.GEN_AI_INPUT_TOKENS: 10, sc.GEN_AI_CACHE_READ: 3, sc.GEN_AI_CACHE_WRITE: 2,
        sc.RAW_INPUT_TOKENS: 5, sc.GEN_AI_OUTPUT_TOKENS: 7,
    }):
        pass
    store = TraceStore(path)
    store.compact()
    with store.reader() as con:
        keys = [k for (k,) in con.execute("SELECT unnest(json_keys(attributes)) FROM spans").fetchall()]
        resource = con.execute("SELECT resource FROM spans").fetchone()[0]
        leaked = con.execute(f"SELECT count(*) FROM spans WHERE spans::VARCHAR LIKE '%{SECRET}%'").fetchone()[0]
    assert leaked == 0 and SECRET not in resource and "deployment.api_key" not in resource
    assert not [k for k in keys if any(p in k for p in ("api_key", "authorization", "secret", "password"))]
    assert "session.token" not in keys and "http.request.header.x-api-key" not in keys
    assert {sc.GEN_AI_INPUT_TOKENS, sc.GEN_AI_CACHE_READ, sc.GEN_AI_CACHE_WRITE, sc.RAW_INPUT_TOKENS,
            sc.GEN_AI_OUTPUT_TOKENS} <= set(keys)


# --- OTLP ------------------------------------------------------------------------------------


class _Collector(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, bytes]]] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_otlp_variables_also_send_spans_to_an_otlp_backend(path, monkeypatch):
    settings = Settings(home=path.parent, traces=path)
    assert len(build_span_processors(settings)) == 2  # no OTLP variables: the trace store only (sync + batch)

    server = HTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Collector.received = []
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    try:
        processors = build_span_processors(settings)
        assert [type(p).__name__ for p in processors] == ["_Only", "_Only", "BatchSpanProcessor"]
        tp = TracerProvider(resource=Resource.create({"service.name": "stakeflow"}))
        for p in processors:
            tp.add_span_processor(p)
        with tp.get_tracer("t").start_as_current_span(
            "chat m", attributes={**chat_attributes("otlp-run", 1, "open", "m"), "anthropic.api_key": SECRET}
        ):
            pass
        tp.shutdown()
    finally:
        server.shutdown()
    assert [p for p, _ in _Collector.received] == ["/v1/traces"]
    request = ExportTraceServiceRequest.FromString(_Collector.received[0][1])
    spans = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert [s.name for s in spans] == ["chat m"]
    keys = {a.key for a in spans[0].attributes}
    assert sc.RUN_ID in keys and "anthropic.api_key" not in keys
    assert SECRET.encode() not in _Collector.received[0][1]
    assert count(TraceStore(path)) == 1  # and the trace store got it too


def test_otlp_over_grpc_is_a_clear_error(path, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf"):
        build_span_processors(Settings(home=path.parent, traces=path))
