"""The DuckDB trace store: spans from every stakeflow process, read back as run trees, bills and SQL.

Workers export spans as segments (Parquet, or NDJSON journals compacted into Parquet) into a spool beside the
DuckDB file and never open the file; readers ingest the segments (span ids are primary keys: nothing lost, nothing counted twice)
and see those still pending. One job per module:

* ``_migrations``: the schema, as numbered migrations (append only).
* ``_segments``: the spool's file format, and how a segment row becomes a ``spans`` row.
* ``_exporter``: ``DuckDBSpanExporter``, the span processors of a process.
* ``_redaction``: the secrets filter every span passes on its way to the store or an OTLP backend.
* ``_store``: ``TraceStore``: ingest, compaction, the read-only connection that includes the spool.
* ``_tree``, ``_costs``, ``_sql``, ``_agreement``: the readers (a run's span tree, the cost report, ``stakeflow sql``,
  the open path's measured agreement); ``_evals`` (shadow agreement, grouped) and ``_routing`` (routing events,
  observed routing, slow runs), which the dashboard (``stakeflow.services.report``) reads beside the cost report.
  They import the store; the store imports none of them.
* ``_tables``: results as text tables and CSV.
* ``_records``: ``RecordWriter``, rows of the record tables (evals, captures, labels) as spool files.
* ``_rows``: ``one_row``, the row of a query that always returns one (typed: never None).
"""

from stakeflow.traces._agreement import agreement_table
from stakeflow.traces._costs import BREAKDOWNS, CostGroup, cost_report, grouped_costs, summary_line, window_start
from stakeflow.traces._evals import EVAL_KEYS, AgreementGroup, agreement_groups
from stakeflow.traces._exporter import DuckDBSpanExporter, build_span_processors
from stakeflow.traces._migrations import MIGRATIONS
from stakeflow.traces._records import RecordWriter
from stakeflow.traces._redaction import keep_attribute
from stakeflow.traces._routing import (
    EVENT_MARKERS,
    ObservedRoute,
    RouteEvent,
    RunTiming,
    observed_routing,
    route_events,
    slowest_runs,
)
from stakeflow.traces._segments import segment_files, spool_dir_for
from stakeflow.traces._sql import run_sql
from stakeflow.traces._store import SCHEMA_VERSION, SyncResult, TraceStore
from stakeflow.traces._tables import format_table, to_csv
from stakeflow.traces._tree import render_tree, trace_tree

__all__ = [
    "BREAKDOWNS",
    "EVAL_KEYS",
    "EVENT_MARKERS",
    "AgreementGroup",
    "CostGroup",
    "ObservedRoute",
    "RouteEvent",
    "RunTiming",
    "agreement_groups",
    "grouped_costs",
    "observed_routing",
    "route_events",
    "slowest_runs",
    "window_start",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "DuckDBSpanExporter",
    "RecordWriter",
    "SyncResult",
    "TraceStore",
    "agreement_table",
    "build_span_processors",
    "cost_report",
    "format_table",
    "keep_attribute",
    "render_tree",
    "run_sql",
    "segment_files",
    "spool_dir_for",
    "summary_line",
    "to_csv",
    "trace_tree",
]
