"""One in-memory span exporter and metric reader for every test module of a process.

The tracer and meter providers are installed once per process
(:func:`durable_agent.telemetry.setup`), so test modules that read spans share these.
"""

from __future__ import annotations

from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from durable_agent import telemetry

SPANS = InMemorySpanExporter()
METRICS = InMemoryMetricReader()
_installed = False


def install() -> bool:
    """Install the providers with :data:`SPANS` and :data:`METRICS`; False when something else installed them first."""
    global _installed
    if not _installed:
        _installed = telemetry.setup(span_processors=[SimpleSpanProcessor(SPANS)], metric_readers=[METRICS])
    return _installed
