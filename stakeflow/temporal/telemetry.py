"""OpenTelemetry set-up: one replay-safe TracerProvider per process, flushed on shutdown.

Spans go to the DuckDB trace store (and to any OTLP backend named by the standard
``OTEL_EXPORTER_OTLP_*`` variables). Temporal's OpenTelemetry interceptor (in ``StakeflowPlugin``) carries the
trace context from the client through the workflow to every activity, so one run is one trace across
processes and retries.

The process's resource follows the standard variables too (``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``, read by the SDK's own resource detection): an operator running
workers for two teams names them apart the way every OTel backend expects. Unset, a process is
``service.name = stakeflow`` with its role in ``stakeflow.process`` (``worker``).
"""

from __future__ import annotations

import atexit
import os
import socket

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, SERVICE_NAME, OTELResourceDetector, Resource
from opentelemetry.sdk.trace import SpanProcessor
from temporalio.contrib.opentelemetry import create_tracer_provider

from stakeflow.config import Settings

_provider = None


DEFAULT_SERVICE_NAME = "stakeflow"


def process_resource(role: str) -> Resource:
    """The resource of a stakeflow process: stakeflow's defaults, under what the standard variables say.

    ``Resource.create`` alone would let the defaults win over ``OTEL_SERVICE_NAME`` (its argument
    overrides what it detects), so the variables are detected again and merged on top.
    """
    defaults = {
        SERVICE_NAME: DEFAULT_SERVICE_NAME,
        SERVICE_INSTANCE_ID: f"{socket.gethostname()}-{os.getpid()}",
        "stakeflow.process": role,
    }
    return Resource.create(defaults).merge(OTELResourceDetector().detect())


def setup_tracing(settings: Settings, service: str, extra: list[SpanProcessor] | None = None):
    """Install the process's TracerProvider once; later calls return the same provider."""
    global _provider
    if _provider is not None:
        return _provider
    from stakeflow.traces import build_span_processors

    provider = create_tracer_provider(resource=process_resource(service))
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
