"""MCP servers with the product as people run it: `python worker.py`, `durable-agent mcp list`, `worker --check`.

Workers are real subprocesses (killed with SIGKILL where the test says so); the
model is the local fake of the Messages API; MCP servers are the test server of
:mod:`tests.mcp_servers`, over stdio (started by the worker) or streamable HTTP.
"""

# ruff: noqa: F811 - the MCP fixtures are imported, and tests take them by name

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests import mcp_servers
from tests.conftest import ROOT, Harness, subprocess_env
from tests.fake_anthropic import FakeAnthropic, text, tool_use
from tests.mcp_fixtures import SERVER_SCRIPT, TOKEN, http_server, http_url, mcp_state, stdio_config  # noqa: F401
from tests.processes import Processes, result_of, worker_argv
from tests.test_failures import attempts, tool_results, until

pytestmark = pytest.mark.slow


def toml_server(name: str, server: dict[str, Any]) -> str:
    """``[mcp_servers.NAME]`` as TOML (inline tables for env and headers)."""
    lines = [f"[mcp_servers.{name}]"]
    for key, value in server.items():
        if isinstance(value, dict):
            lines.append(f"{key} = {{ {', '.join(f'{k} = {json.dumps(v)}' for k, v in value.items())} }}")
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def agents_toml(tmp_path: Path, servers: dict[str, dict[str, Any]], *, tools: str = '["tickets.*"]', extra: str = "") -> Path:
    path = tmp_path / "agents.toml"
    body = "".join(toml_server(name, server) for name, server in servers.items())
    path.write_text(
        f'{body}[defaults]\nagent = "support"\n[agents.support]\nmodel = "claude-haiku-4-5"\ntools = {tools}\n'
        f'autonomy = "supervised"\n[agents.support.approval]\nmax_amount = 100.0\n{extra}'
    )
    return path


def run(argv: list[str], env: dict[str, str], timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


class TestWorkerKilled:
    """kill -9 of the worker while a call that is not idempotent waits on the server: it is not sent again."""

    async def test_the_call_is_not_repeated_and_the_model_is_told_the_outcome_is_unknown(
        self, harness: Harness, fake_anthropic: FakeAnthropic, processes: Processes, http_url: str, mcp_state: Path, tmp_path: Path,
        server_address: str,
    ) -> None:
        never = str(tmp_path / "never-created")
        server = {"url": http_url, "headers": {"Authorization": "Bearer ${TICKETS_TOKEN}"}}
        config = agents_toml(tmp_path, {"tickets": server})
        env = subprocess_env(harness.state, server_address, TICKETS_TOKEN=TOKEN, **fake_anthropic.environ())
        fake_anthropic.script(
            tool_use("mcp__tickets__create_ticket", {"title": "Printer on fire", "wait_for": never}),
            text("I could not confirm the ticket was created."),
        )
        first = processes.start("worker", worker_argv(config, harness.task_queue), env)
        handle = await harness.start({"task": "Open a ticket about the printer"})
        await until(lambda: mcp_servers.calls(mcp_state, "create_ticket"), "the call to reach the server", 60, processes.output)
        processes.kill(first)
        processes.start("worker", worker_argv(config, harness.task_queue), env)
        result = await result_of(handle, processes)
        history = await handle.fetch_history()
        trace = await handle.query("trace")

        assert result.status == "success", result
        assert len(mcp_servers.calls(mcp_state, "create_ticket")) == 1, "sent once, never again"
        assert attempts(history, "run_tool") == [2]  # the second worker's attempt found the call already sent
        observed = tool_results(fake_anthropic.requests[-1])[0]
        assert observed["is_error"] is True and "OUTCOME UNKNOWN" in observed["content"]
        assert trace[0]["observation"]["status"] == "outcome_unknown"
        assert TOKEN not in history.to_json() and TOKEN not in processes.output()


class TestWorkerStart:
    """Bad input stops the worker at start, naming the file and the key."""

    @pytest.mark.parametrize(
        ("server", "words"),
        [
            # The SDK's own servers cannot send a schema that is not an object: this one is written without it.
            ({"command": sys.executable, "args": [str(ROOT / "tests" / "mcp_raw_server.py")]},
             "answered tools/list with something that is not MCP (tools.0.inputSchema.type: Input should be 'object')"),
            ("long_name", "tool 'summarise_every_ticket_of_the_quarter_by_team_and_priority': the model-facing name"),
        ],
    )
    def test_a_server_offering_a_tool_the_model_cannot_take(
        self, tmp_path: Path, mcp_state: Path, server_address: str, state_dir: Path, server: Any, words: str
    ) -> None:
        if server == "long_name":
            server = stdio_config(mcp_state, env={"MCP_TEST_VARIANT": "long_name"})
        config = agents_toml(tmp_path, {"tickets": server})
        done = run([sys.executable, "worker.py", "--config", str(config)], subprocess_env(state_dir, server_address))
        assert done.returncode == 2, done.stdout + done.stderr
        assert f"{config}: mcp_servers.tickets: " in done.stderr and words in done.stderr, done.stderr

    def test_files_and_keys_are_named(self, tmp_path: Path, mcp_state: Path, server_address: str, state_dir: Path) -> None:
        env = subprocess_env(state_dir, server_address)
        env.pop("TICKETS_TOKEN", None)
        mcp_json = tmp_path / ".mcp.json"
        cases = [
            ('{"mcpServers": {"tickets": {"url": "http://127.0.0.1:1/mcp", "headers": {"Authorization": "Bearer ${TICKETS_TOKEN}"}}}}',
             f"{mcp_json}: mcpServers.tickets.headers.Authorization: ${{TICKETS_TOKEN}} is not set in the worker's environment"),
            ('{"mcpServers": {"tickets": ', f"{mcp_json}: (syntax): not valid JSON"),
            (json.dumps({"mcpServers": {"tickets": stdio_config(mcp_state)}}), f"{mcp_json}: mcpServers.tickets: a server named 'tickets' is also"),
        ]
        for content, expected in cases:
            mcp_json.write_text(content)
            both = {"tickets": stdio_config(mcp_state)} if "also" in expected else {}
            config = agents_toml(tmp_path, both, extra="")
            config.write_text('mcp_config = ".mcp.json"\n' + config.read_text())
            done = run([sys.executable, "worker.py", "--config", str(config)], env)
            assert done.returncode == 2 and expected in done.stderr, done.stderr

    def test_a_tool_the_server_does_not_offer_is_named_with_a_suggestion(
        self, tmp_path: Path, mcp_state: Path, server_address: str, state_dir: Path
    ) -> None:
        config = agents_toml(tmp_path, {"tickets": stdio_config(mcp_state)}, tools='["tickets.get_tiket"]')
        done = run([sys.executable, "worker.py", "--config", str(config)], subprocess_env(state_dir, server_address))
        assert done.returncode == 2
        assert f"{config}: agents.support.tools[0]: MCP server 'tickets' has no tool named 'get_tiket'; did you mean tickets.'get_ticket'?" in done.stderr


class TestCommands:
    """What an operator runs before a deploy."""

    def test_mcp_list_prints_each_servers_tools_with_their_mapped_policy(
        self, tmp_path: Path, mcp_state: Path, http_url: str, state_dir: Path, server_address: str
    ) -> None:
        servers = {"tickets": stdio_config(mcp_state), "remote": {"url": http_url, "headers": {"Authorization": "Bearer ${TICKETS_TOKEN}"}}}
        policy = '[agents.support.tool_policy."tickets.refund_ticket"]\namount_arg = "amount"\nrisk = "high"\nrate_limit = "10/min"\ntimeout = 20\n'
        config = agents_toml(tmp_path, servers, extra=policy)
        env = subprocess_env(state_dir, server_address, TICKETS_TOKEN=TOKEN)
        done = run([sys.executable, "-m", "durable_agent", "mcp", "list", "--config", str(config)], env)
        assert done.returncode == 0, done.stderr
        out = done.stdout
        assert f"tickets  (stdio: {sys.executable} {SERVER_SCRIPT} stdio (env: MCP_TEST_STATE); {config}: mcp_servers.tickets)" in out
        assert "  used by: support\n" in out
        assert "mcp__tickets__get_ticket" in out and "read-only, idempotent, risk low, timeout 10s" in out
        assert "mcp__tickets__delete_ticket" in out and "destructive, not idempotent, risk high" in out
        assert "in support: writes, idempotent, risk high, timeout 20s, amount_arg amount, rate 10/min" in out
        assert f"remote  (http: {http_url} (headers: Authorization)" in out and TOKEN not in out

        listed = json.loads(run([sys.executable, "-m", "durable_agent", "mcp", "list", "--config", str(config), "--json"], env).stdout)
        assert [s["server"] for s in listed["servers"]] == ["tickets", "remote"]

    def test_worker_check_connects_to_every_server(self, tmp_path: Path, mcp_state: Path, state_dir: Path, server_address: str) -> None:
        env = subprocess_env(state_dir, server_address)
        config = agents_toml(tmp_path, {"tickets": stdio_config(mcp_state)})
        done = run([sys.executable, "worker.py", "--check", "--config", str(config)], env)
        assert done.returncode == 0, done.stderr
        assert "MCP servers: tickets (" in done.stdout

        down = {"url": "http://127.0.0.1:9/mcp", "connect_timeout": 2}
        config = agents_toml(tmp_path, {"tickets": stdio_config(mcp_state), "files": down})
        done = run([sys.executable, "worker.py", "--check", "--config", str(config)], env)
        assert done.returncode == 1
        assert f"cannot use the MCP server files ({config}: mcp_servers.files)" in done.stderr
