"""OpenTelemetry set-up: one replay-safe TracerProvider per process, flushed on shutdown.

Spans go to the DuckDB trace store (and to any OTLP backend named by the standard
``OTEL_EXPORTER_OTLP_*`` variables). Temporal's OpenTelemetryPlugin carries the trace context
from the client through the workflow to every activity, so one run is one trace across
processes and retries.
"""

from __future__ import annotations

import atexit
import os
import socket

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor
from temporalio.contrib.opentelemetry import OpenTelemetryPlugin, create_tracer_provider

from stakeflow.settings import Settings

_provider = None


def plugins() -> list:
    """The Temporal client plugins every stakeflow client uses."""
    return [OpenTelemetryPlugin()]


def setup_tracing(settings: Settings, service: str, extra: list[SpanProcessor] | None = None):
    """Install the process's TracerProvider once; later calls return the same provider."""
    global _provider
    if _provider is not None:
        return _provider
    from stakeflow.traces import build_span_processors

    resource = Resource.create({
        "service.name": "stakeflow",
        "service.instance.id": f"{socket.gethostname()}-{os.getpid()}",
        "stakeflow.process": service,
    })
    provider = create_tracer_provider(resource=resource)
    for processor in [*build_span_processors(settings), *(extra or [])]:
        provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    _provider = provider
    atexit.register(flush)
    return provider


def flush(timeout_ms: int = 10_000) -> None:
    """Export what is buffered; called at shutdown and before os._exit."""
    if _provider is not None:
        _provider.force_flush(timeout_ms)


def shutdown() -> None:
    global _provider
    if _provider is not None:
        _provider.force_flush(10_000)
        _provider.shutdown()
