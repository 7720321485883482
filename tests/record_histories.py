"""Record workflow histories for the replay test: ``python -m tests.record_histories [SCENARIO...]``.

With scenario names, only those are recorded (add a scenario, record just it: the
others stay as they were recorded); with none, only the scenarios that have no
history yet.

Runs representative scenarios on a throwaway dev server and writes each run's
event history to ``tests/histories/<scenario>.json``. Re-record only when a
change is *meant* to be incompatible (and then use ``workflow.patched`` for runs
already in flight); otherwise new worker code must replay these as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Awaitable, Callable

from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.api.workflowservice.v1 import SetWorkerDeploymentCurrentVersionRequest
from temporalio.common import RawValue, SearchAttributeKey, WorkerDeploymentVersion
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from durable_agent.connection import find_executable  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from durable_agent import contracts, signing, trace  # noqa: E402
from durable_agent.decisions import signed_review  # noqa: E402
from durable_agent.models import register_provider  # noqa: E402
from durable_agent.schemas import StatusView  # noqa: E402
from durable_agent.testing import ScriptedModel, answer, tool_use, tool_uses  # noqa: E402
from tests import history_builds  # noqa: E402
from tests.conftest import SUPPORT_PROFILE, make_config  # noqa: E402
from durable_agent.cli.worker import create_worker  # noqa: E402
from tests import remote_workers  # noqa: E402
from tests.test_remote_tools import remote_config  # noqa: E402

OUT = HERE / "histories"


async def _wait_pending(handle: WorkflowHandle[Any, Any]) -> StatusView:
    for _ in range(200):
        status = await handle.query("status", result_type=StatusView)
        if status.pending_approvals:
            return status
        await asyncio.sleep(0.05)
    raise RuntimeError("no approval became pending")


async def _approve_by_signal(handle: WorkflowHandle[Any, Any]) -> None:
    status = await _wait_pending(handle)
    await handle.signal("approve", {"approval_id": status.pending_approvals[0].approval_id, "reviewer": "alice", "comment": "ok"})


async def _signal_without_id_then_with_it(handle: WorkflowHandle[Any, Any]) -> None:
    status = await _wait_pending(handle)
    await handle.signal("approve", {"reviewer": "bob"})  # refused: it names no approval
    await handle.signal("approve", {"approval_id": status.pending_approvals[0].approval_id, "reviewer": "alice"})


#: Keys of the signed scenario's reviewers (only their public halves reach the worker and the history).
RECORD_KEYS = {name: signing.generate_key(name) for name in ("alice", "bob")}


async def _signed_refused_then_approved(handle: WorkflowHandle[Any, Any]) -> None:
    target = (await _wait_pending(handle)).pending_approvals[0]
    expires = int(time.time()) + 600

    def review(key: signing.SigningKey, reviewer: str) -> dict[str, Any]:
        request = signed_review(
            key, target, namespace="default", workflow_id=handle.id, approved=True, reviewer=reviewer, comment=None, expires_at=expires
        )
        return request.model_dump(mode="json", exclude_none=True)

    try:
        await handle.execute_update("review", review(RECORD_KEYS["bob"], "alice"))  # refused after the keyring is read
    except WorkflowUpdateFailedError:
        pass
    await handle.execute_update("review", review(RECORD_KEYS["alice"], "alice"))


async def _reject_by_update(handle: WorkflowHandle[Any, Any]) -> None:
    status = await _wait_pending(handle)
    await handle.signal("approve", {"approval_id": "apr-999", "reviewer": "mallory"})  # ignored: unknown id
    await handle.execute_update("review", {"approval_id": status.pending_approvals[0].approval_id, "approved": False, "reviewer": "bob", "comment": "no"})


async def _hostile_decisions_then_approved(handle: WorkflowHandle[Any, Any]) -> None:
    """Decisions of every wrong shape (each refused into the warnings), then a proper approval."""
    status = await _wait_pending(handle)
    approval_id = status.pending_approvals[0].approval_id
    await handle.signal("approve", args=[{"approval_id": approval_id, "reviewer": "bob"}, {"x": 1}])
    await handle.signal("reject", args=[RawValue(Payload(metadata={"encoding": b"json/plain"}, data=b'{"reviewer": "\xff"}'))])
    await handle.signal("approve", {"approval_id": approval_id, "reviewer": "r" * 1_000})
    try:
        await handle.execute_update("review", args=[{"approval_id": approval_id, "approved": True}, {"x": 1}])
    except WorkflowUpdateFailedError:
        pass  # refused by the validator: not in the history
    await handle.signal("approve", {"approval_id": approval_id, "reviewer": "alice"})


async def _cancel_while_waiting(handle: WorkflowHandle[Any, Any]) -> None:
    await _wait_pending(handle)
    await handle.cancel()


async def _resume_then_stop(handle: WorkflowHandle[Any, Any]) -> None:
    """A run paused by an anomaly rule: resumed by one reviewer, paused again, stopped by another."""
    first = (await _wait_pending(handle)).pending_approvals[0].approval_id
    await handle.execute_update("review", {"approval_id": first, "approved": True, "reviewer": "alice"})
    for _ in range(200):
        pending = [p for p in (await handle.query("status", result_type=StatusView)).pending_approvals if p.approval_id != first]
        if pending:
            break
        await asyncio.sleep(0.05)
    await handle.execute_update("review", {"approval_id": pending[0].approval_id, "approved": False, "reviewer": "bob"})


async def _signed_review_outlived_by_deadline(handle: WorkflowHandle[Any, Any]) -> None:
    """A signed review accepted a second before the deadline, its keyring read slower than that: the run waits for it."""
    from durable_agent.activities.approvals import ApprovalActivities

    target = (await _wait_pending(handle)).pending_approvals[0]
    read_keyring = ApprovalActivities._current

    def slow_keyring(self: ApprovalActivities) -> Any:
        time.sleep(4)  # runs in a thread
        return read_keyring(self)

    request = signed_review(
        RECORD_KEYS["alice"], target, namespace="default", workflow_id=handle.id, approved=True, reviewer="alice", comment=None,
        expires_at=int(time.time()) + 600,
    )
    await asyncio.sleep(max(0.0, target.deadline.timestamp() - 1.0 - time.time()))
    ApprovalActivities._current = slow_keyring  # type: ignore[method-assign]
    try:
        await handle.execute_update("review", request.model_dump(mode="json", exclude_none=True))
    except WorkflowUpdateFailedError:
        pass  # refused: the approval timed out while the keys were read
    finally:
        ApprovalActivities._current = read_keyring  # type: ignore[method-assign]


async def _cancel_while_a_tool_runs(handle: WorkflowHandle[Any, Any]) -> None:
    for _ in range(400):
        if (await handle.query("status", result_type=StatusView)).phase == "acting":
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)
    await handle.cancel()


async def _approve_child_through_lead(handle: WorkflowHandle[Any, Any]) -> None:
    """A sub-agent's held refund, listed in the lead's status and approved by a signal sent to the lead."""
    status = await _wait_pending(handle)
    await handle.signal("approve", {"approval_id": status.pending_approvals[0].approval_id, "reviewer": "alice"})


async def _approve_each_hold(handle: WorkflowHandle[Any, Any]) -> None:
    """Approve every held action as it comes, until the run ends."""
    decided: set[str] = set()
    for _ in range(600):
        status = await handle.query("status", result_type=StatusView)
        for pending in status.pending_approvals:
            if pending.approval_id not in decided:
                await handle.signal("approve", {"approval_id": pending.approval_id, "reviewer": "alice"})
                decided.add(pending.approval_id)
        if status.phase == "done":
            return
        await asyncio.sleep(0.05)


#: Money moved in parts and in a currency with no rate: a refund of 900 USD twice under max_amount 1,000, then 999 BTC.
MONEY_IN_PARTS = [
    tool_use("issue_refund", {"order_id": "ord-789", "amount": 900.0, "currency": "USD"}),
    tool_use("issue_refund", {"order_id": "ord-789", "amount": 900.0, "currency": "USD"}),
    tool_use("pay", {"payee": "mallory", "amount": 999, "currency": "BTC"}),
    answer("done"),
]


Scenario = tuple[str, dict[str, Any], dict[str, Any] | None, list[dict[str, Any]] | None, Callable[[WorkflowHandle[Any, Any]], Awaitable[None]] | None]

SCENARIOS: list[Scenario] = [
    ("offline_small_refund", {"task": "Refund 20 USD on order ord-789"}, None, None, None),
    # Numbers given as strings: taken as numbers by the code before patch strict-input-numbers (with which this
    # one was recorded: it must still replay as it ran), refused at once since.
    ("budget_as_text_before_strict_numbers", {"task": "Refund 20 USD on order ord-789", "budget_usd": "1.00", "max_steps": "20"},
     None, None, None),
    ("budget_as_text_refused", {"task": "Refund 20 USD on order ord-789", "budget_usd": "1.00"}, None, None, None),
    # Bound decisions: ids unique across executions; a signal without one refused, then one naming it.
    ("bound_refund_approved_by_id", {"task": "Refund order ord-789"}, None, None, _signal_without_id_then_with_it),
    # Signed decisions: the keyring read at decision time, a forged decision refused, a signed one approved.
    ("signed_refund_approved", {"task": "Refund order ord-789"},
     {"approval": {**SUPPORT_PROFILE["approval"], "require_signature": True, "reviewers": ["alice", "bob"]}}, None,
     _signed_refused_then_approved),
    ("offline_refund_approved", {"task": "Refund order ord-789"}, None, None, _approve_by_signal),
    ("offline_refund_rejected", {"task": "Refund order ord-789"}, None, None, _reject_by_update),
    ("offline_approval_timed_out", {"task": "Cancel order ord-1001"}, {"approval": {"timeout_seconds": 1}}, None, None),
    ("offline_cancelled", {"task": "Cancel order ord-1001"}, None, None, _cancel_while_waiting),
    ("offline_hostile_decisions", {"task": "Cancel order ord-1001"}, None, None, _hostile_decisions_then_approved),
    ("read_only_refusal", {"task": "Refund 20 USD on order ord-789", "autonomy": "read_only"}, None, None, None),
    ("budget_exceeded", {"task": "Refund 20 USD on order ord-789", "budget_usd": 0.0001, "model": "SCRIPTED"}, None,
     [tool_use("lookup_order", {"order_id": "ord-789"})], None),
    ("scripted_bad_calls_then_max_steps", {"task": "x", "max_steps": 3, "model": "SCRIPTED"}, None,
     [tool_use("issue_refund", {"order_id": 5}), tool_use("teleport", {}), tool_use("search_kb", {"query": "refund"})], None),
    ("scripted_continue_as_new", {"task": "x", "model": "SCRIPTED"}, {"continue_as_new_every": 2},
     [tool_use("search_kb", {"query": "a"}), tool_use("search_kb", {"query": "b"}), tool_use("search_kb", {"query": "c"}), answer("done")], None),
    # Through the shared daily-budget ledger and a rate limiter (their own histories are recorded too).
    # A world-changing tool scheduled to be waited for on cancellation (patch tool-cancel-waits-for-completion).
    ("tool_cancel_waits_small_refund", {"task": "Refund 20 USD on order ord-789"}, None, None, None),
    ("scripted_daily_budget_and_rate_limit", {"task": "x", "model": "SCRIPTED"},
     {"daily_budget_usd": 5.0, "rate_limits": {"search_kb": "1/2s"}},
     [tool_use("search_kb", {"query": "a"}), tool_use("search_kb", {"query": "b"}), answer("done")], None),
    # The same through a leased daily budget and a profile's own rate-limit lane (issue 12).
    ("scripted_leased_budget_and_lane", {"task": "x", "model": "SCRIPTED"},
     {"daily_budget_usd": 5.0, "rate_limits": {"search_kb": "1/2s"}},
     [tool_use("search_kb", {"query": "a"}), tool_use("search_kb", {"query": "b"}), answer("done")], None),
    # A leased daily budget given back while the last records are written, in one workflow task (patch books-closed-together).
    ("scripted_books_closed_together", {"task": "x", "model": "SCRIPTED"}, {"daily_budget_usd": 5.0},
     [tool_use("search_kb", {"query": "a"}), answer("done")], None),
    # A task just over TASK_INLINE_BYTES: stored by a local activity, sent to think by reference,
    # a stub carried into the continuation (patch task-by-reference).
    ("scripted_large_task_by_reference", {"task": "Look up order ord-789. " + "Notes. " * 1_460, "model": "SCRIPTED"},
     {"continue_as_new_every": 2},
     [tool_use("lookup_order", {"order_id": "ord-789"}), tool_use("search_kb", {"query": "a"}), answer("done")], None),
    # Records kept by the record_decisions activity (patch decision-records-stored), and a loop that stops the run.
    ("scripted_records_stored_loop_stopped", {"task": "x", "model": "SCRIPTED"}, {"anomalies": {"on_loop": "stop"}},
     [tool_use("search_kb", {"query": "a"}), tool_use("search_kb", {"query": "b"}),
      tool_use("search_kb", {"query": "a"}), tool_use("search_kb", {"query": "b"}), answer("never")], None),
    # A loop that pauses the run through the approval mechanism (patch anomaly-pause): resumed, then stopped.
    ("scripted_anomaly_paused_then_stopped", {"task": "x", "model": "SCRIPTED"}, {"anomalies": {"on_loop": "pause"}},
     [tool_use("search_kb", {"query": "a"})] * 4 + [answer("never")], _resume_then_stop),
    # Recorded before the webhook URL was kept out of payloads (issue 17): the URL is in the resolve_agent
    # result, the notify_reviewer input and the state carried across continue-as-new; new code replays it.
    ("webhook_url_carried_continue_as_new", {"task": "Refund order ord-789"},
     {"continue_as_new_every": 3, "approval": {**SUPPORT_PROFILE["approval"], "webhook_url": "http://127.0.0.1:9/hooks/approvals/RECORDED-TOKEN"}},
     None, _approve_by_signal),
    # A world-changing tool that times out: not retried, its outcome unknown (patch tool-timeout-outcome-unknown).
    ("scripted_tool_timeout_outcome_unknown", {"task": "pay", "model": "SCRIPTED"}, {"tools": ["pay_slowly"], "autonomy": "autonomous"},
     [tool_use("pay_slowly", {"account": "acc-1", "amount": 10.0}), answer("its outcome is unknown")], None),
    # A small window: the conversation is compacted (old results elided, then summarised) mid-run.
    ("scripted_compaction", {"task": "read the reports", "model": "SCRIPTED"},
     {"tools": ["report"], "autonomy": "autonomous", "context_window_tokens": 8192},
     [*[tool_use("report", {"n": n, "size": 3000}) for n in range(10)], answer("read them all")], None),
    # Issue 17, item 7: a cancelled run with an approval pending clears its awaiting mark (patch approval-mark-cleared-on-close).
    ("offline_cancelled_mark_cleared", {"task": "Cancel order ord-1001"}, None, None, _cancel_while_waiting),
    # A signed review still reading the keyring when its approval times out: the run ends after the handler
    # (patch run-ends-after-handlers), which is refused as timed out.
    ("signed_review_outlived_by_deadline", {"task": "Refund order ord-789"},
     {"approval": {**SUPPORT_PROFILE["approval"], "require_signature": True, "reviewers": ["alice", "bob"], "timeout_seconds": 3}},
     None, _signed_review_outlived_by_deadline),
    # A signed review's keyring answer and its deadline in one workflow task: the decision stands
    # (patch approval-decision-kept-at-deadline); recorded with workers of its own (DRIVERS).
    ("signed_decision_at_the_deadline", {"task": "Refund order ord-789"},
     {"approval": {**SUPPORT_PROFILE["approval"], "require_signature": True, "reviewers": ["alice", "bob"], "timeout_seconds": 4}},
     None, None),
    # Cancelled while a world-changing async tool runs: it runs to its end, is recorded, then the run ends cancelled.
    ("scripted_cancelled_during_transfer", {"task": "transfer", "model": "SCRIPTED"},
     {"tools": ["slow_async_transfer"], "autonomy": "autonomous"},
     [tool_use("slow_async_transfer", {"account": "acc-1", "amount": 10.0, "seconds": 10.0}), answer("never")],
     _cancel_while_a_tool_runs),
    # Cancelled while a world-changing tool runs, which then fails: the run ends cancelled (patch
    # cancel-outlasts-a-failed-tool); the same run recorded before the rule asked the model again.
    ("scripted_cancel_outlasts_failed_transfer", {"task": "transfer", "model": "SCRIPTED"},
     {"tools": ["failing_transfer"], "autonomy": "autonomous"},
     [tool_use("failing_transfer", {"account": "acc-1", "amount": 10.0, "seconds": 3.0}), answer("carried on")],
     _cancel_while_a_tool_runs),
    ("scripted_failed_transfer_after_cancel_before_the_rule", {"task": "transfer", "model": "SCRIPTED"},
     {"tools": ["failing_transfer"], "autonomy": "autonomous"},
     [tool_use("failing_transfer", {"account": "acc-1", "amount": 10.0, "seconds": 3.0}), answer("carried on")],
     _cancel_while_a_tool_runs),
    # Nothing serves the limits queue: the lease wait ends after daily_budget_wait_seconds (patch lease-wait-bounded).
    ("scripted_lease_wait_bounded", {"task": "x", "model": "SCRIPTED"},
     {"daily_budget_usd": 5.0, "daily_budget_wait_seconds": 3}, [answer("never")], None),
    # MCP tools through the gate (issue 19): a read-only call, a destructive one approved, an isError result.
    ("scripted_mcp_tools", {"task": "Tidy the tickets", "model": "SCRIPTED"}, {"tools": ["lookup_order", "tickets.*"]},
     [tool_use("mcp__tickets__get_ticket", {"ticket_id": "T-1"}), tool_use("mcp__tickets__delete_ticket", {"ticket_id": "T-1"}),
      tool_use("mcp__tickets__broken_report", {}), answer("done")], _approve_by_signal),
    # Live policy (issue 21): each decision reads the policy as configured now (reported by think, by its digest when unchanged).
    ("scripted_live_policy", {"task": "x", "model": "SCRIPTED"}, None,
     [tool_use("search_kb", {"query": "a"}), tool_use("issue_refund", {"order_id": "ord-789", "amount": 20, "currency": "USD"}),
      answer("done")], None),
    # What waits kept in the memo beside the search attribute (patch pending-approvals-in-memo): the inbox lists it without queries.
    ("approval_pending_in_memo", {"task": "Refund order ord-789"}, None, None, _approve_by_signal),
    # On a versioned worker (issue 21): the run pinned, its continue-as-new asking for auto-upgrade, its ledger auto-upgrading.
    ("versioned_continue_as_new", {"task": "x", "model": "SCRIPTED"}, {"continue_as_new_every": 2, "daily_budget_usd": 5.0},
     [tool_use("search_kb", {"query": "a"}), tool_use("search_kb", {"query": "b"}), tool_use("search_kb", {"query": "c"}), answer("done")], None),
    # Remote tools (issue 19, item 5): a read-only one on another worker's queue, a charge held and approved,
    # then a call refused by its schema (nothing scheduled).
    ("scripted_remote_tools", {"task": "Charge c-1", "model": "SCRIPTED"}, {"tools": ["lookup_customer", "charge_card"]},
     [tool_use("lookup_customer", {"customer_id": "c-1"}), tool_use("charge_card", {"customer_id": "c-1", "amount": 4999, "currency": "USD"}),
      tool_use("charge_card", {"customer_id": "c-1"}), answer("done")], _approve_by_signal),
    # Each continuation resolves its tools again (patch tools-resolved-at-continue-as-new).
    ("scripted_tools_resolved_at_continue_as_new", {"task": "x", "model": "SCRIPTED"}, {"continue_as_new_every": 2},
     [tool_use("search_kb", {"query": "a"}), tool_use("search_kb", {"query": "b"}), tool_use("search_kb", {"query": "c"}), answer("done")], None),
    # Sub-agents (issue 20): a lead delegates to support, a child workflow whose refund waits; approved through the lead.
    ("scripted_subagent_approved_through_lead", {"task": "Help the customer with ord-789", "agent": "lead", "model": "SCRIPTED"}, None,
     [tool_use("support", {"task": "Refund 4999 USD on order ord-789"}), answer("The refund went through.")],
     _approve_child_through_lead),
    # Recorded before money limits (issue 17, item 5): the second 900 USD refund and the 999 BTC payment ran
    # without approval; new code replays them as they ran (patch money-limits).
    ("scripted_money_before_limits", {"task": "refund in parts, then pay", "model": "SCRIPTED"},
     {"tools": [*SUPPORT_PROFILE["tools"], "pay"]}, MONEY_IN_PARTS, None),
    # The same with money limits: the second refund passes the run's limit and the BTC payment has no rate, so both wait (approved).
    ("scripted_money_limits_held", {"task": "refund in parts, then pay", "model": "SCRIPTED"},
     {"tools": [*SUPPORT_PROFILE["tools"], "pay"]}, MONEY_IN_PARTS, _approve_each_hold),
    # A refund that leaves its amount out (the tool refunds the whole order) waits for a person (patch
    # omitted-amount-holds); approved. Runs begun before let it run, and replay so (the first, recorded at 1010ae4).
    ("scripted_omitted_amount_before_it_held", {"task": "refund the whole order", "model": "SCRIPTED"},
     {"tools": [*SUPPORT_PROFILE["tools"], "refund_order"]},
     [tool_use("refund_order", {"order_id": "ord-789"}), answer("refunded")], None),
    ("scripted_omitted_amount_held", {"task": "refund the whole order", "model": "SCRIPTED"},
     {"tools": [*SUPPORT_PROFILE["tools"], "refund_order"]},
     [tool_use("refund_order", {"order_id": "ord-789"}), answer("refunded")], _approve_each_hold),
    # Records written by the next step's think (patch records-with-think), by one record_decisions before
    # the run waits for a person and before it continues as new, and at its end (issue 22).
    ("scripted_records_with_think", {"task": "Cancel order ord-1001", "model": "SCRIPTED"}, {"continue_as_new_every": 3},
     [tool_use("lookup_order", {"order_id": "ord-1001"}), tool_use("search_kb", {"query": "cancel"}),
      tool_use("cancel_order", {"order_id": "ord-1001"}), tool_use("search_kb", {"query": "after"}), answer("cancelled")],
     _approve_by_signal),
    # Three read-only calls in one turn, run at once (patch parallel-tool-calls, issue 22).
    ("scripted_parallel_tool_calls", {"task": "Look it all up", "model": "SCRIPTED"}, None,
     [tool_uses(tool_use("search_kb", {"query": "a"}), tool_use("search_kb", {"query": "b"}), tool_use("lookup_order", {"order_id": "ord-789"})),
      answer("done")], None),
]

#: Scenarios recorded by build <commit checked out> of deployment RECORD_DEPLOYMENT (the others: unversioned).
VERSIONED = {"versioned_continue_as_new"}
RECORD_DEPLOYMENT = "record"

#: The task queue the recordings' remote tools are served on (by tests/remote_workers.py, in this process).
REMOTE_QUEUE = "record-payments"

#: Profiles a scenario adds beside ``support`` (whose model is the scripted one named; the run's model is the lead's).
EXTRA_PROFILES: dict[str, Callable[[str], dict[str, dict[str, Any]]]] = {
    "scripted_subagent_approved_through_lead": lambda model: {"lead": {"description": "Leads.", "subagents": ["support"]}},
}
#: A scenario's child workflows, recorded after it (``<name>_child<N>.json``): their ids below the run's.
CHILDREN = {"scripted_subagent_approved_through_lead": ["support-1-1"]}

#: Top-level agents.toml keys a scenario needs beyond the profile, given the recording's state folder.
TOP_LEVEL: dict[str, Callable[[Path], dict[str, Any]]] = {
    "scripted_remote_tools": lambda state: {"remote_tools": remote_config(REMOTE_QUEUE)},
    "scripted_mcp_tools": lambda state: {
        "mcp_servers": {"tickets": {"command": sys.executable, "args": [str(HERE / "mcp_servers.py"), "stdio"], "env": {"MCP_TEST_STATE": str(state)}}}
    },
}

#: Worker options a scenario needs (``create_worker`` keyword arguments).
WORKER_OPTIONS: dict[str, dict[str, Any]] = {
    "scripted_lease_wait_bounded": {"serve_limits": False},
}

async def _decision_at_the_deadline(client: Client, config: Any, queue: str, workflow_id: str, request: dict[str, Any]) -> None:
    """A signed review whose keyring answer reaches the run in the workflow task where its deadline fires.

    Workflow and activity workers apart: the review is accepted and reads the (held) keyring;
    the workflow worker stops; the deadline passes and the keyring answers; a workflow worker returns.
    """
    import threading

    from temporalio.worker import Worker

    from durable_agent.activities.approvals import ApprovalActivities

    reading, answer = threading.Event(), threading.Event()
    read_keyring = ApprovalActivities._current

    def held_keyring(self: ApprovalActivities) -> Any:
        reading.set()
        answer.wait(60)
        return read_keyring(self)

    template = create_worker(client, config, task_queue=f"{queue}-template", max_cached_workflows=0)
    settings = {**template.agents.config(), "task_queue": queue}
    ApprovalActivities._current = held_keyring  # type: ignore[method-assign]
    try:
        async with Worker(**{**settings, "workflows": []}):  # type: ignore[misc]
            async with Worker(**{**settings, "activities": [], "interceptors": []}):  # type: ignore[misc]
                handle = await client.start_workflow("AgentWorkflow", request, id=workflow_id, task_queue=queue)
                target = (await _wait_pending(handle)).pending_approvals[0]
                review = signed_review(
                    RECORD_KEYS["alice"], target, namespace="default", workflow_id=workflow_id, approved=True, reviewer="alice",
                    comment=None, expires_at=int(time.time()) + 600,
                )
                told = asyncio.ensure_future(handle.execute_update("review", review.model_dump(mode="json", exclude_none=True)))
                await asyncio.to_thread(reading.wait, 60)
            await asyncio.sleep(max(0.0, target.deadline.timestamp() + 1.0 - time.time()))
            answer.set()
            await asyncio.sleep(1.0)
            async with Worker(**{**settings, "activities": [], "interceptors": []}):  # type: ignore[misc]
                print(f"decision at the deadline: told {(await told)['status']}, run {(await handle.result())['approvals'][0]['status']}")
    finally:
        ApprovalActivities._current = read_keyring  # type: ignore[method-assign]


#: Scenarios that drive their own workers: (client, config, queue, workflow id, request).
DRIVERS: dict[str, Callable[[Client, Any, str, str, dict[str, Any]], Awaitable[None]]] = {
    "signed_decision_at_the_deadline": _decision_at_the_deadline,
}

#: Entity workflows a scenario drives, recorded after it: (file name, workflow id template).
ENTITIES = {
    "scripted_daily_budget_and_rate_limit": [
        ("ledger", "budget-support-{day}@{queue}"),
        ("rate_limiter", "ratelimit-search_kb@{queue}"),
    ],
    "scripted_leased_budget_and_lane": [
        ("ledger", "budget-support-{day}@{queue}"),
        ("rate_limiter", "ratelimit-search_kb@{queue}"),
    ],
    "versioned_continue_as_new": [("ledger", "budget-support-{day}@{queue}")],
    "scripted_books_closed_together": [("ledger", "budget-support-{day}@{queue}")],
}


async def make_current(client: Client, version: WorkerDeploymentVersion) -> None:
    """Make ``version`` its deployment's current one, once its worker has polled (the server knows it then)."""
    request = SetWorkerDeploymentCurrentVersionRequest(
        namespace=client.namespace, deployment_name=version.deployment_name, build_id=version.build_id
    )
    for _ in range(300):
        try:
            await client.workflow_service.set_worker_deployment_current_version(request)
            return
        except RPCError:
            await asyncio.sleep(0.1)
    raise RuntimeError(f"build {version.build_id} of {version.deployment_name} never became current")


async def record(client: Client, state: Path, only: list[str] | None = None) -> None:
    OUT.mkdir(exist_ok=True)
    unknown = set(only or []) - {s[0] for s in SCENARIOS}
    if unknown:
        raise SystemExit(f"no scenario named {', '.join(sorted(unknown))}")
    commit = history_builds.head_commit()
    for name, request, profile_extra, script, action in SCENARIOS:
        if only and name not in only:
            continue
        deployment = WorkerDeploymentVersion(RECORD_DEPLOYMENT, commit) if name in VERSIONED else None
        build = f"{RECORD_DEPLOYMENT}:{commit}" if deployment else history_builds.UNVERSIONED
        queue = f"record-{uuid.uuid4().hex[:8]}"
        profile = {**SUPPORT_PROFILE, **(profile_extra or {})}
        pricing: dict[str, Any] = {}
        if script is not None:
            model = f"scripted-{name}"
            register_provider(model, ScriptedModel(script=list(script)))
            request = {**request, "model": model}
            pricing = {"models": {model: {"input": 3.0, "output": 15.0}}}
        top: dict[str, Any] = {"reviewer_keys": {name: key.public_key for name, key in RECORD_KEYS.items()}}
        if pricing:
            top["pricing"] = pricing
        if name in TOP_LEVEL:
            top.update(TOP_LEVEL[name](state))
        agents = {"support": profile, **(EXTRA_PROFILES[name](str(request.get("model"))) if name in EXTRA_PROFILES else {})}
        if name in EXTRA_PROFILES:
            # The sub-agent runs the offline playbook (its input names no model); the lead runs the script.
            profile["model"] = "offline"
        config = make_config(agents, **top)
        workflow_id = f"history-{name}"
        os.environ["SHOP_DB"] = str(state / f"shop-{name}.sqlite")  # every scenario starts from the seed shop
        if name in DRIVERS:
            await DRIVERS[name](client, config, queue, workflow_id, request)
        else:
            remote = remote_workers.serving(client, REMOTE_QUEUE) if "remote_tools" in top else contextlib.nullcontext()
            async with remote, create_worker(
                client, config, task_queue=queue, max_cached_workflows=0, deployment=deployment, **WORKER_OPTIONS.get(name, {})
            ):
                if deployment is not None:
                    await make_current(client, deployment)
                handle = await client.start_workflow("AgentWorkflow", request, id=workflow_id, task_queue=queue)
                if action is not None:
                    await action(handle)
                try:
                    await handle.result()
                except Exception as exc:  # failed runs are scenarios too
                    print(f"{name}: ended with {type(exc).__name__}")
        runs = [w async for w in client.list_workflows(f"WorkflowId = '{workflow_id}'")]
        for index, run in enumerate(sorted(runs, key=lambda r: r.start_time)):
            history = await client.get_workflow_handle(workflow_id, run_id=run.run_id).fetch_history()
            suffix = f"_run{index + 1}" if len(runs) > 1 else ""
            (OUT / f"{name}{suffix}.json").write_text(history.to_json())
            history_builds.list_recorded(f"{name}{suffix}", build, commit)
            print(f"recorded {name}{suffix}: {len(history.events)} events")
        for index, suffix in enumerate(CHILDREN.get(name, [])):
            history = await client.get_workflow_handle(f"{workflow_id}/{suffix}").fetch_history()
            (OUT / f"{name}_child{index + 1}.json").write_text(history.to_json())
            history_builds.list_recorded(f"{name}_child{index + 1}", build, commit)
            print(f"recorded {name}_child{index + 1}: {len(history.events)} events")
        day = datetime.now(timezone.utc).date().isoformat()
        for label, template in ENTITIES.get(name, []):
            entity = client.get_workflow_handle(template.format(day=day, queue=queue))
            history = await entity.fetch_history()
            (OUT / f"{name}_{label}.json").write_text(history.to_json())
            history_builds.list_recorded(f"{name}_{label}", build, commit)
            print(f"recorded {name}_{label}: {len(history.events)} events")


async def main() -> None:
    state = Path(tempfile.mkdtemp(prefix="record-"))
    os.environ.update({"AGENT_STATE_DIR": str(state), "SHOP_DB": str(state / "shop.sqlite"), "AGENT_TRACE_FILE": str(state / "trace.jsonl")})
    os.environ.pop("ANTHROPIC_API_KEY", None)
    trace.configure(str(state / "trace.jsonl"))
    # Only what has no history yet, or the scenarios named: a recorded history is never recorded again.
    names = sys.argv[1:] or [name for name, *_ in SCENARIOS if not any(OUT.glob(f"{name}*.json"))]
    if not names:
        print("nothing to record: every scenario has its history (name one to record it again)")
        return
    print(f"recording: {', '.join(names)}")
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=find_executable("temporal"), data_converter=pydantic_data_converter, dev_server_log_level="error",
        search_attributes=[SearchAttributeKey.for_bool(contracts.SEARCH_ATTRIBUTE_AWAITING_APPROVAL)],
    )
    try:
        await record(env.client, state, names)
    finally:
        await env.shutdown()
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
