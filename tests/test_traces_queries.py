"""Queries over the trace store: a run's span tree, the cost report, read-only SQL, tables and CSV."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from stakeflow.core import semconv as sc
from stakeflow.core.errors import InputError
from stakeflow.traces import DuckDBSpanExporter, TraceStore, cost_report, format_table, run_sql, to_csv, trace_tree
from tests.trace_spans import NOW, chat_attributes, count, export_priced_runs, make_span, provider, run_tree


@pytest.fixture
def path(tmp_path) -> Path:
    return tmp_path / "traces.duckdb"


@pytest.fixture
def priced_store(path) -> TraceStore:
    return export_priced_runs(path)


# --- span tree -------------------------------------------------------------------------------


def test_unknown_run_id_is_an_input_error(path):
    run_tree(provider(path))
    with pytest.raises(InputError, match="no spans for run 'nope'.*stakeflow costs --by run"):
        trace_tree(TraceStore(path), "nope")


# --- cost report -----------------------------------------------------------------------------


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


@pytest.mark.parametrize(
    ("by", "expected"),
    [
        ("run", [("B", 0.101, 3), ("A", 0.052, 2)]),
        ("route", [("frontier", 0.15, 2), ("open", 0.003, 3)]),
        ("stakes", [("high", 0.15, 2), ("low", 0.003, 3)]),
        ("source", [("github", 0.101, 3), ("cli", 0.052, 2)]),
        ("day", [("2026-11-18", 0.101, 3), ("2026-11-20", 0.052, 2)]),
        ("tool", [("(no tool)", 0.101, 3), ("http_get", 0.05, 1), ("write_file", 0.05, 1), ("read_file", 0.002, 1)]),
    ],
)
def test_cost_report_breakdowns(priced_store, by, expected):
    rows = cost_report(priced_store, None, by)["rows"]
    assert [(r[by], r["cost_usd"], r["calls"]) for r in rows] == expected


def test_cost_of_failed_runs(priced_store):
    rows = cost_report(priced_store, by="run")["rows"]
    assert [(r["run"], r["status"]) for r in rows] == [("B", "ok"), ("A", "failed")]
    _, result = run_sql(priced_store, "SELECT sum(cost_usd) FROM runs WHERE status = 'failed'")
    assert float(result[0][0]) == 0.052


def test_a_run_in_flight_is_in_runs_without_a_status(path):
    DuckDBSpanExporter(path).export(
        [
            make_span("chat qwen", chat_attributes("C", 1, "open", "qwen", **{sc.COST_USD: 0.25})),
        ]
    )
    _, rows = run_sql(TraceStore(path), "SELECT run_id, status, ended_at, model_calls, cost_usd FROM runs")
    assert [(r[0], r[1], r[2], r[3], float(r[4])) for r in rows] == [("C", None, None, 1, 0.25)]


def test_reports_take_the_frontier_equivalent_each_call_stored(path):
    """One definition: the figure the activity stored, not a second one worked out from the route.

    The activity stores a frontier call's own cost as its equivalent; here the stored figure differs
    from the cost, so a query that worked the equivalent out again would show.
    """
    DuckDBSpanExporter(path).export(
        [
            make_span(sc.SPAN_RUN, {sc.RUN_ID: "F", sc.STATUS: "ok"}),
            make_span(
                "chat claude-haiku-4-5",
                chat_attributes(
                    "F", 1, "frontier", "claude-haiku-4-5", **{sc.COST_USD: 0.01, sc.FRONTIER_EQUIVALENT_USD: 0.04}
                ),
            ),
        ]
    )
    store = TraceStore(path)
    report = cost_report(store)
    assert (report["total_usd"], report["frontier_equivalent_usd"], report["saved_usd"]) == (0.01, 0.04, 0.03)
    assert report["rows"][0]["frontier_equivalent_usd"] == 0.04
    _, rows = run_sql(store, "SELECT frontier_equivalent_usd FROM runs WHERE run_id = 'F'")
    assert float(rows[0][0]) == 0.04


def test_cost_report_since_and_run(priced_store):
    recent = cost_report(priced_store, timedelta(days=1), "model", now=NOW)
    assert (recent["calls"], recent["total_usd"]) == (2, 0.052)
    one = cost_report(priced_store, None, "model", "B")
    assert (one["calls"], one["total_usd"], one["unpriced_calls"]) == (3, 0.101, 1)


def test_unknown_breakdown_lists_the_valid_ones(priced_store):
    with pytest.raises(InputError) as e:
        cost_report(priced_store, None, "colour")
    assert str(e.value) == "unknown breakdown 'colour': use one of run, model, route, stakes, tool, day, source, agent"


def test_an_empty_store_reports_zero_and_creates_nothing(path):
    report = cost_report(TraceStore(path))
    assert (report["calls"], report["total_usd"], report["rows"]) == (0, 0.0, [])
    assert not path.exists()


# --- SQL ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO spans (span_id, trace_id, name, start_time) VALUES ('x', 'y', 'z', now())",
        "COPY spans TO '/tmp/stolen.csv'",
        "ATTACH '/tmp/other.duckdb' AS other",
        "DROP TABLE spans",
        "DELETE FROM spans",
        "SET enable_external_access = true",
        "SELECT 1; DROP TABLE spans",
        "CREATE TABLE t AS SELECT 1",
    ],
)
def test_write_sql_is_refused(priced_store, sql):
    with pytest.raises(InputError, match="only read-only queries|exactly one SQL statement"):
        run_sql(priced_store, sql)
    assert count(priced_store) == 11


def test_read_sql_runs_and_cannot_reach_other_files(priced_store):
    columns, rows = run_sql(
        priced_store,
        "SELECT request_model, count(*) AS n FROM spans WHERE operation = 'chat' GROUP BY ALL ORDER BY n DESC, 1",
    )
    assert columns == ["request_model", "n"]
    assert rows == [("claude-sonnet-4-6", 2), ("qwen", 2), ("llama", 1)]
    with pytest.raises(InputError, match="SQL failed"):
        run_sql(priced_store, "SELECT * FROM read_csv('/etc/passwd')")
    with pytest.raises(InputError, match="does not parse"):
        run_sql(priced_store, "SELEKT 1")


# --- tables ----------------------------------------------------------------------------------


def test_format_table_and_csv():
    columns, rows = ["model", "calls", "cost_usd"], [["qwen", 2, 0.002], ["a-long-model-name", 10, None]]
    assert format_table(columns, rows) == (
        "model              calls  cost_usd\n"
        "-----------------  -----  --------\n"
        "qwen                   2  0.002000\n"
        "a-long-model-name     10      NULL"
    )
    assert to_csv(columns, rows) == "model,calls,cost_usd\nqwen,2,0.002\na-long-model-name,10,\n"
