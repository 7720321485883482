"""The run's spend, its share of the daily budget, and the anomaly watch, without a server."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from durable_agent import contracts
from durable_agent.budget import Balance, LeaseRequest, LeaseResult, ReserveResult
from durable_agent.schemas import AnomalyThresholds, ModelPrice, ToolCall, Usage
from durable_agent.workflows.anomaly_watch import AnomalyWatch
from durable_agent.workflows.daily_budget import DailyBudget
from durable_agent.workflows.progress import RunPhase
from durable_agent.workflows.spend import Spend
from tests.component_kit import settings
from tests.workflow_host import FakeHost, activity_failure

PRICE = ModelPrice(input=3.0, output=15.0)
ONE_CALL = Usage(input_tokens=1000, output_tokens=333)  # $0.007995: rounded as records show it


class TestSpend:
    """Cost adds up as the records show it; the run's budget refuses what could exceed it."""

    def test_step_costs_are_rounded_once_and_summed(self) -> None:
        spend = Spend(FakeHost(), settings())
        assert [spend.charge_step(ONE_CALL, PRICE) for _ in range(3)] == [0.007995] * 3
        assert spend.total_cost == pytest.approx(0.023985) and spend.usage.input_tokens == 3000

    def test_runs_begun_before_add_unrounded_costs(self) -> None:
        host = FakeHost(unpatched=["costs-rounded-once"])
        spend = Spend(host, settings())
        spend.charge_step(Usage(input_tokens=1), PRICE)
        assert spend.total_cost == 3e-6 and host.patches == ["costs-rounded-once"]

    def test_the_budget_refuses_a_call_that_could_exceed_it(self) -> None:
        spend = Spend(FakeHost(), settings())
        spend.set_budget(0.01)
        spend.charge_step(ONE_CALL, PRICE)
        assert spend.over_budget_with(0.001) is None
        assert "would be exceeded by the next model call (spent $0.0080, next call estimated at up to $0.0030)" in (spend.over_budget_with(0.003) or "")
        assert spend.budget_remaining() == 0.002005 and spend.spent_for("issue_refund") is None
        spend.charge_step(ONE_CALL, PRICE)
        assert "is spent ($0.0160); issue_refund was not run" in (spend.spent_for("issue_refund") or "")

    def test_a_compaction_is_charged_with_its_step(self) -> None:
        spend = Spend(FakeHost(), settings(prices={}))  # the fallback price
        spend.begin_step()
        assert spend.charge_compaction(ONE_CALL) == 0.007995
        assert spend.step_total(0.001) == pytest.approx(0.008995)
        spend.begin_step()
        assert spend.step_total(0.001) == 0.001

    def test_no_budget_no_refusal(self) -> None:
        spend = Spend(FakeHost(), settings())
        assert (spend.over_budget_with(1e9), spend.budget_remaining()) == (None, None)


def ledger(**answers: Any) -> dict[str, Any]:
    """A scripted ledger: each lease request answered by ``lease(request)``."""
    return {contracts.ACTIVITY_BUDGET_LEASE: answers.get("lease"), **{k: v for k, v in answers.items() if k != "lease"}}


def granted(amount: float, remaining: float = 1.0) -> Any:
    def answer(request: LeaseRequest) -> LeaseResult:
        return LeaseResult(granted=True, seq=request.seq, amount_usd=amount if request.min_usd > 0 else 0.0, message="",
                           limit_usd=5.0, spent_usd=0.0, reserved_usd=0.0, remaining_usd=remaining)
    return answer


class TestDailyBudget:
    """A run leases a chunk of its agent's daily budget and spends it call by call."""

    def daily(self, host: FakeHost, **profile: Any) -> tuple[DailyBudget, RunPhase, list[str]]:
        phase, warnings = RunPhase(), []
        return DailyBudget(host, settings(daily_budget_usd=5.0, **profile), phase, warnings.append), phase, warnings

    async def test_one_lease_covers_several_calls(self) -> None:
        host = FakeHost(ledger(lease=granted(0.05)))
        daily, phase, _ = self.daily(host)
        for step in range(4):
            assert (await daily.admit(0.01, step)).granted
            await daily.settle(0.01, 5.0, step + 1)
        assert [r.seq for _, r, _ in host.calls] == [1]
        assert daily.remaining == pytest.approx(1.01) and phase.phase == "starting"  # the lease was a detour
        await daily.give_back()
        assert [(r.seq, r.used_usd, r.min_usd) for _, r, _ in host.calls] == [(1, 0.0, 0.01), (2, pytest.approx(0.04), 0.0)]

    async def test_budget_held_by_other_runs_is_waited_for(self) -> None:
        answers = iter([LeaseResult(granted=False, held=True, seq=1, limit_usd=5.0, spent_usd=4.0, reserved_usd=1.0, remaining_usd=0.0)])
        host = FakeHost(ledger(lease=lambda request: next(answers, None) or granted(0.05)(request)))
        daily, phase, _ = self.daily(host)
        assert (await daily.admit(0.01, 0)).granted
        assert host.slept == [timedelta(seconds=2)]
        assert (phase.phase, phase.waiting_for) == ("waiting_for_budget", None)

    async def test_a_spent_budget_refuses_naming_it(self) -> None:
        refused = LeaseResult(granted=False, seq=1, message="the daily budget of agent 'support' is spent", limit_usd=5.0, spent_usd=5.0,
                              reserved_usd=0.0, remaining_usd=0.0)
        daily, _, _ = self.daily(FakeHost(ledger(lease=refused)))
        admission = await daily.admit(0.01, 0)
        assert (admission.granted, admission.why) == (False, "the daily budget of agent 'support' is spent")

    async def test_a_lowered_budget_renews_the_lease_before_the_next_call(self) -> None:
        host = FakeHost(ledger(lease=granted(0.05)))
        daily, _, _ = self.daily(host)
        await daily.admit(0.01, 0)
        await daily.settle(0.01, 1.0, 1)  # the worker's configuration now says $1 a day
        await daily.admit(0.01, 1)
        assert [r.seq for _, r, _ in host.calls] == [1, 2]

    async def test_no_daily_budget_asks_no_ledger(self) -> None:
        host = FakeHost()
        daily = DailyBudget(host, settings(), RunPhase(), [].append)
        assert (await daily.admit(1.0, 0)).granted and host.calls == [] and host.patches == []

    async def test_runs_begun_before_leases_reserve_each_call(self) -> None:
        reserve = ReserveResult(granted=True, reservation_id="x", amount_usd=0.01, limit_usd=5.0, spent_usd=0.0, reserved_usd=0.01, remaining_usd=4.99)
        balance = Balance(limit_usd=5.0, spent_usd=0.008, reserved_usd=0.0, remaining_usd=4.992)
        host = FakeHost({contracts.ACTIVITY_BUDGET_RESERVE: reserve, contracts.ACTIVITY_BUDGET_SETTLE: balance}, unpatched=["daily-budget-leases"])
        daily, _, _ = self.daily(host)
        assert (await daily.admit(0.01, 6)).granted
        await daily.settle(0.008, None, 7)
        assert host.names() == [contracts.ACTIVITY_BUDGET_RESERVE, contracts.ACTIVITY_BUDGET_SETTLE]
        assert host.calls[0][1].reservation_id == "wf-1/first-run/7" and host.calls[1][1].actual_usd == 0.008
        assert host.calls[1][2]["summary"] == "settle daily reservation of step 7"
        assert daily.remaining == 4.992

    async def test_an_unreachable_ledger_leaves_the_reservation_to_expire(self) -> None:
        reserve = ReserveResult(granted=True, reservation_id="x", amount_usd=0.01, limit_usd=5.0, spent_usd=0.0, reserved_usd=0.01, remaining_usd=4.99)

        def unreachable(_: Any) -> Any:
            raise activity_failure("no ledger", contracts.ACTIVITY_BUDGET_RELEASE)

        host = FakeHost({contracts.ACTIVITY_BUDGET_RESERVE: reserve, contracts.ACTIVITY_BUDGET_RELEASE: unreachable}, unpatched=["daily-budget-leases"])
        daily, _, warnings = self.daily(host)
        await daily.admit(0.01, 0)
        await daily.release(0)
        assert warnings and warnings[0].startswith("DAILY_BUDGET_UNSETTLED: reservation wf-1/first-run/1 left to expire")


class TestAnomalyWatch:
    """Loops and costly steps warn, or pause or stop the run as the profile says."""

    def watch(self, **thresholds: Any) -> tuple[AnomalyWatch, list[str]]:
        warnings: list[str] = []
        return AnomalyWatch(settings(anomalies=AnomalyThresholds(**thresholds)), warnings.append), warnings

    def test_a_loop_warns_by_default(self) -> None:
        watch, warnings = self.watch()
        call = ToolCall(id="t", name="lookup_order", args={"order_id": "ord-789"})
        findings = [watch.check(step, call, 0.001, Usage()) for step in (1, 2, 3)]
        assert [f.action for f in findings] == ["warn"] * 3
        assert findings[-1].warnings and findings[-1].warnings[0].startswith("POSSIBLE_LOOP")
        assert warnings == [f"step 3: {findings[-1].warnings[0]}"]

    def test_a_loop_stops_the_run_when_the_profile_says_so(self) -> None:
        watch, _ = self.watch(on_loop="stop")
        call = ToolCall(id="t", name="lookup_order", args={"order_id": "ord-789"})
        *_, last = [watch.check(step, call, 0.0, Usage()) for step in (1, 2, 3)]
        assert last.action == "stop" and last.reason.startswith("POSSIBLE_LOOP")

    def test_a_final_answer_only_warns(self) -> None:
        watch, _ = self.watch(on_high_tokens="stop", step_tokens=10)
        finding = watch.check(4, None, 0.0, Usage(input_tokens=100))
        assert (finding.action, finding.reason) == ("warn", "") and finding.warnings[0].startswith("HIGH_TOKEN_USAGE")

    def test_a_step_far_above_the_median_is_costly(self) -> None:
        watch, _ = self.watch(median_min_steps=3, median_factor=5.0)
        call = ToolCall(id="t", name="search_kb", args={})
        for step in range(1, 5):
            watch.check(step, call.model_copy(update={"args": {"q": step}}), 0.001, Usage())
        finding = watch.check(5, call.model_copy(update={"args": {"q": 5}}), 0.01, Usage())
        assert finding.warnings and finding.warnings[0].startswith("HIGH_COST")
        assert watch.carry()["step_costs"] == [0.001] * 4 + [0.01]
