"""Runs on a real dev server calling real MCP servers (stdio and streamable HTTP) through the same gate as every tool."""

# ruff: noqa: F811 - the MCP fixtures are imported, and tests take them by name

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from durable_agent.schemas import AgentResult, StatusView
from durable_agent.testing import answer, tool_use
from tests import mcp_servers
from tests.conftest import Harness, make_config, temporal_cli
from tests.test_failures import approval_pending, until
from tests.mcp_fixtures import TOKEN, http_url, mcp_state, stdio_server  # noqa: F401

GET = "mcp__tickets__get_ticket"


def profile(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "tools": ["tickets.*"], "autonomy": "supervised", "approval": {"max_amount": 100.0}, **extra}


async def pending(handle: Any) -> StatusView:
    """The run's status once an approval waits."""
    await until(lambda: approval_pending(handle), "an approval to wait", 30)
    return await handle.query("status", result_type=StatusView)


def observations(result_trace: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r["observation"] for r in result_trace if r["action"]["type"] == "tool_call"]


class TestThroughTheGate:
    """MCP calls run, wait and fail as Python tools do, with the server's own words reaching the model."""

    async def test_a_read_only_tool_runs_with_the_idempotency_key_in_meta(
        self, harness: Harness, stdio_server: dict[str, Any], mcp_state: Path
    ) -> None:
        model, scripted = harness.scripted([tool_use(GET, {"ticket_id": "T-1"}), answer("T-1 is open")])
        config = make_config({"support": profile(model)}, mcp_servers={"tickets": stdio_server})
        async with harness.worker(config):
            handle = await harness.start({"task": "Look at T-1"})
            result = await handle.result()
            trace = await handle.query("trace")
        assert result.status == "success", result
        assert result.tools_used == [GET]
        assert "Printer on fire" in scripted.tool_results()[0]["content"]
        served = mcp_servers.calls(mcp_state, "get_ticket")
        assert len(served) == 1
        info = await handle.describe()
        assert served[0]["key"] == f"{handle.id}/{info.run_id}/1/0/toolu_scripted_0001"
        assert observations(trace)[0]["status"] == "ok"

    async def test_a_destructive_tool_waits_for_approval_from_the_cli(
        self, harness: Harness, stdio_server: dict[str, Any], mcp_state: Path, server_address: str
    ) -> None:
        model, _ = harness.scripted([tool_use("mcp__tickets__delete_ticket", {"ticket_id": "T-1"}), answer("deleted")])
        config = make_config({"support": profile(model)}, mcp_servers={"tickets": stdio_server})
        async with harness.worker(config):
            handle = await harness.start({"task": "Delete T-1"})
            held = (await pending(handle)).pending_approvals[0]
            assert held.tool == "mcp__tickets__delete_ticket" and "destructive" in held.reason
            assert mcp_servers.calls(mcp_state, "delete_ticket") == []  # nothing sent while it waits
            signal = await asyncio.create_subprocess_exec(
                temporal_cli(), "workflow", "signal", "--address", server_address, "--workflow-id", handle.id, "--name", "approve",
                "--input", json.dumps({"approval_id": held.approval_id, "reviewer": "alice"}),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )
            out, _ = await signal.communicate()
            assert signal.returncode == 0, out
            result: AgentResult = await handle.result()
        assert result.status == "success", result
        assert [(a.status, a.reviewer) for a in result.approvals] == [("approved", "alice")]
        assert len(mcp_servers.calls(mcp_state, "delete_ticket")) == 1

    async def test_an_amount_over_the_limit_waits_by_the_profiles_tool_policy(
        self, harness: Harness, stdio_server: dict[str, Any], mcp_state: Path
    ) -> None:
        model, _ = harness.scripted([tool_use("mcp__tickets__refund_ticket", {"ticket_id": "T-1", "amount": 500}), answer("asked")])
        policy = {"tickets.refund_ticket": {"amount_arg": "amount", "risk": "medium", "timeout": 20}}
        config = make_config({"support": profile(model, tool_policy=policy)}, mcp_servers={"tickets": stdio_server})
        async with harness.worker(config):
            handle = await harness.start({"task": "Refund 500 on T-1"})
            held = (await pending(handle)).pending_approvals[0]
            assert held.amount == 500 and "above the limit of 100" in held.reason
            await handle.signal("reject", {"approval_id": held.approval_id, "reviewer": "bob"})
            result = await handle.result()
        assert result.approvals[0].status == "rejected"
        assert mcp_servers.calls(mcp_state, "refund_ticket") == []

    async def test_an_is_error_result_reaches_the_model_as_a_tool_error(self, harness: Harness, stdio_server: dict[str, Any]) -> None:
        model, scripted = harness.scripted([tool_use("mcp__tickets__broken_report", {}), answer("the report is unavailable")])
        config = make_config({"support": profile(model)}, mcp_servers={"tickets": stdio_server})
        async with harness.worker(config):
            handle = await harness.start({"task": "Report"})
            result = await handle.result()
            trace = await handle.query("trace")
        assert result.status == "success"
        block = scripted.tool_results()[0]
        assert block["is_error"] is True and "the report database is offline" in block["content"]
        assert observations(trace)[0]["status"] == "error"

    async def test_text_structured_content_and_images_become_the_result(self, harness: Harness, stdio_server: dict[str, Any]) -> None:
        model, scripted = harness.scripted([tool_use("mcp__tickets__snapshot", {}), answer("seen")])
        config = make_config({"support": profile(model)}, mcp_servers={"tickets": stdio_server})
        async with harness.worker(config):
            result = await harness.run({"task": "Show the queue"})
        assert result.status == "success"
        content = scripted.tool_results()[0]["content"]
        assert content[0]["type"] == "text" and "queue snapshot" in content[0]["text"] and '"open": 1' in content[0]["text"]
        assert content[1] == {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": mcp_servers.PIXEL}}

    async def test_over_http_the_header_comes_from_the_environment_and_is_kept_out_of_everything(
        self, harness: Harness, http_url: str, monkeypatch: pytest.MonkeyPatch, state_dir: Path
    ) -> None:
        monkeypatch.setenv("TICKETS_TOKEN", TOKEN)
        server = {"url": http_url, "headers": {"Authorization": "Bearer ${TICKETS_TOKEN}"}}
        model, scripted = harness.scripted([tool_use("mcp__tickets__whoami", {}), answer("ok")])
        config = make_config({"support": profile(model)}, mcp_servers={"tickets": server})
        async with harness.worker(config):
            handle = await harness.start({"task": "Who am I?"})
            result = await handle.result()
            history = (await handle.fetch_history()).to_json()
        assert result.status == "success", result
        assert scripted.tool_results()[0]["content"] == "authenticated"
        assert TOKEN not in history and "TICKETS_TOKEN" not in history
        assert TOKEN not in (state_dir / "trace.jsonl").read_text()
        stored = "".join(p.read_text(errors="replace") for p in (state_dir / "content").rglob("*") if p.is_file())
        assert TOKEN not in stored


class TestWhenServersMisbehave:
    """A server down, hanging or dying: the run goes on, and nothing is sent twice."""

    async def test_a_server_down_at_start_leaves_the_run_without_its_tools(self, harness: Harness, stdio_server: dict[str, Any]) -> None:
        model, scripted = harness.scripted([tool_use("lookup_order", {"order_id": "ord-789"}), answer("done without tickets")])
        down = {"url": "http://127.0.0.1:9/mcp", "connect_timeout": 2}
        config = make_config(
            {"support": profile(model, tools=["lookup_order", "tickets.*", "files.*"])}, mcp_servers={"tickets": stdio_server, "files": down}
        )
        async with harness.worker(config):
            result = await harness.run({"task": "Check ord-789"})
        assert result.status == "success", result
        assert any(w.startswith("MCP_SERVER_UNAVAILABLE: files") for w in result.warnings), result.warnings
        request = scripted.requests[0]
        names = [t["name"] for t in request.tools]
        assert "lookup_order" in names and GET in names and not any(n.startswith("mcp__files__") for n in names)
        assert "the tools of the MCP server 'files'" in request.system

    async def test_a_call_that_is_not_idempotent_is_not_sent_again_after_a_timeout(
        self, harness: Harness, stdio_server: dict[str, Any], mcp_state: Path, tmp_path: Path
    ) -> None:
        never = str(tmp_path / "never-created")
        model, scripted = harness.scripted([tool_use("mcp__tickets__create_ticket", {"title": "slow", "wait_for": never}), answer("unsure")])
        policy = {"tickets.create_ticket": {"timeout": 1}}
        config = make_config({"support": profile(model, tool_policy=policy)}, mcp_servers={"tickets": stdio_server})
        async with harness.worker(config):
            handle = await harness.start({"task": "Open a ticket"})
            result = await handle.result()
            trace = await handle.query("trace")
        assert result.status == "success"
        assert observations(trace)[0]["status"] == "outcome_unknown"
        block = scripted.tool_results()[0]
        assert block["is_error"] is True and "OUTCOME UNKNOWN" in block["content"] and "within 1s" in block["content"]
        assert len(mcp_servers.calls(mcp_state, "create_ticket")) == 1

    async def test_cancelling_the_run_cancels_the_call_on_the_server(
        self, harness: Harness, stdio_server: dict[str, Any], mcp_state: Path, tmp_path: Path
    ) -> None:
        never = str(tmp_path / "never-created")
        model, _ = harness.scripted([tool_use("mcp__tickets__create_ticket", {"title": "slow", "wait_for": never}), answer("never")])
        config = make_config({"support": profile(model)}, mcp_servers={"tickets": stdio_server})
        async with harness.worker(config):
            handle = await harness.start({"task": "Open a ticket"})
            await until(lambda: mcp_servers.calls(mcp_state, "create_ticket"), "the call to reach the server")
            await handle.cancel()
            # It changes the world: the run waits for the call to stop (through the activity's heartbeat).
            result = await handle.result()
            assert result.status == "cancelled"
            await until(lambda: mcp_servers.calls(mcp_state, "create_ticket_cancelled"), "the server to see the cancellation")

    async def test_a_read_only_call_that_hangs_is_retried_then_reported_unavailable(
        self, harness: Harness, stdio_server: dict[str, Any], mcp_state: Path
    ) -> None:
        model, scripted = harness.scripted([tool_use("mcp__tickets__hang", {"seconds": 60}), answer("gave up")])
        policy = {"tickets.hang": {"timeout": 1}}
        config = make_config({"support": profile(model, tool_policy=policy)}, mcp_servers={"tickets": stdio_server})
        async with harness.worker(config):
            result = await harness.run({"task": "Wait"})
        assert result.status == "success"
        assert "unavailable right now" in scripted.tool_results()[0]["content"]
        assert len(mcp_servers.calls(mcp_state, "hang")) == 3  # tool_default: a timeout is tried three times

    async def test_a_server_that_dies_mid_call_is_started_again_for_the_next(
        self, harness: Harness, stdio_server: dict[str, Any], mcp_state: Path
    ) -> None:
        model, scripted = harness.scripted(
            [tool_use("mcp__tickets__crash", {}), tool_use(GET, {"ticket_id": "T-1"}), answer("recovered")]
        )
        config = make_config({"support": profile(model)}, mcp_servers={"tickets": stdio_server})
        async with harness.worker(config):
            result = await harness.run({"task": "Crash, then look"})
        assert result.status == "success"
        first, second = scripted.tool_results()
        assert "OUTCOME UNKNOWN" in first["content"] and "Connection closed" in first["content"]
        assert "Printer on fire" in second["content"]
        crash, get = mcp_servers.calls(mcp_state, "crash"), mcp_servers.calls(mcp_state, "get_ticket")
        assert len(crash) == 1 and len(get) == 1 and crash[0]["pid"] != get[0]["pid"]

    async def test_a_50_mb_answer_ends_within_the_timeout_with_a_clear_observation(
        self, harness: Harness, http_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("TICKETS_TOKEN", TOKEN)
        server = {"url": http_url, "headers": {"Authorization": "Bearer ${TICKETS_TOKEN}"}, "timeout": 30}
        model, scripted = harness.scripted([tool_use("mcp__tickets__huge", {"megabytes": 50}), answer("too big")])
        config = make_config({"support": profile(model)}, mcp_servers={"tickets": server})
        async with harness.worker(config):
            result = await harness.run({"task": "Everything"})
        assert result.status == "success"
        text = scripted.tool_results()[0]["content"]
        assert "over the server's max_result_bytes" in text, text[:500]
