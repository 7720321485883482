"""No money moves around the policy (issue 17, item 5): played by a prompt-injected model on a real dev server.

The model is :class:`~durable_agent.testing.PlanFollowingModel`: it makes the calls the
task lists, as a Claude told to by a prompt injection would. Each attack is one that
ran without a person before money limits:

- a refund split into parts, each under ``max_amount`` (4 x 900 USD under 1,000; 999.99, 999.98);
- an amount in a currency the profile has no rate for (999 BTC), or one whose bare
  number is small while its value is not (900,000 JPY is 6,030 USD);
- a profile that sets no ``max_amount`` at all;
- a run's total carried across continue-as-new.

And the worker names the profile that moves money with no limit, at start and in ``--check``.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowHandle

from durable_agent.demo import shop
from durable_agent.models import register_provider
from durable_agent.models.base import ModelRequest, ModelResponse
from durable_agent.schemas import AgentResult, PendingApproval, StatusView, Usage
from durable_agent.testing import PlanFollowingModel
from tests import tools_for_tests
from tests.conftest import ROOT, SUPPORT_PROFILE, Harness, make_config, subprocess_env

RATES = {"EUR": 1.08, "JPY": 0.0067}


def plan_model(harness: Harness) -> str:
    """A plan-following model registered under a fresh name (unregistered with the harness)."""
    name = f"plan-{uuid.uuid4().hex[:8]}"
    register_provider(name, PlanFollowingModel())
    harness.models.append(name)
    return name


def plan(*steps: tuple[str, dict[str, Any]], answer: str = "done") -> str:
    """A task that is a plan: one ``CALL tool {args}`` line per step, then the answer."""
    return "\n".join([*(f"CALL {tool} {json.dumps(args)}" for tool, args in steps), f"ANSWER {answer}"])


def refund(amount: float, order_id: str = "ord-789") -> tuple[str, dict[str, Any]]:
    return "issue_refund", {"order_id": order_id, "amount": amount, "currency": "USD"}


def pay(amount: float, currency: str) -> tuple[str, dict[str, Any]]:
    return "pay", {"payee": "mallory", "amount": amount, "currency": currency}


def config(**profile: Any) -> Any:
    """The support profile (1,000 USD max), with the test tools' ``pay`` and what the test changes."""
    return make_config({"support": {**SUPPORT_PROFILE, "tools": [*SUPPORT_PROFILE["tools"], "pay"], **profile}})


async def decide_each(
    handle: WorkflowHandle[Any, Any], approve: Callable[[PendingApproval], bool], timeout: float = 120.0
) -> list[PendingApproval]:
    """Decide every held action as it comes (``approve`` says how) until the run ends; what was held, in order."""
    held: list[PendingApproval] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        status = await handle.query("status", result_type=StatusView)
        for pending in status.pending_approvals:
            if pending.approval_id not in {h.approval_id for h in held}:
                held.append(pending)
                name = "approve" if approve(pending) else "reject"
                await handle.signal(name, {"approval_id": pending.approval_id, "reviewer": "alice"})
        if status.phase == "done":
            return held
        assert loop.time() < deadline, f"the run did not end within {timeout:g} s (phase {status.phase})"
        await asyncio.sleep(0.1)


def never(_: PendingApproval) -> bool:
    return False


def always(_: PendingApproval) -> bool:
    return True


def refunded(order_id: str = "ord-789") -> list[float]:
    return [row["amount"] for row in shop.refunds_for(order_id)]


class TestSplitAmounts:
    """No more than max_amount_per_run (default: max_amount) moves without a person in one run, however it is split."""

    async def test_four_refunds_of_900_are_held_from_the_second(self, harness: Harness) -> None:
        async with harness.worker(config()):
            handle = await harness.start({"task": plan(*[refund(900)] * 4), "model": plan_model(harness)})
            held = await decide_each(handle, never)
            result: AgentResult = await handle.result()
        assert refunded() == [900], "only the first part ran without a person"
        assert [h.tool for h in held] == ["issue_refund"] * 3
        assert held[0].reason == (
            "amount 900 USD would take what this run has moved without approval from 900 to 1800 USD, "
            "above the run's limit of 1000 USD (approval.max_amount_per_run)"
        )
        assert [a.status for a in result.approvals] == ["rejected"] * 3

    async def test_amounts_just_under_the_limit_add_up_and_approved_ones_do_not_count(self, harness: Harness) -> None:
        task = plan(refund(999.99), refund(999.98), refund(0.01), refund(10))
        async with harness.worker(config()):
            handle = await harness.start({"task": task, "model": plan_model(harness)})
            held = await decide_each(handle, lambda pending: pending.amount == 999.98)
            result: AgentResult = await handle.result()
        # 999.98 waited (approved: a person saw it, so it does not count); 0.01 fills the 1,000 exactly; 10 more would not.
        assert [h.amount for h in held] == [999.98, 10]
        assert "from 999.99 to 1999.97 USD" in held[0].reason and "from 1000 to 1010 USD" in held[1].reason
        assert refunded() == [999.99, 999.98, 0.01]
        assert result.status == "success"

    async def test_parts_in_one_turn_are_shown_to_the_reviewer_together(self, harness: Harness) -> None:
        """Calls made in one reply: the second, third and fourth part wait side by side, the first ran."""
        calls = [{"type": "tool_use", "id": f"toolu_part{n}", "name": "issue_refund", "input": refund(900)[1]} for n in range(4)]
        name = f"one-turn-{uuid.uuid4().hex[:8]}"
        register_provider(name, OneTurn(calls))
        harness.models.append(name)
        async with harness.worker(config()):
            handle = await harness.start({"task": "refund in four parts", "model": name})
            together = await pending_together(handle, 3)
            assert [p.approval_id.rsplit("-", 1)[0] for p in together] == ["apr-1-2", "apr-1-3", "apr-1-4"]
            assert refunded() == [900]
            held = await decide_each(handle, never)
            await handle.result()
        assert len(held) == 3 and refunded() == [900]


class OneTurn:
    """A model whose first reply makes ``calls`` at once; then it answers."""

    def __init__(self, calls: list[dict[str, Any]]) -> None:
        self.calls, self.replies = calls, 0

    async def complete(self, request: ModelRequest) -> ModelResponse:
        self.replies += 1
        usage = Usage(input_tokens=100, output_tokens=10)
        if self.replies == 1:
            return ModelResponse(content=self.calls, usage=usage, stop_reason="tool_use", model=request.model)
        return ModelResponse(content=[{"type": "text", "text": "done"}], usage=usage, stop_reason="end_turn", model=request.model)


async def pending_together(handle: WorkflowHandle[Any, Any], count: int, timeout: float = 60.0) -> list[PendingApproval]:
    """The approvals that wait once ``count`` of them wait at the same time."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        status = await handle.query("status", result_type=StatusView)
        if len(status.pending_approvals) >= count:
            return status.pending_approvals
        assert status.phase != "done" and loop.time() < deadline, f"{count} approvals never waited together: {status}"
        await asyncio.sleep(0.1)


class TestCurrencies:
    """Amounts are compared in the profile's currency through its rates; a currency with no rate waits."""

    async def test_btc_waits_and_jpy_is_valued_in_usd(self, harness: Harness) -> None:
        task = plan(pay(999, "BTC"), pay(900_000, "JPY"), pay(100_000, "jpy"))
        async with harness.worker(config(approval={**SUPPORT_PROFILE["approval"], "rates": RATES})):
            handle = await harness.start({"task": task, "model": plan_model(harness)})
            held = await decide_each(handle, never)
            await handle.result()
        assert [(h.amount, h.currency) for h in held] == [(999, "BTC"), (900_000, "JPY")]
        assert held[0].reason == (
            "the amount 999 BTC cannot be compared with the limit of 1000 USD: this profile has no rate for BTC "
            "(approval.rates has: EUR, JPY)"
        )
        assert held[1].reason == "amount 900000 JPY (6030 USD) is above the limit of 1000 USD"
        # 100,000 JPY is 670 USD: under both limits, it runs.
        assert [(c["amount"]) for c in tools_for_tests.calls("pay")] == [100_000]

    async def test_a_profile_in_euros_converts_dollars(self, harness: Harness) -> None:
        approval = {"max_amount": 1000.0, "currency": "EUR", "rates": {"USD": 0.93}}
        async with harness.worker(config(approval=approval)):
            # 1,050 USD is 976.5 EUR: under the limit; then 100 EUR more would pass the run's 1,000 EUR.
            handle = await harness.start({"task": plan(pay(1050, "USD"), pay(100, "EUR")), "model": plan_model(harness)})
            held = await decide_each(handle, never)
            await handle.result()
        assert [c["amount"] for c in tools_for_tests.calls("pay")] == [1050]
        assert [h.amount for h in held] == [100] and "from 976.5 to 1076.5 EUR" in held[0].reason


class TestNoLimitSet:
    """A profile whose tools move money but which sets no max_amount holds every amount (fail safe)."""

    async def test_a_small_refund_waits_without_max_amount(self, harness: Harness) -> None:
        profile = {key: value for key, value in SUPPORT_PROFILE.items() if key != "approval"}
        async with harness.worker(make_config({"support": profile})):
            handle = await harness.start({"task": plan(refund(20)), "model": plan_model(harness)})
            held = await decide_each(handle, never)
            await handle.result()
        assert refunded() == []
        assert [h.reason for h in held] == [
            "issue_refund moves money and this profile sets no limit (approval.max_amount), so every amount waits for a person"
        ]

    async def test_the_demo_profile_still_runs_a_small_refund_and_holds_a_large_one(self, harness: Harness) -> None:
        """The README's walkthrough: 1,000 USD max; 20 USD runs, 4,999 USD waits."""
        async with harness.worker(config()):
            handle = await harness.start({"task": plan(refund(20), refund(4999, "ord-790")), "model": plan_model(harness)})
            held = await decide_each(handle, always)
            await handle.result()
        assert [h.reason for h in held] == ["amount 4999 USD is above the limit of 1000"]
        assert refunded() == [20] and refunded("ord-790") == [4999]


class TestAmountLeftOut:
    """A call that leaves the amount out moves what the tool decides (here, the whole order): it waits for a person."""

    async def test_a_refund_without_an_amount_waits(self, harness: Harness) -> None:
        profile = {**SUPPORT_PROFILE, "tools": [*SUPPORT_PROFILE["tools"], "refund_order"]}
        task = plan(("refund_order", {"order_id": "ord-789", "amount": 20}), ("refund_order", {"order_id": "ord-790"}))
        async with harness.worker(make_config({"support": profile})):
            handle = await harness.start({"task": task, "model": plan_model(harness)})
            held = await decide_each(handle, never)
            await handle.result()
        assert [c["amount"] for c in tools_for_tests.calls("refund_order")] == [20], "only the refund with an amount ran"
        assert [(h.tool, h.amount) for h in held] == [("refund_order", None)]
        assert held[0].reason == (
            "refund_order moves money and the call gives no amount (amount), so what it moves is the tool's "
            "to decide and cannot be checked against a limit"
        )


class TestAcrossContinueAsNew:
    """What a run moved without a person is carried into its continuation."""

    async def test_a_part_after_continue_as_new_still_counts_the_first(self, harness: Harness) -> None:
        task = plan(refund(600), ("search_kb", {"query": "refunds"}), ("lookup_order", {"order_id": "ord-789"}), refund(500))
        async with harness.worker(config(continue_as_new_every=2)):
            handle = await harness.start({"task": task, "model": plan_model(harness)})
            held = await decide_each(handle, never)
            await handle.result()
            runs = [w async for w in harness.client.list_workflows(f"WorkflowId = '{handle.id}'")]
        assert len(runs) >= 2, "the run continued as new before the second part"
        assert refunded() == [600]
        assert len(held) == 1 and "from 600 to 1100 USD" in held[0].reason


NO_LIMIT = """tool_modules = ["durable_agent.demo.shop"]
[agents.support]
tools = ["lookup_order", "issue_refund"]
[agents.reader]
tools = ["lookup_order"]
"""


class TestWorkerSays:
    """The worker names a profile whose tools move money with no limit set, and the key that sets one."""

    @pytest.mark.slow
    async def test_check_names_the_profile_the_tool_and_the_key(self, state_dir: Path, tmp_path: Path, server_address: str) -> None:
        file = tmp_path / "agents.toml"
        file.write_text(NO_LIMIT)
        env = subprocess_env(state_dir, server_address, AGENT_TASK_QUEUE=f"money-{uuid.uuid4().hex[:8]}")
        check = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "durable_agent", "worker", "--check", "--config", str(file)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )
        assert check.returncode == 0, check.stderr
        assert f"{file}: agents.support.approval.max_amount is not set, and issue_refund moves money" in check.stderr
        assert "set max_amount = N under [agents.support.approval]" in check.stderr
        assert "agents.reader" not in check.stderr
