"""The trace store's schema, as numbered migrations. APPEND ONLY.

Databases in the field have run every migration here and recorded its number and description in
``schema_migrations``; a released migration therefore never changes, and a schema change is a new
function at the end of this file, reviewed on its own (simonw/llm keeps its migrations the same
way). ``migrate`` applies those after the version a database has, each in one transaction with its
record, so a crash leaves the file at the previous version, never half-way.

Migration 1 creates ``spans`` (one row per span: the raw span plus the attributes the cost queries
use, promoted to columns by ``_segments.spans_select``) and the ``runs`` view; migration 2 makes that
view read the stored frontier equivalent; migration 3 gives step spans their model from
``stakeflow.model``, marks runs with unpriced calls, and adds token totals to the view.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb

from stakeflow.core.errors import ConfigError
from stakeflow.traces._rows import one_row

_SCHEMA_MIGRATIONS = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY, description VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL
)
"""


@dataclass(frozen=True)
class Migration:
    """One schema change: its number, the description recorded with it, and what it does."""

    version: int
    description: str
    apply: Callable[[duckdb.DuckDBPyConnection], None]


MIGRATIONS: list[Migration] = []


def migration(version: int, description: str) -> Callable[[Callable], Callable]:
    """Register the decorated function as migration ``version``; versions must follow each other."""

    def register(apply: Callable[[duckdb.DuckDBPyConnection], None]) -> Callable:
        expected = MIGRATIONS[-1].version + 1 if MIGRATIONS else 1
        if version != expected:
            raise RuntimeError(f"migration {apply.__name__} is numbered {version}: the next one is {expected}")
        MIGRATIONS.append(Migration(version, description, apply))
        return apply

    return register


def schema_version() -> int:
    """The version this stakeflow writes: its last migration."""
    return MIGRATIONS[-1].version


def applied_version(con: duckdb.DuckDBPyConnection, path: Path) -> int:
    """What is there: 0 for an empty database, else the last migration applied to it.

    ConfigError for a DuckDB file that holds other tables and no ``schema_migrations`` (not a trace
    store: never migrate it), or one a newer stakeflow wrote. duckdb.Error when it cannot be read.
    """
    tables = [
        r[0]
        for r in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
            "UNION ALL SELECT view_name FROM duckdb_views() "
            "WHERE database_name = current_database() AND NOT internal"
        ).fetchall()
    ]
    if "schema_migrations" not in tables:
        if tables:
            shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
            raise ConfigError(
                f"{path} is a DuckDB file but not a stakeflow trace store (it has {shown} and "
                "no schema_migrations table): move it aside or set STAKEFLOW_TRACES to another file"
            )
        return 0
    version = one_row(con, "SELECT coalesce(max(version), 0) FROM schema_migrations")[0]
    if version > schema_version():
        raise ConfigError(
            f"{path} was written by a newer stakeflow (schema version {version}, this one knows "
            f"{schema_version()}): upgrade stakeflow, or move it aside or set STAKEFLOW_TRACES to another file"
        )
    return version


def migrate(con: duckdb.DuckDBPyConnection, current: int) -> None:
    """Apply every migration after version ``current`` (0: an empty database), each with its record."""
    for m in MIGRATIONS:
        if m.version <= current:
            continue
        con.execute("BEGIN")
        try:
            con.execute(_SCHEMA_MIGRATIONS)
            m.apply(con)
            con.execute("INSERT INTO schema_migrations VALUES (?, ?, now()::TIMESTAMP)", [m.version, m.description])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise


# --- the migrations, oldest first; append below ------------------------------------------------

# Frozen with migration 1; migration 2 derives its view from this text.
_SPANS_TABLE_1 = """
CREATE TABLE spans (
    span_id VARCHAR PRIMARY KEY,
    trace_id VARCHAR NOT NULL,
    parent_span_id VARCHAR,
    name VARCHAR NOT NULL,
    kind VARCHAR,
    start_time TIMESTAMP NOT NULL,  -- UTC
    end_time TIMESTAMP,             -- UTC
    duration_ms DOUBLE,
    status_code VARCHAR,            -- UNSET | OK | ERROR
    status_message VARCHAR,
    service_name VARCHAR,
    attributes JSON,                -- every span attribute but those the secrets filter drops
    resource JSON,
    run_id VARCHAR,
    step INTEGER,
    purpose VARCHAR,
    route VARCHAR,
    stakes VARCHAR,
    reason VARCHAR,
    source VARCHAR,
    operation VARCHAR,              -- gen_ai.operation.name: chat | execute_tool
    provider VARCHAR,
    request_model VARCHAR,
    response_model VARCHAR,
    tool_name VARCHAR,
    input_tokens BIGINT,            -- gen_ai.usage.input_tokens: uncached + cache read + cache write
    raw_input_tokens BIGINT,        -- the provider's own input figure (Anthropic: uncached only)
    output_tokens BIGINT,
    cache_read_tokens BIGINT,
    cache_write_tokens BIGINT,
    cost_usd DECIMAL(18, 9),        -- NULL when unpriced
    frontier_equivalent_usd DECIMAL(18, 9),
    price_version VARCHAR,
    unpriced BOOLEAN,               -- a model call with no price: never counted as $0
    attempt INTEGER,
    escalated BOOLEAN,
    status VARCHAR,                 -- stakeflow.status
    error_type VARCHAR
);
"""

_RUNS_VIEW_1 = """
CREATE VIEW runs AS
WITH run_spans AS (
    SELECT run_id,
        arg_max(status, end_time) AS status,
        arg_max(source, end_time) AS source,
        arg_max(stakes, end_time) AS stakes,
        arg_max(json_extract_string(attributes, '$."stakeflow.sensitivity"'), end_time) AS sensitivity,
        min(start_time) AS started_at,
        max(end_time) AS ended_at,
        arg_max(TRY_CAST(json_extract_string(attributes, '$."stakeflow.steps"') AS INTEGER), end_time) AS steps,
        arg_max(TRY_CAST(json_extract_string(attributes, '$."stakeflow.open_steps"') AS INTEGER), end_time)
            AS open_steps,
        arg_max(TRY_CAST(json_extract_string(attributes, '$."stakeflow.frontier_steps"') AS INTEGER), end_time)
            AS frontier_steps,
        arg_max(TRY_CAST(json_extract_string(attributes, '$."stakeflow.escalations"') AS INTEGER), end_time)
            AS escalations
    FROM spans
    WHERE name = 'stakeflow.run' AND run_id IS NOT NULL
    GROUP BY run_id
), calls AS (
    SELECT run_id,
        count(*) AS model_calls,
        count(*) FILTER (WHERE unpriced) AS unpriced_calls,
        sum(cost_usd) AS cost_usd,
        sum(CASE WHEN unpriced THEN NULL WHEN route = 'frontier' THEN cost_usd ELSE frontier_equivalent_usd END)
            AS frontier_equivalent_usd
    FROM spans
    WHERE operation = 'chat' AND run_id IS NOT NULL
    GROUP BY run_id
)
SELECT run_id, r.status, r.source, r.stakes, r.sensitivity, r.started_at, r.ended_at,
    (epoch_us(r.ended_at) - epoch_us(r.started_at)) / 1000.0 AS duration_ms,
    r.steps, r.open_steps, r.frontier_steps, r.escalations,
    coalesce(c.model_calls, 0) AS model_calls, coalesce(c.unpriced_calls, 0) AS unpriced_calls,
    c.cost_usd, c.frontier_equivalent_usd
FROM run_spans r FULL OUTER JOIN calls c USING (run_id);
"""


@migration(1, "spans table and runs view")
def _spans_table_and_runs_view(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(_SPANS_TABLE_1)
    con.execute(_RUNS_VIEW_1)


_EQUIVALENT_1 = (
    "sum(CASE WHEN unpriced THEN NULL WHEN route = 'frontier' THEN cost_usd ELSE frontier_equivalent_usd END)"
)
_EQUIVALENT_2 = "sum(frontier_equivalent_usd) FILTER (WHERE unpriced IS NOT TRUE)"


@migration(2, "runs view reads the stored frontier equivalent")
def _stored_frontier_equivalent(con: duckdb.DuckDBPyConnection) -> None:
    """The activity stores each call's frontier equivalent (a frontier call's is its own cost): read it.

    Version 1's ``runs`` view worked it out again for frontier calls; this one is that view with the
    stored column summed instead (over priced calls, as before). Frontier rows stored without the
    attribute (spans from another producer: stakeflow's activity has set it on every priced frontier
    call since the store exists) get their own cost as equivalent, here for stored rows and at ingest
    (``_segments.spans_select``) for new ones, so every query can read the one column.
    """
    con.execute(
        "UPDATE spans SET frontier_equivalent_usd = cost_usd "
        "WHERE route = 'frontier' AND frontier_equivalent_usd IS NULL AND cost_usd IS NOT NULL"
    )
    con.execute(_RUNS_VIEW_1.replace("CREATE VIEW", "CREATE OR REPLACE VIEW", 1).replace(_EQUIVALENT_1, _EQUIVALENT_2))


_RUNS_VIEW_3 = """
CREATE OR REPLACE VIEW runs AS
WITH run_spans AS (
    SELECT run_id,
        arg_max(status, end_time) AS status,
        arg_max(source, end_time) AS source,
        arg_max(stakes, end_time) AS stakes,
        arg_max(json_extract_string(attributes, '$."stakeflow.sensitivity"'), end_time) AS sensitivity,
        min(start_time) AS started_at,
        max(end_time) AS ended_at,
        arg_max(TRY_CAST(json_extract_string(attributes, '$."stakeflow.steps"') AS INTEGER), end_time) AS steps,
        arg_max(TRY_CAST(json_extract_string(attributes, '$."stakeflow.open_steps"') AS INTEGER), end_time)
            AS open_steps,
        arg_max(TRY_CAST(json_extract_string(attributes, '$."stakeflow.frontier_steps"') AS INTEGER), end_time)
            AS frontier_steps,
        arg_max(TRY_CAST(json_extract_string(attributes, '$."stakeflow.escalations"') AS INTEGER), end_time)
            AS escalations,
        arg_max(TRY_CAST(json_extract_string(attributes, '$."stakeflow.unpriced_calls"') AS INTEGER), end_time)
            AS unpriced_calls
    FROM spans
    WHERE name = 'stakeflow.run' AND run_id IS NOT NULL
    GROUP BY run_id
), calls AS (
    SELECT run_id,
        count(*) AS model_calls,
        count(*) FILTER (WHERE unpriced) AS unpriced_calls,
        sum(cost_usd) AS cost_usd,
        sum(frontier_equivalent_usd) FILTER (WHERE unpriced IS NOT TRUE) AS frontier_equivalent_usd,
        sum(input_tokens) AS input_tokens,
        sum(output_tokens) AS output_tokens,
        sum(cache_read_tokens) AS cache_read_tokens,
        sum(cache_write_tokens) AS cache_write_tokens
    FROM spans
    WHERE operation = 'chat' AND run_id IS NOT NULL
    GROUP BY run_id
)
SELECT run_id, r.status, r.source, r.stakes, r.sensitivity, r.started_at, r.ended_at,
    (epoch_us(r.ended_at) - epoch_us(r.started_at)) / 1000.0 AS duration_ms,
    r.steps, r.open_steps, r.frontier_steps, r.escalations,
    coalesce(c.model_calls, 0) AS model_calls,
    greatest(coalesce(c.unpriced_calls, 0), coalesce(r.unpriced_calls, 0)) AS unpriced_calls,
    c.cost_usd, c.frontier_equivalent_usd,
    coalesce(c.input_tokens, 0) AS input_tokens, coalesce(c.output_tokens, 0) AS output_tokens,
    coalesce(c.cache_read_tokens, 0) AS cache_read_tokens, coalesce(c.cache_write_tokens, 0) AS cache_write_tokens
FROM run_spans r FULL OUTER JOIN calls c USING (run_id);
"""


@migration(3, "step models, unpriced runs, token totals in the runs view")
def _step_models_unpriced_runs_and_tokens(con: duckdb.DuckDBPyConnection) -> None:
    """Three things an OTLP-minded reader of the store needs, in the definitions ``_segments`` now ingests.

    * A step span names its model in ``stakeflow.model`` (not ``gen_ai.request.model``, which backends
      count as an LLM call): steps stored since then get it in ``request_model``, like older steps.
    * A run span carries ``stakeflow.unpriced_calls``: such a run is ``unpriced``, and its $0 cost (or
      frontier equivalent) is NULL, as a model call without a price is; the ``runs`` view's
      ``unpriced_calls`` is the larger of the run span's count and the call spans' (call spans are
      exported in batches, so a killed worker may have lost some; the run span is exported at once).
      ``cost_usd`` stays the sum over priced calls, NULL when none was priced, as in `stakeflow costs`.
    * The view sums each run's tokens from its call spans, ``input_tokens`` including the cache (one
      definition everywhere: ``stakeflow.agents.types.Usage``). Raw input figures are not summed: they mean
      different things on the two routes.
    """
    con.execute(
        "UPDATE spans SET request_model = json_extract_string(attributes, '$.\"stakeflow.model\"') "
        "WHERE name = 'stakeflow.step' AND request_model IS NULL"
    )
    unpriced_calls = "TRY_CAST(json_extract_string(attributes, '$.\"stakeflow.unpriced_calls\"') AS INTEGER)"
    con.execute(
        "UPDATE spans SET unpriced = true, "
        "cost_usd = CASE WHEN cost_usd = 0 THEN NULL ELSE cost_usd END, "
        "frontier_equivalent_usd = CASE WHEN frontier_equivalent_usd = 0 THEN NULL ELSE frontier_equivalent_usd END "
        f"WHERE name = 'stakeflow.run' AND {unpriced_calls} > 0"
    )
    con.execute(_RUNS_VIEW_3)


_RUNS_VIEW_4 = _RUNS_VIEW_3.replace(
    "        arg_max(source, end_time) AS source,\n",
    "        arg_max(source, end_time) AS source,\n        arg_max(agent, end_time) AS agent,\n",
    1,
).replace("SELECT run_id, r.status, r.source,", "SELECT run_id, r.status, r.source, r.agent,", 1)


@migration(4, "agent column on spans and in the runs view")
def _agent_column(con: duckdb.DuckDBPyConnection) -> None:
    """Named agents: `stakeflow.agent` on run and model-call spans, promoted so `costs --by agent` groups by it."""
    con.execute("ALTER TABLE spans ADD COLUMN agent VARCHAR")
    con.execute("UPDATE spans SET agent = json_extract_string(attributes, '$.\"stakeflow.agent\"')")
    con.execute(_RUNS_VIEW_4)


_RECORD_TABLES_5 = (
    """CREATE TABLE IF NOT EXISTS "evals" (
    "eval_id" VARCHAR PRIMARY KEY,
    "recorded_at" TIMESTAMP,
    "run_id" VARCHAR,
    "shadow_run_id" VARCHAR,
    "step" INTEGER,
    "kind" VARCHAR,
    "tool" VARCHAR,
    "agent" VARCHAR,
    "open_model" VARCHAR,
    "frontier_model" VARCHAR,
    "verdict" VARCHAR,
    "method" VARCHAR,
    "reason" VARCHAR,
    "open_cost_usd" DOUBLE,
    "frontier_cost_usd" DOUBLE,
    "judge_cost_usd" DOUBLE,
    "open_latency_ms" DOUBLE,
    "frontier_latency_ms" DOUBLE,
    "judge_prompt_version" VARCHAR,
    "source" VARCHAR,
    "prompt" VARCHAR,
    "open_output" VARCHAR,
    "frontier_output" VARCHAR
)""",
    """CREATE TABLE IF NOT EXISTS "captures" (
    "capture_id" VARCHAR PRIMARY KEY,
    "recorded_at" TIMESTAMP,
    "run_id" VARCHAR,
    "step" INTEGER,
    "purpose" VARCHAR,
    "tool" VARCHAR,
    "agent" VARCHAR,
    "route" VARCHAR,
    "model" VARCHAR,
    "source" VARCHAR,
    "sensitivity" VARCHAR,
    "include_private" BOOLEAN,
    "price_version" VARCHAR,
    "ok" BOOLEAN,
    "request" JSON,
    "response" JSON,
    "approval" VARCHAR,
    "approved_action" JSON
)""",
)


@migration(5, "evals and captures tables")
def _evals_and_captures(con: duckdb.DuckDBPyConnection) -> None:
    """Shadow evaluations and captured model calls, written by workers as record files (``_records``)."""
    for statement in _RECORD_TABLES_5:
        con.execute(statement)


_LABELS_TABLE_6 = """CREATE TABLE IF NOT EXISTS "labels" (
    "label_id" VARCHAR PRIMARY KEY,
    "recorded_at" TIMESTAMP,
    "run_id" VARCHAR,
    "step" INTEGER,
    "decision" VARCHAR,
    "by" VARCHAR,
    "note" VARCHAR,
    "edited_calls" JSON
)"""


@migration(6, "labels table")
def _labels(con: duckdb.DuckDBPyConnection) -> None:
    """A person's decision on a captured step (approved, rejected, edited): what a dataset labels it with."""
    con.execute(_LABELS_TABLE_6)


_RUNS_VIEW_7 = _RUNS_VIEW_4.replace(
    "            AS unpriced_calls\n    FROM spans\n    WHERE name = 'stakeflow.run'",
    "            AS unpriced_calls,\n"
    "        arg_max(TRY_CAST(json_extract_string(attributes, '$.\"stakeflow.downgraded_by_budget\"') AS INTEGER),"
    " end_time)\n            AS downgraded_by_budget\n    FROM spans\n    WHERE name = 'stakeflow.run'",
    1,
).replace(
    "r.steps, r.open_steps, r.frontier_steps, r.escalations,",
    "r.steps, r.open_steps, r.frontier_steps, r.escalations, coalesce(r.downgraded_by_budget, 0) AS downgraded_by_budget,",
    1,
)


@migration(7, "frontier budget downgrades in the runs view")
def _budget_downgrades(con: duckdb.DuckDBPyConnection) -> None:
    """Frontier budgets (issue 24): how many of each run's model calls a spent budget kept on the open model, from
    the run span's ``stakeflow.downgraded_by_budget`` (0 for runs before budgets)."""
    con.execute(_RUNS_VIEW_7)


_RUNS_VIEW_8 = _RUNS_VIEW_7.replace(
    " end_time)\n            AS downgraded_by_budget\n    FROM spans\n    WHERE name = 'stakeflow.run'",
    " end_time)\n            AS downgraded_by_budget,\n"
    "        arg_max(TRY_CAST(json_extract_string(attributes, '$.\"stakeflow.answer_supported\"') AS BOOLEAN), end_time)\n"
    "            AS answer_supported,\n"
    "        arg_max(json_extract(attributes, '$.\"stakeflow.unsupported_claims\"'), end_time) AS unsupported_claims,\n"
    "        arg_max(TRY_CAST(json_extract_string(attributes, '$.\"stakeflow.replans\"') AS INTEGER), end_time)\n"
    "            AS replans\n    FROM spans\n    WHERE name = 'stakeflow.run'",
    1,
).replace(
    "coalesce(r.downgraded_by_budget, 0) AS downgraded_by_budget,",
    "coalesce(r.downgraded_by_budget, 0) AS downgraded_by_budget, r.answer_supported, r.unsupported_claims, r.replans,",
    1,
)


@migration(8, "the answer check and replans in the runs view")
def _answer_check(con: duckdb.DuckDBPyConnection) -> None:
    """The agent loop (issue 22): whether each run's answer was supported by what it observed (NULL: not checked, as
    runs before it), the claims that were not, and how often its plan was revised — read from the run span."""
    con.execute(_RUNS_VIEW_8)
