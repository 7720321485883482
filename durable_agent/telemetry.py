"""OpenTelemetry: an ``agent_step`` span per step, step metrics, linked to Temporal's spans.

The worker and the starter call :func:`setup` once. It installs Temporal's
replay-safe tracer and meter providers (``temporalio.contrib.opentelemetry``), so
the spans and metrics the workflow records are emitted once, never again on
replay, with span ids drawn from the workflow's deterministic randomness.
:func:`plugin` links them with Temporal's own workflow and activity spans: a
step's span is the parent of its ``think`` and ``run_tool`` activity spans.

Export is over OTLP/HTTP when the standard variables say so
(``OTEL_EXPORTER_OTLP_ENDPOINT``, or the ``..._TRACES_ENDPOINT`` /
``..._METRICS_ENDPOINT`` ones, plus headers and the rest as the exporter reads
them). Without them nothing leaves the process. A Prometheus scrape endpoint serves
the same metrics when a port is given (``worker --metrics-port N`` or
``AGENT_METRICS_PORT``), and :func:`temporal_runtime` routes the Temporal SDK's
own metrics (task latencies, poll counts, slots...) into the same meter provider.
The GenAI-convention spans and metrics are in :mod:`durable_agent.genai`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from durable_agent import anomalies, genai, redaction
from durable_agent.schemas import DecisionRecord, Usage

#: Warnings whose text the anomaly rules write from tool names and numbers: only theirs goes on a span whole.
_ANOMALY_KINDS = frozenset({anomalies.POSSIBLE_LOOP, anomalies.HIGH_COST, anomalies.HIGH_TOKEN_USAGE})
SPAN_AGENT_STEP = "agent_step"
SPAN_COMPACTION = "agent_compaction"

_lock = threading.Lock()
_configured = False
_metrics_exported = False


class _EvictionDetachFilter(logging.Filter):
    """Drops OpenTelemetry's "Failed to detach context" when a workflow is evicted mid-span.

    A worker that stops (or evicts a cached run) closes the suspended workflow
    coroutine: every span still open in it unwinds under ``GeneratorExit`` in
    another context, and OpenTelemetry logs an ERROR with a traceback for each.
    Nothing is lost (the run resumes on another worker from history); only this
    exact teardown is silenced, every other context error still shows.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage() != "Failed to detach context" or not record.exc_info:
            return True
        error = record.exc_info[1]
        return not (isinstance(error, ValueError) and isinstance(error.__context__, GeneratorExit))


def _otlp_wanted(signal: str) -> bool:
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT"))


def metrics_port(flag: int | None = None) -> int | None:
    """The Prometheus port: ``flag`` if given, else ``AGENT_METRICS_PORT``, else none.

    Raises:
        ValueError: when ``AGENT_METRICS_PORT`` is not a port number.
    """
    if flag is not None:
        return flag
    raw = os.environ.get("AGENT_METRICS_PORT", "").strip()
    if not raw:
        return None
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ValueError(f"AGENT_METRICS_PORT must be a port number (1-65535), got {raw!r}")
    return int(raw)


def _prometheus_reader(port: int, host: str) -> MetricReader:
    """A reader that serves every metric of this process at ``http://host:port/metrics``."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import start_http_server

    reader = PrometheusMetricReader()
    start_http_server(port, addr=host)
    return reader


def metrics_exported() -> bool:
    """Whether metrics leave this process (OTLP or Prometheus), so the SDK's own are worth collecting."""
    return _metrics_exported


def setup(
    service_name: str = "durable-agent",
    *,
    span_processors: Sequence[SpanProcessor] = (),
    metric_readers: Sequence[MetricReader] = (),
    prometheus_port: int | None = None,
    prometheus_host: str = "0.0.0.0",
) -> bool:
    """Install the process's tracer and meter providers (once; later calls do nothing).

    Args:
        service_name: ``service.name`` of the resource, unless ``OTEL_SERVICE_NAME`` says otherwise.
        span_processors: Extra span processors (tests pass an in-memory exporter).
        metric_readers: Extra metric readers (tests pass an in-memory reader).
        prometheus_port: Serve the metrics for Prometheus on this port (``/metrics``).
        prometheus_host: The address the Prometheus endpoint listens on.

    Raises:
        OSError: when the Prometheus port cannot be bound (in use, or not allowed).

    Returns:
        Whether this call installed them.
    """
    global _configured, _metrics_exported
    with _lock:
        if _configured:
            return False
        from temporalio.contrib.opentelemetry import ReplaySafeMeterProvider, create_tracer_provider

        resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)})
        tracer_provider = create_tracer_provider(resource=resource)
        if _otlp_wanted("TRACES"):
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        for processor in span_processors:
            tracer_provider.add_span_processor(processor)
        readers = list(metric_readers)
        if _otlp_wanted("METRICS"):
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

            readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
        if prometheus_port is not None:
            readers.append(_prometheus_reader(prometheus_port, prometheus_host))
        _metrics_exported = _otlp_wanted("METRICS") or prometheus_port is not None
        logging.getLogger("opentelemetry.context").addFilter(_EvictionDetachFilter())
        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(ReplaySafeMeterProvider(MeterProvider(resource=resource, metric_readers=readers)))
        _configured = True
        return True


def shutdown() -> None:
    """Flush and stop the providers :func:`setup` installed: for a process that exits without its atexit handlers."""
    if not _configured:
        return
    for provider in (trace.get_tracer_provider(), metrics.get_meter_provider()):
        stop = getattr(provider, "shutdown", None) or getattr(provider, "force_flush", None)
        if callable(stop):
            try:
                stop()
            except Exception:  # noqa: BLE001 - an exporter that cannot flush must not turn an exit into a crash
                logging.getLogger("durable_agent.telemetry").warning("telemetry could not be flushed at exit", exc_info=True)


def is_configured() -> bool:
    """Whether :func:`setup` has installed this process's providers."""
    return _configured


def temporal_runtime() -> tuple[Any, Any]:
    """A Temporal runtime whose SDK metrics go to this process's meter provider, and the exporter to run.

    Returns:
        ``(runtime, exporter)``: pass ``runtime`` to ``Client.connect`` and keep
        ``async with exporter:`` open while the worker runs (it drains the SDK's
        metric buffer every second into OTLP and Prometheus alike).
    """
    from temporalio.contrib.opentelemetry import MetricsExporter
    from temporalio.runtime import MetricBuffer, MetricBufferDurationFormat, Runtime, TelemetryConfig

    buffer = MetricBuffer(10_000, duration_format=MetricBufferDurationFormat.SECONDS)
    runtime = Runtime(telemetry=TelemetryConfig(metrics=buffer, logging=core_logging()))
    return runtime, MetricsExporter(buffer)


def core_logging() -> Any:
    """The Temporal core's log lines through Python's ``logging`` (logger ``temporalio.core``).

    Left to itself the core writes its warnings to standard output, where they would
    corrupt what a command prints there (the starter's ``--json`` result).
    """
    from temporalio.runtime import LogForwardingConfig, LoggingConfig, TelemetryFilter

    return LoggingConfig(
        filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
        forwarding=LogForwardingConfig(logger=logging.getLogger("temporalio.core")),
    )


def install_default_runtime() -> None:
    """Make the process's default Temporal runtime one whose core logs go through :func:`core_logging`.

    Called by the ``durable-agent`` command before it connects anywhere.
    """
    from temporalio.runtime import Runtime, TelemetryConfig

    Runtime.set_default(Runtime(telemetry=TelemetryConfig(logging=core_logging())), error_if_already_set=False)


def plugin() -> Any:
    """The Temporal plugin that traces workflows and activities and parents our spans.

    Put it on the client (``Client.connect(plugins=[...])``); workers built from
    that client use it too.
    """
    from temporalio.contrib.opentelemetry import OpenTelemetryPlugin

    return OpenTelemetryPlugin(add_temporal_spans=True)


def task_hash(task: str) -> str:
    """A short, stable fingerprint of a task, for grouping runs without logging their text."""
    return hashlib.sha256(task.encode("utf-8")).hexdigest()[:16]


@contextlib.contextmanager
def step_span(step: int, task_fingerprint: str, agent: str) -> Iterator[trace.Span]:
    """The ``agent_step`` span around one think -> act -> observe iteration (workflow code)."""
    with genai.tracer().start_as_current_span(
        SPAN_AGENT_STEP,
        attributes={"agent.step": step, "agent.task_hash": task_fingerprint, "agent.id": agent},
    ) as span:
        yield span


@contextlib.contextmanager
def compaction_span(step: int, agent: str) -> Iterator[trace.Span]:
    """The ``agent_compaction`` span around one compaction of the conversation (workflow code)."""
    with genai.tracer().start_as_current_span(SPAN_COMPACTION, attributes={"agent.step": step, "agent.id": agent}) as span:
        yield span


def describe_step(span: trace.Span, record: DecisionRecord) -> None:
    """Put a decision record's action and observation on the step's span.

    Each warning is an ``anomaly`` event with its ``kind``; the text too for the
    anomaly rules' own (other warnings can quote a result, e.g. a key of it).
    """
    span.set_attribute("action.type", record.action.type)
    if record.action.tool:
        span.set_attribute("action.tool", record.action.tool)
    duration = record.observation.get("duration_ms")
    if isinstance(duration, (int, float)):
        span.set_attribute("action.duration_ms", int(duration))
    span.set_attribute("observation.status", str(record.observation.get("status", "")))
    for warning in record.warnings:
        kind = redaction.warning_kind(warning)
        span.add_event("anomaly", {"kind": kind, "warning": warning} if kind in _ANOMALY_KINDS else {"kind": kind})


class _Instruments:
    def __init__(self) -> None:
        meter = metrics.get_meter(genai.INSTRUMENTATION)
        self.step_duration = meter.create_histogram(
            "agent.step.duration", unit="ms", description="Duration of an agent step, by tool and observation status"
        )
        self.tokens = meter.create_counter("agent.tokens", unit="{token}", description="Model tokens, by kind")
        self.cost = meter.create_counter("agent.cost", unit="USD", description="Estimated model cost")
        self.approvals_waiting = meter.create_up_down_counter(
            "agent.approvals.waiting", unit="{approval}", description="Actions (and paused runs) waiting for a reviewer, summed over workers"
        )
        self.anomalies = meter.create_counter("agent.anomalies", unit="{anomaly}", description="Anomalies found, by kind and action")
        self.daily_budget_remaining = meter.create_gauge(
            "agent.daily_budget.remaining", unit="USD", description="An agent's shared daily budget left, as last seen"
        )


#: The agent's instruments, made on first use (after the worker has set the meter provider).
_step_instruments = functools.cache(_Instruments)


def record_step_metrics(record: DecisionRecord, duration_ms: float, model: str) -> None:
    """Count a step: its duration by tool and status, its tokens by kind, its cost."""
    inst = _step_instruments()
    base = {"agent": record.agent_id}
    inst.step_duration.record(
        duration_ms,
        {**base, "tool": record.action.tool or "(answer)", "status": str(record.observation.get("status", ""))},
    )
    usage = Usage(**record.cost.model_dump(exclude={"estimated_cost"}))
    for kind, amount in (
        ("input", usage.input_tokens),
        ("output", usage.output_tokens),
        ("cache_write", usage.cache_creation_input_tokens),
        ("cache_read", usage.cache_read_input_tokens),
    ):
        if amount:
            inst.tokens.add(amount, {**base, "model": model, "kind": kind})
    if record.cost.estimated_cost:
        inst.cost.add(record.cost.estimated_cost, {**base, "model": model})


# Workflow code calls these: the meter provider is Temporal's replay-safe one, so a
# replayed step records nothing again.


def count_approvals_waiting(agent: str, delta: int) -> None:
    """One more (``+1``) or one fewer (``-1``) action or paused run waiting for a reviewer."""
    _step_instruments().approvals_waiting.add(delta, {"agent": agent})


def count_anomaly(agent: str, kind: str, action: str) -> None:
    """An anomaly of ``kind`` was found, and the run did ``action`` (warn, pause, stop)."""
    _step_instruments().anomalies.add(1, {"agent": agent, "kind": kind, "action": action})


def set_daily_budget_remaining(agent: str, remaining: float) -> None:
    """The agent's shared daily budget left, as the ledger last answered."""
    _step_instruments().daily_budget_remaining.set(remaining, {"agent": agent})
