"""The product as people use it: `python worker.py`, the `temporal` CLI, `python starter.py`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, subprocess_env, temporal_cli
from tests.processes import free_port

pytestmark = pytest.mark.slow


def start_worker(state: Path, address: str, task_queue: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "worker.py", *extra],
        cwd=ROOT,
        env=subprocess_env(state, address, AGENT_TASK_QUEUE=task_queue),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def stop(process: subprocess.Popen[str], sig: int = signal.SIGTERM) -> str:
    if process.poll() is None:
        os.killpg(process.pid, sig)
    try:
        out, _ = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, _ = process.communicate()
    return out or ""


def cli(address: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [temporal_cli(), *args, "--address", address],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"temporal {' '.join(args)} failed: {result.stdout}\n{result.stderr}")
    return result


def query(address: str, workflow_id: str, query_type: str) -> Any:
    out = cli(address, "workflow", "query", "--workflow-id", workflow_id, "--type", query_type, "-o", "json").stdout
    return json.loads(out)["queryResult"][0]


def wait_for(predicate, timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except AssertionError:
            last = None
        if last:
            return last
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


class TestWorkerAndCli:
    """A run started with `temporal workflow start` against `python worker.py`."""

    def test_cli_start_approve_restart_and_trace(self, server_address: str, state_dir: Path) -> None:
        queue = f"cli-{uuid.uuid4().hex[:8]}"
        workflow_id = f"cli-run-{uuid.uuid4().hex[:8]}"
        worker = start_worker(state_dir, server_address, queue)
        second = None
        try:
            cli(
                server_address, "workflow", "start", "--type", "AgentWorkflow", "--task-queue", queue,
                "--workflow-id", workflow_id, "--input", json.dumps({"task": "Refund order ord-789", "agent": "support"}),
            )
            status = wait_for(
                lambda: (s := query(server_address, workflow_id, "status"))["pending_approvals"] and s,
                what="the refund to wait for approval",
            )
            assert status["phase"] == "waiting_for_approval"
            assert status["pending_approvals"][0]["args"]["amount"] == 4999
            # The worker goes away mid-run; a new one picks the run up from history.
            worker_log = stop(worker)
            assert "polling task queue" in worker_log
            second = start_worker(state_dir, server_address, queue)
            cli(server_address, "workflow", "signal", "--workflow-id", workflow_id, "--name", "approve",
                "--input", json.dumps({"approval_id": status["pending_approvals"][0]["approval_id"], "reviewer": "alice",
                                       "comment": "VIP customer"}))
            result = json.loads(cli(server_address, "workflow", "result", "--workflow-id", workflow_id, "-o", "json").stdout)
            output = result.get("result", result)
            assert output["status"] == "success", output
            assert output["tools_used"] == ["lookup_order", "search_kb", "issue_refund"]
            assert output["approvals"][0]["reviewer"] == "alice"
            records = query(server_address, workflow_id, "trace")
            assert [r["step"] for r in records] == [1, 2, 3, 4]
            assert records[2]["action"]["tool"] == "issue_refund"
            assert records[2]["observation"]["status"] == "ok"
            assert records[3]["action"]["type"] == "final_answer"
        finally:
            stop(worker)
            if second is not None:
                stop(second)
        from durable_agent.demo import shop

        assert [r["amount"] for r in shop.refunds_for("ord-789")] == [4999.0]

    def test_bad_config_stops_the_worker_naming_file_and_key(self, server_address: str, state_dir: Path, tmp_path: Path) -> None:
        bad = tmp_path / "bad.toml"
        bad.write_text('tool_modules = ["durable_agent.demo.shop"]\n[agents.support]\ntools = ["lookup_order", "teleport"]\n')
        worker = start_worker(state_dir, server_address, "unused", "--config", str(bad))
        out = stop_after_exit(worker)
        assert worker.returncode == 2
        assert f"{bad}: agents.support.tools[1]: no tool named 'teleport'" in out

        bad.write_text('[agents.support]\nautonomy = "yolo"\n')
        worker = start_worker(state_dir, server_address, "unused", "--config", str(bad))
        out = stop_after_exit(worker)
        assert worker.returncode == 2
        assert f"{bad}: agents.support.autonomy:" in out

        worker = start_worker(state_dir, server_address, "unused", "--tools", "no.such.module")
        out = stop_after_exit(worker)
        assert worker.returncode == 2 and "no.such.module" in out



    def test_a_bad_module_in_the_environment_is_named_by_its_variable(self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
        from durable_agent.cli.worker import env_tool_modules, load_or_exit

        monkeypatch.setenv("AGENT_TOOL_MODULES", "no.such.module")
        with pytest.raises(SystemExit) as stopped:
            load_or_exit(str(ROOT / "agents.toml"), env_tool_modules())
        assert stopped.value.code == 2
        err = capsys.readouterr().err
        assert "AGENT_TOOL_MODULES" in err and "no.such.module" in err


def stop_after_exit(process: subprocess.Popen[str]) -> str:
    try:
        out, _ = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        return stop(process)
    return out


class TestStarter:
    """`python starter.py` brings up the embedded default when nothing answers."""

    def test_embedded_default_runs_the_offline_demo(self, tmp_path: Path) -> None:
        port = free_port()
        while True:
            try:
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port + 1000))
                break
            except OSError:
                port = free_port()
        env = subprocess_env(tmp_path / "state", f"127.0.0.1:{port}")
        env.pop("AGENT_TRACE_FILE")
        env.pop("SHOP_DB")
        run = subprocess.run(
            [sys.executable, str(ROOT / "starter.py"), "Refund 20 USD on order ord-789"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            stdin=subprocess.DEVNULL,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        out = run.stdout
        assert "Started the embedded Temporal dev server" in out
        assert "offline model" in out
        assert "step   1  lookup_order" in out and "step   3  issue_refund" in out
        assert "Result: success after 4 steps" in out
        assert (tmp_path / "state" / "temporal.db").exists()
        # The server went away with the starter.
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0

        # Persisted: a second run against the same file sees the first refund in the shop.
        second = subprocess.run(
            [sys.executable, str(ROOT / "starter.py"), "--json", "Refund 20 USD on order ord-789"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL,
        )
        assert second.returncode == 0, second.stdout + second.stderr
        result = json.loads(second.stdout)
        assert result["status"] == "success"
        assert "refund #2" in result["answer"]

    def test_exit_status_is_nonzero_unless_success(self, tmp_path: Path, server_address: str, state_dir: Path) -> None:
        queue = f"starter-{uuid.uuid4().hex[:8]}"
        env = subprocess_env(state_dir, server_address, AGENT_TASK_QUEUE=queue)
        run = subprocess.run(
            [sys.executable, str(ROOT / "starter.py"), "--worker", "--max-steps", "1", "Refund 20 USD on order ord-789"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        )
        assert run.returncode == 1, run.stdout + run.stderr
        assert "Result: max_steps_exceeded after 1 steps" in run.stdout


class TestStarterWithClaude:
    """With ANTHROPIC_API_KEY the same command thinks with Claude, through the real client."""

    def test_json_output_stays_json_when_the_temporal_core_warns(self, fake_anthropic, time_env, state_dir: Path) -> None:
        """The core's own warnings go to stderr, never into `--json`'s stdout.

        The time-skipping server does not advertise a capability the core asks for, so a
        worker started against it always warns; before, that line landed in the JSON.
        """
        from tests import fake_anthropic as fake

        fake_anthropic.script(fake.text("Done."))
        address = time_env.client.service_client.config.target_host
        queue = f"claude-{uuid.uuid4().hex[:8]}"
        env = subprocess_env(state_dir, address, AGENT_TASK_QUEUE=queue, **fake_anthropic.environ(api_key="sk-ant-test"))
        run = subprocess.run(
            [sys.executable, str(ROOT / "starter.py"), "--worker", "--json", "Say done"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        assert "temporalio_sdk_core" in run.stderr  # the core did warn, through logging
        assert json.loads(run.stdout)["answer"] == "Done."

    def test_starter_drives_the_messages_api_and_never_shows_the_key(
        self, fake_anthropic, server_address: str, state_dir: Path
    ) -> None:
        from durable_agent import pricing
        from durable_agent.profiles import DEFAULT_CLAUDE_MODEL
        from durable_agent.schemas import Usage
        from tests import fake_anthropic as fake

        fake_anthropic.script(
            fake.tool_use("lookup_order", {"order_id": "ord-123"}, say="Looking the order up."),
            fake.tool_use("issue_refund", {"order_id": "ord-123", "amount": 20, "currency": "USD"}),
            fake.text("Refunded 20 USD on ord-123."),
        )
        key = "sk-ant-secret-do-not-print-0123456789"
        queue = f"claude-{uuid.uuid4().hex[:8]}"
        workflow_id = f"claude-run-{uuid.uuid4().hex[:8]}"
        env = subprocess_env(state_dir, server_address, AGENT_TASK_QUEUE=queue, **fake_anthropic.environ(api_key=key))
        run = subprocess.run(
            [sys.executable, str(ROOT / "starter.py"), "--worker", "--json", "--workflow-id", workflow_id,
             "Refund 20 USD on order ord-123"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        result = json.loads(run.stdout)
        assert result["status"] == "success" and result["answer"] == "Refunded 20 USD on ord-123."
        assert result["model"] == DEFAULT_CLAUDE_MODEL
        assert result["tools_used"] == ["lookup_order", "issue_refund"]

        requests = fake_anthropic.requests
        assert len(requests) == 3
        assert all(r.api_key == key and r.stream and r.body["model"] == DEFAULT_CLAUDE_MODEL for r in requests)
        assert requests[0].body["system"][0]["cache_control"] == {"type": "ephemeral"}
        # The second call saw the real shop's answer to the first.
        tool_result = requests[1].body["messages"][-1]["content"][0]
        assert tool_result["type"] == "tool_result" and '"customer": "alice@example.com"' in tool_result["content"]

        per_call = dict(fake.DEFAULT_USAGE)
        assert result["usage"]["input_tokens"] == 3 * per_call["input_tokens"]
        price = pricing.find_price(DEFAULT_CLAUDE_MODEL, pricing.DEFAULT_PRICES)
        assert result["total_cost"] == pytest.approx(3 * pricing.cost_usd(Usage(**per_call), price), rel=1e-6)

        # No secret in what people and machines read afterwards.
        history = cli(server_address, "workflow", "show", "--workflow-id", workflow_id, "-o", "json").stdout
        assert key not in run.stdout + run.stderr
        assert key not in (state_dir / "trace.jsonl").read_text()
        assert key not in history
