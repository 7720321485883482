"""Shared limits at scale, on a real Temporal server: leased daily budgets, per-caller and per-model rate limits."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timezone
from typing import Any

import pytest
from temporalio.client import WorkflowHandle
from temporalio.worker import Worker

from durable_agent import budget
from durable_agent.activities.budget import LedgerClosed, LimitsClient, limits_task_queue
from durable_agent.budget import LeaseRequest, LedgerStart, LedgerState, SettleRequest
from durable_agent.cli.worker import workflow_runner
from durable_agent.models import ModelRequest, ModelResponse, register_provider
from durable_agent.schemas import AgentResult, DecisionRecord, StatusView, Usage
from durable_agent.testing import answer, tool_use
from durable_agent.workflows import ENTITY_WORKFLOWS
from tests.conftest import Harness, make_config
from tests.fake_anthropic import FakeAnthropic, RecordedRequest, Reply
from tests.fake_anthropic import text as fake_text
from tests.fake_anthropic import tool_use as fake_tool_use

#: With no input price, max_tokens = 100 and an output price of $10/M, every call is
#: estimated at exactly what it costs: $0.001.
CALL_USD = 0.001
EXACT_PRICE = {"input": 0.0, "output": 10.0}


class EchoModel:
    """Calls ``echo`` until it has ``calls`` answers, then answers. It reads its place from the
    conversation, so a call retried after a worker restart gets the same reply."""

    def __init__(self, calls: int) -> None:
        self.calls = calls

    async def complete(self, request: ModelRequest) -> ModelResponse:
        turns = sum(1 for m in request.messages if m.get("role") == "assistant")
        if turns < self.calls:
            content = [{"type": "tool_use", "id": f"toolu_{turns}", "name": "echo", "input": {"text": str(turns)}}]
        else:
            content = [{"type": "text", "text": "done"}]
        return ModelResponse(content=content, usage=Usage(output_tokens=100), stop_reason="end_turn", model=request.model)


def _daily_agent(harness: Harness, daily_usd: float, runs: int, steps: int) -> tuple[str, list[str], Any]:
    agent = f"lease-{uuid.uuid4().hex[:8]}"
    models = []
    for _ in range(runs):
        name = f"echo-{uuid.uuid4().hex[:8]}"
        register_provider(name, EchoModel(steps))
        harness.models.append(name)
        models.append(name)
    profile = {"tools": ["echo"], "model": models[0], "max_tokens": 100, "daily_budget_usd": daily_usd}
    return agent, models, lambda usd=daily_usd: make_config(
        {agent: {**profile, "daily_budget_usd": usd}}, pricing={"models": {m: EXACT_PRICE for m in models}}
    )


async def _ledger(harness: Harness, agent: str) -> LedgerState:
    handle = harness.client.get_workflow_handle(budget.ledger_id(agent, budget.day_of(datetime.now(timezone.utc)), harness.task_queue))
    return await handle.query("state", result_type=LedgerState)


async def _until(handle: WorkflowHandle[Any, Any], check: Any, timeout: float = 60.0) -> StatusView:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        status = await handle.query("status", result_type=StatusView)
        if check(status):
            return status
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"never reached the expected status; last: {status}")
        await asyncio.sleep(0.1)


class TestLeasedDailyBudget:
    """Runs lease the daily budget in chunks: few ledger updates, spend within the limit, nothing left held."""

    @pytest.mark.slow  # fifty runs, and a worker restarted
    async def test_fifty_runs_on_a_small_budget_across_a_worker_restart(self, harness: Harness) -> None:
        agent, models, config = _daily_agent(harness, 20 * CALL_USD, runs=50, steps=6)
        async with harness.worker(config()):
            handles = [await harness.start({"task": "echo", "agent": agent, "model": m}) for m in models]
            await _until(handles[0], lambda s: s.step >= 1)
        # The worker went away mid-way; another picks every run up where it was.
        async with harness.worker(config()):
            results: list[AgentResult] = await asyncio.gather(*(h.result() for h in handles))
            state = await _ledger(harness, agent)
        spent = sum(r.total_cost for r in results)
        # Nothing lost, nothing counted twice: the ledger charged exactly what the runs spent.
        assert state.spent_usd == pytest.approx(spent)
        # The stated bound: the day's spend never passes the limit by more than one call's estimate.
        assert spent <= 20 * CALL_USD + CALL_USD + 1e-9
        # And all of it was used: a run is refused only when the budget is spent, not while others hold it.
        assert spent == pytest.approx(20 * CALL_USD)
        # Every lease came back: nothing is held once the runs are over.
        assert state.leases == {} and state.remaining_usd == pytest.approx(state.limit_usd - spent)
        assert {r.status for r in results} <= {"budget_exceeded", "max_steps_exceeded", "success"}
        assert sum(r.steps for r in results) == round(spent / CALL_USD)

    @pytest.mark.slow  # a run of many steps
    async def test_a_run_talks_to_the_ledger_a_fraction_of_its_steps(self, harness: Harness) -> None:
        agent, models, config = _daily_agent(harness, 1.0, runs=1, steps=30)
        async with harness.worker(config()):
            handle = await harness.start({"task": "echo", "agent": agent, "model": models[0], "max_steps": 30})
            result = await handle.result()
            state = await _ledger(harness, agent)
            history = await handle.fetch_history()
        leases = [e for e in history.events if e.activity_task_scheduled_event_attributes.activity_type.name == "budget_lease"]
        assert result.steps == 30 and state.spent_usd == pytest.approx(30 * CALL_USD)
        # Ten calls' worth per lease, plus the return at the end: 4 of 30 steps.
        assert len(leases) == state.lease_requests == 4
        assert state.leases == {}

    @pytest.mark.slow  # runs of many steps
    async def test_a_lowered_budget_holds_for_runs_already_going(self, harness: Harness) -> None:
        agent, models, config = _daily_agent(harness, 1.0, runs=1, steps=40)
        async with harness.worker(config()):
            handle = await harness.start({"task": "echo", "agent": agent, "model": models[0], "max_steps": 40})
            await _until(handle, lambda s: s.step >= 3)
        # A deploy lowers the budget to 8 calls' worth while the run holds a lease of 10.
        async with harness.worker(config(8 * CALL_USD)):
            result = await handle.result()
            state = await _ledger(harness, agent)
        assert result.status == "budget_exceeded"
        assert "($0.0080 for" in (result.answer or "")
        assert result.total_cost <= 8 * CALL_USD + 1e-9 and state.spent_usd == pytest.approx(result.total_cost)
        assert state.limit_usd == pytest.approx(8 * CALL_USD) and state.leases == {}

    async def test_a_busy_ledger_makes_runs_wait_not_fail(self, harness: Harness) -> None:
        agent, models, config = _daily_agent(harness, 1.0, runs=2, steps=2)
        # Nobody serves the limits queue: the ledger cannot answer.
        async with harness.worker(config(), serve_limits=False):
            handles = [await harness.start({"task": "echo", "agent": agent, "model": m, "max_steps": 3}) for m in models]
            waiting = await _until(handles[0], lambda s: s.phase == "waiting_for_budget")
            await asyncio.sleep(2.0)
            still = await handles[1].query("status", result_type=StatusView)
            limits = Worker(
                harness.client, task_queue=limits_task_queue(harness.task_queue), workflows=ENTITY_WORKFLOWS,
                workflow_runner=workflow_runner(), max_cached_workflows=0,
            )
            async with limits:
                results = await asyncio.gather(*(h.result() for h in handles))
        assert waiting.waiting_for is not None and "daily budget" in waiting.waiting_for
        assert still.phase == "waiting_for_budget" and still.status is None
        assert [r.status for r in results] == ["success", "success"]


class TestClosedDay:
    """A day's ledger, once closed, is never started again at zero spent."""

    async def test_a_late_request_does_not_reopen_the_day(self, harness: Harness) -> None:
        agent, day = f"closed-{uuid.uuid4().hex[:8]}", "2020-02-29"
        limits = LimitsClient(harness.client, harness.task_queue)
        # A ledger of a long-gone day with no grace: it closes as soon as its first update is done.
        start = LedgerStart(agent=agent, day=day, limit_usd=1.0, grace_seconds=0)
        ask = LeaseRequest(agent=agent, day=day, holder="run-1", seq=1, min_usd=0.1, want_usd=0.1, limit_usd=1.0)
        async with harness.worker():
            first = await limits.lease(ask, start)
            handle = harness.client.get_workflow_handle(budget.ledger_id(agent, day, harness.task_queue), result_type=LedgerState)
            closed = await handle.result()
            with pytest.raises(LedgerClosed):
                await limits.lease(ask.model_copy(update={"holder": "run-2"}), start)
            with pytest.raises(LedgerClosed):
                await limits.settle(SettleRequest(agent=agent, day=day, reservation_id="late", actual_usd=0.5))
            runs = [w async for w in harness.client.list_workflows(f"WorkflowId = '{handle.id}'")]
        assert first.granted and closed.granted == 1
        assert len(runs) == 1  # never started again


class TestMixedRateLimits:
    """Two profiles give one tool different limits: each is held to its own, neither waits on the other."""

    async def test_an_hourly_caller_does_not_hold_up_a_per_minute_one(self, harness: Harness) -> None:
        slow_model, _ = harness.scripted([tool_use("echo", {"text": "a"}), tool_use("echo", {"text": "b"}), answer("done")])
        fast_model, _ = harness.scripted([tool_use("echo", {"text": str(i)}) for i in range(4)] + [answer("done")])
        config = make_config({
            "hourly": {"tools": ["echo"], "model": slow_model, "rate_limits": {"echo": "1/hour"}},
            "fast": {"tools": ["echo"], "model": fast_model, "rate_limits": {"echo": "30/min"}},
        })
        async with harness.worker(config):
            slow = await harness.start({"task": "twice", "agent": "hourly"})
            # The hourly caller's second call is promised a slot an hour away.
            await _until(slow, lambda s: s.phase == "waiting_for_rate_limit")
            fast = await harness.start({"task": "four times", "agent": "fast"})
            result = await asyncio.wait_for(fast.result(), timeout=60)
            records = await fast.query("trace", result_type=list[DecisionRecord])
            slow_status = await slow.query("status", result_type=StatusView)
            await slow.cancel()
        assert result.status == "success"
        assert [r.observation["rate_limit_wait_ms"] for r in records if r.action.tool == "echo"] == [0, 0, 0, 0]
        assert slow_status.phase == "waiting_for_rate_limit" and "1/hour" in (slow_status.waiting_for or "")


class TestModelRateLimits:
    """A model's token limit in agents.toml is shared by every run: the provider never has to say 429."""

    @pytest.mark.slow  # twenty runs paced by a token limit
    async def test_twenty_runs_under_a_small_input_token_limit(
        self, harness: Harness, fake_anthropic: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        for key, value in fake_anthropic.environ().items():
            monkeypatch.setenv(key, value)
        tokens, period = 1500, 4.0
        fake_anthropic.limit(input_tokens=(tokens, period))

        def reply(request: RecordedRequest) -> Reply:
            answered = any(
                block.get("type") == "tool_result" for m in request.body["messages"] for block in m.get("content") or [] if isinstance(block, dict)
            )
            return fake_text("done") if answered else fake_tool_use("echo", {"text": "hi"})

        fake_anthropic.always(reply)
        config = make_config(
            {"claude": {"tools": ["echo"], "model": "claude-sonnet-5-5", "max_tokens": 200}},
            models={"claude-sonnet-5-5": {"rate_limits": {"input_tokens": f"{tokens}/{period:g}s", "requests": "100/min"}}},
        )
        async with harness.worker(config):
            handles = [await harness.start({"task": f"echo hi {i}", "agent": "claude"}) for i in range(20)]
            results = await asyncio.gather(*(h.result() for h in handles))
        requests = fake_anthropic.requests
        assert [r.status for r in results] == ["success"] * 20
        assert len(requests) == 40 and not [r for r in requests if r.limited]  # no 429, ever
        assert fake_anthropic.windows_over_limit() == []
        # The limit was what paced them: 40 requests' tokens do not fit in one window.
        assert sum(r.input_tokens for r in requests) > 2 * tokens



class TestCostsAddUp:
    """One rounding rule: the total is the sum of the decision records' costs as they show."""

    async def test_total_cost_is_the_sum_of_the_records(self, harness: Harness) -> None:
        model, _ = harness.scripted(
            [tool_use("echo", {"text": str(i)}) for i in range(6)] + [answer("done")], usage=Usage(input_tokens=1001, output_tokens=333)
        )
        config = make_config({"costly": {"tools": ["echo"], "model": model}}, pricing={"models": {model: {"input": 3.14159, "output": 15.7}}})
        async with harness.worker(config):
            handle = await harness.start({"task": "echo"})
            result = await handle.result()
            status = await handle.query("status", result_type=StatusView)
            records = await handle.query("trace", result_type=list[DecisionRecord])
        shown = [r.cost.estimated_cost for r in records]
        assert len(shown) == 7 and shown[0] == 0.00837283  # 8 places, however many the price makes
        assert result.total_cost == status.total_cost == round(sum(shown), 8)


class TestBoundedState:
    """The trace query stays under its byte cap however large the records."""

    async def test_the_trace_query_keeps_the_latest_records_that_fit(self, harness: Harness) -> None:
        big = "x" * 200_000
        model, _ = harness.scripted([tool_use("echo", {"text": f"{i}{big}"}) for i in range(8)] + [answer("done")])
        async with harness.worker(make_config({"big": {"tools": ["echo"], "model": model}})):
            handle = await harness.start({"task": "echo big"})
            result = await handle.result()
            records = await handle.query("trace", result_type=list[DecisionRecord])
        assert result.status == "success" and result.steps == 9
        # Each record is kept slim (its 200 KB of arguments cut; whole in the store), so all of them fit.
        assert sum(len(r.model_dump_json()) for r in records) <= 256_000
        assert [r.step for r in records] == list(range(1, 10)) and records[-1].action.type == "final_answer"
        assert all(r.truncated and "200,0" in (r.action.args or {})["_cut"] for r in records[:-1])

    async def test_tools_used_carried_across_continue_as_new_are_capped_and_counted(
        self, harness: Harness, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from durable_agent import carry

        monkeypatch.setattr(carry, "CARRIED_TOOLS_USED", 2)
        model, _ = harness.scripted([tool_use("echo", {"text": str(i)}) for i in range(8)] + [answer("done")])
        async with harness.worker(make_config({"long": {"tools": ["echo"], "model": model, "continue_as_new_every": 3}})):
            result = await harness.run({"task": "echo"})
        assert result.status == "success" and result.steps == 9
        assert len(result.tools_used) < 8 and len(result.tools_used) + result.tools_used_unlisted == 8
