"""Run and step spans: on disk before ``on_end`` returns, and the spans of concurrent workflow tasks share a segment."""

from __future__ import annotations

import threading
import time

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExportResult

from stakeflow.config import Settings
from stakeflow.traces import TraceStore
from stakeflow.traces import _exporter as exporter_module
from stakeflow.traces._exporter import DuckDBSpanExporter, GroupCommitSpanProcessor, build_span_processors
from tests.trace_spans import count


class GatedExporter(DuckDBSpanExporter):
    """The real exporter, whose first export waits for ``gate``; records each group it wrote."""

    def __init__(self, path) -> None:
        super().__init__(path)
        self.gate = threading.Event()
        self.groups: list[list[str]] = []

    def export(self, spans) -> SpanExportResult:
        if not self.groups:
            self.gate.wait(30)
        result = super().export(spans)
        self.groups.append([s.name for s in spans])
        return result


def _segments(exporter: DuckDBSpanExporter) -> list:
    return sorted(exporter.spool_dir.glob("*.parquet"))


def test_a_span_is_in_the_spool_when_on_end_returns(tmp_path):
    exporter = DuckDBSpanExporter(tmp_path / "traces.duckdb")
    provider = TracerProvider()
    provider.add_span_processor(GroupCommitSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    for i in range(3):
        with tracer.start_as_current_span(f"stakeflow.step {i}"):
            pass
        assert len(_segments(exporter)) == i + 1  # written before the span's end returned, one segment each
    provider.shutdown()
    assert count(TraceStore(tmp_path / "traces.duckdb")) == 3


def test_spans_ended_during_a_write_share_the_next_segment_and_each_caller_waits_for_its_own(tmp_path):
    exporter = GatedExporter(tmp_path / "traces.duckdb")
    processor = GroupCommitSpanProcessor(exporter)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    returned: dict[str, int] = {}  # span name -> groups written when its on_end returned

    def end_span(name: str) -> None:
        with tracer.start_as_current_span(name):
            pass
        returned[name] = len(exporter.groups)

    first = threading.Thread(target=end_span, args=("first",))
    first.start()
    deadline = time.monotonic() + 10
    while not processor._writer or processor._pending or processor._queued < 1:  # the writer holds "first"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    others = [threading.Thread(target=end_span, args=(f"span {i}",)) for i in range(10)]
    for t in others:
        t.start()
    while len(processor._pending) < 10:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.1)
    assert not returned, "on_end returned before its span was written"
    exporter.gate.set()
    for t in [first, *others]:
        t.join(30)
    provider.shutdown()

    assert len(exporter.groups) == 2
    assert exporter.groups[0] == ["first"] and sorted(exporter.groups[1]) == sorted(f"span {i}" for i in range(10))
    assert returned["first"] >= 1 and all(returned[f"span {i}"] == 2 for i in range(10))
    assert len(_segments(exporter)) == 2
    assert count(TraceStore(tmp_path / "traces.duckdb")) == 11


def test_a_failed_export_releases_its_callers(tmp_path):
    class Failing(DuckDBSpanExporter):
        def export(self, spans):
            raise OSError("disk full")

    provider = TracerProvider()
    provider.add_span_processor(GroupCommitSpanProcessor(Failing(tmp_path / "traces.duckdb")))
    with provider.get_tracer("t").start_as_current_span("stakeflow.run"):
        pass  # returns (the failure is logged), as SimpleSpanProcessor's did
    provider.shutdown()


def _journaled(tmp_path, processor=GroupCommitSpanProcessor, compact_every=None):
    """A journal exporter behind ``processor``, and a tracer whose spans go through it."""
    exporter = DuckDBSpanExporter(tmp_path / "traces.duckdb", journal=True, compact_every=compact_every)
    provider = TracerProvider()
    provider.add_span_processor(processor(exporter))
    return exporter, provider, provider.get_tracer("t")


def _end_steps(tracer, steps) -> None:
    for i in steps:
        with tracer.start_as_current_span(f"stakeflow.step {i}"):
            pass


def _journal(exporter: DuckDBSpanExporter) -> list:
    return sorted(exporter.spool_dir.glob("*.ndjson"))


def test_workflow_spans_go_to_a_journal_that_readers_read_and_sync_ingests(tmp_path):
    """Run and step spans (the ones a workflow task waits for) are journal segments: lines written and renamed into
    place, no DuckDB query on the way. Readers count them before any sync; a sync ingests and removes them."""
    settings = Settings(home=tmp_path / "home")
    group_commit, batched = (p._inner for p in build_span_processors(settings)[:2])
    assert isinstance(group_commit, GroupCommitSpanProcessor) and group_commit._exporter.journal
    assert isinstance(batched, BatchSpanProcessor) and batched.span_exporter.journal

    exporter, provider, tracer = _journaled(tmp_path)
    for i in range(3):
        _end_steps(tracer, [i])
        assert len(_journal(exporter)) == i + 1 and _segments(exporter) == []  # on disk when on_end returned
    store = TraceStore(tmp_path / "traces.duckdb")
    assert count(store) == 3 and len(store.pending_segments()) == 3  # read from the journal, not ingested
    store.sync()
    assert store.pending_segments() == [] and count(store) == 3
    provider.shutdown()  # nothing left to compact: the sync took it all
    assert _segments(exporter) == [] and count(store) == 3


def test_the_journal_is_compacted_into_one_parquet_segment_when_idle_and_at_shutdown(tmp_path, monkeypatch):
    monkeypatch.setattr(exporter_module, "COMPACT_AFTER_IDLE_S", 0.05)
    exporter, provider, tracer = _journaled(tmp_path)
    _end_steps(tracer, range(4))
    deadline = time.monotonic() + 10
    while _journal(exporter):  # idle for COMPACT_AFTER_IDLE_S: compacted
        assert time.monotonic() < deadline, "the journal was never compacted"
        time.sleep(0.02)
    assert len(_segments(exporter)) == 1 and count(TraceStore(tmp_path / "traces.duckdb")) == 4

    monkeypatch.setattr(exporter_module, "COMPACT_AFTER_IDLE_S", 60.0)
    with tracer.start_as_current_span("stakeflow.run"):
        pass
    assert len(_journal(exporter)) == 1
    provider.shutdown()
    assert _journal(exporter) == [] and len(_segments(exporter)) == 2
    store = TraceStore(tmp_path / "traces.duckdb")
    assert count(store) == 5
    store.sync()
    assert count(store) == 5 and store.pending_segments() == []


def test_a_busy_writer_compacts_every_compact_every_segments(tmp_path, monkeypatch):
    """Spans never stop coming (no idle second): the journal is still bounded, compacted every COMPACT_EVERY."""
    monkeypatch.setattr(exporter_module, "COMPACT_AFTER_IDLE_S", 60.0)
    monkeypatch.setattr(exporter_module, "COMPACT_EVERY", 5)
    exporter, provider, tracer = _journaled(tmp_path)
    for i in range(12):
        _end_steps(tracer, [i])
        assert len(_journal(exporter)) < 5 + 1
    assert len(_segments(exporter)) == 2 and len(_journal(exporter)) == 2
    provider.shutdown()
    assert count(TraceStore(tmp_path / "traces.duckdb")) == 12


def test_a_compaction_racing_a_reader_loses_and_doubles_nothing(tmp_path):
    """A sync that took some journal segments before the compaction: those are left out of it. A crash between the
    compacted segment's rename and the journal's removal leaves both: the store keeps each span once."""
    exporter, provider, tracer = _journaled(tmp_path, SimpleSpanProcessor)
    _end_steps(tracer, range(3))
    store = TraceStore(tmp_path / "traces.duckdb")
    _journal(exporter)[0].unlink()  # as a sync would after ingesting it; the other two stay
    exporter.compact()
    assert _journal(exporter) == [] and len(_segments(exporter)) == 1 and count(store) == 2

    with tracer.start_as_current_span("stakeflow.run"):
        pass
    [journal] = _journal(exporter)
    kept = journal.read_bytes()
    exporter.compact()
    journal.write_bytes(kept)  # the removal never happened
    assert count(store) == 3  # readers: each span once
    store.sync()
    assert count(store) == 3 and store.pending_segments() == []
    provider.shutdown()


def test_a_journal_exporter_with_compact_every_compacts_itself(tmp_path):
    """The batched spans' exporter (no processor asks it to compact): every ``compact_every`` exports become one
    Parquet segment, the rest at shutdown."""
    exporter, provider, tracer = _journaled(tmp_path, SimpleSpanProcessor, compact_every=3)
    for i in range(7):
        _end_steps(tracer, [i])
        assert len(_journal(exporter)) == (i + 1) % 3
    assert len(_segments(exporter)) == 2
    provider.shutdown()
    assert _journal(exporter) == [] and len(_segments(exporter)) == 3
    assert count(TraceStore(tmp_path / "traces.duckdb")) == 7
