"""Deploying workers: the start check, and a rolling deploy (SIGTERM) with a tool in flight.

Workers run as ``python worker.py`` subprocesses against the session's Temporal
server, the fake Anthropic API and, for the S3 store, ``moto_server`` over HTTP.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from temporalio.client import WorkflowFailureError, WorkflowHistory

from durable_agent.models.anthropic import set_credentials_provider
from durable_agent.schemas import AgentResult
from tests import tools_for_tests
from tests.conftest import ROOT, Harness, subprocess_env
from tests.fake_anthropic import FakeAnthropic, text, tool_use
from tests.s3_server import aws_env, create_bucket
from tests.processes import Processes, result_of, worker_argv
from tests.test_failures import attempts, claude, until

pytestmark = pytest.mark.slow

MODEL = "claude-haiku-4-5"
CONFIG = f"""
tool_modules = ["tests.tools_for_tests"]
[defaults]
agent = "ops"
[agents.ops]
model = "{MODEL}"
tools = ["slow_transfer", "echo"]
autonomy = "autonomous"
"""


def failure_text(error: BaseException) -> str:
    """Every message in a failure's chain of causes."""
    parts = []
    while error is not None:
        parts.append(str(error))
        error = error.__cause__  # type: ignore[assignment]
    return " | ".join(parts)


def new_keys(*kids: str) -> str:
    return ",".join(f"{kid}:{base64.b64encode(os.urandom(32)).decode()}" for kid in kids)


@pytest.fixture
def fake(harness: Harness, fake_anthropic: FakeAnthropic, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAnthropic]:
    """The fake Messages API, with the in-process worker pointed at it."""
    for name, value in fake_anthropic.environ().items():
        monkeypatch.setenv(name, value)
    yield fake_anthropic
    set_credentials_provider(None)


def check(env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "worker.py", "--check", "--config", str(ROOT / "agents.toml"), *extra],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )


class TestStartCheck:
    """`worker --check` makes the worker's start checks and says what is wrong, by exit status and message."""

    def test_all_well_on_s3_with_encryption(self, s3_endpoint: str, server_address: str, tmp_path: Path) -> None:
        bucket = f"ok-{uuid.uuid4().hex[:8]}"
        create_bucket(s3_endpoint, bucket)
        env = subprocess_env(
            tmp_path, server_address, AGENT_STORE_URL=f"s3://{bucket}/agents", AGENT_ENCRYPTION_KEYS=new_keys("k1"), **aws_env(s3_endpoint)
        )
        result = check(env)
        assert result.returncode == 0, result.stderr
        assert f"s3://{bucket}/agents" in result.stdout and "encryption on" in result.stdout

    def test_missing_bucket_stops_the_worker(self, s3_endpoint: str, server_address: str, tmp_path: Path) -> None:
        env = subprocess_env(tmp_path, server_address, AGENT_STORE_URL="s3://no-such-bucket/agents", **aws_env(s3_endpoint))
        for argv in (["--check"], []):  # the check, and a real start: both stop before polling
            result = subprocess.run(
                [sys.executable, "worker.py", *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
            )
            assert result.returncode == 1
            assert "bucket 'no-such-bucket' does not exist" in result.stderr and "s3://no-such-bucket/agents/" in result.stderr

    @pytest.mark.parametrize(
        ("variable", "value", "message"),
        [
            ("AGENT_ENCRYPTION_KEYS", "k1:tooshort", "AGENT_ENCRYPTION_KEYS: key 'k1'"),
            ("AGENT_STORE_URL", "gs://bucket", "unknown scheme 'gs'"),
            ("AGENT_MAX_CONCURRENT_ACTIVITIES", "lots", "AGENT_MAX_CONCURRENT_ACTIVITIES='lots' is not a number"),
        ],
    )
    def test_bad_settings_stop_it_naming_the_variable(
        self, server_address: str, tmp_path: Path, variable: str, value: str, message: str
    ) -> None:
        result = check(subprocess_env(tmp_path, server_address, **{variable: value}))
        assert result.returncode == 2
        assert "configuration error" in result.stderr and message in result.stderr


class TestRollingDeploy:
    """SIGTERM lets the tool in flight finish: it runs once, the run finishes, nothing is attempted twice."""

    async def test_sigterm_with_a_sync_tool_in_flight(
        self, harness: Harness, fake_anthropic: FakeAnthropic, processes: Processes, server_address: str, tmp_path: Path
    ) -> None:
        config = tmp_path / "agents.toml"
        config.write_text(CONFIG)
        env = subprocess_env(harness.state, server_address, **fake_anthropic.environ())
        argv = [*worker_argv(config, harness.task_queue), "--shutdown-grace-seconds", "60"]
        fake_anthropic.script(
            tool_use("slow_transfer", {"account": "acc-1", "amount": 10.0, "seconds": 5.0}),
            text("Transferred."),
        )
        first = processes.start("worker", argv, env)
        handle = await harness.start({"task": "Transfer 10 to acc-1"})
        await until(lambda: tools_for_tests.calls("slow_transfer"), "the transfer to start", 60, processes.output)
        first.send_signal(signal.SIGTERM)  # the rolling deploy: the old pod is told to stop...
        processes.start("worker", argv, env)  # ...and the new one is already up
        result = await result_of(handle, processes)
        assert first.wait(timeout=60) == 0, processes.output()
        history = await handle.fetch_history()

        assert result.status == "success" and result.answer == "Transferred."
        events = [(c["event"], c["attempt"]) for c in tools_for_tests.calls("slow_transfer")]
        assert events == [("started", 1), ("finished", 1)], processes.output()
        assert attempts(history, "run_tool") == [1]
        assert attempts(history, "think") == [1, 1]
        assert len(fake_anthropic.requests) == 2
        assert "activities in flight get up to 0:01:00" in processes.output()


class TestCancelWaitsForWorldChangingTools:
    """A cancelled run reports "cancelled" only once a tool that changes the world has stopped."""

    @staticmethod
    async def cancelled_during(harness: Harness, tool: str) -> tuple[AgentResult, list[str], WorkflowHistory]:
        """Run ``tool`` (scripted already), cancel the run once it starts: the result, the tool's events as the run
        ended, and the history."""
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="tool") as pool:
            async with harness.worker(claude(tool), tool_executor=pool):
                handle = await harness.start({"task": "transfer, then be cancelled"})
                await until(lambda: tools_for_tests.calls(tool), "the transfer to start")
                await handle.cancel()
                result = await handle.result()
                # Read at once: the run's end must come after the tool's.
                seen = [c["event"] for c in tools_for_tests.calls(tool)]
                return result, seen, await handle.fetch_history()

    async def test_sync_transfer_finishes_before_cancelled_is_reported(self, harness: Harness, fake: FakeAnthropic) -> None:
        fake.script(tool_use("slow_transfer", {"account": "acc-9", "amount": 3.0, "seconds": 3.0}))
        result, seen, _ = await self.cancelled_during(harness, "slow_transfer")
        assert result.status == "cancelled"
        assert seen == ["started", "finished"]

    async def test_a_transfer_that_fails_after_the_cancel_still_ends_the_run(self, harness: Harness, fake: FakeAnthropic) -> None:
        # Found by CI: the tool's attempt timed out after the cancel, and the run went on to ask the model again.
        fake.script(tool_use("failing_transfer", {"account": "acc-9", "amount": 3.0, "seconds": 2.0}), text("carried on after the cancel"))
        result, seen, history = await self.cancelled_during(harness, "failing_transfer")
        assert result.status == "cancelled", result
        assert seen == ["started", "crashed"], "run once, never again"
        assert len(fake.requests) == 1, "no model call after the cancel"
        assert attempts(history, "think") == [1]


class TestMissingContent:
    """Content a worker cannot find fails the think at once, naming the reference and the store."""

    async def test_a_store_that_is_not_shared_fails_the_run_plainly(self, harness: Harness, fake: FakeAnthropic) -> None:
        fake.script(tool_use("slow_transfer", {"account": "acc-1", "amount": 1.0, "seconds": 2.0}), text("never sent"))
        async with harness.worker(claude("slow_transfer")):
            handle = await harness.start({"task": "transfer"})
            await until(lambda: tools_for_tests.calls("slow_transfer"), "the transfer to start")
            # As if the next think ran on a host whose store lacks what this one wrote.
            root = harness.store.backend.root  # type: ignore[attr-defined]
            for blob in root.glob("??/*.json"):
                blob.unlink()
            with pytest.raises(WorkflowFailureError) as failed:
                await handle.result()
            history = await handle.fetch_history()
        message = failure_text(failed.value)
        assert "is not in the store at" in message and str(root) in message and "sha256:" in message, message
        assert attempts(history, "think") == [1, 1], "not retried: the content will not appear"
        assert len(fake.requests) == 1


class TestStarterSettings:
    """The starter refuses bad keys as a configuration error, before it looks for a server."""

    def test_bad_keys(self, server_address: str, tmp_path: Path) -> None:
        env = subprocess_env(tmp_path, server_address, AGENT_ENCRYPTION_KEYS="k1:not-a-key!")
        result = subprocess.run(
            [sys.executable, "starter.py", "Refund 20 USD on order ord-789"], cwd=ROOT, env=env,
            capture_output=True, text=True, timeout=120, check=False,
        )
        assert result.returncode == 2
        assert "starter: configuration error: AGENT_ENCRYPTION_KEYS: key 'k1' is not valid base64" in result.stderr
