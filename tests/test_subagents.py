"""Sub-agents as child workflows, on a real Temporal server (issue 20).

A ``lead`` profile delegates to a ``researcher`` (read-only tools) and to ``support``
(the demo's refunds, which wait for approval). Scripted models drive both sides:
each profile names its own model, so the lead's script and the child's are apart.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import signal
import subprocess
import sys
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle

from durable_agent.cli import trace as trace_cli
from durable_agent.demo import shop
from durable_agent.errors import ConfigError, failure_message
from durable_agent.profiles import AgentsConfig, load_config
from durable_agent.schemas import AgentResult, DecisionRecord, StatusView
from durable_agent.testing import answer, tool_use
from tests.conftest import SUPPORT_PROFILE, Harness, make_config, subprocess_env

#: One scripted call costs 1,000 input and 100 output tokens at $3/$15 per million: $0.0045.
CALL_COST = 0.0045


def lead_config(harness: Harness, lead_script: list[dict[str, Any]], child_script: list[dict[str, Any]], *,
                child: str = "researcher", lead: dict[str, Any] | None = None, sub: dict[str, Any] | None = None) -> AgentsConfig:
    """A lead delegating to ``child``, each driven by its own scripted model."""
    lead_model, _ = harness.scripted(lead_script)
    child_model, _ = harness.scripted(child_script)
    children = {
        "researcher": {"description": "Finds things out in the knowledge base.", "tools": ["search_kb", "lookup_order"], "autonomy": "autonomous"},
        "support": {**SUPPORT_PROFILE, "description": "Customer support: refunds and cancellations."},
    }
    profiles = {
        "lead": {"description": "Leads.", "model": lead_model, "tools": ["search_kb"], "subagents": [child], "autonomy": "supervised", **(lead or {})},
        child: {**children[child], "model": child_model, **(sub or {})},
    }
    prices = {"models": {lead_model: {"input": 3.0, "output": 15.0}, child_model: {"input": 3.0, "output": 15.0}}}
    return make_config(profiles, pricing=prices)


def research_config(harness: Harness) -> AgentsConfig:
    """A lead that asks the researcher one question and answers from what it found."""
    return lead_config(
        harness,
        [tool_use("researcher", {"task": "What is the refund policy?"}), answer("The policy says 30 days.")],
        [tool_use("search_kb", {"query": "refund policy"}), answer("Refunds within 30 days.")],
    )


#: The child's refund of the whole order: over the support profile's max_amount, so it waits for a person.
HELD_REFUND = tool_use("issue_refund", {"order_id": "ord-789", "amount": 4999.0, "currency": "USD"})


def held_refund_config(harness: Harness, lead_answer: str, child_answer: str, **lead: Any) -> AgentsConfig:
    """A lead that hands a refund to support, whose 4,999 USD refund waits for approval."""
    return lead_config(
        harness,
        [tool_use("support", {"task": "Refund order ord-789"}), answer(lead_answer)],
        [HELD_REFUND, answer(child_answer)],
        child="support",
        lead=lead or None,
    )


async def wait_status(handle: WorkflowHandle[Any, Any], done: Any, timeout: float = 60.0) -> StatusView:
    """Poll the ``status`` query until ``done(status)``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        status = await handle.query("status", result_type=StatusView)
        if done(status):
            return status
        if loop.time() > deadline:
            raise AssertionError(f"the status never came: {status}")
        await asyncio.sleep(0.1)


class TestDelegation:
    """A lead hands a task to a sub-agent: a child run, whose cost and trace roll up."""

    async def test_child_run_reports_its_answer_and_cost_to_the_lead(self, harness: Harness) -> None:
        async with harness.worker(research_config(harness)):
            handle = await harness.start({"task": "Answer the customer", "agent": "lead"})
            result: AgentResult = await handle.result()
            [child] = result.children
            lead_trace = await handle.query("trace", result_type=list[DecisionRecord])
            child_trace = await harness.client.get_workflow_handle(child.workflow_id).query("trace", result_type=list[DecisionRecord])
        assert result.status == "success"
        assert child.workflow_id == f"{handle.id}/researcher-1-1"
        assert (child.agent, child.status, child.steps) == ("researcher", "success", 2)
        assert child.total_cost == pytest.approx(2 * CALL_COST)
        # The lead's total: its own two calls and the child's two.
        assert result.total_cost == pytest.approx(4 * CALL_COST)
        assert result.usage.input_tokens == 4000
        assert result.tools_used == ["researcher"]
        child_result = await harness.client.get_workflow_handle(child.workflow_id, result_type=AgentResult).result()
        assert child_result.answer == "Refunds within 30 days."
        # Linked traces: the child's records name the lead's record of the call.
        assert lead_trace[0].observation["child_workflow_id"] == child.workflow_id
        assert {r.parent_record_id for r in child_trace} == {lead_trace[0].record_id}

    async def test_trace_tree_prints_the_childs_steps_beneath_the_call(self, harness: Harness, server_address: str) -> None:
        async with harness.worker(research_config(harness)):
            handle = await harness.start({"task": "Answer the customer", "agent": "lead"})
            await handle.result()
            out = io.StringIO()
            args = argparse.Namespace(workflow_id=handle.id, run=None, json=False, follow=False, tree=True, interval=0.2, address=server_address)
            assert await trace_cli.main(args, out=out) == 0
        lines = [line for line in out.getvalue().splitlines() if line.strip()]
        # The lead's call, the child named, its two steps indented, then the lead's answer.
        assert lines[1].split()[:4] == ["1", "tool", "researcher", "ok"]
        assert lines[2].strip() == f"sub-agent {handle.id}/researcher-1-1:"
        assert lines[3].startswith("    1 ") and "search_kb" in lines[3]
        assert lines[4].startswith("    2 ") and "answer" in lines[4]
        assert lines[5].split()[:2] == ["2", "answer"]
        assert lines[-1] == "4 records, the sub-agents' included"

    async def test_child_budget_is_capped_by_what_the_lead_has_left(self, harness: Harness) -> None:
        """The child stops ``budget_exceeded`` when the lead's remaining budget runs out; the lead carries on."""
        config = lead_config(
            harness,
            [tool_use("researcher", {"task": "research"}), answer("I could not finish the research.")],
            [tool_use("search_kb", {"query": f"q{n}"}) for n in range(40)],
            sub={"budget_usd": 5.0},  # the child's own cap is larger: the lead's remaining budget caps it
        )
        async with harness.worker(config):
            result = await harness.run({"task": "Answer", "agent": "lead", "budget_usd": 0.05})
        [child] = result.children
        assert child.status == "budget_exceeded"
        assert 1 < child.steps < 40
        assert child.total_cost <= 0.05 - CALL_COST  # what the lead had left when it delegated
        assert result.total_cost <= 0.05
        assert result.total_cost == pytest.approx(CALL_COST * (1 + child.steps) + (CALL_COST if result.steps == 2 else 0))

    async def test_failed_child_is_an_observation_and_the_lead_carries_on(self, harness: Harness) -> None:
        lead_model, lead = harness.scripted([tool_use("researcher", {"task": "research"}), answer("Done without the research.")])
        config = make_config(
            {"lead": {"model": lead_model, "subagents": ["researcher"]}, "researcher": {"model": "no-such-claude-model", "tools": ["search_kb"]}},
            pricing={"models": {lead_model: {"input": 3.0, "output": 15.0}}},
        )
        async with harness.worker(config):
            result = await harness.run({"task": "Answer", "agent": "lead"})
        assert result.status == "success"
        assert result.answer == "Done without the research."
        [child] = result.children
        assert child.status == "failed"
        told = lead.last_tool_result()
        assert told is not None and told["is_error"] and "did not finish its task" in str(told["content"])

    async def test_bad_task_argument_is_refused_without_a_child(self, harness: Harness) -> None:
        config = lead_config(harness, [tool_use("researcher", {"topic": "x"}), answer("ok")], [])
        async with harness.worker(config):
            result = await harness.run({"task": "Answer", "agent": "lead"})
        assert result.status == "success" and result.children == []


class TestLimits:
    """max_children and max_depth: refused with an observation the model reads."""

    async def test_max_children_refuses_the_next_call(self, harness: Harness) -> None:
        config = lead_config(
            harness,
            [tool_use("researcher", {"task": "one"}), tool_use("researcher", {"task": "two"}), answer("done")],
            [answer("first")],
            lead={"max_children": 1},
        )
        lead_model = config.agents["lead"].model
        async with harness.worker(config):
            result = await harness.run({"task": "Answer", "agent": "lead"})
        assert len(result.children) == 1
        from durable_agent.models import provider_for

        told = provider_for(lead_model).last_tool_result()  # type: ignore[attr-defined]
        assert "max_children" in str(told["content"])

    async def test_max_depth_refuses_a_grandchild(self, harness: Harness) -> None:
        top_model, _ = harness.scripted([tool_use("middle", {"task": "go deeper"}), answer("top done")])
        middle_model, middle = harness.scripted([tool_use("bottom", {"task": "deeper still"}), answer("middle done")])
        config = make_config({
            "top": {"model": top_model, "subagents": ["middle"], "max_depth": 1},
            "middle": {"model": middle_model, "subagents": ["bottom"]},
            "bottom": {"model": "offline", "tools": ["search_kb"]},
        })
        async with harness.worker(config):
            result = await harness.run({"task": "Answer", "agent": "top"})
        assert result.status == "success"
        assert [c.status for c in result.children] == ["success"]
        told = middle.last_tool_result()
        assert told is not None and "max_depth" in str(told["content"])


class TestApprovalsThroughTheLead:
    """A child's held action shows in the lead's status and is decided by a decision sent to the lead."""

    async def test_lead_status_lists_the_childs_approval_and_its_signal_reaches_the_child(self, harness: Harness) -> None:
        config = held_refund_config(harness, "Refunded.", "Refund issued.", budget_usd=1.0)
        async with harness.worker(config):
            handle = await harness.start({"task": "Help the customer", "agent": "lead"})
            status = await wait_status(handle, lambda s: s.pending_approvals)
            [pending] = status.pending_approvals
            assert shop.refunds_for("ord-789") == []  # nothing runs before the decision
            child_id = f"{handle.id}/support-1-1"
            assert pending.workflow_id == child_id and pending.tool == "issue_refund"
            # Mid-child, the lead's budget counts what the child has spent so far (its first call).
            assert status.total_cost == pytest.approx(2 * CALL_COST)
            assert status.budget_remaining == pytest.approx(1.0 - 2 * CALL_COST)
            assert [c.status for c in status.children] == ["running"]
            await handle.signal("approve", {"approval_id": pending.approval_id, "reviewer": "alice"})
            result: AgentResult = await handle.result()
        assert result.status == "success"
        assert [c.status for c in result.children] == ["success"]
        child_result = await harness.client.get_workflow_handle(child_id, result_type=AgentResult).result()
        assert [(a.approval_id, a.status, a.reviewer) for a in child_result.approvals] == [(pending.approval_id, "approved", "alice")]
        assert [r["amount"] for r in shop.refunds_for("ord-789")] == [4999.0]

    async def test_review_update_sent_to_the_lead_rejects_the_childs_action(self, harness: Harness) -> None:
        config = held_refund_config(harness, "Not refunded.", "Refund rejected.")
        async with harness.worker(config):
            handle = await harness.start({"task": "Help the customer", "agent": "lead"})
            [pending] = (await wait_status(handle, lambda s: s.pending_approvals)).pending_approvals
            record = await handle.execute_update("review", {"approval_id": pending.approval_id, "approved": False, "reviewer": "bob"})
            assert record["status"] == "rejected"
            result: AgentResult = await handle.result()
        child_result = await harness.client.get_workflow_handle(pending.workflow_id, result_type=AgentResult).result()
        assert [a.status for a in child_result.approvals] == ["rejected"]
        assert shop.refunds_for("ord-789") == []
        assert result.children[0].status == "success"


    async def test_signed_decision_for_a_child_is_signed_for_the_child(self, harness: Harness) -> None:
        """A child that requires signatures: the lead refuses to forward, the client signs for the child and sends it there."""
        from temporalio.client import WorkflowUpdateFailedError

        from durable_agent import signing
        from durable_agent.client import AgentClient

        alice = signing.generate_key("alice")
        signed = {"approval": {**SUPPORT_PROFILE["approval"], "require_signature": True, "reviewers": ["alice"]}}
        config = lead_config(
            harness, [tool_use("support", {"task": "Refund order ord-789"}), answer("Refunded.")], [HELD_REFUND, answer("Refund issued.")],
            child="support", sub=signed,
        )
        config.reviewer_keys = {"alice": alice.public_key}
        async with harness.worker(config):
            handle = await harness.start({"task": "Help the customer", "agent": "lead"})
            [pending] = (await wait_status(handle, lambda s: s.pending_approvals)).pending_approvals
            with pytest.raises(WorkflowUpdateFailedError) as refused:  # unsigned through the lead: refused, naming the child
                await handle.execute_update("review", {"approval_id": pending.approval_id, "approved": True, "reviewer": "alice"})
            assert f"decide it there (durable-agent approve {pending.workflow_id}" in failure_message(refused.value)
            record = await AgentClient(harness.client).approve(handle.id, pending.approval_id, reviewer="alice", key=alice)
            assert record.status == "approved"
            result: AgentResult = await handle.result()
        assert [c.status for c in result.children] == ["success"]
        assert [r["amount"] for r in shop.refunds_for("ord-789")] == [4999.0]


class TestBundledLead:
    """The demo's lead, driven by the offline model: it hands the request to support, whose refund waits."""

    async def test_offline_lead_delegates_and_the_cli_approves_through_it(self, harness: Harness, server_address: str) -> None:
        from durable_agent.cli import approve as approve_cli
        from tests.processes import ROOT

        config = load_config(ROOT / "agents.toml")
        async with harness.worker(config):
            handle = await harness.start({"task": "Refund order ord-789", "agent": "lead", "model": "offline"})
            [pending] = (await wait_status(handle, lambda s: s.pending_approvals)).pending_approvals
            assert pending.workflow_id == f"{handle.id}/support-1-1" and pending.tool == "issue_refund"
            args = argparse.Namespace(
                workflow_id=handle.id, approval_id=pending.approval_id, reviewer="alice", comment=None, key=None, reject=False,
                expires_in=600, args_sha256=None, address=server_address,
            )
            assert await approve_cli.main(args) == 0
            result: AgentResult = await handle.result()
        assert result.status == "success"
        assert [(c.agent, c.status) for c in result.children] == [("support", "success")]
        assert "refunded 4999" in (result.answer or "")
        assert [r["amount"] for r in shop.refunds_for("ord-789")] == [4999.0]


    @pytest.mark.slow
    async def test_sigkill_of_the_worker_mid_child_loses_and_repeats_nothing(self, harness: Harness) -> None:
        from tests.processes import ROOT

        address = harness.client.service_client.config.target_host
        worker = subprocess.Popen(
            [sys.executable, "worker.py"], cwd=ROOT, env=subprocess_env(harness.state, address, AGENT_TASK_QUEUE=harness.task_queue),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        try:
            handle = await harness.start({"task": "Refund order ord-789", "agent": "lead", "model": "offline"})
            [pending] = (await wait_status(handle, lambda s: s.pending_approvals)).pending_approvals
            os.killpg(worker.pid, signal.SIGKILL)  # parent and child both mid-flight
            worker.wait(timeout=30)
        finally:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(timeout=30)
        async with harness.worker(load_config(ROOT / "agents.toml")):
            await handle.signal("approve", {"approval_id": pending.approval_id, "reviewer": "alice"})
            result: AgentResult = await handle.result()
        assert result.status == "success" and [c.status for c in result.children] == ["success"]
        assert [r["amount"] for r in shop.refunds_for("ord-789")] == [4999.0]
        lead_events = (await handle.fetch_history()).events
        assert sum(e.event_type == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED for e in lead_events) == 1
        child_events = (await harness.client.get_workflow_handle(pending.workflow_id).fetch_history()).events
        tools = [e.activity_task_scheduled_event_attributes.activity_type.name for e in child_events
                 if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED]
        assert tools.count("run_tool") == 3  # lookup, knowledge base, refund: once each


class TestLifecycle:
    async def test_cancelling_the_lead_cancels_the_child(self, harness: Harness) -> None:
        config = held_refund_config(harness, "never", "never")
        async with harness.worker(config):
            handle = await harness.start({"task": "Help the customer", "agent": "lead"})
            [pending] = (await wait_status(handle, lambda s: s.pending_approvals)).pending_approvals
            await handle.cancel()
            result: AgentResult = await handle.result()
            child = harness.client.get_workflow_handle(pending.workflow_id, result_type=AgentResult)
            child_result = await child.result()
        assert result.status == "cancelled"
        assert child_result.status == "cancelled"
        assert [(c.workflow_id, c.status) for c in result.children] == [(pending.workflow_id, "cancelled")]
        assert shop.refunds_for("ord-789") == []
        described = await child.describe()
        assert described.status in (WorkflowExecutionStatus.COMPLETED, WorkflowExecutionStatus.CANCELED)


class TestConfig:
    """Sub-agent mistakes stop the worker naming the file, the key and the cycle."""

    def write(self, tmp_path: Any, body: str) -> str:
        path = tmp_path / "agents.toml"
        path.write_text('tool_modules = ["durable_agent.demo.shop"]\n' + body)
        return str(path)

    def test_unknown_profile(self, tmp_path: Any) -> None:
        path = self.write(tmp_path, '[agents.lead]\nsubagents = ["suport"]\n[agents.support]\n')
        with pytest.raises(ConfigError, match=r"agents\.lead\.subagents\[0\].*no profile named 'suport'.*did you mean 'support'"):
            load_config(path)

    def test_cycle(self, tmp_path: Any) -> None:
        path = self.write(tmp_path, '[agents.a]\nsubagents = ["b"]\n[agents.b]\nsubagents = ["a"]\n')
        with pytest.raises(ConfigError, match=r"agents\.toml: agents\.b\.subagents\[0\]: .*cycle: a -> b -> a"):
            load_config(path)

    def test_name_of_a_tool(self, tmp_path: Any) -> None:
        path = self.write(tmp_path, '[agents.lead]\nsubagents = ["search_kb"]\n[agents.search_kb]\n')
        with pytest.raises(ConfigError, match=r"agents\.lead\.subagents\[0\].*also a tool's name"):
            load_config(path)

    def test_bundled_demo_has_a_lead(self) -> None:
        from tests.processes import ROOT

        config = load_config(ROOT / "agents.toml")
        assert "support" in config.agents["lead"].subagents
