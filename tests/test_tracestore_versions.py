"""Trace stores written by other stakeflow versions: a newer one refused, older ones migrated with their rows and
figures (tests/test_tracestore.py has the store itself)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from stakeflow.core.errors import ConfigError
from stakeflow.traces import (
    MIGRATIONS,
    TraceStore,
    cost_report,
    render_tree,
    trace_tree,
)
from tests.trace_spans import count, provider, run_tree


@pytest.fixture
def path(tmp_path) -> Path:
    return tmp_path / "traces.duckdb"


def test_a_store_from_a_newer_stakeflow_is_refused(path):
    TraceStore(path).compact()
    con = duckdb.connect(str(path))
    con.execute("INSERT INTO schema_migrations VALUES (99, 'future', now()::TIMESTAMP)")
    con.close()
    with pytest.raises(ConfigError, match="newer stakeflow \\(schema version 99"):
        cost_report(TraceStore(path))


def _version_1_store(path: Path) -> None:
    """The file a stakeflow of schema version 1 left: its migration, its record, rows its ingest wrote."""
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, description VARCHAR NOT NULL, "
        "applied_at TIMESTAMP NOT NULL)"
    )
    MIGRATIONS[0].apply(con)
    con.execute("INSERT INTO schema_migrations VALUES (1, 'spans table and runs view', now()::TIMESTAMP)")
    row = (
        "INSERT INTO spans (span_id, trace_id, name, start_time, end_time, run_id, step, route, operation, "
        "request_model, cost_usd, frontier_equivalent_usd, unpriced) VALUES (?, 't', ?, TIMESTAMP '2026-11-20', "
        "TIMESTAMP '2026-11-20', 'old', ?, ?, ?, ?, ?, ?, ?)"
    )
    con.executemany(
        row,
        [
            ("a", "stakeflow.run", None, None, None, None, None, None, False),
            ("b", "chat qwen", 1, "open", "chat", "qwen", 0.002, 0.03, False),
            ("c", "chat claude-sonnet-4-6", 2, "frontier", "chat", "claude-sonnet-4-6", 0.05, 0.05, False),
            # A frontier call stored without the attribute (a span from another producer): version 1's
            # queries took its cost as its equivalent.
            ("d", "chat claude-sonnet-4-6", 3, "frontier", "chat", "claude-sonnet-4-6", 0.1, None, False),
            ("e", "chat qwen", 4, "open", "chat", "qwen", None, 0.01, True),
        ],
    )
    con.close()


def test_a_version_1_store_opens_migrated_with_its_rows_and_figures(path):
    _version_1_store(path)
    store = TraceStore(path)
    report = cost_report(store)  # a reader: upgrades the file once, then reads it
    assert (report["calls"], report["total_usd"], report["unpriced_calls"]) == (4, 0.152, 1)
    assert report["frontier_equivalent_usd"] == 0.18  # 0.03 + 0.05 + 0.1; the unpriced call is left out
    assert report["saved_usd"] == 0.028
    with store.reader() as con:
        from stakeflow.traces import MIGRATIONS

        # Every migration since version 1 applied, each recorded once, in order.
        assert con.execute("SELECT version, description FROM schema_migrations ORDER BY version").fetchall() == [
            (m.version, m.description) for m in MIGRATIONS
        ]
        assert [m.version for m in MIGRATIONS][:2] == [1, 2]
        assert con.execute(
            "SELECT span_id, frontier_equivalent_usd::DOUBLE FROM spans WHERE route = 'frontier' ORDER BY span_id"
        ).fetchall() == [("c", 0.05), ("d", 0.1)]
        run = con.execute(
            "SELECT run_id, model_calls, unpriced_calls, cost_usd::DOUBLE, frontier_equivalent_usd::DOUBLE FROM runs"
        ).fetchall()
    assert run == [("old", 4, 1, 0.152, 0.18)]
    run_tree(provider(path), "new")  # and it takes new spans as before
    assert store.sync().spans_inserted == 7
    assert count(store) == 12


def _version_2_store(path: Path) -> None:
    """A version-2 file: a step stored with gen_ai.request.model (as steps were traced before), one stored
    with only stakeflow.model (traced since, ingested by a version-2 stakeflow: no request_model), and an
    all-unpriced run's span as version 2 ingested it (cost $0, not unpriced)."""
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, description VARCHAR NOT NULL, "
        "applied_at TIMESTAMP NOT NULL)"
    )
    for m in MIGRATIONS[:2]:
        m.apply(con)
        con.execute("INSERT INTO schema_migrations VALUES (?, ?, now()::TIMESTAMP)", [m.version, m.description])
    row = (
        "INSERT INTO spans (span_id, trace_id, parent_span_id, name, start_time, end_time, run_id, step, "
        "purpose, operation, request_model, cost_usd, frontier_equivalent_usd, unpriced, input_tokens, "
        "attributes) VALUES (?, 't', ?, ?, TIMESTAMP '2026-11-20', TIMESTAMP '2026-11-20', 'old', ?, ?, ?, ?, ?, "
        "?, ?, ?, ?)"
    )
    con.executemany(
        row,
        [
            (
                "run",
                None,
                "stakeflow.run",
                None,
                None,
                None,
                None,
                0.0,
                0.0,
                False,
                None,
                '{"stakeflow.unpriced_calls": 2, "stakeflow.cost_usd": 0.0}',
            ),
            (
                "s1",
                "run",
                "stakeflow.step",
                1,
                "step",
                None,
                "qwen",
                None,
                None,
                False,
                None,
                '{"gen_ai.request.model": "qwen"}',
            ),
            (
                "s2",
                "run",
                "stakeflow.step",
                2,
                "step",
                None,
                None,
                None,
                None,
                False,
                None,
                '{"stakeflow.model": "claude-sonnet-4-6"}',
            ),
            ("c1", "s1", "chat qwen", 1, "step", "chat", "qwen", None, None, True, 700, "{}"),
            ("c2", "s2", "chat claude-sonnet-4-6", 2, "step", "chat", "claude-sonnet-4-6", None, None, True, 900, "{}"),
        ],
    )
    con.close()


def test_a_version_2_store_gets_step_models_and_unpriced_runs(path):
    _version_2_store(path)
    store = TraceStore(path)
    tree = trace_tree(store, "old")  # a reader: migrates the file, then reads it
    assert [(r["name"], r["model"], r["cost_usd"], r["unpriced"]) for r in tree] == [
        ("stakeflow.run", None, None, True),
        ("stakeflow.step", "qwen", None, False),
        ("chat qwen", "qwen", None, True),
        ("stakeflow.step", "claude-sonnet-4-6", None, False),
        ("chat claude-sonnet-4-6", "claude-sonnet-4-6", None, True),
    ]
    assert render_tree(tree).splitlines()[-1] == '2 model calls, UNPRICED: add [prices."<model id>"] to stakeflow.toml'
    with store.reader() as con:
        assert con.execute(
            "SELECT model_calls, unpriced_calls, cost_usd, frontier_equivalent_usd, input_tokens FROM runs"
        ).fetchall() == [(2, 2, None, None, 1600)]


def test_ingest_reads_a_step_model_from_either_attribute_and_flags_unpriced_runs(path):
    tp = provider(path)
    span = tp.get_tracer("t").start_as_current_span
    with span("stakeflow.run", attributes={"stakeflow.run_id": "r"}) as run:
        with span(
            "stakeflow.step", attributes={"stakeflow.run_id": "r", "stakeflow.step": 1, "stakeflow.model": "qwen"}
        ):
            pass
        with span(
            "stakeflow.step", attributes={"stakeflow.run_id": "r", "stakeflow.step": 2, "gen_ai.request.model": "llama"}
        ):  # as a step was traced before
            pass
        run.set_attributes(
            {"stakeflow.cost_usd": 0.0, "stakeflow.frontier_equivalent_usd": 0.0, "stakeflow.unpriced_calls": 1}
        )
    with span(
        "stakeflow.run", attributes={"stakeflow.run_id": "p", "stakeflow.cost_usd": 0.25, "stakeflow.unpriced_calls": 1}
    ):
        pass  # some calls priced: the cost is a lower bound, kept, and flagged
    store = TraceStore(path)
    for _ in range(2):  # from the spool, then from the table
        with store.reader() as con:
            assert con.execute(
                "SELECT step, request_model FROM spans WHERE name = 'stakeflow.step' ORDER BY step"
            ).fetchall() == [(1, "qwen"), (2, "llama")]
            assert con.execute(
                "SELECT run_id, cost_usd::DOUBLE, frontier_equivalent_usd, unpriced FROM spans "
                "WHERE name = 'stakeflow.run' ORDER BY run_id"
            ).fetchall() == [("p", 0.25, None, True), ("r", None, None, True)]
            assert con.execute("SELECT run_id, unpriced_calls FROM runs ORDER BY run_id").fetchall() == [
                ("p", 1),
                ("r", 1),
            ]
        store.sync()
