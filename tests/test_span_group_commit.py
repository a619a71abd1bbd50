"""Run and step spans: on disk before ``on_end`` returns, and the spans of concurrent workflow tasks share a segment."""

from __future__ import annotations

import threading
import time

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExportResult

from stakeflow.traces import TraceStore
from stakeflow.traces._exporter import DuckDBSpanExporter, GroupCommitSpanProcessor
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
