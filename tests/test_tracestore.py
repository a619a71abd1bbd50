"""The DuckDB trace store: real OpenTelemetry SDK spans, real files, real concurrent processes."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import duckdb
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from stakeflow.core.errors import ConfigError
from stakeflow.traces import (
    MIGRATIONS,
    DuckDBSpanExporter,
    TraceStore,
    cost_report,
    render_tree,
    run_sql,
    trace_tree,
)
from tests.trace_spans import count, provider, run_tree

REPO = Path(__file__).resolve().parent.parent
FIX = "move it aside or set STAKEFLOW_TRACES"


@pytest.fixture
def path(tmp_path) -> Path:
    return tmp_path / "traces.duckdb"


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
    assert (
        frontier["input_tokens"],
        frontier["raw_input_tokens"],
        frontier["output_tokens"],
        frontier["cache_read_tokens"],
        frontier["cache_write_tokens"],
    ) == (2800, 300, 150, 2000, 500)
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
        run = con.execute(
            "SELECT run_id, status, source, stakes, sensitivity, steps, frontier_steps, "
            "model_calls, unpriced_calls, cost_usd FROM runs"
        ).fetchall()
        migrations = con.execute("SELECT version, description FROM schema_migrations").fetchall()
    assert stored == (
        "CLIENT",
        "UNSET",
        "stakeflow",
        "chat",
        "anthropic",
        "claude-sonnet-4-6",
        "claude-sonnet-4-6",
        "builtin-2026-11-28",
        False,
        1,
        False,
        "ok",
        "high",
        "cli",
        1,
        "step",
        True,
        True,
        "TIMESTAMP",
    )
    assert [r[:9] for r in run] == [("run-1", "ok", "cli", "high", "internal", 1, 1, 2, 0)]
    assert float(run[0][9]) == 0.0058  # the calls' sum, not the run span's own attribute
    assert migrations == [(m.version, m.description) for m in MIGRATIONS]


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
from stakeflow.core import semconv as sc
from stakeflow.traces import DuckDBSpanExporter

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
from stakeflow.traces import TraceStore, cost_report
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
        subprocess.Popen(
            [sys.executable, str(tmp_path / "worker.py"), str(path), f"w{k}", str(n)],
            cwd=REPO,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in (1, 2)
    ]
    # A second reader process contends for the lock: syncs give way, readers fall back to the spool.
    other = subprocess.Popen(
        [sys.executable, str(tmp_path / "reader.py"), str(path), str(stop)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
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
        assert con.execute(
            "SELECT run_id, count(*), count(DISTINCT span_id) FROM spans GROUP BY run_id ORDER BY run_id"
        ).fetchall() == [("w1", n, n), ("w2", n, n)]
    report = cost_report(store, by="run")
    assert report["calls"] == 2 * n
    assert report["total_usd"] == pytest.approx(2 * n * 0.001, abs=1e-9)
    assert sorted((r["run"], r["calls"]) for r in report["rows"]) == [("w1", n), ("w2", n)]


def _hold(path: Path, read_only: bool) -> subprocess.Popen:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import duckdb, sys
            con = duckdb.connect({str(path)!r}, read_only={read_only})
            print("holding", flush=True)
            sys.stdin.readline()
        """),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
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
    from stakeflow.core.errors import ServiceError

    run_tree(provider(path))
    TraceStore(path).sync()
    holder = _hold(path, read_only=False)
    try:
        with pytest.raises(ServiceError, match=r"locked by process \d+ for more than 0.3s"):
            cost_report(TraceStore(path, lock_wait_s=0.3))
    finally:
        holder.communicate("\n")


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
