"""Live policy (issue 21): a run decides under the policy ``agents.toml`` holds at each decision.

A run waits for a reviewer; meanwhile the platform team lowers ``max_amount`` in the
worker's file. The run's next decision follows the file as it is then, with no worker
restart, and its decision records say which policy each step was decided under. The
prompt and the tools the model sees stay as they were until the next continue-as-new.
"""

from __future__ import annotations

import asyncio
import json
import os
import tomllib
from pathlib import Path
from typing import Any

import pytest

from durable_agent import live_policy
from durable_agent.demo import shop
from durable_agent.live_policy import LivePolicy
from durable_agent.profiles import load_config
from durable_agent.schemas import DecisionRecord, StatusView, ToolInfo
from durable_agent.testing import answer, tool_use
from tests.component_kit import profile
from tests.conftest import SUPPORT_PROFILE, Harness
from tests.test_approvals import wait_pending


def write_config(path: Path, model: str, *, max_amount: float, system_prompt: str = "You are a support agent.", extra: str = "") -> None:
    """``agents.toml`` for the support profile, written so that its modification time surely changes."""
    tools = ", ".join(f'"{t}"' for t in SUPPORT_PROFILE["tools"])
    path.write_text(
        f"""
[defaults]
agent = "support"

[pricing.models."{model}"]
input = 3.0
output = 15.0

[agents.support]
system_prompt = "{system_prompt}"
tools = [{tools}]
autonomy = "supervised"
model = "{model}"
{extra}

[agents.support.approval]
max_amount = {max_amount}
timeout_seconds = 300
"""
    )
    tomllib.loads(path.read_text())  # a typo here is the test's, not the product's
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))


async def records(handle: Any) -> list[DecisionRecord]:
    return await handle.query("trace", result_type=list[DecisionRecord])


class TestDigests:
    """Pure: the policy half of a profile is named by its digest; the catalogue by another."""

    def test_a_changed_threshold_changes_the_policy_digest_only(self) -> None:
        agent = profile()
        tightened = agent.model_copy(update={"approval": agent.approval.model_copy(update={"max_amount": 100.0})})
        assert live_policy.policy_digest(live_policy.policy_of(agent)) != live_policy.policy_digest(live_policy.policy_of(tightened))
        assert live_policy.profile_digest(agent) == live_policy.profile_digest(tightened)

    def test_applied_keeps_the_catalogue_and_takes_the_rules(self) -> None:
        agent = profile()
        rules = live_policy.policy_of(agent)
        name = agent.tools[0].name
        rules.tools[name] = {**rules.tools[name], "protected": True, "rate_limit": "1/min"}
        rules.tools["a_tool_the_run_never_had"] = {"protected": True}
        after = live_policy.applied(agent, rules)
        assert [t.name for t in after.tools] == [t.name for t in agent.tools]
        assert after.tool(name) is not None and after.tool(name).protected and after.tool(name).rate_limit == "1/min"  # type: ignore[union-attr]
        assert live_policy.profile_digest(after) == live_policy.profile_digest(agent)
        assert live_policy.policy_of(after) != live_policy.policy_of(agent)

    def test_no_webhook_url_enters_a_policy(self) -> None:
        agent = profile()
        with_url = agent.approval.model_copy(update={"webhook_url": "https://hooks.example/SECRET"})
        policy = LivePolicy(autonomy=agent.autonomy, approval=with_url, anomalies=agent.anomalies)
        assert "SECRET" not in live_policy.applied(agent, policy).model_dump_json()
        assert "SECRET" not in live_policy.policy_of(agent.model_copy(update={"approval": with_url})).model_dump_json()

    def test_a_tool_the_worker_cannot_describe_keeps_the_runs_rules(self) -> None:
        agent = profile(tools=[ToolInfo(name="mcp__tickets__delete", destructive=True, protected=True)])
        configured = live_policy.policy_of(agent).model_copy(update={"tools": {}})  # its server's listing is not kept here
        assert live_policy.applied(agent, configured).tools == agent.tools


class TestPolicyReader:
    """Each step asks for the policy; it is worked out again only when the file changes."""

    async def test_worked_out_once_per_read_of_the_file(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        from durable_agent.activities.live_config import LiveConfig
        from durable_agent.activities.policy import PolicyReader
        from durable_agent.tools import registry

        path = tmp_path / "agents.toml"
        write_config(path, "offline", max_amount=100)
        reader = PolicyReader(LiveConfig(load_config(path)), registry, None)
        digests: list[str] = []
        count = live_policy.policy_digest
        monkeypatch.setattr(live_policy, "policy_digest", lambda policy: digests.append(count(policy)) or digests[-1])
        tools = list(SUPPORT_PROFILE["tools"])
        first = await reader.report("support", tools, None)
        again = await reader.report("support", tools, first.digest)
        assert first.policy is not None and again.policy is None and again.digest == first.digest
        assert len(digests) == 1  # the second step's answer was known
        write_config(path, "offline", max_amount=5)
        tightened = await reader.report("support", tools, first.digest)
        assert tightened.digest != first.digest and tightened.policy is not None and len(digests) == 2
        assert tightened.policy.approval.max_amount == 5


class TestLivePolicy:
    async def test_a_lowered_max_amount_holds_the_next_decision_of_a_waiting_run(self, harness: Harness, tmp_path: Path) -> None:
        model, _ = harness.scripted(
            [
                tool_use("cancel_order", {"order_id": "ord-1001"}),
                tool_use("issue_refund", {"order_id": "ord-789", "amount": 500, "currency": "USD"}),
                answer("done"),
            ]
        )
        path = tmp_path / "agents.toml"
        write_config(path, model, max_amount=1000)
        async with harness.worker(load_config(path)):
            handle = await harness.start({"task": "Cancel ord-1001, then refund 500 USD on ord-789"})
            first = (await wait_pending(handle)).pending_approvals[0]
            assert first.tool == "cancel_order"
            # While the run waits, the team lowers the limit (and rewrites the prompt, which must not reach this run).
            write_config(path, model, max_amount=100, system_prompt="You are a terse agent.")
            await handle.signal("approve", {"approval_id": first.approval_id, "reviewer": "alice"})
            for _ in range(300):
                status = await handle.query("status", result_type=StatusView)
                if status.pending_approvals and status.pending_approvals[0].approval_id != first.approval_id:
                    break
                assert status.phase != "done", status.answer
                await asyncio.sleep(0.1)
            held = status.pending_approvals[0]
            # Under the policy the run started with, 500 USD would have run at once.
            assert held.tool == "issue_refund" and "above the limit of 100" in held.reason
            await handle.signal("reject", {"approval_id": held.approval_id, "reviewer": "alice"})
            result = await handle.result()
            trace = await records(handle)
        assert shop.refunds_for("ord-789") == []
        assert [a.status for a in result.approvals] == ["approved", "rejected"]
        cancel, refund = (r for r in trace if r.action.type == "tool_call")
        assert cancel.policy_digest and refund.policy_digest and cancel.policy_digest != refund.policy_digest
        # What the model was shown did not change within the execution.
        assert cancel.profile_digest == refund.profile_digest == trace[-1].profile_digest
        assert any(w.startswith("POLICY_UPDATED") for w in result.warnings)

    async def test_a_broken_file_never_loosens_the_policy(self, harness: Harness, tmp_path: Path) -> None:
        model, _ = harness.scripted(
            [
                tool_use("cancel_order", {"order_id": "ord-1001"}),
                tool_use("issue_refund", {"order_id": "ord-789", "amount": 500, "currency": "USD"}),
                answer("done"),
            ]
        )
        path = tmp_path / "agents.toml"
        write_config(path, model, max_amount=100)
        async with harness.worker(load_config(path)):
            handle = await harness.start({"task": "Cancel ord-1001, then refund 500 USD on ord-789"})
            first = (await wait_pending(handle)).pending_approvals[0]
            path.write_text(path.read_text().replace("max_amount = 100", "max_ammount = 100000"))  # a typo, saved
            stat = path.stat()
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))
            await handle.signal("approve", {"approval_id": first.approval_id, "reviewer": "alice"})
            for _ in range(300):
                status = await handle.query("status", result_type=StatusView)
                if status.pending_approvals and status.pending_approvals[0].approval_id != first.approval_id:
                    break
                assert status.phase != "done", status.answer
                await asyncio.sleep(0.1)
            held = status.pending_approvals[0]
            assert held.tool == "issue_refund" and "above the limit of 100" in held.reason
            await handle.signal("reject", {"approval_id": held.approval_id, "reviewer": "alice"})
            result = await handle.result()
        warnings = [w for w in result.warnings if w.startswith("POLICY_NOT_REFRESHED")]
        assert warnings and "max_ammount" in warnings[0] and "decides under the policy it has" in warnings[0]

    async def test_an_unchanged_policy_is_reported_whole_once_then_by_its_digest(self, harness: Harness, tmp_path: Path) -> None:
        model, _ = harness.scripted(
            [tool_use("search_kb", {"query": "a"}), tool_use("search_kb", {"query": "b"}), tool_use("search_kb", {"query": "c"}), answer("done")]
        )
        path = tmp_path / "agents.toml"
        write_config(path, model, max_amount=1000)
        async with harness.worker(load_config(path)):
            handle = await harness.start({"task": "x"})
            result = await handle.result()
            history = await handle.fetch_history()
        assert result.status == "success" and not any(w.startswith("POLICY") for w in result.warnings)
        outputs = [
            json.loads(payload.data)
            for event in history.events
            if event.HasField("activity_task_completed_event_attributes")
            for payload in event.activity_task_completed_event_attributes.result.payloads
            if b"policy_digest" in payload.data
        ]
        # Each step's decisions read the policy; the history holds it whole once, then its digest alone.
        with_calls = [o for o in outputs if o["tool_calls"]]
        assert len(with_calls) == 3 and len({o["policy_digest"] for o in with_calls}) == 1
        assert [o["policy"] is not None for o in with_calls] == [True, False, False]
