"""Observability with real worker processes: the Prometheus endpoint, JSON logs, one sink shared through a SIGKILL.

Workers run as ``python worker.py`` subprocesses (each in its own process group,
killed at the end); the model is :mod:`tests.fake_anthropic` or the offline one.
"""

from __future__ import annotations

import json
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from temporalio.client import Client

from durable_agent import trace
from durable_agent.schemas import AgentResult
from durable_agent.store import ContentStore
from tests.conftest import Harness, subprocess_env
from tests.fake_anthropic import FakeAnthropic, text, tool_use
from tests.processes import Processes, free_port, result_of, worker_argv
from tests.test_crash_recovery import CLAUDE_CONFIG, OFFLINE_CONFIG
from tests.test_failures import until

pytestmark = pytest.mark.slow


def scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return response.read().decode()
    except OSError:
        return ""


class TestWorkerEndpoints:
    """`durable-agent worker --metrics-port N --log-format json`, as an operator runs it."""

    async def test_prometheus_serves_token_and_sdk_metrics_and_logs_are_json(
        self, client: Client, state_dir: Path, server_address: str, tmp_path: Path, processes: Processes
    ) -> None:
        config = tmp_path / "agents.toml"
        config.write_text(OFFLINE_CONFIG)
        port = free_port()
        argv = [*worker_argv(config, "metrics"), "--metrics-port", str(port), "--log-format", "json"]
        worker = processes.start("worker", argv, subprocess_env(state_dir, server_address))
        handle = await client.start_workflow(
            "AgentWorkflow", {"task": "Refund 20 USD on order ord-789"}, id=f"metrics-{port}", task_queue="metrics", result_type=AgentResult
        )
        result = await result_of(handle, processes)
        assert result.status == "success"
        await until(lambda: "gen_ai_client_token_usage" in scrape(port), "the token metric on /metrics", 30, processes.output)
        page = scrape(port)
        tokens = [line for line in page.splitlines() if line.startswith("gen_ai_client_token_usage") and 'gen_ai_token_type="output"' in line]
        assert tokens, page[:2000]
        assert any(line.startswith("gen_ai_client_operation_duration") for line in page.splitlines())
        assert any(line.startswith("agent_step_duration") for line in page.splitlines())
        # The Temporal SDK's own metrics come out of the same endpoint.
        assert any(line.startswith("temporal_request_total") for line in page.splitlines()), page[:3000]

        processes.kill(worker)
        log = sorted(processes.logs.glob("worker-*.log"))[0].read_text()
        lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
        steps = [line for line in lines if line.get("workflow_id") == handle.id and "step" in line and "activity_type" not in line]
        assert [(line["step"], line.get("tool")) for line in steps] == [(1, "lookup_order"), (2, "search_kb"), (3, "issue_refund"), (4, None)]
        assert all(line["run_id"] and line["level"] == "INFO" for line in steps)
        thinks = [line for line in lines if line.get("activity_type") == "think" and line.get("workflow_id") == handle.id]
        assert [line["step"] for line in thinks] == [1, 2, 3, 4] and all(line["attempt"] == 1 for line in thinks)

    async def test_a_bad_metrics_port_stops_the_worker_at_start(self, state_dir: Path, server_address: str, tmp_path: Path, processes: Processes) -> None:
        config = tmp_path / "agents.toml"
        config.write_text(OFFLINE_CONFIG)
        worker = processes.start("worker", worker_argv(config, "bad-port"), subprocess_env(state_dir, server_address, AGENT_METRICS_PORT="eighty"))
        assert worker.wait(60) == 2
        assert "AGENT_METRICS_PORT must be a port number" in processes.output()


class TestSharedSink:
    """Two workers on one sink and one store, one of them killed mid-run: one record per record_id."""

    async def test_one_record_per_id_through_a_sigkill(
        self, harness: Harness, fake_anthropic: FakeAnthropic, server_address: str, tmp_path: Path, processes: Processes
    ) -> None:
        steps = 8
        fake_anthropic.script(*[tool_use("echo", {"text": f"n{i}"}, delay=0.3) for i in range(steps)], text("done", delay=0.3))
        config = tmp_path / "agents.toml"
        config.write_text(CLAUDE_CONFIG)
        env = subprocess_env(harness.state, server_address, **fake_anthropic.environ())
        first = processes.start("worker", worker_argv(config, harness.task_queue), env)
        handle = await harness.start({"task": "echo eight times"})
        store = ContentStore(harness.state / "content")

        async def recorded(count: int) -> bool:
            return len(await trace.read_records(store, handle.id)) >= count

        await until(lambda: recorded(3), "three steps recorded by the first worker", 60, processes.output)
        processes.start("worker", worker_argv(config, harness.task_queue), env)
        processes.kill(first)  # mid-run: the second worker replays and carries on
        result = await result_of(handle, processes)

        # (A model call cut short by the kill used up its scripted reply: the run may take a step less.)
        assert result.status == "success" and result.steps >= steps
        stored = await trace.read_records(store, handle.id)
        assert [r.step for r in stored] == list(range(1, result.steps + 1))
        lines = [json.loads(line) for line in (harness.state / "trace.jsonl").read_text().splitlines()]
        per_id = Counter(line["record_id"] for line in lines if line["session_id"] == handle.id)
        assert per_id == Counter({r.record_id: 1 for r in stored}), per_id
