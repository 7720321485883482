"""OpenTelemetry: one agent_step span per step, parented to Temporal's spans, and step metrics."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import uuid

import pytest

from durable_agent import genai, telemetry
from durable_agent.connection import connect
from durable_agent.schemas import AgentResult, StatusView
from tests.conftest import SUPPORT_PROFILE, make_config
from tests.otel_memory import METRICS, SPANS, install
from durable_agent.cli.worker import create_worker


@pytest.fixture(scope="module", autouse=True)
def otel() -> None:
    if not install():
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
        spans = _run_spans(handle.id)  # this run's trace: the exporter holds other tests' spans too
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
        tokens: dict[str, float] = {}
        for point in _metric_points("agent.tokens"):  # one point per agent and model: other tests' runs count apart
            if point.attributes.get("model") == "offline" and point.attributes.get("agent") == "support":
                tokens[point.attributes["kind"]] = tokens.get(point.attributes["kind"], 0) + point.value
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


def _run_spans(workflow_id: str) -> list:
    """The finished spans of the trace whose ``invoke_agent`` (or starter) span names ``workflow_id``."""
    spans = SPANS.get_finished_spans()
    traces = {s.context.trace_id for s in spans if (s.attributes or {}).get("gen_ai.conversation.id") == workflow_id}
    assert len(traces) == 1, traces
    return [s for s in spans if s.context.trace_id in traces]


async def _offline_run(server_address: str, task: str, *, wait: bool = True) -> tuple[str, object]:
    client = await connect(server_address)
    queue = f"genai-{uuid.uuid4().hex[:8]}"
    workflow_id = f"genai-{uuid.uuid4().hex[:8]}"
    async with create_worker(client, make_config(), task_queue=queue, max_cached_workflows=0):
        handle = await client.start_workflow("AgentWorkflow", {"task": task}, id=workflow_id, task_queue=queue, result_type=AgentResult)
        result = await handle.result() if wait else handle
    return workflow_id, result


class TestGenAIConventions:
    """Spans and metrics named as the OpenTelemetry GenAI conventions name them, once each."""

    async def test_a_run_is_invoke_agent_with_chat_and_execute_tool_spans(self, server_address: str, state_dir) -> None:
        workflow_id, result = await _offline_run(server_address, "Refund 20 USD on order ord-789")
        assert isinstance(result, AgentResult) and result.status == "success"
        spans = _run_spans(workflow_id)
        # Every workflow task replayed the whole history (no cache), yet nothing is there twice.
        assert len({s.context.span_id for s in spans}) == len(spans)
        runs = [s for s in spans if s.name == "invoke_agent support"]
        assert len(runs) == 1
        run = runs[0]
        assert run.attributes["gen_ai.operation.name"] == "invoke_agent"
        assert run.attributes["gen_ai.agent.name"] == "support"
        assert run.attributes["gen_ai.conversation.id"] == workflow_id
        steps = [s for s in spans if s.name == "agent_step"]
        assert len(steps) == 4 and all(s.parent is not None and s.parent.span_id == run.context.span_id for s in steps)

        chats = [s for s in spans if s.name == "chat offline"]
        assert len(chats) == 4  # one per model call
        for chat in chats:
            attrs = chat.attributes
            assert attrs["gen_ai.operation.name"] == "chat"
            assert attrs["gen_ai.provider.name"] == "offline"
            assert attrs["gen_ai.request.model"] == attrs["gen_ai.response.model"] == "offline"
            assert attrs["gen_ai.response.finish_reasons"][0] in ("tool_use", "end_turn")
            assert attrs["gen_ai.usage.input_tokens"] > 0 and attrs["gen_ai.usage.output_tokens"] > 0
            assert attrs["gen_ai.usage.cache_read.input_tokens"] == 0
            assert "gen_ai.input.messages" not in attrs  # content is opt-in
        assert sum(c.attributes["gen_ai.usage.output_tokens"] for c in chats) == result.usage.output_tokens
        tools = sorted((s for s in spans if s.name.startswith("execute_tool ")), key=lambda s: s.start_time)
        assert [s.name for s in tools] == ["execute_tool lookup_order", "execute_tool search_kb", "execute_tool issue_refund"]
        assert all(s.attributes["gen_ai.tool.call.id"].startswith("toolu_offline_") for s in tools)
        assert [s.attributes["gen_ai.tool.name"] for s in tools] == ["lookup_order", "search_kb", "issue_refund"]
        assert "gen_ai.tool.call.arguments" not in tools[0].attributes

        usage = [p for p in _metric_points("gen_ai.client.token.usage") if p.attributes.get("gen_ai.request.model") == "offline"]
        assert {p.attributes["gen_ai.token.type"] for p in usage} == {"input", "output"}
        durations = [p for p in _metric_points("gen_ai.client.operation.duration") if p.attributes.get("gen_ai.request.model") == "offline"]
        assert sum(p.count for p in durations) >= 4

    async def test_message_content_only_when_asked(self, server_address: str, state_dir, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
        workflow_id, _ = await _offline_run(server_address, "Refund 20 USD on order ord-789")
        spans = _run_spans(workflow_id)
        first_chat = min((s for s in spans if s.name == "chat offline"), key=lambda s: s.start_time)
        assert "Refund 20 USD on order ord-789" in first_chat.attributes["gen_ai.input.messages"]
        assert "tool_call" in first_chat.attributes["gen_ai.output.messages"]
        lookup = next(s for s in spans if s.name == "execute_tool lookup_order")
        assert "ord-789" in lookup.attributes["gen_ai.tool.call.arguments"]

    def test_never_with_payload_encryption(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
        assert genai.capture_content()
        monkeypatch.setenv("AGENT_ENCRYPTION_KEYS", "k1:" + "A" * 43 + "=")
        assert not genai.capture_content()
        monkeypatch.delenv("AGENT_ENCRYPTION_KEYS")
        monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "false")
        assert not genai.capture_content()

    async def test_spans_are_visible_while_the_run_runs(self, server_address: str, state_dir) -> None:
        client = await connect(server_address)
        queue = f"genai-live-{uuid.uuid4().hex[:8]}"
        workflow_id = f"genai-live-{uuid.uuid4().hex[:8]}"
        # A profile of its own: the waiting-approvals gauge is counted per agent, and other tests' runs of support count too.
        config = make_config({"genai-live": SUPPORT_PROFILE})
        async with create_worker(client, config, task_queue=queue, max_cached_workflows=0):
            handle = await client.start_workflow(
                "AgentWorkflow", {"task": "Refund order ord-789", "agent": "genai-live"}, id=workflow_id, task_queue=queue
            )
            for _ in range(200):
                status = await handle.query("status", result_type=StatusView)
                if status.pending_approvals:
                    break
                await asyncio.sleep(0.1)
            assert status.pending_approvals
            spans = SPANS.get_finished_spans()
            waiting = sum(p.value for p in _metric_points("agent.approvals.waiting") if p.attributes.get("agent") == "genai-live")
            await handle.signal("reject", {"approval_id": status.pending_approvals[0].approval_id, "reviewer": "test"})
            await handle.result()
            after = sum(p.value for p in _metric_points("agent.approvals.waiting") if p.attributes.get("agent") == "genai-live")
        # Temporal's span of the start names the workflow: it gives the run's trace.
        trace_ids = {
            s.context.trace_id for s in spans if s.name.startswith("StartWorkflow") and (s.attributes or {}).get("temporalWorkflowID") == workflow_id
        }
        assert len(trace_ids) == 1
        names = [s.name for s in spans if s.context.trace_id in trace_ids]
        # The steps done so far, with their model and tool calls, are exported; the run's own span is still open.
        assert names.count("agent_step") >= 2 and names.count("chat offline") >= 2, names
        assert "execute_tool lookup_order" in names
        assert "invoke_agent genai-live" not in names
        # The approval was counted as waiting while it waited, and no longer once decided.
        assert (waiting, after) == (1, 0)

    async def test_the_starters_span_is_the_runs_root(self, server_address: str, state_dir, monkeypatch: pytest.MonkeyPatch) -> None:
        from durable_agent.cli import run as run_cli

        client = await connect(server_address)
        queue = f"genai-start-{uuid.uuid4().hex[:8]}"
        monkeypatch.setenv("AGENT_TASK_QUEUE", queue)
        workflow_id = f"genai-start-{uuid.uuid4().hex[:8]}"
        args = run_cli.parse_args(["Refund 20 USD on order ord-789", "--workflow-id", workflow_id, "--no-wait"])
        async with create_worker(client, make_config(), task_queue=queue, max_cached_workflows=0):
            assert await run_cli.run(args, client=client, out=open(os.devnull, "w")) == 0  # noqa: SIM115
            await client.get_workflow_handle(workflow_id).result()
        spans = _run_spans(workflow_id)
        by_id = {s.context.span_id: s for s in spans}
        starter = next(s for s in spans if s.name == "start_agent_run")
        run = next(s for s in spans if s.name == "invoke_agent support")
        ancestors = []
        node = run
        while node.parent is not None and node.parent.span_id in by_id:
            node = by_id[node.parent.span_id]
            ancestors.append(node.name)
        assert ancestors[-1] == "start_agent_run", ancestors
        assert starter.attributes["gen_ai.conversation.id"] == workflow_id


class TestMcpSpans:
    """An MCP server's tool is an ``execute_tool`` span in the run's trace, like a Python tool."""

    async def test_an_mcp_call_is_an_execute_tool_span(self, server_address: str, state_dir, tmp_path) -> None:
        from durable_agent.models import register_provider, unregister_provider
        from durable_agent.testing import ScriptedModel, answer, tool_use
        from tests.mcp_fixtures import stdio_config

        model = f"scripted-{uuid.uuid4().hex[:8]}"
        register_provider(model, ScriptedModel(script=[tool_use("mcp__tickets__broken_report", {}), answer("no report")]))
        config = make_config(
            {"support": {"tools": ["tickets.*"], "model": model}}, mcp_servers={"tickets": stdio_config(tmp_path)}
        )
        client = await connect(server_address)
        queue, workflow_id = f"mcp-{uuid.uuid4().hex[:8]}", f"mcp-{uuid.uuid4().hex[:8]}"
        try:
            async with create_worker(client, config, task_queue=queue, max_cached_workflows=0):
                handle = await client.start_workflow("AgentWorkflow", {"task": "report"}, id=workflow_id, task_queue=queue, result_type=AgentResult)
                assert (await handle.result()).status == "success"
        finally:
            unregister_provider(model)
        [span] = [s for s in _run_spans(workflow_id) if s.name.startswith("execute_tool ")]
        assert span.name == "execute_tool mcp__tickets__broken_report"
        assert span.attributes["gen_ai.tool.name"] == "mcp__tickets__broken_report"
        assert span.attributes["durable_agent.tool.status"] == "error" and not span.status.is_ok


class TestSubAgentSpans:
    """A sub-agent's run is in its parent's trace, beneath the call that started it."""

    async def test_childs_invoke_agent_is_beneath_the_parents_execute_tool(self, server_address: str, state_dir) -> None:
        from tests.conftest import SUPPORT_PROFILE

        config = make_config({"lead": {"model": "offline", "subagents": ["support"]}, "support": {**SUPPORT_PROFILE, "model": "offline"}})
        client = await connect(server_address)
        queue, workflow_id = f"sub-{uuid.uuid4().hex[:8]}", f"sub-{uuid.uuid4().hex[:8]}"
        async with create_worker(client, config, task_queue=queue, max_cached_workflows=0):
            handle = await client.start_workflow(
                "AgentWorkflow", {"task": "Refund 20 USD on order ord-789", "agent": "lead"}, id=workflow_id, task_queue=queue,
                result_type=AgentResult,
            )
            assert (await handle.result()).status == "success"
        spans = _run_spans(workflow_id)
        by_id = {s.context.span_id: s for s in spans}
        [call] = [s for s in spans if s.name == "execute_tool support"]
        [child_run] = [s for s in spans if s.name == "invoke_agent support"]
        assert child_run.attributes["gen_ai.conversation.id"] == f"{workflow_id}/support-1-1"
        ancestors = []
        parent = child_run.parent
        while parent is not None and parent.span_id in by_id:
            ancestors.append(by_id[parent.span_id].name)
            parent = by_id[parent.span_id].parent
        assert "execute_tool support" in ancestors and "invoke_agent lead" in ancestors
        assert call.attributes["durable_agent.tool.status"] == "ok"
