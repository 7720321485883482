"""Every way a Claude reply can end, through the real ``anthropic`` client and a real Temporal server.

The model is :mod:`tests.fake_anthropic` over HTTP; the tools are the demo shop's,
so "the tool did not run" is read from the shop's database, not from a mock.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError

from durable_agent.demo import shop
from durable_agent.models.anthropic import AnthropicModel
from durable_agent.models.base import ModelRequest
from durable_agent.schemas import AgentResult, DecisionRecord
from durable_agent.stops import after_reply, think_timeout
from tests.conftest import SUPPORT_PROFILE, Harness, make_config
from tests.fake_anthropic import FakeAnthropic, Reply, text, tool_use, truncated_tool_use

MODEL = "claude-haiku-4-5"  # 64k tokens of output at most
SMALL_MODEL = "claude-3-5-haiku"  # 8,192 at most: a profile can start at the ceiling
REFUND = {"order_id": "ord-789", "amount": 20, "currency": "USD"}
#: The model had written ``{"order_id": "ord-789", "amount": 2`` when its allowance ran out.
CUT_AT_2 = json.dumps(REFUND).index('"amount": 2') + len('"amount": 2')


def _profile(**extra: Any) -> dict[str, Any]:
    return {"support": {**SUPPORT_PROFILE, "model": MODEL, **extra}}


@pytest.fixture(params=["stream", "plain"])
def claude(request: pytest.FixtureRequest, fake_anthropic: FakeAnthropic, monkeypatch: pytest.MonkeyPatch) -> FakeAnthropic:
    """The fake Messages API, answering the worker's client streamed or not."""
    for name, value in fake_anthropic.environ().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DURABLE_AGENT_STREAM", "1" if request.param == "stream" else "0")
    return fake_anthropic


async def _run(harness: Harness, task: str, **profile: Any) -> tuple[AgentResult, list[DecisionRecord]]:
    async with harness.worker(make_config(_profile(**profile))):
        handle = await harness.start({"task": task})
        result = await handle.result()
        trace = await handle.query("trace", result_type=list[DecisionRecord])
    return result, trace


def _tool_uses(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [b for m in body["messages"] if isinstance(m["content"], list) for b in m["content"] if b.get("type") == "tool_use"]


class TestTheDanger:
    """Why a cut reply must not be trusted: the client completes the partial JSON leniently."""

    @pytest.mark.parametrize("stream", [True, False], ids=["stream", "plain"])
    async def test_a_cut_call_parses_as_a_different_call(self, fake_anthropic: FakeAnthropic, monkeypatch: pytest.MonkeyPatch, stream: bool) -> None:
        for name, value in fake_anthropic.environ().items():
            monkeypatch.setenv(name, value)
        fake_anthropic.script(truncated_tool_use("issue_refund", REFUND, cut_at=CUT_AT_2))
        request = ModelRequest(model=MODEL, system="s", tools=[], messages=[{"role": "user", "content": "refund 20"}], max_tokens=64)
        response = await AnthropicModel(stream=stream).complete(request)
        assert response.stop_reason == "max_tokens"
        assert response.content[-1]["input"] == {"order_id": "ord-789", "amount": 2}


class TestTruncatedToolUse:
    """A tool call cut by max_tokens is never executed."""

    async def test_retried_with_a_larger_allowance_and_only_the_whole_call_runs(self, harness: Harness, claude: FakeAnthropic) -> None:
        claude.script(
            truncated_tool_use("issue_refund", REFUND, cut_at=CUT_AT_2, say="Refunding."),
            tool_use("issue_refund", REFUND, say="Refunding."),
            text("Refunded 20 USD."),
        )
        result, trace = await _run(harness, "Refund 20 USD on order ord-789", max_tokens=1024)
        assert result.status == "success"
        assert [r["amount"] for r in shop.refunds_for("ord-789")] == [20.0]  # never 2
        sent = [r.body for r in claude.requests]
        assert [b["max_tokens"] for b in sent] == [1024, 4096, 1024]
        # The cut reply never entered the conversation.
        assert [c["input"] for c in _tool_uses(sent[2])] == [REFUND]
        assert result.steps == 2 and result.tools_used == ["issue_refund"]
        first = trace[0]
        assert any(w.startswith("TRUNCATED:") and "max_tokens=4096" in w for w in first.warnings)
        assert len(first.observation["request_ids"]) == 2
        # Both calls of the step are paid for.
        assert first.cost.input_tokens == 200 and first.cost.output_tokens == 40

    async def test_cut_at_the_models_ceiling_twice_fails_without_running_it(self, harness: Harness, claude: FakeAnthropic) -> None:
        claude.script(
            truncated_tool_use("issue_refund", REFUND, cut_at=CUT_AT_2),
            truncated_tool_use("issue_refund", REFUND, cut_at=CUT_AT_2),
        )
        async with harness.worker(make_config({"support": {**SUPPORT_PROFILE, "model": SMALL_MODEL, "max_tokens": 8192}})):
            handle = await harness.start({"task": "Refund 20 USD on order ord-789"})
            with pytest.raises(WorkflowFailureError) as info:
                await handle.result()
        assert shop.refunds_for("ord-789") == []
        assert "never executed" in str(info.value.cause)
        second = claude.requests[1].body
        assert second["max_tokens"] == 8192
        assert "NOT executed" in json.dumps(second["messages"][-1])  # the model was asked to redo it
        assert _tool_uses(second) == []


class TestOtherStops:
    """Refusal, pause_turn."""

    async def test_refusal_ends_the_run_as_refused_and_runs_nothing(self, harness: Harness, claude: FakeAnthropic) -> None:
        refusal = tool_use("issue_refund", REFUND, say="I can't help with that.", stop_reason="refusal")
        claude.script(refusal)
        result, trace = await _run(harness, "Refund 20 USD on order ord-789")
        assert result.status == "refused"
        assert "declined" in (result.answer or "")
        assert shop.refunds_for("ord-789") == []
        assert trace[-1].observation["status"] == "refused"
        assert any(w.startswith("REFUSED") for w in trace[-1].warnings)

    async def test_pause_turn_continues_the_same_turn(self, harness: Harness, claude: FakeAnthropic) -> None:
        claude.script(text("Searching the web...", stop_reason="pause_turn"), text("Order ord-789 shipped."))
        result, trace = await _run(harness, "Where is ord-789?")
        assert result.status == "success" and result.answer == "Order ord-789 shipped."
        assert result.steps == 1 and len(trace) == 1
        resent = claude.requests[1].body["messages"]
        assert resent[-1]["role"] == "assistant" and resent[-1]["content"][0]["text"] == "Searching the web..."


class TestNextMove:
    """The stop-reason table, without a server."""

    def _move(self, stop: str | None, **kw: Any) -> Any:
        args: dict[str, Any] = {
            "has_tool_calls": False, "cut_tool_calls": [], "max_tokens": 1024, "model_max_output": 8192,
            "asked_again": False, "pauses": 0, "compacted": False,
        }
        args.update(kw)
        return after_reply(stop, **args)

    @pytest.mark.parametrize(
        ("stop", "kw", "kind", "max_tokens"),
        [
            ("end_turn", {}, "answer", None),
            ("tool_use", {"has_tool_calls": True}, "act", None),
            ("max_tokens", {"cut_tool_calls": ["issue_refund"]}, "retry_larger", 4096),
            ("max_tokens", {"cut_tool_calls": ["issue_refund"], "max_tokens": 4096}, "retry_larger", 8192),
            ("max_tokens", {"cut_tool_calls": ["issue_refund"], "max_tokens": 8192}, "ask_again", 8192),
            ("max_tokens", {"cut_tool_calls": ["issue_refund"], "max_tokens": 8192, "asked_again": True}, "give_up", None),
            ("max_tokens", {"max_tokens": 8192}, "answer", None),
            ("refusal", {"has_tool_calls": True}, "refused", None),
            ("pause_turn", {}, "continue", 1024),
            ("pause_turn", {"pauses": 8}, "give_up", None),
            ("model_context_window_exceeded", {}, "compact", 1024),
            ("model_context_window_exceeded", {"compacted": True}, "give_up", None),
        ],
    )
    def test_table(self, stop: str, kw: dict[str, Any], kind: str, max_tokens: int | None) -> None:
        move = self._move(stop, **kw)
        assert move.kind == kind
        assert move.max_tokens == max_tokens

    def test_think_timeout_follows_the_allowance(self) -> None:
        assert think_timeout(1024).total_seconds() == 300
        assert think_timeout(64_000).total_seconds() == 120 + 3200


class TestContentBlocks:
    """Thinking blocks go back unchanged; several tool calls in one reply all run."""

    async def test_thinking_and_its_signature_round_trip_across_a_tool_turn(self, harness: Harness, claude: FakeAnthropic) -> None:
        thinking = {"type": "thinking", "thinking": "The order id is in the task; look it up first.", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA"}
        call = {"type": "tool_use", "id": "toolu_think_1", "name": "lookup_order", "input": {"order_id": "ord-789"}}
        claude.script(Reply(content=[thinking, call]), text("Order ord-789 was delivered."))
        result, trace = await _run(harness, "Where is ord-789?", max_tokens=4096, thinking_budget_tokens=2048)
        assert result.status == "success"
        first, second = (r.body for r in claude.requests)
        assert first["thinking"] == {"type": "enabled", "budget_tokens": 2048}
        assert second["messages"][1] == {"role": "assistant", "content": [thinking, call]}
        assert trace[0].action.reasoning == thinking["thinking"]  # no text: the thinking is the reasoning

    async def test_parallel_tool_calls_all_run_and_answer_together(self, harness: Harness, claude: FakeAnthropic) -> None:
        calls = [
            {"type": "tool_use", "id": "toolu_p1", "name": "lookup_order", "input": {"order_id": "ord-789"}},
            {"type": "tool_use", "id": "toolu_p2", "name": "search_kb", "input": {"query": "refund policy"}},
        ]
        claude.script(Reply(content=calls), text("Both done."))
        result, _ = await _run(harness, "Check ord-789 and the refund policy")
        assert result.status == "success" and result.tools_used == ["lookup_order", "search_kb"]
        results = claude.requests[1].body["messages"][-1]["content"]
        assert [b["tool_use_id"] for b in results] == ["toolu_p1", "toolu_p2"]
