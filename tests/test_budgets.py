"""Budgets on a real Temporal server: a run's own cap, and the daily budget its agent shares with every run."""

from __future__ import annotations

import asyncio
import signal
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from durable_agent.activities.budget import LimitsClient
from durable_agent import budget
from durable_agent.budget import LedgerStart, LedgerState, ReserveRequest, SettleRequest
from durable_agent.schemas import AgentResult, DecisionRecord, StatusView, Usage
from durable_agent.retry import ErrorKind
from durable_agent.testing import answer, fail, tool_use
from tests.conftest import Harness, make_config
from tests.test_processes import start_worker, stop
from tests.tools_for_tests import calls

#: With no input price, max_tokens = 100 and an output price of $10/M, every call is
#: estimated at exactly what it costs: $0.001. So budgets divide into whole calls.
CALL_USD = 0.001
EXACT_PRICE = {"input": 0.0, "output": 10.0}


def _echoes(steps: int) -> list[dict[str, Any]]:
    return [tool_use("echo", {"text": str(i)}) for i in range(steps)]


def _daily_agent(harness: Harness, daily_usd: float, scripts: list[list[dict[str, Any]]]) -> tuple[str, list[str], Any]:
    """A fresh agent (its own ledger) with a daily budget, and one scripted model per script (per run)."""
    agent = f"daily-{uuid.uuid4().hex[:8]}"
    models = [harness.scripted(script)[0] for script in scripts]
    config = make_config(
        {agent: {"tools": ["echo"], "model": models[0], "max_tokens": 100, "daily_budget_usd": daily_usd}},
        pricing={"models": {m: EXACT_PRICE for m in models}},
    )
    return agent, models, config


async def _ledger_state(harness: Harness, agent: str, day: str) -> LedgerState:
    handle = harness.client.get_workflow_handle(budget.ledger_id(agent, day, harness.task_queue))
    return await handle.query("state", result_type=LedgerState)


async def _status_when_closed(handle: WorkflowHandle[Any, Any], attempts: int = 50) -> WorkflowExecutionStatus | None:
    """The workflow's status once it is no longer running (a timer that just fired may still be processed)."""
    status = None
    for _ in range(attempts):
        status = (await handle.describe()).status
        if status != WorkflowExecutionStatus.RUNNING:
            break
        await asyncio.sleep(0.1)
    return status


def _assert_stopped_by_daily_budget(result: AgentResult, agent: str) -> None:
    assert result.status == "budget_exceeded"
    assert f"daily budget of agent '{agent}'" in (result.answer or "")
    assert any(w.startswith("BUDGET_EXCEEDED: the daily budget") for w in result.warnings)


class TestRunBudget:
    """A run's own budget: checked before each model call, and no tool runs once it is spent."""

    @staticmethod
    def _config(model: str) -> Any:
        return make_config(
            {"helper": {"tools": ["echo"], "model": model, "max_tokens": 100}},
            pricing={"models": {model: {"input": 3.0, "output": 15.0}}},
        )

    async def test_stops_before_the_call_that_would_go_over(self, harness: Harness) -> None:
        model, scripted = harness.scripted(_echoes(5))
        async with harness.worker(self._config(model)):
            handle = await harness.start({"task": "echo forever", "budget_usd": 0.01})
            result = await handle.result()
            status = await handle.query("status", result_type=StatusView)
        # Each call costs $0.0045; the third would be estimated at ~$0.0048 on top of $0.009 spent.
        assert result.status == "budget_exceeded" and status.status == "budget_exceeded"
        assert result.steps == 2 and len(scripted.requests) == 2
        assert result.total_cost == pytest.approx(0.009) and result.total_cost <= 0.01
        assert "the run's budget of $0.0100 would be exceeded" in (result.answer or "")
        assert status.budget_remaining == pytest.approx(0.001) == result.budget_remaining
        assert len(calls("echo")) == 2

    async def test_no_tool_runs_after_the_budget_is_gone(self, harness: Harness) -> None:
        # The first call is estimated small but reports far more input than expected.
        model, _ = harness.scripted(_echoes(1), usage=Usage(input_tokens=100_000, output_tokens=10))
        async with harness.worker(self._config(model)):
            handle = await harness.start({"task": "echo x", "budget_usd": 0.05})
            result = await handle.result()
            records = await handle.query("trace", result_type=list[DecisionRecord])
        assert result.status == "budget_exceeded"
        assert result.tools_used == [] and calls("echo") == []
        assert records[-1].observation["status"] == "budget_exceeded"
        assert records[-1].cost.budget_remaining == 0.0


class TestDailyBudget:
    """The daily budget of an agent, shared by all its runs through one BudgetLedger."""

    async def test_concurrent_runs_are_granted_exactly_the_budget(self, harness: Harness) -> None:
        agent, models, config = _daily_agent(harness, 5 * CALL_USD, [_echoes(10), _echoes(10)])
        async with harness.worker(config):
            handles = [await harness.start({"task": "echo forever", "agent": agent, "model": m}) for m in models]
            results = await asyncio.gather(*(h.result() for h in handles))
            records = await handles[0].query("trace", result_type=list[DecisionRecord])
            state = await _ledger_state(harness, agent, budget.day_of(records[0].timestamp))
        for result in results:
            _assert_stopped_by_daily_budget(result, agent)
        # Five calls fit, wherever they ran; nothing more was granted, nothing is left held.
        assert sum(r.steps for r in results) == 5
        assert sum(r.total_cost for r in results) == pytest.approx(5 * CALL_USD)
        assert state.spent_usd == pytest.approx(5 * CALL_USD) and state.reservations == {}
        # Each run was refused once, at the end; its leases all came back.
        assert state.refused == 2 and state.leases == {}
        assert min(r.daily_budget_remaining or 0.0 for r in results) == pytest.approx(0.0)

    async def test_status_and_records_show_the_daily_budget_left(self, harness: Harness) -> None:
        agent, models, config = _daily_agent(harness, 3 * CALL_USD, [_echoes(5)])
        async with harness.worker(config):
            handle = await harness.start({"task": "echo", "agent": agent, "model": models[0]})
            result = await handle.result()
            status = await handle.query("status", result_type=StatusView)
            records = await handle.query("trace", result_type=list[DecisionRecord])
        _assert_stopped_by_daily_budget(result, agent)
        assert [r.cost.daily_budget_remaining for r in records] == pytest.approx([0.002, 0.001, 0.0])
        assert status.daily_budget_remaining == pytest.approx(0.0)
        assert status.budget_remaining is None  # no per-run budget

    async def test_the_lease_goes_back_while_the_last_records_are_written(self, harness: Harness) -> None:
        agent, models, config = _daily_agent(harness, 50 * CALL_USD, [[*_echoes(2), answer("done")]])
        async with harness.worker(config):
            handle = await harness.start({"task": "echo", "agent": agent, "model": models[0]})
            result = await handle.result()
            state = await _ledger_state(harness, agent, budget.day_of(datetime.now(timezone.utc)))
        assert result.status == "success" and result.total_cost > 0
        assert state.leases == {} and state.spent_usd == pytest.approx(result.total_cost)  # charged, the rest given back
        # Both in one workflow task: the run reports its end one round trip sooner.
        scheduled = [
            (e.event_id, e.activity_task_scheduled_event_attributes.activity_type.name)
            for e in (await handle.fetch_history()).events if e.HasField("activity_task_scheduled_event_attributes")
        ]
        (back_id, back), (records_id, records_kind) = scheduled[-2:]
        assert (back, records_kind, records_id - back_id) == ("budget_lease", "record_decisions", 1)

    async def test_a_failed_call_gives_its_reservation_back(self, harness: Harness) -> None:
        agent, models, config = _daily_agent(harness, 5 * CALL_USD, [[fail(ErrorKind.INVALID_REQUEST, "prompt is too long")]])
        async with harness.worker(config):
            handle = await harness.start({"task": "echo", "agent": agent, "model": models[0]})
            with pytest.raises(WorkflowFailureError):
                await handle.result()
            state = await _ledger_state(harness, agent, budget.day_of(datetime.now(timezone.utc)))
        assert state.granted == 1 and state.reservations == {} and state.spent_usd == 0.0

    @pytest.mark.slow  # a worker process, killed
    async def test_the_ledger_survives_a_worker_crash(self, harness: Harness, server_address: str) -> None:
        agent, day = f"crash-{uuid.uuid4().hex[:8]}", budget.day_of(datetime.now(timezone.utc))
        limits = LimitsClient(harness.client, harness.task_queue)

        def ask(rid: str, amount: float) -> ReserveRequest:
            return ReserveRequest(agent=agent, day=day, limit_usd=1.0, reservation_id=rid, amount_usd=amount)

        process = start_worker(harness.state, server_address, harness.task_queue)
        try:
            granted = [await limits.reserve(ask(f"r{i}", 0.25)) for i in range(3)]
            await limits.settle(SettleRequest(agent=agent, day=day, reservation_id="r0", actual_usd=0.1))
        finally:
            stop(process, signal.SIGKILL)  # a crash, with two reservations open
        assert all(g.granted for g in granted)

        async with harness.worker():
            state = await _ledger_state(harness, agent, day)
            assert sorted(state.reservations) == ["r1", "r2"] and state.spent_usd == pytest.approx(0.1)
            # A run retrying its reserve after the crash is answered, not charged twice.
            assert (await limits.reserve(ask("r1", 0.25))).reserved_usd == pytest.approx(0.5)
            refused = await limits.reserve(ask("r3", 0.45))
            after_settle = await limits.settle(SettleRequest(agent=agent, day=day, reservation_id="r1", actual_usd=0.2))
            after_release = await limits.settle(SettleRequest(agent=agent, day=day, reservation_id="r2"), release=True)
            last = await limits.reserve(ask("r3", 0.45))
        assert not refused.granted and "$0.4000 left" in refused.message
        assert (after_settle.spent_usd, after_settle.reserved_usd) == pytest.approx((0.3, 0.25))
        assert (after_release.spent_usd, after_release.remaining_usd) == pytest.approx((0.3, 0.7))
        assert last.granted and last.remaining_usd == pytest.approx(0.25)

    async def test_the_ledger_continues_as_new_with_its_state(self, harness: Harness) -> None:
        agent, day = f"can-{uuid.uuid4().hex[:8]}", budget.day_of(datetime.now(timezone.utc))
        limits = LimitsClient(harness.client, harness.task_queue)
        start = LedgerStart(agent=agent, day=day, limit_usd=1.0, continue_after_updates=5)
        async with harness.worker():
            for i in range(12):
                request = ReserveRequest(agent=agent, day=day, limit_usd=1.0, reservation_id=f"r{i}", amount_usd=0.05)
                await limits.reserve(request, start)
                if i % 2:
                    await limits.settle(SettleRequest(agent=agent, day=day, reservation_id=f"r{i}", actual_usd=0.01))
            state = await _ledger_state(harness, agent, day)
            history = await harness.client.get_workflow_handle(budget.ledger_id(agent, day, harness.task_queue)).fetch_history()
        # 18 updates at most 5 a run: the latest run continued from another and holds few updates.
        started = history.events[0].workflow_execution_started_event_attributes
        assert started.continued_execution_run_id
        accepted = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED]
        assert len(accepted) <= 5
        assert state.granted == 12 and len(state.reservations) == 6
        assert state.spent_usd == pytest.approx(0.06) and state.remaining_usd == pytest.approx(1.0 - 0.06 - 0.3)


    async def test_a_misrouted_request_is_refused_by_the_validator(self, harness: Harness) -> None:
        agent, day = f"route-{uuid.uuid4().hex[:8]}", budget.day_of(datetime.now(timezone.utc))
        limits = LimitsClient(harness.client, harness.task_queue)
        ask = ReserveRequest(agent=agent, day=day, limit_usd=1.0, reservation_id="r1", amount_usd=0.1)
        async with harness.worker():
            await limits.reserve(ask)
            handle = harness.client.get_workflow_handle(budget.ledger_id(agent, day, harness.task_queue))
            with pytest.raises(WorkflowUpdateFailedError) as info:
                await handle.execute_update("reserve", ask.model_copy(update={"agent": "someone-else", "reservation_id": "r2"}))
            state = await handle.query("state", result_type=LedgerState)
            history = await handle.fetch_history()
        assert "not of 'someone-else'" in str(info.value.cause)
        assert state.granted == 1 and list(state.reservations) == ["r1"]
        # Rejected before acceptance: the refusal left nothing in the ledger's history.
        accepted = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED]
        assert len(accepted) == 1


class TestDayBoundary:
    """On the time-skipping server: a new UTC day is a new ledger with a fresh budget."""

    async def test_a_new_day_brings_a_fresh_budget(self, time_harness: Harness, time_env: WorkflowEnvironment) -> None:
        # Start at 01:00 UTC tomorrow, far from either midnight, whatever the real clock says.
        now = await time_env.get_current_time()
        tomorrow = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), tzinfo=timezone.utc)
        await time_env.sleep(tomorrow + timedelta(hours=1) - now)
        agent, models, config = _daily_agent(time_harness, 2 * CALL_USD, [_echoes(4)] * 3)
        async with time_harness.worker(config):
            # Time moves only when the test says: left to skip on its own while a run
            # waits for a busy worker, the server would jump to a ledger's next timer.
            with time_env.auto_time_skipping_disabled():
                first = await time_harness.run({"task": "echo", "agent": agent, "model": models[0]})
                same_day = await time_harness.run({"task": "echo", "agent": agent, "model": models[1]})
            # Past the next midnight and the first ledger's grace period: 03:00 on the day after.
            await time_env.sleep(timedelta(days=1, hours=2))
            with time_env.auto_time_skipping_disabled():
                next_day = await time_harness.run({"task": "echo", "agent": agent, "model": models[2]})
            old = time_harness.client.get_workflow_handle(budget.ledger_id(agent, tomorrow.date().isoformat(), time_harness.task_queue))
            old_status = await _status_when_closed(old)
        for result in (first, same_day, next_day):
            _assert_stopped_by_daily_budget(result, agent)
        assert (first.steps, same_day.steps, next_day.steps) == (2, 0, 2)
        assert f"for {tomorrow.date().isoformat()} UTC" in (first.answer or "")
        assert f"for {(tomorrow + timedelta(days=1)).date().isoformat()} UTC" in (next_day.answer or "")
        # The first day's ledger ended after its grace period.
        assert old_status == WorkflowExecutionStatus.COMPLETED

    async def test_unsettled_reservations_expire(self, time_harness: Harness, time_env: WorkflowEnvironment) -> None:
        now = await time_env.get_current_time()
        agent, day = f"expire-{uuid.uuid4().hex[:8]}", budget.day_of(now)
        limits = LimitsClient(time_harness.client, time_harness.task_queue)
        async with time_harness.worker():
            request = ReserveRequest(agent=agent, day=day, limit_usd=1.0, reservation_id="lost", amount_usd=0.9, ttl_seconds=60)
            assert (await limits.reserve(request)).granted
            await time_env.sleep(timedelta(minutes=2))
            state = await _ledger_state(time_harness, agent, day)
        assert state.reservations == {} and state.expired == 1 and state.remaining_usd == pytest.approx(1.0)
