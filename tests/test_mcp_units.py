"""MCP configuration, the mapping onto policy, and connections to real servers (no Temporal)."""

# ruff: noqa: F811 - the MCP fixtures are imported, and tests take them by name

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any

import mcp_types as mcp
import pytest

from durable_agent import context
from durable_agent.errors import ConfigError
from durable_agent.mcp.catalog import McpCatalog
from durable_agent.mcp.client import McpCallLost, McpUnavailable
from durable_agent.mcp.config import McpServerConfig, model_facing_name
from durable_agent.mcp.mapping import McpTool, convert, listing_problems, shared_names
from durable_agent.profiles import load_config
from durable_agent.tool_policy import ToolPolicy, apply
from tests import mcp_servers
from tests.mcp_fixtures import TOKEN, http_url, mcp_state, stdio_server  # noqa: F401

CLAUDE_CODE_MCP_JSON = {
    "mcpServers": {
        "tickets": {"type": "http", "url": "http://127.0.0.1:8931/mcp", "headers": {"Authorization": "Bearer ${TICKETS_TOKEN}"}},
        "files": {"command": "python", "args": ["-m", "my_files_server"], "env": {"ROOT": "/srv/files"}, "autoApprove": ["read"]},
        "old": {"command": "old-server", "disabled": True},
    }
}


def write_config(tmp_path: Path, body: str, mcp_json: Any = None) -> Path:
    if mcp_json is not None:
        (tmp_path / ".mcp.json").write_text(mcp_json if isinstance(mcp_json, str) else json.dumps(mcp_json))
    path = tmp_path / "agents.toml"
    path.write_text('tool_modules = ["durable_agent.demo.shop"]\n' + body)
    return path


def config_error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value


class TestConfiguration:
    """agents.toml and .mcp.json: read as users write them; mistakes stop the worker naming file and key."""

    def test_a_claude_code_mcp_json_is_read_unchanged(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("TICKETS_TOKEN", "t0ken-value")
        path = write_config(tmp_path, 'mcp_config = ".mcp.json"\n[agents.support]\ntools = ["lookup_order", "tickets.*", "files.read"]\n', CLAUDE_CODE_MCP_JSON)
        config = load_config(path)
        assert sorted(config.mcp_servers) == ["files", "tickets"]  # "old" is disabled
        tickets = config.mcp_servers["tickets"]
        assert tickets.transport == "http" and tickets.headers == {"Authorization": "Bearer ${TICKETS_TOKEN}"}  # not expanded
        assert (tickets.source.file, tickets.source.key) == (str(tmp_path / ".mcp.json"), "mcpServers.tickets")
        assert tickets.expanded(os.environ).headers == {"Authorization": "Bearer t0ken-value"}
        assert "t0ken-value" not in tickets.describe() and "t0ken-value" not in config.model_dump_json()

    def test_a_variable_that_is_not_set_names_file_key_and_variable(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("TICKETS_TOKEN", raising=False)
        path = write_config(tmp_path, 'mcp_config = ".mcp.json"\n[agents.support]\ntools = ["tickets.*"]\n', CLAUDE_CODE_MCP_JSON)
        error = config_error(path)
        assert (error.file, error.key) == (str(tmp_path / ".mcp.json"), "mcpServers.tickets.headers.Authorization")
        assert "${TICKETS_TOKEN} is not set" in error.message
        body = '[mcp_servers.t]\nurl = "http://x/${HOST:-localhost}/mcp"\n[agents.support]\ntools = ["t.*"]\n'
        assert load_config(write_config(tmp_path, body)).mcp_servers["t"].expanded({}).url == "http://x/localhost/mcp"

    @pytest.mark.parametrize(
        ("mcp_json", "key", "words"),
        [
            ('{"mcpServers": {"tickets": {"url": "http://x"},}}', "(syntax)", "not valid JSON"),
            ('{"servers": {}}', "mcpServers", "mcpServers object"),
            ('{"mcpServers": {"t": {"type": "sse", "url": "http://x/sse"}}}', "mcpServers.t.type", "SSE transport is not supported"),
            ('{"mcpServers": {"t": {"url": "http://x", "command": "y"}}}', "mcpServers.t", "either command"),
            ('{"mcpServers": {"my.server": {"url": "http://x"}}}', "mcpServers.my.server", "a server name is"),
            ('{"mcpServers": {"my server": {"url": "http://x"}, "my_server": {"url": "http://y"}}}', "mcpServers.my_server",
             "as those of the server 'my server'"),
        ],
    )
    def test_a_bad_mcp_json_stops_the_worker_naming_file_and_key(self, tmp_path: Path, mcp_json: str, key: str, words: str) -> None:
        error = config_error(write_config(tmp_path, 'mcp_config = ".mcp.json"\n[agents.support]\ntools = ["lookup_order"]\n', mcp_json))
        assert (error.file, error.key) == (str(tmp_path / ".mcp.json"), key) and words in error.message

    @pytest.mark.parametrize(
        ("body", "key", "words"),
        [
            ('[agents.support]\ntools = ["tickts.*"]\n', "agents.support.tools[0]", "did you mean 'tickets'?"),
            (
                '[agents.support]\ntools = ["tickets.summarise_every_ticket_of_the_quarter_by_team_and_prio"]\n',
                "agents.support.tools[0]", "over the API's 64 characters",
            ),
            ('[agents.support]\ntools = ["tickets.*"]\n[agents.support.tool_policy."files.read"]\nrisk = "high"\n',
             'agents.support.tool_policy."files.read"', "not one of this agent's tools"),
            ('[agents.support]\ntools = ["issue_refund"]\n[agents.support.tool_policy.issue_refund]\namount_arg = "sum"\n',
             'agents.support.tool_policy."issue_refund".amount_arg', "takes no argument 'sum'"),
            ('[agents.support]\ntools = ["tickets.*"]\n[agents.support.tool_policy."tickets.*"]\nread_only = true\ndestructive = true\n',
             'agents.support.tool_policy.tickets.*', "both read_only and destructive"),
            ('[mcp_servers.files]\nurl = "http://y"\n[agents.support]\ntools = ["tickets.*"]\n', "mcpServers.files", "also under [mcp_servers]"),
        ],
    )
    def test_profile_mistakes_stop_the_worker_naming_file_and_key(self, tmp_path: Path, body: str, key: str, words: str) -> None:
        mcp_json = {"mcpServers": {"tickets": {"url": "http://127.0.0.1:1/mcp"}, "files": {"command": "f"}}}
        error = config_error(write_config(tmp_path, 'mcp_config = ".mcp.json"\n' + body, mcp_json))
        assert error.key == key and words in error.message, str(error)


class TestMapping:
    """Annotations onto policy, a profile's tool_policy over them, and results onto what the model reads."""

    def tool(self, **hints: Any) -> McpTool:
        return McpTool(server="tickets", name="refund_ticket", description="Refund.", input_schema={"type": "object", "properties": {"amount": {}}}, **hints)

    @pytest.mark.parametrize(
        ("hints", "read_only", "destructive", "idempotent", "risk"),
        [
            ({}, False, True, False, "high"),  # MCP's defaults: may destroy, not idempotent
            ({"read_only_hint": True}, True, False, True, "low"),
            ({"destructive_hint": False}, False, False, False, "low"),
            ({"destructive_hint": False, "idempotent_hint": True}, False, False, True, "low"),
        ],
    )
    def test_annotations_map_onto_policy(self, hints: dict[str, Any], read_only: bool, destructive: bool, idempotent: bool, risk: str) -> None:
        info = self.tool(**hints).info(timeout=60)
        assert (info.name, info.read_only, info.destructive, info.idempotent, info.risk) == (
            "mcp__tickets__refund_ticket", read_only, destructive, idempotent, risk,
        )

    def test_a_profiles_tool_policy_overrides_the_annotations(self) -> None:
        base = self.tool(destructive_hint=False).info(timeout=60)
        policy = ToolPolicy(amount_arg="amount", risk="high", rate_limit="10/min", timeout=20, idempotent=True)
        info = apply(base, policy, lane="agent:support")
        assert (info.amount_arg, info.risk, info.rate_limit, info.rate_limit_lane, info.timeout_seconds, info.idempotent) == (
            "amount", "high", "10/min", "agent:support", 20.0, True,
        )
        assert apply(self.tool().info(timeout=60), ToolPolicy(read_only=True)).destructive is False

    def test_tools_the_model_cannot_be_given_are_named_with_the_reason(self) -> None:
        schema = {"type": "object", "properties": {}}
        tools = [
            McpTool("tickets", "ok", "", schema),
            McpTool("tickets", "odd", "", {"type": "string"}),
            McpTool("tickets", "x" * 60, "", schema),
            McpTool("tickets", "a.b", "", schema),
            McpTool("tickets", "a_b", "", schema),
        ]
        problems = listing_problems(tools)
        assert sorted(problems) == sorted(["odd", "x" * 60, "a.b", "a_b"])
        assert "not a JSON Schema object" in problems["odd"] and "over the API's 64" in problems["x" * 60]
        assert "both be called mcp__tickets__a_b" in problems["a.b"]
        assert model_facing_name("tickets", "a.b") == "mcp__tickets__a_b"

    def test_two_servers_exposing_the_same_model_facing_name_are_named(self) -> None:
        schema = {"type": "object", "properties": {}}
        found = shared_names({"a": [McpTool("a", "_b", "", schema)], "a_": [McpTool("a_", "b", "", schema), McpTool("a_", "c", "", schema)]})
        assert found == {"a_": "its tool 'b' and 'a''s '_b' would both be called mcp__a___b"}
        catalog = McpCatalog({"a": McpServerConfig(url="http://x"), "a_": McpServerConfig(url="http://y")})
        assert catalog.server_of("mcp__a___b") == "a_" and catalog.server_of("mcp__a__c") == "a" and catalog.server_of("other") is None

    def test_results_become_text_structured_content_and_images(self) -> None:
        text = mcp.TextContent(type="text", text="2 open")
        result = convert(mcp.CallToolResult(content=[text], structured_content={"open": 2}))
        assert result.output == '2 open\n\nstructuredContent: {"open": 2}' and not result.is_error
        assert convert(mcp.CallToolResult(content=[], structured_content={"open": 2})).output == {"open": 2}
        assert convert(mcp.CallToolResult(content=[mcp.TextContent(type="text", text='{"open": 2}')], structured_content={"open": 2})).output == '{"open": 2}'
        tiff = mcp.ImageContent(type="image", data=mcp_servers.PIXEL, mime_type="image/tiff")
        png = mcp.ImageContent(type="image", data=mcp_servers.PIXEL, mime_type="image/png")
        shown = convert(mcp.CallToolResult(content=[text, png, tiff], is_error=True))
        assert shown.is_error and len(shown.images) == 1 and "image/tiff" in shown.output

    def test_an_image_counts_as_an_image_in_the_token_estimate(self) -> None:
        image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "A" * 1_000_000}}
        message = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "hi"}, image]}]}
        assert context.IMAGE_TOKENS < context.estimate_tokens(message) < context.IMAGE_TOKENS + 100


class TestConnections:
    """One session per server per worker: started on first use, restarted when it dies, stopped on close."""

    async def test_a_stdio_server_starts_on_first_use_restarts_when_it_dies_and_stops_on_close(
        self, stdio_server: dict[str, Any], mcp_state: Path
    ) -> None:
        catalog = McpCatalog({"tickets": McpServerConfig.model_validate(stdio_server)})
        connection = catalog.connections["tickets"]
        try:
            assert connection.connects == 0 and mcp_servers.calls(mcp_state) == []
            await connection.call("get_ticket", {"ticket_id": "T-1"}, meta={}, timeout=10)
            await connection.call("get_ticket", {"ticket_id": "T-1"}, meta={}, timeout=10)
            assert connection.connects == 1
            with pytest.raises(McpCallLost, match="Connection closed"):
                await connection.call("crash", {}, meta={}, timeout=10)
            await connection.call("get_ticket", {"ticket_id": "T-1"}, meta={}, timeout=10)
            assert connection.connects == 2
        finally:
            await catalog.close()
        pids = {c["pid"] for c in mcp_servers.calls(mcp_state)}
        assert len(pids) == 2
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)

    async def test_an_http_session_is_reused_and_calls_are_held_to_max_concurrent(
        self, http_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("TOKEN_FOR_TESTS", TOKEN)
        server = McpServerConfig(url=http_url, headers={"Authorization": "Bearer ${TOKEN_FOR_TESTS}"}, max_concurrent=2)
        catalog = McpCatalog({"tickets": server})
        connection = catalog.connections["tickets"]
        try:
            await asyncio.gather(*(connection.call("hang", {"seconds": 0.3}, meta={}, timeout=20) for _ in range(5)))
            peak = await connection.call("peak_concurrency", {}, meta={}, timeout=10)
            assert peak.structured_content == {"result": 2}
            assert connection.connects == 1
        finally:
            await catalog.close()

    async def test_logs_never_show_a_variables_value(self, http_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
        monkeypatch.setenv("TOKEN_FOR_TESTS", TOKEN)
        monkeypatch.setenv("API_KEY_FOR_TESTS", "k3y-in-the-url")
        server = McpServerConfig(url=http_url + "?key=${API_KEY_FOR_TESTS}", headers={"Authorization": "Bearer ${TOKEN_FOR_TESTS}"})
        catalog = McpCatalog({"tickets": server})
        caplog.set_level(logging.DEBUG)
        logging.getLogger("httpx2").setLevel(logging.DEBUG)
        try:
            await catalog.discover("tickets")
        finally:
            logging.getLogger("httpx2").setLevel(logging.WARNING)
            await catalog.close()
        assert "HTTP Request: POST" in caplog.text and "key=[hidden]" in caplog.text
        assert "k3y-in-the-url" not in caplog.text and TOKEN not in caplog.text

    async def test_errors_never_show_a_header_or_a_variables_value(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("API_KEY_FOR_TESTS", "k3y-that-must-not-show")
        servers = {
            "http": McpServerConfig(url="http://127.0.0.1:9/mcp?key=${API_KEY_FOR_TESTS}", headers={"X-Key": "literal-header-secret"}, connect_timeout=2),
            "stdio": McpServerConfig(command="/nonexistent/${API_KEY_FOR_TESTS}", env={"TOKEN": "literal-env-secret"}, connect_timeout=2),
        }
        catalog = McpCatalog(servers)
        errors = []
        try:
            for name in servers:
                with pytest.raises(McpUnavailable) as caught:
                    await catalog.discover(name)
                errors.append(str(caught.value))
        finally:
            await catalog.close()
        assert "No such file or directory: '/nonexistent/[hidden]'" in errors[1]  # the error names the path, not the key
        for secret in ("k3y-that-must-not-show", "literal-header-secret", "literal-env-secret"):
            assert not any(secret in error for error in errors)

    async def test_a_server_that_hangs_ends_within_the_timeout(self, stdio_server: dict[str, Any]) -> None:
        catalog = McpCatalog({"tickets": McpServerConfig.model_validate(stdio_server)})
        try:
            with pytest.raises(McpCallLost, match="did not answer hang within 1s"):
                await catalog.connections["tickets"].call("hang", {"seconds": 60}, meta={}, timeout=1)
        finally:
            await catalog.close()



class TestWithoutServers:
    """A worker with no MCP server never loads the MCP SDK: it was half of every process's start."""

    def test_the_worker_and_the_cli_start_without_the_sdk(self) -> None:
        import subprocess
        import sys

        probe = "import sys, durable_agent.cli, durable_agent.cli.worker, durable_agent.cli.approve; print(sorted(m for m in sys.modules if m.split('.')[0] in ('mcp', 'mcp_types')))"
        loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
        assert loaded.stdout.strip() == "[]", loaded.stdout

    def test_the_json_rpc_codes_are_the_sdks(self) -> None:
        from durable_agent.mcp import errors

        assert (errors.INVALID_PARAMS, errors.INTERNAL_ERROR) == (mcp.INVALID_PARAMS, mcp.INTERNAL_ERROR)
