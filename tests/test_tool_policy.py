"""A profile's ``tool_policy`` over a Python tool's own metadata: what the workflow checks and what the activity enforces."""

from __future__ import annotations

from durable_agent.testing import answer, tool_use
from tests import tools_for_tests
from tests.conftest import Harness, make_config
from tests.test_mcp_runs import pending


class TestPythonTools:
    """tool_policy applies to Python tools as to MCP tools."""

    async def test_an_amount_arg_the_tool_did_not_declare_holds_the_call(self, harness: Harness) -> None:
        model, _ = harness.scripted([tool_use("echo", {"text": "pay", "times": 5000}), answer("asked")])
        policy = {"echo": {"amount_arg": "times", "read_only": False}}
        profile = {"model": model, "tools": ["echo"], "autonomy": "supervised", "approval": {"max_amount": 100.0}, "tool_policy": policy}
        async with harness.worker(make_config({"support": profile})):
            handle = await harness.start({"task": "pay"})
            held = (await pending(handle)).pending_approvals[0]
            assert held.tool == "echo" and held.amount == 5000 and "above the limit of 100" in held.reason
            await handle.signal("reject", {"approval_id": held.approval_id, "reviewer": "bob"})
            result = await handle.result()
        assert result.approvals[0].status == "rejected"
        assert tools_for_tests.calls("echo") == []

    async def test_the_activity_keeps_to_the_profiles_timeout(self, harness: Harness) -> None:
        model, scripted = harness.scripted([tool_use("wait_for_cancel", {"seconds": 60}), answer("gave up")])
        policy = {"wait_for_cancel": {"timeout": 1}}
        profile = {"model": model, "tools": ["wait_for_cancel"], "autonomy": "autonomous", "tool_policy": policy}
        async with harness.worker(make_config({"support": profile})):
            result = await harness.run({"task": "wait"})
        assert result.status == "success"
        assert "wait_for_cancel timed out after 1s" in scripted.tool_results()[0]["content"]
