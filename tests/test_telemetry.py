"""OpenTelemetry: one agent_step span per step, parented to Temporal's spans, and step metrics."""

from __future__ import annotations

import asyncio
import gc
import logging
import uuid

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from durable_agent import telemetry
from durable_agent.connection import connect
from durable_agent.schemas import AgentResult, StatusView
from tests.conftest import make_config
from durable_agent.cli.worker import create_worker

SPANS = InMemorySpanExporter()
METRICS = InMemoryMetricReader()


@pytest.fixture(scope="module", autouse=True)
def otel() -> None:
    if not telemetry.setup(span_processors=[SimpleSpanProcessor(SPANS)], metric_readers=[METRICS]):
        pytest.skip("telemetry was already set up in this process by something else")


def _metric_points(name: str) -> list:
    points = []
    for resource_metrics in METRICS.get_metrics_data().resource_metrics:
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    points.extend(metric.data.data_points)
    return points


class TestTelemetry:
    """Spans and metrics a platform team sees for a run."""

    async def test_steps_are_spans_linked_to_temporal_and_counted(self, server_address: str, state_dir) -> None:
        client = await connect(server_address)  # carries the OpenTelemetry plugin
        queue = f"otel-{uuid.uuid4().hex[:8]}"
        async with create_worker(client, make_config(), task_queue=queue, max_cached_workflows=0):
            handle = await client.start_workflow(
                "AgentWorkflow", {"task": "Refund 20 USD on order ord-789"}, id=f"otel-{uuid.uuid4().hex[:8]}",
                task_queue=queue, result_type=AgentResult,
            )
            result = await handle.result()
        assert result.status == "success"
        spans = SPANS.get_finished_spans()
        steps = sorted((s for s in spans if s.name == "agent_step"), key=lambda s: s.attributes["agent.step"])
        # Every task replayed from history (no cache), yet each step is one span.
        assert [s.attributes["agent.step"] for s in steps] == [1, 2, 3, 4]
        assert [s.attributes.get("action.tool") for s in steps] == ["lookup_order", "search_kb", "issue_refund", None]
        assert [s.attributes["action.type"] for s in steps] == ["tool_call"] * 3 + ["final_answer"]
        assert [s.attributes["observation.status"] for s in steps] == ["ok", "ok", "ok", "answered"]
        assert all(s.attributes["agent.task_hash"] == telemetry.task_hash("Refund 20 USD on order ord-789") for s in steps)
        assert all(isinstance(s.attributes["action.duration_ms"], int) for s in steps)
        # Linked to Temporal's own spans: one trace, and each step is the parent of its activities' spans.
        assert len({s.context.trace_id for s in steps}) == 1
        by_parent: dict[int, list[str]] = {}
        for span in spans:
            if span.parent is not None:
                by_parent.setdefault(span.parent.span_id, []).append(span.name)
        first = by_parent.get(steps[0].context.span_id, [])
        assert any("think" in name for name in first), first
        assert any("run_tool" in name for name in first), first
        workflow_spans = [s for s in spans if "AgentWorkflow" in s.name and s.context.trace_id == steps[0].context.trace_id]
        assert workflow_spans, sorted({s.name for s in spans})

        durations = [p for p in _metric_points("agent.step.duration") if p.attributes.get("agent") == "support"]
        by_tool = {p.attributes["tool"]: p.count for p in durations}
        assert by_tool.get("lookup_order", 0) >= 1 and by_tool.get("(answer)", 0) >= 1
        tokens = {p.attributes["kind"]: p.value for p in _metric_points("agent.tokens") if p.attributes.get("model") == "offline"}
        assert tokens["input"] >= result.usage.input_tokens
        assert tokens["output"] >= result.usage.output_tokens


class TestShutdown:
    """Stopping a worker with runs in flight stays quiet."""

    async def test_no_context_errors_when_a_worker_stops_mid_run(self, server_address: str, state_dir, caplog) -> None:
        client = await connect(server_address)
        queue = f"otel-stop-{uuid.uuid4().hex[:8]}"
        with caplog.at_level(logging.ERROR):
            async with create_worker(client, make_config(), task_queue=queue):
                handle = await client.start_workflow(
                    "AgentWorkflow", {"task": "Refund order ord-789"}, id=f"otel-stop-{uuid.uuid4().hex[:8]}", task_queue=queue,
                )
                for _ in range(100):
                    status = await handle.query("status", result_type=StatusView)
                    if status.pending_approvals:
                        break
                    await asyncio.sleep(0.1)
                assert status.pending_approvals
            # The worker has stopped with the run cached and waiting inside its step span.
            gc.collect()
        await handle.terminate("test over")
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert errors == [], [r.getMessage() for r in errors]
