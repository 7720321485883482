"""The delegation component without a server: what a child is started with, what refuses it, whose reports count."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from durable_agent import subagents
from durable_agent.schemas import AgentInput, AgentResult, ParentLink, PendingApproval, ToolCall, ToolInfo, Usage
from durable_agent.workflows.delegation import Delegation, DelegationRefused
from durable_agent.workflows.spend import Spend
from tests.component_kit import TOOLS, settings
from tests.workflow_host import START, FakeHost

RESEARCHER = ToolInfo(name="researcher", subagent=True, input_schema=subagents.TASK_SCHEMA)
CHILD_ID = "wf-1/researcher-2-1"


def lead(parent: ParentLink | None = None, **profile: Any) -> tuple[FakeHost, Delegation, list[str]]:
    run = settings(tools=[*TOOLS, RESEARCHER], **profile)
    run.input = AgentInput(task="lead", parent=parent)
    host, warnings = FakeHost(), []
    return host, Delegation(host, run, warnings.append), warnings


def call(task: Any = "find it", **more: Any) -> ToolCall:
    return ToolCall(id="toolu_1", name="researcher", args={"task": task, **more})


def pending(workflow_id: str, approval_id: str = "apr-1-aaaa") -> dict[str, Any]:
    return PendingApproval(
        approval_id=approval_id, workflow_id=workflow_id, tool="issue_refund", args={}, risk="high", reason="r",
        deadline=START + timedelta(minutes=5), requested_at=START,
    ).model_dump(mode="json")


class TestStartingAChild:
    """A child gets the parent's autonomy, what is left of its budget, and its link."""

    async def test_child_input_and_outcome(self) -> None:
        host, delegation, _ = lead()
        host.children[CHILD_ID] = AgentResult(status="success", answer="found", steps=2, total_cost=0.02, usage=Usage(input_tokens=7))
        status, text, child_id = await delegation.delegate(call(), 2, 0, "wf-1/first-run/2/0", budget_remaining=0.5)
        [(kind, request, started_id)] = host.started
        assert (kind, started_id, child_id, status) == ("AgentWorkflow", CHILD_ID, CHILD_ID, "ok")
        assert request["autonomy"] == "supervised" and request["budget_usd"] == 0.5 and request["agent"] == "researcher"
        assert request["parent"] == {"workflow_id": "wf-1", "record_id": "wf-1/first-run/2/0", "depth": 1, "max_depth": 3, "agent": "unit-support"}
        AgentInput.model_validate(request)  # what the child is started with is a valid input
        assert "found" in text and "status success" in text
        assert delegation.cost() == 0.02 and delegation.usage().input_tokens == 7

    async def test_spend_counts_the_children(self) -> None:
        host, delegation, _ = lead()
        spend = Spend(host, settings(), delegation)
        spend.set_budget(1.0)
        host.children[CHILD_ID] = AgentResult(status="budget_exceeded", steps=3, total_cost=0.75)
        status, text, _ = await delegation.delegate(call(), 2, 0, "r", budget_remaining=spend.budget_remaining())
        assert status == "subagent_budget_exceeded" and "did not finish" in text
        assert spend.budget_remaining() == 0.25 and spend.run_cost() == 0.75

    @pytest.mark.parametrize(
        "args, reason",
        [({"task": ""}, "non-empty string"), ({"task": 5}, "non-empty string"), ({"task": "x", "more": 1}, "one argument")],
    )
    async def test_bad_arguments_start_nothing(self, args: dict[str, Any], reason: str) -> None:
        host, delegation, _ = lead()
        with pytest.raises(DelegationRefused, match=reason):
            await delegation.delegate(ToolCall(id="t", name="researcher", args=args), 2, 0, "r", None)
        assert host.started == []

    async def test_max_depth(self) -> None:
        host, delegation, _ = lead(ParentLink(workflow_id="top", depth=2, max_depth=2))
        with pytest.raises(DelegationRefused, match=r"3 sub-agents deep, over the limit of 2 \(max_depth\)"):
            await delegation.delegate(call(), 2, 0, "r", None)
        assert host.started == []

    async def test_max_children(self) -> None:
        host, delegation, _ = lead(max_children=1)
        host.children[CHILD_ID] = AgentResult(status="success")
        await delegation.delegate(call(), 2, 0, "r", None)
        with pytest.raises(DelegationRefused, match=r"max_children = 1"):
            await delegation.delegate(call(), 2, 1, "r", None)
        assert len(host.started) == 1

    async def test_spent_budget_starts_nothing(self) -> None:
        host, delegation, _ = lead()
        with pytest.raises(DelegationRefused, match="budget is spent"):
            await delegation.delegate(call(), 2, 0, "r", budget_remaining=0.0)


class TestReports:
    """Only a running child's report counts, and only for approvals in its own subtree."""

    async def running_child(self) -> tuple[FakeHost, Delegation, list[str], asyncio.Future[Any]]:
        host, delegation, warnings = lead()
        gate: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        host.children[CHILD_ID] = lambda _: gate
        waiting = asyncio.ensure_future(delegation.delegate(call(), 2, 0, "r", None))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return host, delegation, warnings, waiting  # type: ignore[return-value]

    async def test_report_rolls_up_and_decisions_are_forwarded(self) -> None:
        host, delegation, _, waiting = await self.running_child()
        delegation.take_report(({"workflow_id": CHILD_ID, "seq": 1, "steps": 1, "total_cost": 0.3,
                                 "pending_approvals": [pending(CHILD_ID), pending("elsewhere", "apr-9-bbbb")]},))
        assert delegation.cost() == 0.3
        assert [p.approval_id for p in delegation.pending()] == ["apr-1-aaaa"]  # another run's approval is not listed
        assert delegation.forward_signal(({"approval_id": "apr-1-aaaa", "reviewer": "alice"},), approved=True)
        assert not delegation.forward_signal(({"approval_id": "apr-9-bbbb"},), approved=True)
        await delegation.settled()
        assert host.signals == [(CHILD_ID, "approve", {"approval_id": "apr-1-aaaa", "reviewer": "alice"})]
        waiting.cancel()

    async def test_reports_of_strangers_and_garbage_are_ignored_and_listed(self) -> None:
        _, delegation, warnings, waiting = await self.running_child()
        delegation.take_report(({"workflow_id": "someone-else", "total_cost": 99.0},))
        delegation.take_report(("not an object",))
        delegation.take_report(({"workflow_id": CHILD_ID, "total_cost": "lots"},))
        assert delegation.cost() == 0.0
        assert len(warnings) == 3 and all(w.startswith("CHILD_REPORT_IGNORED") for w in warnings)
        waiting.cancel()

    async def test_a_flood_of_approvals_is_cut(self) -> None:
        _, delegation, _, waiting = await self.running_child()
        flood = [pending(CHILD_ID, f"apr-{n}-aaaa") for n in range(1_000)]
        delegation.take_report(({"workflow_id": CHILD_ID, "pending_approvals": flood},))
        assert len(delegation.pending()) == 100
        waiting.cancel()

    async def test_signed_child_approvals_are_decided_on_the_child(self) -> None:
        _, delegation, _, waiting = await self.running_child()
        signed = {**pending(CHILD_ID), "require_signature": True}
        delegation.take_report(({"workflow_id": CHILD_ID, "pending_approvals": [signed]},))
        with pytest.raises(Exception, match=f"decide it there \\(durable-agent approve {CHILD_ID}"):
            delegation.owns_review(({"approval_id": "apr-1-aaaa", "approved": True},))
        waiting.cancel()
