"""Nobody serves the limits queue: the run, the worker's start line and ``worker --check`` say so.

Daily-budget ledgers and rate limiters run on ``<queue>-limits``. When every worker
runs with ``--no-limits``, a run that needs its daily budget waits; what it waits
for, and why, must be visible: in the run's ``status``, in the pending activity's
last failure (``temporal workflow describe``), at the worker's start and in its check.
On the session's real Temporal server, with real worker processes for the CLI.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowHandle
from temporalio.worker import Worker

from durable_agent.activities.budget import limits_task_queue
from durable_agent.cli.worker import workflow_runner
from durable_agent.queues import workflow_pollers
from durable_agent.schemas import StatusView
from durable_agent.workflows import ENTITY_WORKFLOWS
from tests.conftest import ROOT, Harness, make_config, subprocess_env
from tests.processes import Processes, worker_argv
from tests.test_failures import until

DAILY_PROFILE: dict[str, Any] = {"model": "offline", "tools": ["lookup_order"], "autonomy": "autonomous", "daily_budget_usd": 5.0}
#: The offline model is free; a price gives each call a cost to lease from the daily budget.
PRICED_OFFLINE = {"models": {"offline": {"input": 3.0, "output": 15.0}}}

DAILY_CONFIG = """
tool_modules = ["durable_agent.demo.shop"]
[defaults]
agent = "daily"
[agents.daily]
model = "offline"
tools = ["lookup_order"]
autonomy = "autonomous"
daily_budget_usd = 5.0
"""


async def last_failure(handle: WorkflowHandle[Any, Any]) -> str:
    """The last failure of the run's pending activity, as ``temporal workflow describe`` shows it."""
    pending = (await handle.describe()).raw_description.pending_activities
    return pending[0].last_failure.message if pending else ""


class TestTheRunSaysWhatItWaitsFor:
    """A run waiting for its daily budget names the limits queue, and its activity says nothing polls it."""

    async def test_status_and_activity_name_the_unserved_queue(self, harness: Harness) -> None:
        limits_queue = limits_task_queue(harness.task_queue)
        async with harness.worker(make_config({"daily": DAILY_PROFILE}, pricing=PRICED_OFFLINE), serve_limits=False):
            handle = await harness.start({"task": "Look up order ord-789"})

            async def waiting() -> StatusView | None:
                status = await handle.query("status", result_type=StatusView)
                return status if status.phase == "waiting_for_budget" else None

            await until(waiting, "the wait for the daily budget")
            status = await handle.query("status", result_type=StatusView)

            async def said_why() -> bool:
                return "no worker polls task queue" in await last_failure(handle)

            await until(said_why, "the lease activity's account of the wait", 60)
            failure = await last_failure(handle)
            # Someone starts serving it: the run goes on.
            limits = Worker(
                harness.client, task_queue=limits_queue, workflows=ENTITY_WORKFLOWS, workflow_runner=workflow_runner(), max_cached_workflows=0
            )
            async with limits:
                result = await handle.result()
        assert status.waiting_for is not None
        assert f"task queue {limits_queue!r}" in status.waiting_for and "--no-limits" in status.waiting_for, status.waiting_for
        assert f"no worker polls task queue {limits_queue!r}" in failure and "--no-limits" in failure
        assert result.status == "success"


@pytest.mark.slow
class TestWorkerCheck:
    """``worker --check`` fails while workers are up and none polls the limits queue; ``--no-limits`` warns at start."""

    async def test_check_says_nothing_polls_the_limits_queue(
        self, harness: Harness, processes: Processes, server_address: str, tmp_path: Path
    ) -> None:
        config = tmp_path / "agents.toml"
        config.write_text(DAILY_CONFIG)
        limits_queue = limits_task_queue(harness.task_queue)
        env = subprocess_env(harness.state, server_address)
        argv = worker_argv(config, harness.task_queue)
        processes.start("no-limits", [*argv, "--no-limits"], env)
        await until(lambda: workflow_pollers(harness.client, harness.task_queue), "the worker to poll", 60, processes.output)

        def check(*extra: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "worker.py", "--check", "--config", str(config), "--task-queue", harness.task_queue, *extra],
                cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
            )

        unserved = [check(), check("--no-limits")]
        processes.start("limits", argv, env)
        await until(lambda: workflow_pollers(harness.client, limits_queue), "a worker to serve the limits queue", 60, processes.output)
        served = check("--no-limits")
        processes.start("served-no-limits", [*argv, "--no-limits"], env)
        later = processes.logs / "served-no-limits-2.log"
        await until(lambda: "worker polling" in later.read_text(), "the second --no-limits worker to start", 60, processes.output)

        start_line = (processes.logs / "no-limits-0.log").read_text()
        assert "--no-limits" in start_line and f"no worker polls task queue {limits_queue!r}" in start_line, start_line
        assert "agent 'daily' has a daily budget" in start_line
        for result in unserved:
            assert result.returncode == 1, result.stdout + result.stderr
            assert f"no worker polls task queue {limits_queue!r}" in result.stderr and "agent 'daily' has a daily budget" in result.stderr
        assert served.returncode == 0, served.stderr
        assert f"limits queue {limits_queue!r} is served" in served.stdout
        # Served by another worker: a reminder, not an alarm.
        assert f"started with --no-limits, and the profiles need task queue {limits_queue!r}" in later.read_text()
