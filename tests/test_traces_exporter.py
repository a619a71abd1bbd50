"""The span exporter: the secrets filter, and the same spans to an OTLP backend."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from stakeflow.config import Settings
from stakeflow.core import semconv as sc
from stakeflow.core.errors import ConfigError
from stakeflow.traces import TraceStore, build_span_processors
from tests.trace_spans import chat_attributes, count, provider


@pytest.fixture
def path(tmp_path) -> Path:
    return tmp_path / "traces.duckdb"


# --- secrets -----------------------------------------------------------------------------------

SECRET = "sk-ant-do-not-store-me"


def test_secret_attributes_are_dropped(path):
    tp = provider(path, resource={"deployment.api_key": SECRET})
    with tp.get_tracer("t").start_as_current_span(
        "chat m",
        attributes={
            **chat_attributes("r", 1, "frontier", "m"),
            "anthropic.api_key": SECRET,
            "http.request.header.authorization": SECRET,
            "oauth.client_secret": SECRET,
            "session.token": SECRET,
            "http.request.header.x-api-key": SECRET,
            "db.password": SECRET,
            sc.GEN_AI_INPUT_TOKENS: 10,
            sc.GEN_AI_CACHE_READ: 3,
            sc.GEN_AI_CACHE_WRITE: 2,
            sc.RAW_INPUT_TOKENS: 5,
            sc.GEN_AI_OUTPUT_TOKENS: 7,
        },
    ):
        pass
    store = TraceStore(path)
    store.compact()
    with store.reader() as con:
        keys = [k for (k,) in con.execute("SELECT unnest(json_keys(attributes)) FROM spans").fetchall()]
        resource = con.execute("SELECT resource FROM spans").fetchone()[0]
        leaked = con.execute(f"SELECT count(*) FROM spans WHERE spans::VARCHAR LIKE '%{SECRET}%'").fetchone()[0]
    assert leaked == 0 and SECRET not in resource and "deployment.api_key" not in resource
    assert not [k for k in keys if any(p in k for p in ("api_key", "authorization", "secret", "password"))]
    assert "session.token" not in keys and "http.request.header.x-api-key" not in keys
    assert {
        sc.GEN_AI_INPUT_TOKENS,
        sc.GEN_AI_CACHE_READ,
        sc.GEN_AI_CACHE_WRITE,
        sc.RAW_INPUT_TOKENS,
        sc.GEN_AI_OUTPUT_TOKENS,
    } <= set(keys)


# --- OTLP ------------------------------------------------------------------------------------


class _Collector(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, bytes]]] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_otlp_variables_also_send_spans_to_an_otlp_backend(path, monkeypatch):
    settings = Settings(home=path.parent, traces=path)
    assert len(build_span_processors(settings)) == 2  # no OTLP variables: the trace store only (sync + batch)

    server = HTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Collector.received = []
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    try:
        processors = build_span_processors(settings)
        assert [type(p).__name__ for p in processors] == ["_Only", "_Only", "BatchSpanProcessor"]
        tp = TracerProvider(resource=Resource.create({"service.name": "stakeflow"}))
        for p in processors:
            tp.add_span_processor(p)
        with tp.get_tracer("t").start_as_current_span(
            "chat m", attributes={**chat_attributes("otlp-run", 1, "open", "m"), "anthropic.api_key": SECRET}
        ):
            pass
        tp.shutdown()
    finally:
        server.shutdown()
    assert [p for p, _ in _Collector.received] == ["/v1/traces"]
    request = ExportTraceServiceRequest.FromString(_Collector.received[0][1])
    spans = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert [s.name for s in spans] == ["chat m"]
    keys = {a.key for a in spans[0].attributes}
    assert sc.RUN_ID in keys and "anthropic.api_key" not in keys
    assert SECRET.encode() not in _Collector.received[0][1]
    assert count(TraceStore(path)) == 1  # and the trace store got it too


def test_otlp_over_grpc_is_a_clear_error(path, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf"):
        build_span_processors(Settings(home=path.parent, traces=path))


# --- resource ----------------------------------------------------------------------------------


def test_the_process_resource_follows_the_standard_variables(monkeypatch):
    from stakeflow.temporal.telemetry import process_resource

    default = process_resource("worker").attributes
    assert (default["service.name"], default["stakeflow.process"]) == ("stakeflow", "worker")
    monkeypatch.setenv(
        "OTEL_RESOURCE_ATTRIBUTES",
        "service.name=from-attributes,deployment.environment=prod,stakeflow.process=gpu-worker",
    )
    named = process_resource("worker").attributes
    assert (named["service.name"], named["deployment.environment"], named["stakeflow.process"]) == (
        "from-attributes",
        "prod",
        "gpu-worker",
    )
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-service-name")  # the spec: it wins over the attributes
    assert process_resource("worker").attributes["service.name"] == "from-service-name"
    assert process_resource("worker").attributes["service.instance.id"] == default["service.instance.id"]
