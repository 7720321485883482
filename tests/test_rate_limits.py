"""Per-tool rate limits on a real Temporal server: shared by all runs, waited for durably, or refused at once."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import pytest
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import WorkflowHandle

from durable_agent.schemas import DecisionRecord, StatusView
from durable_agent.testing import answer, tool_use
from tests.conftest import Harness, make_config
from tests.tools_for_tests import calls

#: limited_echo's limit (tests/tools_for_tests.py): 2 calls per 10 s.
LIMIT, PERIOD = 2, 10.0
#: Calls start a little after their slot (a workflow task, then the activity's dispatch);
#: an earlier call delayed more than a later one brings them this much closer at most.
DISPATCH_SLACK = 1.0
#: The tool's clock (time.time) and the server's are the same machine's; allow rounding.
CLOCK_SLACK = 0.01


async def _watch_for_waiting(handles: list[WorkflowHandle[Any, Any]], seen: list[tuple[StatusView, str]]) -> None:
    """Record the first status (and current details) of a run waiting for the rate limit."""
    while not seen:
        for handle in handles:
            status = await handle.query("status", result_type=StatusView)
            if status.phase == "waiting_for_rate_limit":
                metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
                seen.append((status, metadata.current_details))
                return
        await asyncio.sleep(0.2)


class TestWaiting:
    """Over the limit, a call waits for its turn with a durable timer."""

    @pytest.mark.slow  # waits out a ten-second rate-limit window
    async def test_three_runs_share_two_calls_per_ten_seconds(self, harness: Harness) -> None:
        models = [harness.scripted([tool_use("limited_echo", {"text": f"{r}-{i}"}) for i in range(2)] + [answer("done")])[0] for r in range(3)]
        config = make_config({"limited": {"tools": ["limited_echo"], "model": models[0]}})
        seen: list[tuple[StatusView, str]] = []
        async with harness.worker(config):
            handles = [await harness.start({"task": "echo twice", "model": m}) for m in models]
            watcher = asyncio.create_task(_watch_for_waiting(handles, seen))
            results = await asyncio.gather(*(h.result() for h in handles))
            watcher.cancel()
            traces = [await h.query("trace", result_type=list[DecisionRecord]) for h in handles]
        assert [r.status for r in results] == ["success"] * 3

        records = [r for trace in traces for r in trace if r.action.tool == "limited_echo"]
        # The limiter promised six slots, never more than two within 10 s, first come first served.
        slots = sorted(datetime.fromisoformat(r.observation["rate_limit_slot"]).timestamp() for r in records)
        assert len(slots) == 6
        for earlier, later in zip(slots, slots[LIMIT:]):
            assert later - earlier >= PERIOD, slots
        # Four calls waited their turn, and their records say how long.
        assert sum(1 for r in records if r.observation["rate_limit_wait_ms"] > 0) == 4

        # Each call started at or after its slot, and so no 10 s saw more than two start.
        started = {(c["key"].split("/")[0], int(c["key"].split("/")[2])): c["at"] for c in calls("limited_echo")}
        for r in records:
            slot = datetime.fromisoformat(r.observation["rate_limit_slot"]).timestamp()
            assert started[(r.session_id, r.step)] >= slot - CLOCK_SLACK
        starts = sorted(started.values())
        for earlier, later in zip(starts, starts[LIMIT:]):
            assert later - earlier >= PERIOD - DISPATCH_SLACK, starts

        status, details = seen[0]
        assert status.waiting_for is not None and "rate limit of limited_echo (2/10s)" in status.waiting_for
        assert "Waiting for the rate limit" in details and "limited_echo" in details


class TestFailFast:
    """A tool that fails fast is not called over its limit; the model is told instead."""

    @staticmethod
    async def _call_twice(harness: Harness, tool: str, args: dict[str, Any], **profile: Any) -> tuple[list[str], str]:
        """Run an agent that calls ``tool`` twice; return the two observations' statuses and what the model was told last."""
        model, scripted = harness.scripted([tool_use(tool, args), tool_use(tool, args), answer("done")])
        async with harness.worker(make_config({"fast": {"tools": [tool], "model": model, **profile}})):
            handle = await harness.start({"task": "call twice"})
            result = await handle.result()
            records = await handle.query("trace", result_type=list[DecisionRecord])
        assert result.status == "success"
        told = scripted.last_tool_result() or {}
        assert told.get("is_error")
        return [r.observation["status"] for r in records[:2]], told["content"]

    async def test_decorator_policy(self, harness: Harness) -> None:
        statuses, told = await self._call_twice(harness, "limited_fail_fast", {"text": "one"})
        assert statuses == ["ok", "rate_limited"]
        assert len(calls("limited_fail_fast")) == 1
        assert "RATE_LIMITED: limited_fail_fast allows 1 call per 3600 s" in told

    async def test_profile_policy_overrides_the_tool(self, harness: Harness) -> None:
        statuses, told = await self._call_twice(
            harness, "big_output", {"size": 3}, rate_limits={"big_output": "1/day"}, rate_limit_wait={"big_output": False}
        )
        assert statuses == ["ok", "rate_limited"]
        assert "allows 1 call per 86400 s" in told
