"""The span exporter of every stakeflow process: segments in the spool, never the DuckDB file.

DuckDB lets one process open a file read-write, or many open it read-only, and a read-only open
fails while a writer holds it. Workers export spans all the time, so nobody may wait for that lock
on the hot path: ``DuckDBSpanExporter`` (behind a span processor) never opens the DuckDB file. Each
batch becomes one *segment* (``_segments``), written as Parquet by an in-memory DuckDB to a hidden
temporary name, then ``os.replace``-d to ``<traces>.spool/<host>-<pid>-<token>-<seq>.parquet``. The
rename is atomic, so a segment is seen whole or not at all, and no two processes ever contend for a
lock. ``token`` is random per process: a recycled pid can never overwrite a segment not yet ingested.
Parquet rather than JSON because it is typed, ~10x smaller (the spool may wait days for a reader when
nobody runs a command) and read much faster at ingest. Except on the path a workflow task waits on: run and
step spans (``GroupCommitSpanProcessor``) go to *journal* segments, the same lines as NDJSON with a write and a
rename (~0.1 ms, where the Parquet copy held the task ~1.1 ms of its 2.9 ms per group: bench/overhead.py
--traced), and the exporter compacts its journal into one Parquet segment when it has been idle for
``COMPACT_AFTER_IDLE_S``, every ``COMPACT_EVERY`` journal segments, and at shutdown.

Secrets: every attribute whose key may carry a credential is dropped on the way (``_redaction``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from stakeflow.core import semconv as sc
from stakeflow.core.errors import ConfigError
from stakeflow.stores.readonly_sql import quote_literal
from stakeflow.traces._redaction import RedactingExporter, filtered_attributes
from stakeflow.traces._segments import segments_relation, spool_dir_for

if TYPE_CHECKING:
    from stakeflow.config import Settings

_log = logging.getLogger(__name__)

# --- segments ----------------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (tuple, list, set, frozenset)):
        return list(value)
    return str(value)


_encode = json.JSONEncoder(check_circular=False, allow_nan=False, separators=(",", ":"), default=_json_default).encode


def _encode_attributes(attributes: dict[str, Any]) -> str:
    try:
        return _encode(attributes)
    except ValueError:  # NaN or infinity: not JSON; keep them readable as strings
        return _encode(
            {k: (str(v) if isinstance(v, float) and not math.isfinite(v) else v) for k, v in attributes.items()}
        )


class DuckDBSpanExporter(SpanExporter):
    """Writes each exported batch as one Parquet segment in ``<path>.spool/``; never opens ``path``. With
    ``journal``, as one journal (NDJSON) segment, which ``compact`` turns into Parquet: at shutdown, after every
    ``compact_every`` segments when set, and whenever the caller asks (``GroupCommitSpanProcessor``).

    Safe to call from several threads; a forked child starts its own segment names and connection.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, journal: bool = False, compact_every: int | None = None
    ) -> None:
        self.journal = journal
        self._compact_every = compact_every  # compact in export() once this many journal segments wait
        self._journaled: list[Path] = []  # this process's journal segments not compacted yet
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
        except Exception:
            _log.exception("could not write %d spans to %s", len(spans), self.spool_dir)
            return SpanExportResult.FAILURE
        if self._compact_every and len(self._journaled) >= self._compact_every:
            self.compact()
        return SpanExportResult.SUCCESS

    def compact(self) -> None:
        """This process's journal segments as one Parquet segment (nothing when there are none). A segment a reader
        ingested meanwhile is left out; one read by both is stored once (span ids are unique in the store). Never
        raises: what it could not compact stays journal, which readers read too."""
        with self._lock:
            journaled = [p for p in self._journaled if p.exists()]
            if not journaled:
                self._journaled.clear()
                return
            try:
                self._write_parquet(segments_relation([str(p) for p in journaled]))
            except Exception:  # a reader took some meanwhile: they are in the store, the rest waits for the next try
                _log.debug("journal compaction of %d segments deferred", len(journaled), exc_info=True)
                self._journaled = [p for p in journaled if p.exists()]
                return
            for path in journaled:
                with contextlib.suppress(OSError):  # left behind, it is read twice and stored once
                    path.unlink(missing_ok=True)
            self._journaled.clear()

    @property
    def journal_segments(self) -> int:
        """Journal segments written and not compacted yet."""
        return len(self._journaled)

    def shutdown(self) -> None:
        self.compact()
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
            cached = (resource, _encode(attrs.get("service.name")), _encode_attributes(filtered_attributes(attrs)))
            self._resource_cache = cached
        _, service, resource_json = cached
        start = span.start_time or 0
        parent_id = f'"{parent.span_id:016x}"' if parent else "null"
        return (
            f'{{"span_id":"{context.span_id:016x}","trace_id":"{context.trace_id:032x}",'
            f'"parent_span_id":{parent_id},"name":{_encode(span.name)},"kind":"{span.kind.name}",'
            f'"start_ns":{start},"end_ns":{span.end_time or start},"status_code":"{status.status_code.name}",'
            f'"status_message":{_encode(status.description)},"service_name":{service},"resource":{resource_json},'
            f'"attributes":{_encode_attributes(filtered_attributes(span.attributes))}}}'
        )

    def _connection(self) -> duckdb.DuckDBPyConnection:
        if self._pid != os.getpid() or self._con is None:
            # A new process (or a fork): new segment names, and never a connection inherited across fork.
            self._pid = os.getpid()
            self._token = secrets.token_hex(4)
            self._seq = itertools.count()
            self._journaled = []  # a fork's parent compacts its own
            self._con = duckdb.connect(":memory:", config={"threads": 1})
        return self._con

    def _stem(self) -> str:
        self._connection()  # a new process (or a fork) names its segments anew
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        return f"{self._host}-{self._pid}-{self._token}-{next(self._seq):08d}"

    def _write_segment(self, text: str) -> None:
        stem = self._stem()
        json_tmp = self.spool_dir / f".{stem}.ndjson.tmp"
        try:
            json_tmp.write_text(text, encoding="utf-8")
            if self.journal:  # the lines are the segment: renamed whole into place
                target = self.spool_dir / f"{stem}.ndjson"
                os.replace(json_tmp, target)
                self._journaled.append(target)
                return
            self._write_parquet(segments_relation([str(json_tmp)]), stem)
        finally:
            json_tmp.unlink(missing_ok=True)

    def _write_parquet(self, relation: str, stem: str | None = None) -> None:
        """The rows of ``relation`` (segment columns) as a Parquet segment, renamed whole into place."""
        stem = stem or self._stem()
        parquet_tmp = self.spool_dir / f".{stem}.parquet.tmp"
        try:
            self._connection().execute(
                f"COPY (SELECT * FROM {relation}) TO {quote_literal(str(parquet_tmp))}"
                " (FORMAT parquet, COMPRESSION zstd)"
            )
            os.replace(parquet_tmp, self.spool_dir / f"{stem}.parquet")
        finally:
            parquet_tmp.unlink(missing_ok=True)


# --- span processors ---------------------------------------------------------------------------


# The writer compacts the journal after this long without a span, and after this many journal segments regardless.
COMPACT_AFTER_IDLE_S = 1.0
COMPACT_EVERY = 256


class GroupCommitSpanProcessor(SpanProcessor):
    """Exports each span before ``on_end`` returns, like SimpleSpanProcessor, but one segment per group.

    Run and step spans end inside workflow tasks and must be on disk before the task completes (see
    build_span_processors). Written one segment each, under the exporter's lock, 100 runs in flight made
    every workflow task queue behind every other one's segment write (~2 ms each, far more under load:
    20% of the worker's samples, bench/README.md). Here one writer thread takes every span ended while it
    was writing the previous group and writes them as one segment; each caller waits for the group that
    holds its span. So the guarantee is the same (``on_end`` returns once the segment with the span is in
    the spool, or once its export failed and was logged, as before), and under load many workflow tasks
    share one write. Alone, a span waits for just its own write, as before.
    """

    def __init__(self, exporter: DuckDBSpanExporter) -> None:
        self._exporter = exporter
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # the writer waits for spans
        self._done = threading.Condition(self._lock)  # callers wait for their group
        self._pending: list[ReadableSpan] = []
        self._queued = 0  # spans queued so far (a span's number is its position)
        self._written = 0  # spans whose group was exported (or failed and was logged)
        self._writer: threading.Thread | None = None
        self._pid = os.getpid()
        self._shutdown = False

    def on_start(self, span, parent_context=None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        if not (span.context and span.context.trace_flags.sampled):
            return
        with self._lock:
            if self._shutdown:
                return
            self._ensure_writer()
            self._pending.append(span)
            self._queued += 1
            mine = self._queued
            self._work.notify()
            while self._written < mine:
                if not self._done.wait(1.0) and not self._writer_alive():
                    self._ensure_writer()  # a writer that died (it never should) is replaced, never waited for

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        deadline = time.monotonic() + timeout_millis / 1000
        with self._lock:
            target = self._queued
            while self._written < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._done.wait(min(left, 1.0))
        return self._exporter.force_flush(max(0, int((deadline - time.monotonic()) * 1000)))

    def shutdown(self) -> None:
        self.force_flush()
        with self._lock:
            self._shutdown = True
            self._work.notify_all()
            writer = self._writer
        if writer is not None and writer is not threading.current_thread():
            writer.join(10)
        self._exporter.shutdown()  # compacts the journal

    def _writer_alive(self) -> bool:
        return self._writer is not None and self._writer.is_alive() and self._pid == os.getpid()

    def _ensure_writer(self) -> None:
        # Called with the lock held. A forked child has the lock and the lists, but not the thread.
        if self._writer_alive():
            return
        self._pid = os.getpid()
        self._writer = threading.Thread(target=self._write_groups, name="stakeflow-span-writer", daemon=True)
        self._writer.start()

    def _write_groups(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._shutdown:
                    # A journal waiting to be compacted is compacted once no span came for a while.
                    if not self._work.wait(COMPACT_AFTER_IDLE_S if self._exporter.journal_segments else None):
                        break
                if not self._pending and self._shutdown:
                    return  # shutdown() compacts
                group, self._pending = self._pending, []
                upto = self._queued
            if not group:  # idle
                self._exporter.compact()
                continue
            try:
                self._exporter.export(group)  # logs and reports its own failures; outside the lock
            except Exception:
                _log.exception("could not export %d spans", len(group))
            finally:
                with self._lock:
                    self._written = upto
                    self._done.notify_all()
            if self._exporter.journal_segments >= COMPACT_EVERY:  # never idle: bound the spool's file count
                self._exporter.compact()


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
    # Half a second, not the SDK's 5 s, for both paths: a killed worker loses at most that much, and
    # `stakeflow trace` (or the OTLP backend) sees a finished run sooner. Segments are cheap; readers
    # compact them; an OTLP backend takes one small request per half second per worker.
    delay = int(env.get("OTEL_BSP_SCHEDULE_DELAY", "500"))
    # Run and step spans end inside workflow tasks: exported synchronously, before the task completes,
    # so a worker killed afterwards cannot lose them (a task that did not complete runs again live and
    # re-exports the same span id, which the store ignores); the spans that concurrent workflow tasks end
    # meanwhile share one segment (GroupCommitSpanProcessor). Everything else is batched. Both write journal
    # segments, compacted into Parquet in batches: a batch's Parquet copy cost its thread ~14 ms of CPU a
    # 10-step run on the 2 cores the worker shares with the Temporal server (bench/README.md, overhead.py --traced).
    processors: list[SpanProcessor] = [
        _Only(GroupCommitSpanProcessor(DuckDBSpanExporter(settings.traces_path, journal=True)), WORKFLOW_SPANS),
        _Only(
            BatchSpanProcessor(
                DuckDBSpanExporter(settings.traces_path, journal=True, compact_every=COMPACT_EVERY),
                schedule_delay_millis=delay,
            ),
            WORKFLOW_SPANS,
            exclude=True,
        ),
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
    # Every span batched, run and step spans too: a synchronous HTTP export inside a workflow task would
    # stall the task on a slow backend. So a SIGKILL can lose up to `delay` of every kind of span here
    # (docs/reliability.md); a SIGTERM loses none (workers.main flushes when it stops polling).
    processors.append(BatchSpanProcessor(RedactingExporter(OTLPSpanExporter()), schedule_delay_millis=delay))
    return processors
