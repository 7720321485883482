"""The first hour (issue 23): what a newcomer meets when something is missing, each saying what to do next.

A worker with no server, a run with no worker, a server without the approval
search attribute, the demo shop after the walkthrough, the help pages. Real
processes where the behaviour is a process's, each on its own free port or
task queue. The walkthrough itself is ``tests/test_readme_walkthrough.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import re
import shlex
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client

from durable_agent import contracts
from durable_agent.cli import COMMANDS, build_parser
from durable_agent.cli.hints import cannot_connect
from durable_agent.cli.watch import WorkerWatch
from tests.conftest import ROOT, Harness, subprocess_env, temporal_cli
from tests.processes import Processes
from tests.test_processes import free_port, start_worker, stop

BIN = Path(sys.executable).parent


def without_venv_on_path(env: dict[str, str]) -> dict[str, str]:
    """The environment of a shell where the virtualenv is not activated."""
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and Path(p).resolve() != BIN.resolve()]
    return {**env, "PATH": os.pathsep.join(path)}


def backticked(text: str) -> list[str]:
    return re.findall(r"`([^`]+)`", text)


@pytest.mark.slow
class TestNoServer:
    """`durable-agent worker` with nothing at the address: one line, the address, three ways on."""

    def test_the_worker_names_the_address_and_the_three_ways(self, tmp_path: Path) -> None:
        port = free_port()  # nothing listens there
        env = without_venv_on_path(subprocess_env(tmp_path, f"127.0.0.1:{port}"))
        done = subprocess.run(
            [str(BIN / "durable-agent"), "worker"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 1, done.stdout + done.stderr
        assert "tonic" not in done.stderr and "ConnectError" not in done.stderr, done.stderr
        said = [line for line in done.stderr.splitlines() if line.startswith("worker:")]
        assert len(said) == 1, done.stderr
        line = said[0]
        assert f"nothing answers at 127.0.0.1:{port}" in line
        commands = backticked(line)
        # 1. a dev server there, 2. the embedded one, 3. TEMPORAL_ADDRESS.
        assert commands[0] == shlex.join([str(BIN / "temporal"), "server", "start-dev", "--port", str(port),
                                          "--search-attribute", "AgentAwaitingApproval=Bool"]), line
        assert commands[1] == shlex.join([str(BIN / "durable-agent"), "run", "TASK"]), line
        assert "set TEMPORAL_ADDRESS to your server's host:port" in line

    def test_the_readme_shows_the_line_the_worker_prints(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """With the venv activated (as in the README's production section), on the default address."""
        monkeypatch.setenv("PATH", os.pathsep.join([str(BIN), os.environ.get("PATH", "")]))
        refused = OSError("Failed client connect: Server connection error: tonic::transport::Error(Transport, ConnectError("
                          '"tcp connect error", 127.0.0.1:7233, Os { code: 111, kind: ConnectionRefused }))')
        line = cannot_connect("worker", "localhost:7233", refused)
        assert line in (ROOT / "README.md").read_text()

    def test_other_failures_keep_their_reason_on_one_line(self) -> None:
        line = cannot_connect("approve", "my-ns.tmprl.cloud:7233", OSError("bad API key:\n  unauthorized"))
        assert line == "approve: cannot connect to Temporal at my-ns.tmprl.cloud:7233: bad API key: unauthorized"


@pytest.mark.slow
class TestNoWorker:
    """`durable-agent run` with a server but no worker on the queue keeps saying so; --timeout bounds the wait."""

    def test_the_starter_says_it_waits_for_a_worker_until_its_timeout(self, server_address: str, state_dir: Path) -> None:
        queue = f"nobody-{uuid.uuid4().hex[:8]}"
        env = without_venv_on_path(subprocess_env(state_dir, server_address, AGENT_TASK_QUEUE=queue))
        done = subprocess.run(
            [sys.executable, str(ROOT / "starter.py"), "--timeout", "3", "Refund 20 USD on order ord-789"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, check=False,
        )
        assert done.returncode == 1, done.stdout + done.stderr
        assert f"waiting for a worker on task queue '{queue}'" in done.stderr, done.stderr
        start = backticked(done.stderr.split("waiting for a worker", 1)[1])[0]
        assert start == f"{BIN / 'durable-agent'} worker", done.stderr  # runs as printed, venv or not
        assert "run again with --worker" in done.stderr
        assert "stopped waiting after 3 s: no worker has taken it" in done.stderr, done.stderr
        # The model is the worker's business: no claim about it while none runs.
        assert "offline model thinks" not in done.stdout
        workflow_id = re.search(r"Run (run-[0-9a-f]+):", done.stdout).group(1)  # type: ignore[union-attr]
        assert f"follow it with `{BIN / 'durable-agent'} trace {workflow_id} --follow`" in done.stderr

        # The run went on without the starter: a worker on the queue finishes it.
        worker = start_worker(state_dir, server_address, queue)
        try:
            result = subprocess.run(
                [temporal_cli(), "workflow", "result", "--workflow-id", workflow_id, "--address", server_address, "-o", "json"],
                capture_output=True, text=True, timeout=120, check=False,
            )
        finally:
            stop(worker)
        assert result.returncode == 0 and '"status": "success"' in result.stdout, result.stdout + result.stderr

    async def test_the_reminder_repeats_until_a_worker_polls(self, client: Client, harness: Harness) -> None:
        out = io.StringIO()
        watch = WorkerWatch(client, harness.task_queue, "durable-agent worker", out, check_every=0, repeat_every=0)
        assert not await watch.worker_polls()
        assert not await watch.worker_polls()
        assert out.getvalue().count(f"waiting for a worker on task queue '{harness.task_queue}'") == 2
        assert "Start one in another terminal with `durable-agent worker`" in out.getvalue()
        async with harness.worker():
            deadline = time.monotonic() + 30
            while not await watch.worker_polls():
                assert time.monotonic() < deadline, out.getvalue()
                await asyncio.sleep(0.2)
        assert f"a worker polls task queue '{harness.task_queue}' now; the run goes on" in out.getvalue()


@pytest.mark.slow
class TestNoSearchAttribute:
    """`durable-agent run --worker` on a server without AgentAwaitingApproval says the inbox will not see the run, and the fix."""

    def test_the_starter_says_so_and_its_command_fixes_it(self, tmp_path: Path, processes: Processes) -> None:
        port = free_port()
        address = f"127.0.0.1:{port}"
        processes.start("bare-server", [temporal_cli(), "server", "start-dev", "--headless", "--ip", "127.0.0.1", "--port", str(port),
                                        "--log-level", "error"], dict(os.environ), cwd=tmp_path)
        env = without_venv_on_path(subprocess_env(tmp_path / "state", address, AGENT_TASK_QUEUE=f"sa-{uuid.uuid4().hex[:8]}"))
        deadline = time.monotonic() + 60
        while subprocess.run([temporal_cli(), "operator", "namespace", "describe", "default", "--address", address],
                             capture_output=True, check=False).returncode != 0:
            assert time.monotonic() < deadline, processes.output()
            time.sleep(0.5)

        def start_a_run() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, str(ROOT / "starter.py"), "--worker", "--no-wait", "Look up order ord-123"],
                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, check=False,
            )

        first = start_a_run()
        assert first.returncode == 0, first.stdout + first.stderr
        name = contracts.SEARCH_ATTRIBUTE_AWAITING_APPROVAL
        assert f"no search attribute {name}" in first.stderr and "the reviewer inbox will not list this run's approvals" in first.stderr
        fix = backticked(first.stderr.split("add it once:", 1)[1])[0]
        assert fix.startswith(f"{BIN / 'temporal'} operator search-attribute create"), fix
        fixed = subprocess.run(["bash", "-c", fix], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False)
        assert fixed.returncode == 0, fixed.stdout + fixed.stderr
        second = start_a_run()
        assert second.returncode == 0 and "search attribute" not in second.stderr, second.stderr


class TestDemoShop:
    """Each run of the walkthrough changes the demo shop for good; it says so, and `durable-agent demo reset` undoes it."""

    @pytest.mark.slow
    async def test_a_refunded_order_says_how_to_reset_the_shop(self, harness: Harness, state_dir: Path) -> None:
        request = {"task": "Refund order ord-456", "agent": "support"}  # 20 USD: under max_amount, no approval
        async with harness.worker():
            assert (await harness.run(request)).status == "success"
            again = await harness.run(request)
            assert "Order ord-456 is already fully refunded" in (again.answer or "")
            assert "`durable-agent demo reset` restores its orders" in (again.answer or "")
            reset = subprocess.run(
                [str(BIN / "durable-agent"), "demo", "reset"], cwd=state_dir, env=dict(os.environ), capture_output=True, text=True,
                timeout=60, check=False,
            )
            assert reset.returncode == 0, reset.stderr
            assert reset.stdout.startswith("Reset the demo shop at shop.sqlite: orders ord-123, ord-456, ord-789"), reset.stdout
            assert (await harness.run(request)).status == "success"


class TestHelp:
    """Help pages read as plain text: no reStructuredText marks."""

    @pytest.mark.parametrize("name", sorted(COMMANDS))
    def test_no_double_backticks(self, name: str) -> None:
        subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
        text = subparsers.choices[name].format_help()
        assert "``" not in text, text

    @pytest.mark.slow
    def test_inbox_help_from_the_command(self) -> None:
        done = subprocess.run([str(BIN / "durable-agent"), "inbox", "--help"], capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0 and "``" not in done.stdout
        assert "(make one with `durable-agent keys new inbox --dir DIR`)" in " ".join(done.stdout.split())
