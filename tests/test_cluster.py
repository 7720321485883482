"""Many hosts: workers that share nothing but Temporal and an S3 store, with payloads and content encrypted.

Every worker is a ``python worker.py`` process with its own ``AGENT_STATE_DIR``
(as on separate hosts), pointed at ``moto_server`` over HTTP as the S3 store. The
model is the fake Anthropic API, answering each run by how far it has got.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter

from durable_agent.encryption import DecryptionError, KeyRing, with_encryption
from durable_agent.schemas import AgentResult
from tests.conftest import Harness, subprocess_env, temporal_cli
from tests.test_approvals import REFUND_4999, wait_pending
from tests.test_processes import cli
from tests.fake_anthropic import FakeAnthropic, RecordedRequest, Reply, text, tool_use
from tests.s3_server import aws_env, create_bucket, payload_bytes
from tests.processes import Processes, worker_argv
from tests.test_failures import until

pytestmark = pytest.mark.slow

MARKER = "MARKER-cluster-41d9"
CONFIG = """
tool_modules = ["tests.tools_for_tests"]
[defaults]
agent = "ops"
[agents.ops]
model = "claude-haiku-4-5"
tools = ["echo", "big_output", "slow_transfer"]
autonomy = "autonomous"
"""


def new_key(kid: str) -> str:
    return f"{kid}:{base64.b64encode(os.urandom(32)).decode()}"


def by_progress(request: RecordedRequest) -> Reply:
    """Each run: echo the task's marker, two 8 KB outputs, a slow transfer, then the answer."""
    messages = request.body["messages"]
    task = messages[0]["content"][0]["text"] if isinstance(messages[0]["content"], list) else messages[0]["content"]
    done = sum(1 for m in messages if m["role"] == "assistant")
    if done == 0:
        return tool_use("echo", {"text": f"{MARKER} {task[-8:]}"})
    if done in (1, 2):
        return tool_use("big_output", {"size": 8192})
    if done == 3:
        return tool_use("slow_transfer", {"account": f"acc-{MARKER}", "amount": 5.0, "seconds": 2.0})
    return text(f"Done: {task}")


class Cluster:
    """Workers on 'separate hosts' (their own state folders) sharing one S3 bucket and the keys."""

    def __init__(self, tmp: Path, processes: Processes, address: str, fake: FakeAnthropic, s3: str) -> None:
        self.tmp, self.processes, self.address, self.s3 = tmp, processes, address, s3
        self.bucket = f"agents-{uuid.uuid4().hex[:8]}"
        create_bucket(s3, self.bucket)
        self.task_queue = f"cluster-{uuid.uuid4().hex[:8]}"
        self.config = tmp / "agents.toml"
        self.config.write_text(CONFIG)
        self.fake_env = fake.environ()
        self.hosts = 0
        self.workers: dict[str, subprocess.Popen[bytes]] = {}

    def start_worker(self, keys: str) -> subprocess.Popen[bytes]:
        self.hosts += 1
        state = self.tmp / f"host-{self.hosts}"
        state.mkdir()
        env = subprocess_env(
            state, self.address, AGENT_STORE_URL=f"s3://{self.bucket}/content", AGENT_ENCRYPTION_KEYS=keys,
            TRANSFER_NOTE_CHARS="8192", **aws_env(self.s3), **self.fake_env,
        )
        proc = self.processes.start(f"worker-{self.hosts}", [*worker_argv(self.config, self.task_queue), "--shutdown-grace-seconds", "5"], env)
        self.workers[state.name] = proc
        return proc

    def tool_calls(self, name: str) -> list[dict[str, Any]]:
        rows = []
        for path in self.tmp.glob("host-*/tool-calls.jsonl"):
            rows += [{**json.loads(line), "host": path.parent.name} for line in path.read_text().splitlines() if line.strip()]
        return [r for r in rows if r["tool"] == name]

    def objects(self) -> dict[str, bytes]:
        env = aws_env(self.s3)
        s3 = boto3.client("s3", endpoint_url=self.s3, aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name=env["AWS_DEFAULT_REGION"])
        keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket) for o in page.get("Contents", [])]
        return {k: s3.get_object(Bucket=self.bucket, Key=k)["Body"].read() for k in keys}

    async def client(self, keys: str) -> Client:
        return await Client.connect(self.address, data_converter=with_encryption(pydantic_data_converter, KeyRing.parse(keys)))

    async def start_run(self, client: Client, task: str) -> WorkflowHandle[Any, AgentResult]:
        return await client.start_workflow(
            "AgentWorkflow", {"task": task}, id=f"run-{uuid.uuid4().hex[:10]}", task_queue=self.task_queue, result_type=AgentResult
        )

    async def result(self, handle: WorkflowHandle[Any, AgentResult], timeout: float = 180) -> AgentResult:
        try:
            return await asyncio.wait_for(handle.result(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"run {handle.id} did not finish within {timeout:g}s\n{self.processes.output()}") from None


@pytest.fixture
def cluster(tmp_path: Path, processes: Processes, server_address: str, fake_anthropic: FakeAnthropic, s3_endpoint: str) -> Cluster:
    fake_anthropic.always(by_progress)
    return Cluster(tmp_path, processes, server_address, fake_anthropic, s3_endpoint)


def workers_of(history: Any) -> set[str]:
    """The identities of the workers that took part in a run (workflow tasks and activities)."""
    found = set()
    for e in history.events:
        for attr in ("workflow_task_completed_event_attributes", "activity_task_started_event_attributes"):
            if e.HasField(attr) and getattr(e, attr).identity:
                found.add(getattr(e, attr).identity)
    return found


class TestSharedS3Store:
    """Two workers with different local folders finish runs together, one of them killed mid-run, all encrypted."""

    async def test_runs_survive_a_killed_worker_and_leave_no_plaintext(self, cluster: Cluster) -> None:
        keys = new_key("k1")
        cluster.start_worker(keys)
        cluster.start_worker(keys)
        client = await cluster.client(keys)
        handles = [await cluster.start_run(client, f"Task {i}: settle acc-{MARKER}-{i}") for i in range(4)]
        # Kill the host running a transfer: its run goes on elsewhere, reading what it wrote to S3.
        await until(lambda: cluster.tool_calls("slow_transfer"), "a transfer to start", 120, cluster.processes.output)
        transfer = cluster.tool_calls("slow_transfer")[0]
        Processes.kill(cluster.workers[transfer["host"]])
        cluster.start_worker(keys)
        results = [await cluster.result(h) for h in handles]

        for i, result in enumerate(results):
            assert result.status == "success", (result, cluster.processes.output())
            assert result.answer == f"Done: Task {i}: settle acc-{MARKER}-{i}"
            assert result.tools_used == ["echo", "big_output", "big_output", "slow_transfer"]
        histories = [await h.fetch_history() for h in handles]
        shared = [workers_of(h) for h in histories if len(workers_of(h)) >= 2]
        assert shared, "the killed host's run was finished by another host"

        # Nothing readable: not the history as the CLI shows it, not one stored object.
        for handle in handles:
            shown = subprocess.run(
                [temporal_cli(), "workflow", "show", "--workflow-id", handle.id, "--output", "json", "--address", cluster.address],
                capture_output=True, text=True, timeout=60, check=True,
            ).stdout
            payloads = payload_bytes(shown)
            assert handle.id in shown and len(payloads) > 20
            assert not [p for p in payloads if MARKER.encode() in p or b"x" * 64 in p]
        objects = cluster.objects()
        assert len(objects) > 20
        leaks = [k for k, v in objects.items() if MARKER.encode() in v or b"x" * 64 in v or b"big_output" in v]
        assert leaks == []


class TestKeyRotation:
    """A new key first, the old one kept: runs in flight finish, new payloads use the new key."""

    async def test_rotate_with_a_run_in_flight(self, cluster: Cluster) -> None:
        old = new_key("k1")
        worker = cluster.start_worker(old)
        client = await cluster.client(old)
        handle = await cluster.start_run(client, "Task rotate")
        await until(lambda: cluster.tool_calls("slow_transfer"), "the transfer to start", 120, cluster.processes.output)
        worker.send_signal(signal.SIGTERM)  # a rolling deploy that also rotates the key
        rotated = f"{new_key('k2')},{old}"
        cluster.start_worker(rotated)
        # The result is written under the new key: only a client holding it reads the result.
        reader = await cluster.client(rotated)
        result = await cluster.result(reader.get_workflow_handle(handle.id, result_type=AgentResult))
        assert result.status == "success", cluster.processes.output()
        with pytest.raises(DecryptionError, match="'k2'"):
            await handle.result()

        kids = []
        for event in (await handle.fetch_history()).events:
            for attr in ("activity_task_scheduled_event_attributes", "activity_task_completed_event_attributes"):
                if event.HasField(attr):
                    payloads = getattr(event, attr).input if "scheduled" in attr else getattr(event, attr).result
                    kids += [p.metadata["encryption-key-id"].decode() for p in payloads.payloads]
        assert kids[0] == "k1" and kids[-1] == "k2", kids


class TestPlainInputWithEncryptionOn:
    """A signal typed as plain JSON (the UI, the CLI without a codec) still reaches an encrypted run."""

    async def test_cli_signal_approves_an_encrypted_run(self, state_dir: Path, server_address: str) -> None:
        keys = new_key("k1")
        client = await Client.connect(server_address, data_converter=with_encryption(pydantic_data_converter, KeyRing.parse(keys)))
        harness = Harness(client, state_dir)
        async with harness.worker():
            handle = await harness.start(REFUND_4999)
            status = await wait_pending(handle)
            approval_id = status.pending_approvals[0].approval_id
            await asyncio.to_thread(
                cli, server_address, "workflow", "signal", "--workflow-id", handle.id, "--name", "approve",
                "--input", json.dumps({"approval_id": approval_id, "reviewer": "alice"}),
            )
            result = await asyncio.wait_for(handle.result(), 60)
            history = await handle.fetch_history()
        assert result.status == "success"
        assert [(a.status, a.reviewer) for a in result.approvals] == [("approved", "alice")]
        signal_payloads = [
            p for e in history.events if e.HasField("workflow_execution_signaled_event_attributes")
            for p in e.workflow_execution_signaled_event_attributes.input.payloads
        ]
        assert [p.metadata["encoding"] for p in signal_payloads] == [b"json/plain"], "typed in plain, and read"
