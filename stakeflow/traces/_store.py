"""The trace store: ingest the spool's segments into the DuckDB file, and read it with the spool.

``TraceStore`` ingests segments (``_segments``; written by ``_exporter``): it opens the file
read-write (retrying with backoff while another process holds it), inserts each chunk of segments in
ONE transaction with ``ON CONFLICT DO NOTHING`` on the ``span_id`` primary key, commits, and only then
deletes the chunk's files. A crash between commit and delete re-ingests those segments later,
harmlessly: span ids are unique, so nothing is counted twice (the same holds when a replayed
workflow exports a span id again). Segments that cannot be read (truncated by a power loss; nothing
here fsyncs) are moved to ``<spool>/quarantine/`` with a warning instead of blocking ingest forever.

``reader()`` opens read-only and sees the pending spool too: when segments are waiting, a temporary
``spans`` view unions the table with the segments' spans whose ids the table does not have yet. So a
reader whose ``sync()`` could not get the write lock within its short deadline (other readers hold
the file) still sees every span exactly once, and nothing ever waits on the workers. A reader only
waits (up to ``lock_wait_s``) while a sync holds the write lock, and a sync bounds that time with
``budget_s`` and by ingesting in chunks. A reader holds the file (read-only) for as long as it reads
the spool, so no sync can ingest and delete a segment under its query; with segments pending and no
file yet, it creates the store first. Within one process, store access is serialized per file
(DuckDB refuses a read-only and a read-write connection to one file in one process).

The queries over a reader (``_tree``, ``_costs``, ``_sql``) import this module; it knows none of them.

Schema: the numbered migrations of ``_migrations``, applied when the file is opened for writing. A file
that is not DuckDB, or a DuckDB file without ``schema_migrations`` that holds other tables, is refused
with a ConfigError naming the path and the fix.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb

from stakeflow.core.errors import ConfigError, ServiceError
from stakeflow.stores.readonly_sql import quote_ident
from stakeflow.traces import _records
from stakeflow.traces._migrations import applied_version, migrate, schema_version
from stakeflow.traces._rows import one_row
from stakeflow.traces._segments import segment_files, segments_relation, spans_select, spool_dir_for

_log = logging.getLogger(__name__)

SCHEMA_VERSION = schema_version()


@dataclass
class SyncResult:
    """What one ``sync()`` or ``compact()`` did."""

    segments: int = 0  # segment files ingested (and deleted)
    spans_read: int = 0
    spans_inserted: int = 0  # new span ids; spans_read - spans_inserted were already stored
    pending: int = 0  # segments still waiting (budget spent, or the write lock was busy)
    quarantined: int = 0  # unreadable segments moved to <spool>/quarantine/
    locked: bool = False  # True: another process held the file; nothing was ingested
    records: int = 0  # evals and captures rows read from record files

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
        """Segment files waiting to be ingested (Parquet and journal), oldest name first."""
        return segment_files(self.spool_dir)

    def sync(self, *, wait_s: float = 1.0, budget_s: float | None = 5.0) -> SyncResult:
        """Ingest pending segments; give up after ``wait_s`` if the write lock stays busy.

        Stops starting new chunks after ``budget_s`` (None: ingest everything that was pending).
        A busy lock is not an error: readers see pending segments anyway.
        """
        with self._lock:
            if self.path.exists() and not self.pending_segments() and not self._pending_records():
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
            raise ConfigError(
                f"cannot create {self.path.parent} for the trace store: {e.strerror}: "
                "set STAKEFLOW_TRACES to a writable path"
            ) from None
        con = self._connect(read_only=False, wait_s=wait_s)
        try:
            # Spans have no order to keep, and one checkpoint at close beats one per chunk.
            con.execute("SET preserve_insertion_order = false")
            con.execute("SET checkpoint_threshold = '1GB'")
            version = self._schema_version(con)
            if version < SCHEMA_VERSION:
                migrate(con, version)
        except BaseException:
            con.close()
            raise
        return con

    def _pending_records(self) -> bool:
        return any(_records.pending(self.spool_dir, table) for table in _records.RECORD_TABLES)

    def _open_reader(self) -> duckdb.DuckDBPyConnection:
        if not self.path.exists() and not self.pending_segments() and not self._pending_records():
            con = duckdb.connect(":memory:")  # no store and nothing spooled: an empty schema
            migrate(con, 0)
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
        try:
            return applied_version(con, self.path)
        except duckdb.Error as e:
            con.close()
            raise self._unusable(str(e)) from None
        except ConfigError:
            con.close()
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
            chunk: list[Path] = []
            size = 0
            while segments and len(chunk) < max_files and (not chunk or size < max_bytes):
                path = segments.pop(0)
                with contextlib.suppress(OSError):
                    size += path.stat().st_size
                chunk.append(path)
            self._ingest_chunk(con, chunk, result)
            if deadline is not None and time.monotonic() >= deadline:
                break
        result.records = _records.ingest(con, self.spool_dir)
        result.pending = len(self.pending_segments())
        return result

    def _ingest_chunk(self, con: duckdb.DuckDBPyConnection, chunk: list[Path], result: SyncResult) -> None:
        files = [str(p) for p in chunk if p.exists()]
        if not files:
            return
        source = segments_relation(files)
        try:
            con.execute("BEGIN")
            read = one_row(con, f"SELECT count(*) FROM {source}")[0]
            inserted = one_row(con, f"INSERT INTO spans BY NAME {spans_select(source)} ON CONFLICT DO NOTHING")[0]
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
            con.execute(f"SELECT count(*) FROM ({spans_select(segments_relation([str(path)]))})").fetchone()
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
        database = quote_ident(one_row(con, "SELECT current_database()")[0])
        _records.attach(con, self.spool_dir, database)
        files = [str(p) for p in self.pending_segments()]
        if not files:
            return
        try:
            con.execute(f"SELECT count(*) FROM {segments_relation(files)}").fetchone()
        except duckdb.Error:
            files = [f for f in files if self._readable(con, Path(f))]
            if not files:
                return
        spooled = spans_select(segments_relation(files))
        # A temporary view shadows main.spans, and the stored `runs` view then reads it too.
        con.execute(f"""
            CREATE TEMP VIEW spans AS
            SELECT * FROM {database}.main.spans
            UNION ALL BY NAME
            SELECT * FROM (SELECT DISTINCT ON (span_id) * FROM ({spooled})) s
            WHERE NOT EXISTS (SELECT 1 FROM {database}.main.spans m WHERE m.span_id = s.span_id)
        """)
