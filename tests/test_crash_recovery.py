"""Crash recovery with real processes: workers and a Temporal server killed with SIGKILL.

Workers run as ``python worker.py`` subprocesses, each in its own process group,
and talk to :mod:`tests.fake_anthropic` in this process. Nothing is mocked but
the model. Every process started here is killed in a ``finally`` block.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path
from typing import Callable

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from durable_agent.demo import shop
from durable_agent.schemas import AgentResult, StatusView
from tests import tools_for_tests
from tests.conftest import Harness, subprocess_env, temporal_cli
from tests.fake_anthropic import FakeAnthropic, text, tool_use
from tests.processes import Processes, free_port, result_of, worker_argv
from tests.test_failures import approval_pending, attempts, until

pytestmark = pytest.mark.slow

MODEL = "claude-haiku-4-5"

CLAUDE_CONFIG = f"""
tool_modules = ["tests.tools_for_tests"]
[defaults]
agent = "crash"
[agents.crash]
model = "{MODEL}"
tools = ["refund_then_wait", "echo"]
autonomy = "autonomous"
"""

# The offline model is free; a price here gives the run a cost to keep across the restart.
OFFLINE_CONFIG = """
tool_modules = ["durable_agent.demo.shop"]
[pricing.models.offline]
input = 3.0
output = 15.0
[defaults]
agent = "support"
[agents.support]
model = "offline"
tools = ["lookup_order", "search_kb", "issue_refund", "cancel_order"]
autonomy = "supervised"
[agents.support.approval]
max_amount = 1000.0
"""


#: Starts one worker subprocess under the given :class:`Processes`.
StartWorker = Callable[[Processes], "subprocess.Popen[bytes]"]


class TestWorkerKilled:
    """A worker killed with SIGKILL mid-step: another worker finishes the run, no side effect twice."""

    @pytest.fixture
    def claude_worker(
        self, harness: Harness, fake_anthropic: FakeAnthropic, server_address: str, tmp_path: Path
    ) -> StartWorker:
        """A function that starts a worker subprocess on Claude (the fake) for this test's task queue."""
        config = tmp_path / "agents.toml"
        config.write_text(CLAUDE_CONFIG)
        env = subprocess_env(harness.state, server_address, **fake_anthropic.environ())

        def start(processes: Processes) -> subprocess.Popen[bytes]:
            return processes.start("worker", worker_argv(config, harness.task_queue), env)

        return start

    async def test_killed_while_a_tool_runs_the_refund_happens_once(
        self, harness: Harness, fake_anthropic: FakeAnthropic, processes: Processes, claude_worker: StartWorker
    ) -> None:
        fake_anthropic.script(
            tool_use("refund_then_wait", {"order_id": "ord-123", "amount": 20.0, "currency": "USD"}),
            text("Refunded 20 USD on ord-123."),
        )
        first = claude_worker(processes)
        handle = await harness.start({"task": "Refund 20 USD on ord-123"})
        # The money has moved and the tool now waits: the result is not recorded yet.
        await until(lambda: tools_for_tests.calls("refund_then_wait"), "the refund", 60, processes.output)
        processes.kill(first)
        assert len(shop.refunds_for("ord-123")) == 1
        claude_worker(processes)
        result = await result_of(handle, processes)
        history = await handle.fetch_history()

        assert result.status == "success" and result.answer == "Refunded 20 USD on ord-123."
        assert [r["amount"] for r in shop.refunds_for("ord-123")] == [20.0]
        runs = tools_for_tests.calls("refund_then_wait")
        assert [(r["attempt"], r["replayed"]) for r in runs] == [(1, False), (2, True)]
        assert runs[0]["key"] == runs[1]["key"]
        assert attempts(history, "run_tool") == [2]
        assert len(fake_anthropic.requests) == 2

    async def test_killed_while_the_model_thinks(
        self, harness: Harness, fake_anthropic: FakeAnthropic, processes: Processes, claude_worker: StartWorker
    ) -> None:
        fake_anthropic.script(
            tool_use("echo", {"text": "before the crash"}),
            text("this answer never arrives", delay=120),
            text("Done after the crash."),
        )
        first = claude_worker(processes)
        handle = await harness.start({"task": "echo, then answer"})
        await until(lambda: len(fake_anthropic.requests) >= 2, "the second model call", 60, processes.output)
        processes.kill(first)
        claude_worker(processes)
        result = await result_of(handle, processes)
        history = await handle.fetch_history()

        assert result.status == "success" and result.answer == "Done after the crash."
        assert result.steps == 2 and result.tools_used == ["echo"]
        assert len(tools_for_tests.calls("echo")) == 1, "the tool before the crash is not run again"
        assert attempts(history, "think") == [1, 2]
        assert len(fake_anthropic.requests) == 3
        # The retried call sent the same conversation as the lost one.
        assert fake_anthropic.requests[2].body["messages"] == fake_anthropic.requests[1].body["messages"]


class TestServerRestart:
    """The Temporal server killed with SIGKILL and restarted on its database: the run goes on intact."""

    @staticmethod
    def server_argv(db: Path, port: int) -> list[str]:
        return [
            temporal_cli(), "server", "start-dev", "--db-filename", str(db), "--ip", "127.0.0.1",
            "--port", str(port), "--ui-port", str(free_port()), "--headless", "--log-level", "error",
        ]

    @staticmethod
    async def connect(address: str, processes: Processes) -> Client:
        for _ in range(300):
            try:
                client = await Client.connect(address, data_converter=pydantic_data_converter)
                await client.count_workflows()
                return client
            except Exception:
                await asyncio.sleep(0.1)
        raise AssertionError(f"no Temporal server at {address}\n{processes.output()}")

    async def test_run_survives_a_server_restart(self, state_dir: Path, tmp_path: Path, processes: Processes) -> None:
        port = free_port()
        address = f"127.0.0.1:{port}"
        db = tmp_path / "temporal.db"
        config = tmp_path / "agents.toml"
        config.write_text(OFFLINE_CONFIG)
        server = processes.start("server", self.server_argv(db, port), os.environ.copy())
        client = await self.connect(address, processes)
        processes.start("worker", worker_argv(config, "restart"), subprocess_env(state_dir, address))

        handle = await client.start_workflow(
            "AgentWorkflow", {"task": "Refund order ord-789"}, id="restart-run", task_queue="restart", result_type=AgentResult
        )

        await until(lambda: approval_pending(handle), "the approval request", 60, processes.output)
        before = await handle.query("status", result_type=StatusView)

        processes.kill(server)
        assert server.returncode == -signal.SIGKILL
        processes.start("server", self.server_argv(db, port), os.environ.copy())
        client = await self.connect(address, processes)
        handle = client.get_workflow_handle(handle.id, result_type=AgentResult)
        after = await handle.query("status", result_type=StatusView)
        await handle.signal("approve", {"approval_id": after.pending_approvals[0].approval_id, "reviewer": "alice"})
        result = await result_of(handle, processes)

        assert before.step == 3 and before.total_cost > 0
        assert (after.step, after.total_cost, after.usage, after.tools_used) == (
            before.step, before.total_cost, before.usage, before.tools_used
        )
        assert [p.approval_id for p in after.pending_approvals] == [p.approval_id for p in before.pending_approvals]
        assert result.status == "success"
        assert result.steps == 4
        assert result.tools_used == ["lookup_order", "search_kb", "issue_refund"]
        assert result.total_cost > before.total_cost
        assert [r["amount"] for r in shop.refunds_for("ord-789")] == [4999.0]
