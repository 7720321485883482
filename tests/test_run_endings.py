"""How a run ends when something outside it stops it, on a real Temporal server.

- Cancelled while a tool that changes the world runs (async or sync): the tool
  runs to its own end, its result is recorded (a decision record, ``tools_used``),
  and then the run ends ``cancelled``.
- Waiting for its daily budget while nothing serves the limits queue: the run
  waits at most its profile's ``daily_budget_wait_seconds``, then fails saying why.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError

from durable_agent.schemas import DecisionRecord, StatusView
from durable_agent.testing import answer, tool_use
from tests import tools_for_tests
from tests.conftest import Harness, make_config
from tests.test_failures import until
from tests.test_limits_queue import DAILY_PROFILE, PRICED_OFFLINE


def acting(*tools: str) -> Any:
    return make_config({"acting": {"model": "offline", "tools": list(tools), "autonomy": "autonomous"}})


class TestCancelDuringAWorldChangingTool:
    """A cancelled run waits for the world-changing tool in flight, records it, then ends cancelled."""

    @pytest.mark.parametrize("tool", ["slow_async_transfer", "slow_transfer"])
    async def test_the_tool_runs_to_its_end_and_its_result_is_recorded(self, harness: Harness, tool: str) -> None:
        # Long enough for the cancellation to reach the activity (with its next heartbeat) while the tool runs.
        model, _ = harness.scripted([tool_use(tool, {"account": "acc-7", "amount": 30.0, "seconds": 12.0}), answer("never reached")])
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="tool") as pool:
            async with harness.worker(acting(tool), tool_executor=pool):
                handle = await harness.start({"task": "transfer, then be cancelled", "model": model})
                await until(lambda: tools_for_tests.calls(tool), "the transfer to start")
                await handle.cancel()
                result = await handle.result()
                seen = [c["event"] for c in tools_for_tests.calls(tool)]  # read at once: the run ended after the tool
                trace = await handle.query("trace", result_type=list[DecisionRecord])
        assert result.status == "cancelled"
        assert seen == ["started", "finished"]
        assert result.tools_used == [tool]
        [record] = [r for r in trace if r.action.tool == tool]
        assert record.observation["status"] == "ok" and record.observation.get("result_ref"), record.observation
        assert any("CANCELLED_WHILE_RUNNING" in w and tool in w for w in result.warnings), result.warnings


class TestBoundedLeaseWait:
    """Nobody serves the limits queue: the run waits for its ledger as long as its profile says, no longer."""

    async def test_the_run_fails_after_its_wait_saying_why(self, harness: Harness) -> None:
        profile = {**DAILY_PROFILE, "daily_budget_wait_seconds": 3}
        async with harness.worker(make_config({"daily": profile}, pricing=PRICED_OFFLINE), serve_limits=False):
            handle = await harness.start({"task": "Look up order ord-789"})
            with pytest.raises(WorkflowFailureError):
                await handle.result()
            status = await handle.query("status", result_type=StatusView)
        assert (status.status, status.step) == ("failed", 0)
        assert status.answer and "could not be reached within 3 s (daily_budget_wait_seconds)" in status.answer, status.answer
        assert "-limits" in status.answer and "--no-limits" in status.answer
        [warning] = [w for w in status.warnings if w.startswith("DAILY_BUDGET_UNREACHABLE")]
        assert "daily" in warning
