"""A worker without the encryption keys, polling a queue of encrypted runs, fails no run.

Real worker processes (``python worker.py``) on one task queue of the session's
Temporal server, one with ``AGENT_ENCRYPTION_KEYS`` and one without. The worker
without keys fails the tasks it cannot read (retried, so the one with keys takes
them), says why loudly (key ids, never keys), stops once activities arrive
encrypted, and refuses to start (``--check`` says so) while open runs need keys
it lacks.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from durable_agent.cli.worker import workflow_runner
from durable_agent.converter import guarded_client
from durable_agent.encryption import KeyRing, with_encryption
from durable_agent.queues import workflow_pollers
from durable_agent.schemas import AgentResult, StatusView
from durable_agent.workflows import WORKFLOWS
from tests.conftest import ROOT, Harness, subprocess_env
from tests.processes import Processes, result_of, worker_argv
from tests.test_crash_recovery import OFFLINE_CONFIG
from tests.test_failures import attempts, events, until

pytestmark = pytest.mark.slow


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


async def encrypted_client(harness: Harness, keys: str) -> Client:
    return Client(**{**harness.client.config(), "data_converter": with_encryption(pydantic_data_converter, KeyRing.parse(keys))})


async def start(client: Client, harness: Harness, task: str) -> WorkflowHandle[object, AgentResult]:
    return await client.start_workflow(
        "AgentWorkflow", {"task": task}, id=f"run-{uuid.uuid4().hex[:12]}", task_queue=harness.task_queue, result_type=AgentResult
    )


def worker_log(processes: Processes, name: str) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted(processes.logs.glob(f"{name}-*.log")))


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "agents.toml"
    path.write_text(OFFLINE_CONFIG)
    return path


class TestKeylessWorker:
    """Two workers on one queue, one without the keys: the runs succeed on the other."""

    async def test_its_tasks_fail_and_are_retried_where_the_keys_are(
        self, harness: Harness, processes: Processes, server_address: str, config: Path
    ) -> None:
        key = new_key()
        keys = f"k1:{key}"
        argv = worker_argv(config, harness.task_queue)
        keyless = processes.start("keyless", argv, subprocess_env(harness.state, server_address))
        await until(lambda: workflow_pollers(harness.client, harness.task_queue), "the keyless worker to poll", 60, processes.output)
        client = await encrypted_client(harness, keys)
        handle = await start(client, harness, "Refund $20 on order ord-789")

        async def task_failed() -> bool:
            return bool(events(await handle.fetch_history(), EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED))

        # The only worker polling has no keys: it takes the run's first task and fails it, leaving the run alone.
        await until(task_failed, "the keyless worker to fail the workflow task", 60, processes.output)
        # A worker with the keys that runs workflows only: every activity of the run goes to the keyless one.
        workflows_only = Worker(
            guarded_client(client), task_queue=harness.task_queue, workflows=WORKFLOWS, workflow_runner=workflow_runner(), max_cached_workflows=0
        )
        async with workflows_only:
            await until(lambda: keyless.poll() is not None, "the keyless worker to stop", 120, processes.output)
        processes.start("keyed", argv, subprocess_env(harness.state, server_address, AGENT_ENCRYPTION_KEYS=keys))
        result = await result_of(handle, processes)
        history = await handle.fetch_history()

        assert result.status == "success", result
        assert keyless.returncode == 2, processes.output()
        log = worker_log(processes, "keyless")
        assert f"a workflow task of {handle.id!r}" in log and "encrypted with key 'k1'" in log, log
        assert "AGENT_ENCRYPTION_KEYS is not set on this worker" in log
        assert f"activity resolve_agent of workflow {handle.id!r}" in log
        assert "stopping" in log
        assert key not in log and key not in worker_log(processes, "keyed")
        assert events(history, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED) == []
        # The keyless worker's attempt failed retryably; the next, on the worker with the keys, resolved the agent.
        assert attempts(history, "resolve_agent") == [2]

    async def test_it_will_not_start_while_open_runs_need_the_keys(
        self, harness: Harness, processes: Processes, server_address: str, config: Path
    ) -> None:
        keys = f"k1:{new_key()}"
        keyed_env = subprocess_env(harness.state, server_address, AGENT_ENCRYPTION_KEYS=keys)
        processes.start("keyed", worker_argv(config, harness.task_queue), keyed_env)
        client = await encrypted_client(harness, keys)
        handle = await start(client, harness, "Refund order ord-789")  # 4,999 USD: it waits for a reviewer

        async def waiting() -> bool:
            return bool((await handle.query("status", result_type=StatusView)).pending_approvals)

        await until(waiting, "the approval request", 60, processes.output)
        keyless_env = subprocess_env(harness.state, server_address)
        argv = [sys.executable, "worker.py", "--config", str(config), "--task-queue", harness.task_queue]
        checked = subprocess.run([*argv, "--check"], cwd=ROOT, env=keyless_env, capture_output=True, text=True, timeout=120, check=False)
        started = subprocess.run(argv, cwd=ROOT, env=keyless_env, capture_output=True, text=True, timeout=120, check=False)
        with_keys = subprocess.run([*argv, "--check"], cwd=ROOT, env=keyed_env, capture_output=True, text=True, timeout=120, check=False)

        for refused, status in ((checked, 1), (started, 2)):
            assert refused.returncode == status, refused.stderr
            assert "encrypted with key 'k1'" in refused.stderr and handle.id in refused.stderr, refused.stderr
            assert "AGENT_ENCRYPTION_KEYS is not set on this worker" in refused.stderr
        assert with_keys.returncode == 0, with_keys.stderr
