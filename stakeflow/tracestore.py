"""The DuckDB trace store: a span exporter that never waits for the database, and the store that reads it.

Design. DuckDB lets one process open a file read-write, or many open it read-only, and a read-only
open fails while a writer holds it. Workers export spans all the time and a CLI reads whenever a
user asks, so nobody may hold the write lock for long and nobody may wait for it at all on the hot
path. Hence two halves:

* ``DuckDBSpanExporter`` (in every worker, behind a BatchSpanProcessor) never opens the DuckDB
  file. Each batch becomes one *segment*: the raw spans (ids, name, kind, times, status, resource
  and attributes as JSON) written as Parquet by an in-memory DuckDB to a hidden temporary name,
  then ``os.replace``-d to ``<traces>.spool/<host>-<pid>-<token>-<seq>.parquet``. The rename is
  atomic, so a segment is seen whole or not at all, and no two processes ever contend for a lock.
  ``token`` is random per process: a recycled pid can never overwrite a segment not yet ingested.
* ``TraceStore`` ingests segments: it opens the file read-write (retrying with backoff while another
  process holds it), inserts each chunk of segments in ONE transaction with ``ON CONFLICT DO
  NOTHING`` on the ``span_id`` primary key, commits, and only then deletes the chunk's files. A crash
  between commit and delete re-ingests those segments later, harmlessly: span ids are unique, so
  nothing is counted twice (the same holds when a replayed workflow exports a span id again).
  Promoting attributes to columns happens here, in SQL (``json_transform`` parses each span's
  attributes once), so the exporter's per-span Python work stays small and a later migration can
  re-derive columns from ``attributes``.
* Readers (``reader()``, and every query in ``stakeflow.costs``) open read-only and see the pending
  spool too: when segments are waiting, a temporary ``spans`` view unions the table with the
  segments' spans whose ids the table does not have yet. So a reader whose ``sync()`` could not
  get the write lock within its short deadline (other readers hold the file) still sees every span
  exactly once, and nothing ever waits on the workers. A reader only waits (up to ``lock_wait_s``)
  while a sync holds the write lock, and a sync bounds that time with ``budget_s`` and by ingesting
  in chunks. A reader holds the file (read-only) for as long as it reads the spool, so no sync can
  ingest and delete a segment under its query; with segments pending and no file yet, it creates the
  store first. Within one process, store access is serialized per file (DuckDB refuses a read-only
  and a read-write connection to one file in one process).

Parquet rather than JSON segments because they are typed, ~10x smaller (the spool may wait days for
a reader when nobody runs a command) and read much faster at ingest. Segments that cannot be read
(truncated by a power loss; nothing here fsyncs) are moved to ``<spool>/quarantine/`` with a warning
instead of blocking ingest forever.

Schema. Numbered migrations in ``MIGRATIONS``, applied in a transaction each and recorded in
``schema_migrations``; migration 1 creates ``spans`` and the ``runs`` view. A file that is not DuckDB,
or a DuckDB file without ``schema_migrations`` that holds other tables, is refused with a
ConfigError naming the path and the fix.

Secrets. The exporter drops every attribute (span and resource) whose key contains ``api_key``,
``apikey``, ``authorization``, ``secret``, ``token`` or ``password`` (case-insensitive, ``-`` read as
``_``), except the usage counts under ``gen_ai.usage.`` and ``stakeflow.usage.``. Values are not
inspected: secrets must never be put on a span in the first place; this is the second line. The
same filter applies to spans sent to an OTLP backend.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
import random
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter, SpanExportResult

from stakeflow import semconv as sc
from stakeflow.costs import cost_report, format_table, render_tree, run_sql, to_csv, trace_tree
from stakeflow.errors import ConfigError, ServiceError

if TYPE_CHECKING:
    from stakeflow.settings import Settings

__all__ = [
    "MIGRATIONS", "SCHEMA_VERSION", "DuckDBSpanExporter", "SyncResult", "TraceStore", "build_span_processors",
    "cost_report", "format_table", "keep_attribute", "render_tree", "run_sql", "spool_dir_for", "to_csv",
    "trace_tree",
]

_log = logging.getLogger(__name__)

# --- secrets filter --------------------------------------------------------------------------

REDACTED_KEY_PARTS = ("api_key", "apikey", "authorization", "secret", "token", "password")
USAGE_PREFIXES = ("gen_ai.usage.", "stakeflow.usage.")
_verdicts: dict[str, bool] = {}
_clean_key_sets: dict[tuple[str, ...], bool] = {}


def keep_attribute(key: str) -> bool:
    """False for keys that may carry a credential; usage token counts are kept."""
    verdict = _verdicts.get(key)
    if verdict is None:
        lowered = key.lower().replace("-", "_")
        verdict = key.startswith(USAGE_PREFIXES) or not any(p in lowered for p in REDACTED_KEY_PARTS)
        if len(_verdicts) < 100_000:
            _verdicts[key] = verdict
    return verdict


def _filtered(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    if not attributes:
        return {}
    # A span's attributes are a mappingproxy over BoundedAttributes, whose copy() is a plain dict
    # copy: ten times faster than iterating the proxy.
    copy = getattr(attributes, "copy", None)
    kept = copy() if copy is not None else None
    if not isinstance(kept, dict):
        kept = dict(attributes)
    keys = tuple(kept)
    clean = _clean_key_sets.get(keys)  # spans of one kind repeat the same keys: judge them once
    if clean is None:
        clean = all(keep_attribute(k) for k in keys)
        if len(_clean_key_sets) < 10_000:
            _clean_key_sets[keys] = clean
    if not clean:
        for key in [k for k in keys if not keep_attribute(k)]:
            del kept[key]
    return kept


# --- schema ----------------------------------------------------------------------------------

_MIGRATION_1 = """
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

# (version, description, SQL). Append only: a released migration never changes.
MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (1, "spans table and runs view", _MIGRATION_1),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]

_SCHEMA_MIGRATIONS = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY, description VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL
)
"""

# Column of `spans`, attribute key, SQL type: what ingest promotes out of the attributes JSON.
PROMOTED: tuple[tuple[str, str, str], ...] = (
    ("run_id", sc.RUN_ID, "VARCHAR"),
    ("step", sc.STEP, "INTEGER"),
    ("purpose", sc.PURPOSE, "VARCHAR"),
    ("route", sc.ROUTE, "VARCHAR"),
    ("stakes", sc.STAKES, "VARCHAR"),
    ("reason", sc.REASON, "VARCHAR"),
    ("source", sc.SOURCE, "VARCHAR"),
    ("operation", sc.GEN_AI_OPERATION, "VARCHAR"),
    ("provider", sc.GEN_AI_PROVIDER, "VARCHAR"),
    ("request_model", sc.GEN_AI_REQUEST_MODEL, "VARCHAR"),
    ("response_model", sc.GEN_AI_RESPONSE_MODEL, "VARCHAR"),
    ("tool_name", sc.GEN_AI_TOOL_NAME, "VARCHAR"),
    ("input_tokens", sc.GEN_AI_INPUT_TOKENS, "BIGINT"),
    ("raw_input_tokens", sc.RAW_INPUT_TOKENS, "BIGINT"),
    ("output_tokens", sc.GEN_AI_OUTPUT_TOKENS, "BIGINT"),
    ("cache_read_tokens", sc.GEN_AI_CACHE_READ, "BIGINT"),
    ("cache_write_tokens", sc.GEN_AI_CACHE_WRITE, "BIGINT"),
    ("_cost_usd", sc.COST_USD, "DOUBLE"),
    ("frontier_equivalent_usd", sc.FRONTIER_EQUIVALENT_USD, "DOUBLE"),
    ("price_version", sc.PRICE_VERSION, "VARCHAR"),
    ("_unpriced", sc.UNPRICED, "BOOLEAN"),
    ("attempt", sc.ATTEMPT, "INTEGER"),
    ("escalated", sc.ESCALATED, "BOOLEAN"),
    ("status", sc.STATUS, "VARCHAR"),
    ("error_type", sc.ERROR_TYPE, "VARCHAR"),
)

# The columns of a segment file, as the exporter writes them.
SEGMENT_COLUMNS = {
    "span_id": "VARCHAR", "trace_id": "VARCHAR", "parent_span_id": "VARCHAR", "name": "VARCHAR",
    "kind": "VARCHAR", "start_ns": "BIGINT", "end_ns": "BIGINT", "status_code": "VARCHAR",
    "status_message": "VARCHAR", "service_name": "VARCHAR", "resource": "JSON", "attributes": "JSON",
}


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _sql_ident(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def spans_select(source: str) -> str:
    """SQL turning segment rows (``source``: a relation) into rows of ``spans``, by column name.

    Unpriced: a model call is priced only when it carries a cost and is not flagged unpriced; a chat
    span with no cost is unpriced even if the flag is missing, so it is counted, never taken as $0.
    """
    struct = json.dumps({key: ("DOUBLE" if kind.startswith("DECIMAL") else kind) for _, key, kind in PROMOTED})
    promoted = ",\n        ".join(f"a.{_sql_ident(key)} AS {column}" for column, key, _ in PROMOTED)
    return f"""
SELECT * EXCLUDE (_cost_usd, _unpriced) REPLACE (
        CASE WHEN unpriced THEN NULL ELSE TRY_CAST(_cost_usd AS DECIMAL(18, 9)) END AS cost_usd,
        TRY_CAST(frontier_equivalent_usd AS DECIMAL(18, 9)) AS frontier_equivalent_usd)
FROM (
    SELECT span_id, trace_id, parent_span_id, name, kind,
        make_timestamp(start_ns // 1000) AS start_time,
        make_timestamp(coalesce(end_ns, start_ns) // 1000) AS end_time,
        (coalesce(end_ns, start_ns) - start_ns) / 1e6 AS duration_ms,
        status_code, nullif(status_message, '') AS status_message, service_name, attributes, resource,
        {promoted},
        coalesce(a.{_sql_ident(sc.UNPRICED)}, false)
            OR coalesce(a.{_sql_ident(sc.GEN_AI_OPERATION)} = 'chat' AND a.{_sql_ident(sc.COST_USD)} IS NULL, false)
            AS unpriced,
        NULL AS cost_usd
    FROM (SELECT *, json_transform(attributes, {_sql_str(struct)}) AS a FROM {source})
)"""


# --- the exporter ----------------------------------------------------------------------------


def spool_dir_for(path: str | os.PathLike[str]) -> Path:
    """Where exporters leave segments for the trace store at ``path``."""
    return Path(str(Path(path).expanduser()) + ".spool")


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (tuple, list, set, frozenset)):
        return list(value)
    return str(value)


_encode = json.JSONEncoder(
    check_circular=False, allow_nan=False, separators=(",", ":"), default=_json_default
).encode


def _encode_attributes(attributes: dict[str, Any]) -> str:
    try:
        return _encode(attributes)
    except ValueError:  # NaN or infinity: not JSON; keep them readable as strings
        return _encode({k: (str(v) if isinstance(v, float) and not math.isfinite(v) else v)
                        for k, v in attributes.items()})


_SEGMENT_COLUMNS_SQL = "{" + ", ".join(f"{k}: {_sql_str(v)}" for k, v in SEGMENT_COLUMNS.items()) + "}"


class DuckDBSpanExporter(SpanExporter):
    """Writes each exported batch as one Parquet segment in ``<path>.spool/``; never opens ``path``.

    Safe to call from several threads; a forked child starts its own segment names and connection.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()
        self.spool_dir = spool_dir_for(self.path)
        self._host = re.sub(r"[^A-Za-z0-9_.]+", "_", socket.gethostname())[:40] or "host"
        self._lock = threading.Lock()
        self._pid = -1
        self._token = ""
        self._seq: Iterator[int] = itertools.count()
        self._con: duckdb.DuckDBPyConnection | None = None
        self._resource_cache: tuple[Any, str, str] = (None, "null", "{}")  # resource, service, JSON
        self._shutdown = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown:
            return SpanExportResult.FAILURE
        if not spans:
            return SpanExportResult.SUCCESS
        try:
            text = "\n".join([self._line(span) for span in spans])
            with self._lock:
                self._write_segment(text)
        except Exception:  # noqa: BLE001 - an exporter reports failure, it never raises into the SDK
            _log.exception("could not write %d spans to %s", len(spans), self.spool_dir)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self._shutdown = True
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True  # every export is written before it returns

    # -- internals --

    def _line(self, span: ReadableSpan) -> str:
        context = span.context
        parent = span.parent
        status = span.status
        resource = span.resource
        cached = self._resource_cache  # one tuple, replaced whole: safe across threads
        if cached[0] is not resource:
            attrs = resource.attributes if resource is not None else {}
            cached = (resource, _encode(attrs.get("service.name")), _encode_attributes(_filtered(attrs)))
            self._resource_cache = cached
        _, service, resource_json = cached
        start = span.start_time or 0
        parent_id = f'"{parent.span_id:016x}"' if parent else "null"
        return (
            f'{{"span_id":"{context.span_id:016x}","trace_id":"{context.trace_id:032x}",'
            f'"parent_span_id":{parent_id},"name":{_encode(span.name)},"kind":"{span.kind.name}",'
            f'"start_ns":{start},"end_ns":{span.end_time or start},"status_code":"{status.status_code.name}",'
            f'"status_message":{_encode(status.description)},"service_name":{service},"resource":{resource_json},'
            f'"attributes":{_encode_attributes(_filtered(span.attributes))}}}'
        )

    def _connection(self) -> duckdb.DuckDBPyConnection:
        if self._pid != os.getpid() or self._con is None:
            # A new process (or a fork): new segment names, and never a connection inherited across fork.
            self._pid = os.getpid()
            self._token = secrets.token_hex(4)
            self._seq = itertools.count()
            self._con = duckdb.connect(":memory:", config={"threads": 1})
        return self._con

    def _write_segment(self, text: str) -> None:
        con = self._connection()
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        stem = f"{self._host}-{self._pid}-{self._token}-{next(self._seq):08d}"
        json_tmp = self.spool_dir / f".{stem}.ndjson.tmp"
        parquet_tmp = self.spool_dir / f".{stem}.parquet.tmp"
        try:
            json_tmp.write_text(text, encoding="utf-8")
            con.execute(
                f"COPY (SELECT * FROM read_ndjson({_sql_str(str(json_tmp))}, columns={_SEGMENT_COLUMNS_SQL},"
                f" maximum_object_size=268435456)) TO {_sql_str(str(parquet_tmp))} (FORMAT parquet, COMPRESSION zstd)"
            )
            os.replace(parquet_tmp, self.spool_dir / f"{stem}.parquet")
        finally:
            json_tmp.unlink(missing_ok=True)
            parquet_tmp.unlink(missing_ok=True)


class _RedactingExporter(SpanExporter):
    """Applies the secrets filter before another exporter (OTLP) sees a span."""

    def __init__(self, inner: SpanExporter) -> None:
        self._inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self._inner.export([self._clean(s) for s in spans])

    @staticmethod
    def _clean(span: ReadableSpan) -> ReadableSpan:
        if all(keep_attribute(k) for k in span.attributes or {}):
            return span
        return ReadableSpan(
            name=span.name, context=span.context, parent=span.parent, resource=span.resource,
            attributes=_filtered(span.attributes), events=span.events, links=span.links, kind=span.kind,
            status=span.status, start_time=span.start_time, end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._inner.force_flush(timeout_millis)


WORKFLOW_SPANS = frozenset({sc.SPAN_RUN, sc.SPAN_STEP})


class _Only(SpanProcessor):
    """Pass ended spans whose name is (or, with ``exclude``, is not) in ``names`` to ``inner``."""

    def __init__(self, inner: SpanProcessor, names: frozenset[str], exclude: bool = False) -> None:
        self._inner, self._names, self._exclude = inner, names, exclude

    def on_start(self, span, parent_context=None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        if (span.name in self._names) != self._exclude:
            self._inner.on_end(span)

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._inner.force_flush(timeout_millis)


def build_span_processors(settings: Settings) -> list[SpanProcessor]:
    """The span processors of a stakeflow process: the DuckDB trace store, plus OTLP when configured.

    OTLP follows the standard variables (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, headers, timeout), read by the OTLP exporter itself;
    batching follows ``OTEL_BSP_*``.
    """
    env = os.environ  # process set-up is the edge: the OTel variables are the standard interface
    # Half a second, not the SDK's 5 s: a killed worker loses at most that much, and `stakeflow trace`
    # sees a finished run sooner. Segments are cheap; readers compact them.
    delay = int(env.get("OTEL_BSP_SCHEDULE_DELAY", "500"))
    # Run and step spans end inside workflow tasks: exported synchronously, before the task completes,
    # so a worker killed afterwards cannot lose them (a task that did not complete runs again live and
    # re-exports the same span id, which the store ignores). Everything else is batched.
    processors: list[SpanProcessor] = [
        _Only(SimpleSpanProcessor(DuckDBSpanExporter(settings.traces_path)), WORKFLOW_SPANS),
        _Only(BatchSpanProcessor(DuckDBSpanExporter(settings.traces_path), schedule_delay_millis=delay),
              WORKFLOW_SPANS, exclude=True),
    ]
    if not (env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")):
        return processors
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    if protocol and protocol != "http/protobuf":
        raise ConfigError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol} is not supported: stakeflow sends OTLP over HTTP; "
            "set OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf and point the endpoint at the HTTP port (4318)"
        )
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        raise ConfigError(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but the OTLP exporter is not installed: "
            "pip install opentelemetry-exporter-otlp-proto-http, or unset the variable"
        ) from None
    processors.append(BatchSpanProcessor(_RedactingExporter(OTLPSpanExporter())))
    return processors


# --- the store -------------------------------------------------------------------------------


@dataclass
class SyncResult:
    """What one ``sync()`` or ``compact()`` did."""

    segments: int = 0  # segment files ingested (and deleted)
    spans_read: int = 0
    spans_inserted: int = 0  # new span ids; spans_read - spans_inserted were already stored
    pending: int = 0  # segments still waiting (budget spent, or the write lock was busy)
    quarantined: int = 0  # unreadable segments moved to <spool>/quarantine/
    locked: bool = False  # True: another process held the file; nothing was ingested

    @property
    def duplicates(self) -> int:
        return self.spans_read - self.spans_inserted


class _Locked(Exception):
    pass


_LOCK_MESSAGES = ("Could not set lock", "Conflicting lock")
_process_locks: dict[Path, threading.RLock] = {}
_process_locks_guard = threading.Lock()
# Segments per ingest transaction. With a time budget (a reader's sync) a chunk is ~300k spans at most,
# so the write lock is never held long past the budget; without one (compact, bulk loads) chunks are
# far larger: one big transaction ingests ~1.5x faster than many small ones (fewer index checkpoints).
_CHUNK_FILES, _CHUNK_BYTES = 256, 16 * 1024 * 1024
_BULK_CHUNK_FILES, _BULK_CHUNK_BYTES = 8192, 256 * 1024 * 1024
_STALE_TMP_S = 3600.0


def _process_lock(path: Path) -> threading.RLock:
    key = path.resolve()
    with _process_locks_guard:
        return _process_locks.setdefault(key, threading.RLock())


class TraceStore:
    """The trace store at ``path`` (a DuckDB file) and its spool of segments.

    Cheap to construct: nothing is opened until ``sync()``, ``compact()`` or ``reader()``.
    ``lock_wait_s`` bounds how long a reader waits while a sync holds the write lock.
    """

    def __init__(self, path: str | os.PathLike[str], *, lock_wait_s: float = 10.0) -> None:
        self.path = Path(path).expanduser()
        self.spool_dir = spool_dir_for(self.path)
        self.lock_wait_s = lock_wait_s
        self._lock = _process_lock(self.path)

    def __repr__(self) -> str:
        return f"TraceStore({str(self.path)!r})"

    def pending_segments(self) -> list[Path]:
        """Segment files waiting to be ingested, oldest name first."""
        try:
            return sorted(self.spool_dir.glob("*.parquet"))
        except OSError:
            return []

    def sync(self, *, wait_s: float = 1.0, budget_s: float | None = 5.0) -> SyncResult:
        """Ingest pending segments; give up after ``wait_s`` if the write lock stays busy.

        Stops starting new chunks after ``budget_s`` (None: ingest everything that was pending).
        A busy lock is not an error: readers see pending segments anyway.
        """
        with self._lock:
            if self.path.exists() and not self.pending_segments():
                self._check_header()  # nothing to ingest: do not take the write lock
                return SyncResult()
            try:
                con = self._open_writer(wait_s)
            except _Locked:
                return SyncResult(pending=len(self.pending_segments()), locked=True)
            try:
                return self._ingest(con, budget_s)
            finally:
                con.close()

    def compact(self, *, wait_s: float = 60.0) -> SyncResult:
        """Ingest every pending segment and checkpoint the file; waits up to ``wait_s`` for the lock."""
        with self._lock:
            try:
                con = self._open_writer(wait_s)
            except _Locked as e:
                raise self._busy(e, wait_s) from None
            try:
                result = self._ingest(con, None)
                con.execute("CHECKPOINT")
                return result
            finally:
                con.close()

    @contextlib.contextmanager
    def reader(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection whose ``spans`` (and so ``runs``) include segments not yet ingested."""
        with self._lock:
            con = self._open_reader()
            try:
                self._attach_spool(con)
                yield con
            finally:
                con.close()

    # -- opening --

    def _connect(self, read_only: bool, wait_s: float) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + wait_s
        delay = 0.01
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=read_only)
            except duckdb.Error as e:
                message = str(e)
                if not any(m in message for m in _LOCK_MESSAGES):
                    raise self._unusable(message) from None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise _Locked(message) from None
                time.sleep(min(remaining, delay * (0.5 + random.random())))
                delay = min(delay * 2, 0.25)

    def _open_writer(self, wait_s: float) -> duckdb.DuckDBPyConnection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"cannot create {self.path.parent} for the trace store: {e.strerror}: "
                              "set STAKEFLOW_TRACES to a writable path") from None
        con = self._connect(read_only=False, wait_s=wait_s)
        try:
            # Spans have no order to keep, and one checkpoint at close beats one per chunk.
            con.execute("SET preserve_insertion_order = false")
            con.execute("SET checkpoint_threshold = '1GB'")
            version = self._schema_version(con)
            if version < SCHEMA_VERSION:
                self._migrate(con, version)
        except BaseException:
            con.close()
            raise
        return con

    def _open_reader(self) -> duckdb.DuckDBPyConnection:
        if not self.path.exists() and not self.pending_segments():
            con = duckdb.connect(":memory:")  # no store and nothing spooled: an empty schema
            self._migrate(con, 0)
            return con
        if self.path.exists():
            con = self._connect_reader()
            if self._schema_version(con) == SCHEMA_VERSION:
                return con
            con.close()
        # No store yet, an empty DuckDB file or an older schema: create or upgrade it once (the write
        # lock), then read. A reader must hold the file while it reads the spool, so that no sync
        # elsewhere ingests and deletes a segment under its query.
        try:
            self._open_writer(self.lock_wait_s).close()
        except _Locked as e:
            raise self._busy(e, self.lock_wait_s) from None
        return self._connect_reader()

    def _connect_reader(self) -> duckdb.DuckDBPyConnection:
        try:
            return self._connect(read_only=True, wait_s=self.lock_wait_s)
        except _Locked as e:
            raise self._busy(e, self.lock_wait_s) from None

    def _busy(self, error: _Locked, waited: float) -> ServiceError:
        holder = re.search(r"\(PID (\d+)\)", str(error))
        who = f"process {holder.group(1)}" if holder else "another process"
        return ServiceError(
            f"the trace store {self.path} is locked by {who} for more than {waited:g}s: "
            "retry when it finishes (a large `compact` can take a while), or stop that process"
        )

    def _check_header(self) -> None:
        try:
            with self.path.open("rb") as f:
                header = f.read(12)
        except OSError as e:
            raise self._unusable(e.strerror or str(e)) from None
        if header[8:12] != b"DUCK":
            raise self._unusable("not a DuckDB database file")

    def _unusable(self, message: str) -> ConfigError:
        first = message.splitlines()[0] if message else "unknown error"
        return ConfigError(
            f"{self.path} cannot be used as the trace store ({first}): "
            "move it aside or set STAKEFLOW_TRACES to another file"
        )

    def _schema_version(self, con: duckdb.DuckDBPyConnection) -> int:
        """0 for an empty database; the applied version; ConfigError for a foreign or newer file."""
        try:
            tables = [r[0] for r in con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
                "UNION ALL SELECT view_name FROM duckdb_views() "
                "WHERE database_name = current_database() AND NOT internal"
            ).fetchall()]
            if "schema_migrations" not in tables:
                if tables:
                    shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
                    raise ConfigError(
                        f"{self.path} is a DuckDB file but not a stakeflow trace store (it has {shown} and "
                        "no schema_migrations table): move it aside or set STAKEFLOW_TRACES to another file"
                    )
                return 0
            version = con.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()[0]
        except duckdb.Error as e:
            con.close()
            raise self._unusable(str(e)) from None
        except ConfigError:
            con.close()
            raise
        if version > SCHEMA_VERSION:
            con.close()
            raise ConfigError(
                f"{self.path} was written by a newer stakeflow (schema version {version}, this one knows "
                f"{SCHEMA_VERSION}): upgrade stakeflow, or move it aside or set STAKEFLOW_TRACES to another file"
            )
        return version

    @staticmethod
    def _migrate(con: duckdb.DuckDBPyConnection, current: int) -> None:
        for version, description, sql in MIGRATIONS:
            if version <= current:
                continue
            con.execute("BEGIN")
            try:
                con.execute(_SCHEMA_MIGRATIONS)
                con.execute(sql)
                con.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?, now()::TIMESTAMP)", [version, description]
                )
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise

    # -- ingest --

    def _ingest(self, con: duckdb.DuckDBPyConnection, budget_s: float | None) -> SyncResult:
        deadline = None if budget_s is None else time.monotonic() + budget_s
        self._sweep_stale_temporaries()
        result = SyncResult()
        segments = self.pending_segments()
        max_files, max_bytes = (
            (_CHUNK_FILES, _CHUNK_BYTES) if deadline is not None else (_BULK_CHUNK_FILES, _BULK_CHUNK_BYTES)
        )
        while segments:
            chunk, size = [], 0
            while segments and len(chunk) < max_files and (not chunk or size < max_bytes):
                path = segments.pop(0)
                with contextlib.suppress(OSError):
                    size += path.stat().st_size
                chunk.append(path)
            self._ingest_chunk(con, chunk, result)
            if deadline is not None and time.monotonic() >= deadline:
                break
        result.pending = len(self.pending_segments())
        return result

    def _ingest_chunk(self, con: duckdb.DuckDBPyConnection, chunk: list[Path], result: SyncResult) -> None:
        files = [str(p) for p in chunk if p.exists()]
        if not files:
            return
        source = "read_parquet(?, union_by_name = true)"
        try:
            con.execute("BEGIN")
            read = con.execute(f"SELECT count(*) FROM {source}", [files]).fetchone()[0]
            inserted = con.execute(
                f"INSERT INTO spans BY NAME {spans_select(source)} ON CONFLICT DO NOTHING", [files]
            ).fetchone()[0]
            con.execute("COMMIT")
        except duckdb.Error as e:
            con.execute("ROLLBACK")
            bad = [p for p in chunk if not self._readable(con, p)]
            if not bad:
                raise ConfigError(f"cannot ingest trace segments into {self.path}: {str(e).splitlines()[0]}") from None
            for path in bad:
                self._quarantine(path)
            result.quarantined += len(bad)
            self._ingest_chunk(con, [p for p in chunk if p not in bad], result)
            return
        # Only after the commit: a crash before this line re-ingests these files, harmlessly.
        for path in chunk:
            path.unlink(missing_ok=True)
        result.segments += len(files)
        result.spans_read += read
        result.spans_inserted += inserted

    @staticmethod
    def _readable(con: duckdb.DuckDBPyConnection, path: Path) -> bool:
        try:
            con.execute(f"SELECT count(*) FROM ({spans_select('read_parquet(?)')})", [str(path)]).fetchone()
            return True
        except duckdb.Error:
            return not path.exists()  # gone is not bad

    def _quarantine(self, path: Path) -> None:
        target = self.spool_dir / "quarantine"
        target.mkdir(exist_ok=True)
        _log.warning("trace segment %s cannot be read; moved to %s", path, target)
        with contextlib.suppress(OSError):
            os.replace(path, target / path.name)

    def _sweep_stale_temporaries(self) -> None:
        # An exporter that died mid-write leaves a hidden temporary; live ones are seconds old.
        cutoff = time.time() - _STALE_TMP_S
        for path in self.spool_dir.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()

    # -- reading --

    def _attach_spool(self, con: duckdb.DuckDBPyConnection) -> None:
        files = [str(p) for p in self.pending_segments()]
        if not files:
            return
        try:
            con.execute("SELECT count(*) FROM read_parquet(?, union_by_name = true)", [files]).fetchone()
        except duckdb.Error:
            files = [f for f in files if self._readable(con, Path(f))]
            if not files:
                return
        database = _sql_ident(con.execute("SELECT current_database()").fetchone()[0])
        listed = "[" + ", ".join(_sql_str(f) for f in files) + "]"
        spooled = spans_select(f"read_parquet({listed}, union_by_name = true)")
        # A temporary view shadows main.spans, and the stored `runs` view then reads it too.
        con.execute(f"""
            CREATE TEMP VIEW spans AS
            SELECT * FROM {database}.main.spans
            UNION ALL BY NAME
            SELECT * FROM (SELECT DISTINCT ON (span_id) * FROM ({spooled})) s
            WHERE NOT EXISTS (SELECT 1 FROM {database}.main.spans m WHERE m.span_id = s.span_id)
        """)
