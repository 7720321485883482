"""Several tool calls in one turn (profile key ``parallel_tool_calls``, default on), on a real Temporal server.

Claude makes independent calls together when it may: the read-only ones run as
concurrent activities, each call keeps its own decision record, held calls each
get their own approval id, and the model reads the results in its own order.
"""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import History

from durable_agent.schemas import DecisionRecord, StatusView
from durable_agent.testing import answer, tool_use, tool_uses
from tests.conftest import SUPPORT_PROFILE, Harness, make_config
from tests.fake_anthropic import FakeAnthropic, text
from tests.fake_anthropic import tool_use as fake_tool_use

LOOKUPS = [tool_use("slow_lookup", {"key": key, "seconds": 0.5}, id=f"toolu_{key}") for key in ("a", "b", "c", "d", "e")]


def run_tool_events(history: History) -> list[str]:
    """``scheduled`` and ``completed`` of the run_tool activities, in history order."""
    scheduled = {
        e.event_id
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == "run_tool"
    }
    out = []
    for e in history.events:
        if e.event_id in scheduled:
            out.append("scheduled")
        elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED and e.activity_task_completed_event_attributes.scheduled_event_id in scheduled:
            out.append("completed")
    return out


def helper(model: str, **extra: Any) -> dict[str, Any]:
    return {"helper": {"tools": ["slow_lookup", "echo"], "model": model, "autonomy": "autonomous", **extra}}


class TestReadOnlyCallsTogether:
    """Five independent lookups in one turn: one round trip of tools, two model calls."""

    async def test_lookups_run_at_once_and_are_read_in_the_models_order(self, harness: Harness) -> None:
        model, scripted = harness.scripted([tool_uses(*LOOKUPS, text="Five lookups at once."), answer("all five")])
        async with harness.worker(make_config(helper(model))):
            handle = await harness.start({"task": "look up a to e"})
            result = await handle.result()
            history = await handle.fetch_history()
            records = await handle.query("trace", result_type=list[DecisionRecord])
        assert result.status == "success" and result.steps == 2 and len(scripted.requests) == 2
        assert result.tools_used == ["slow_lookup"] * 5
        # All five were started before any finished.
        assert run_tool_events(history) == ["scheduled"] * 5 + ["completed"] * 5
        assert scripted.requests[0].parallel_tool_calls is True
        results = scripted.tool_results()
        assert [b["tool_use_id"] for b in results] == [f"toolu_{key}" for key in "abcde"]
        assert [b["content"] for b in results] == [f"value of {key}" for key in "abcde"]
        # One record per call, numbered in the model's order: one turn of the trace.
        assert [(r.step, r.record_id.rsplit("/", 1)[1], r.action.args["key"]) for r in records[:5]] == [
            (1, str(n), key) for n, key in enumerate("abcde")
        ]

    async def test_off_in_the_profile_calls_run_one_after_another(self, harness: Harness) -> None:
        model, scripted = harness.scripted([tool_uses(*LOOKUPS[:2]), answer("both")])
        async with harness.worker(make_config(helper(model, parallel_tool_calls=False))):
            handle = await harness.start({"task": "look up a and b"})
            result = await handle.result()
            history = await handle.fetch_history()
        assert result.status == "success" and scripted.requests[0].parallel_tool_calls is False
        assert run_tool_events(history) == ["scheduled", "completed"] * 2


class TestHeldCallsOfOneTurn:
    """World-changing calls of a turn are held, each under its own id, and decided one by one."""

    async def test_each_held_call_has_its_own_id_and_a_rejection_is_told(self, harness: Harness) -> None:
        turn = tool_uses(
            tool_use("lookup_order", {"order_id": "ord-1001"}, id="toolu_look"),
            tool_use("cancel_order", {"order_id": "ord-1001"}, id="toolu_cancel_1"),
            tool_use("cancel_order", {"order_id": "ord-1002"}, id="toolu_cancel_2"),
        )
        model, scripted = harness.scripted([turn, answer("one cancelled")])
        async with harness.worker(make_config({"support": {**SUPPORT_PROFILE, "model": model}})):
            handle = await harness.start({"task": "cancel two orders"})
            pending = []
            for _ in range(200):
                pending = (await handle.query("status", result_type=StatusView)).pending_approvals
                if len(pending) == 2:
                    break
                await asyncio.sleep(0.05)
            assert [p.args["order_id"] for p in pending] == ["ord-1001", "ord-1002"]
            assert len({p.approval_id for p in pending}) == 2
            await handle.signal("reject", {"approval_id": pending[1].approval_id, "reviewer": "bob"})
            await handle.signal("approve", {"approval_id": pending[0].approval_id, "reviewer": "alice"})
            result = await handle.result()
        assert result.status == "success"
        assert [(a.tool, a.status) for a in result.approvals] == [("cancel_order", "approved"), ("cancel_order", "rejected")]
        results = scripted.tool_results()
        assert [b["tool_use_id"] for b in results] == ["toolu_look", "toolu_cancel_1", "toolu_cancel_2"]
        assert "REJECTED by bob" in results[2]["content"]


class TestOnTheWire:
    """The Messages API is told whether the model may make several calls a turn."""

    async def test_parallel_use_allowed_unless_the_profile_says_no(self, harness: Harness, fake_api: FakeAnthropic) -> None:
        for parallel in (True, False):
            fake_api.script(fake_tool_use("echo", {"text": "hi"}), text("done"))
            profile = {"model": "claude-haiku-4-5", "tools": ["echo"], "autonomy": "autonomous", "parallel_tool_calls": parallel}
            async with harness.worker(make_config({"claude": profile})):
                result = await harness.run({"task": "echo hi"})
            assert result.status == "success"
            sent = fake_api.requests[-1].body
            assert ("disable_parallel_tool_use" in str(sent.get("tool_choice"))) is (not parallel)
