"""Human in the loop on a real Temporal server: approvals, refusals, timeouts, autonomy, crashes, clients.

The offline model drives the support demo ("Refund order ord-789" asks for a
4,999 USD refund, which waits; "Cancel order ord-1001" asks for a destructive
cancel_order, which waits); scripted models drive the rest. Effects are checked
in the shop's database and in the event history, not only in the result.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pydantic
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError

from durable_agent import signing
from durable_agent.client import AgentClient, ApprovalRefused
from durable_agent.demo import shop
from durable_agent.models import register_provider
from durable_agent.models.base import ModelRequest, ModelResponse
from durable_agent.profiles import AgentsConfig
from durable_agent.schemas import ApprovalRecord, DecisionRecord, PendingApproval, StatusView, Usage
from durable_agent.testing import answer, tool_use
from examples import plain_temporalio_client
from tests.conftest import ROOT, SUPPORT_PROFILE, Harness, make_config, subprocess_env

REFUND_4999 = {"task": "Refund order ord-789", "agent": "support"}
CANCEL_1001 = {"task": "Cancel order ord-1001", "agent": "support"}


# ---------------------------------------------------------------- helpers


def support(**overrides: Any) -> AgentsConfig:
    """The demo support profile with ``overrides`` (``approval`` entries merge into the seed's)."""
    profile = {**SUPPORT_PROFILE, **overrides}
    profile["approval"] = {**SUPPORT_PROFILE["approval"], **overrides.get("approval", {})}
    return make_config({"support": profile})


async def wait_pending(handle: WorkflowHandle[Any, Any], count: int = 1, timeout: float = 60.0) -> StatusView:
    """Poll the ``status`` query until ``count`` approvals wait (fails if the run ends first)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        status = await handle.query("status", result_type=StatusView)
        if len(status.pending_approvals) >= count:
            return status
        assert status.phase != "done", f"the run ended without {count} pending approvals: {status.answer}"
        assert loop.time() < deadline, f"no {count} pending approvals within {timeout:g} s (phase {status.phase})"
        await asyncio.sleep(0.1)


async def pending_after(handle: WorkflowHandle[Any, Any], approval_id: str, timeout: float = 60.0) -> PendingApproval:
    """The first approval that waits once ``approval_id`` is no longer the first (decided, or timed out)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        waiting = (await wait_pending(handle)).pending_approvals
        if waiting[0].approval_id != approval_id:
            return waiting[0]
        assert loop.time() < deadline, f"{approval_id} still waits after {timeout:g} s"
        await asyncio.sleep(0.1)


async def current_details(handle: WorkflowHandle[Any, Any]) -> str:
    """What the Temporal UI shows under "Current Details" (the SDK's built-in metadata query)."""
    metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    return metadata.current_details


async def scheduled(handle: WorkflowHandle[Any, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every activity the run scheduled, in order: (activity type, decoded input)."""
    history = await handle.fetch_history()
    return [
        (attrs.activity_type.name, json.loads(attrs.input.payloads[0].data))
        for attrs in (
            e.activity_task_scheduled_event_attributes
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        )
    ]


def tools_run(activities: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """The tools for which a ``run_tool`` activity was scheduled: the only way a tool runs."""
    return [payload["call"]["name"] for name, payload in activities if name == "run_tool"]


async def update_refusal(handle: WorkflowHandle[Any, Any], payload: dict[str, Any]) -> str:
    """Send the ``review`` update, expect the validator to reject it, and return its message."""
    with pytest.raises(WorkflowUpdateFailedError) as info:
        await handle.execute_update("review", payload)
    cause = info.value.cause
    assert isinstance(cause, ApplicationError)
    return cause.message


#: Approval ids name the step and the workflow chain: apr-3-<8 hex> (unique across executions of a workflow id).
APR_3 = re.compile(r"apr-3-[0-9a-f]{8}")


async def signal_decision(handle: WorkflowHandle[Any, Any], name: str = "approve", **fields: Any) -> str:
    """Send ``approve`` or ``reject`` naming the (first) pending approval, as a reviewer copying its id does; the id."""
    approval_id = (await wait_pending(handle)).pending_approvals[0].approval_id
    await handle.signal(name, {"approval_id": approval_id, **fields})
    return approval_id


def refused_warnings(status: StatusView) -> list[str]:
    return [w for w in status.warnings if w.startswith("DECISION_REFUSED")]


def order_status(order_id: str) -> str:
    return shop.lookup_order(order_id)["status"]


@dataclass
class ParallelCalls:
    """A model that asks for several tool calls in one turn (as Claude may), then answers."""

    calls: list[tuple[str, dict[str, Any]]]
    requests: list[ModelRequest] = field(default_factory=list)

    async def complete(self, request: ModelRequest) -> ModelResponse:
        self.requests.append(request)
        if len(self.requests) == 1:
            content = [{"type": "tool_use", "id": f"toolu_par_{i}", "name": name, "input": args} for i, (name, args) in enumerate(self.calls)]
            return ModelResponse(content=content, usage=Usage(input_tokens=100, output_tokens=20), stop_reason="tool_use", model=request.model)
        return ModelResponse(content=[{"type": "text", "text": "done"}], usage=Usage(input_tokens=100, output_tokens=5), stop_reason="end_turn", model=request.model)

    def results(self) -> list[dict[str, Any]]:
        """The tool_result blocks the model was sent after its calls."""
        return [b for b in self.requests[-1].messages[-1]["content"] if b.get("type") == "tool_result"]


class Webhook:
    """A loopback HTTP server standing in for a reviewer webhook: it records JSON POSTs."""

    def __init__(self, status: int = 204) -> None:
        self.status = status
        self.bodies: list[dict[str, Any]] = []
        self.paths: list[str] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                length = int(self.headers.get("Content-Length", 0))
                hook.paths.append(self.path)
                hook.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(hook.status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass  # keep test output quiet

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/approvals/s3cr3t"

    def __enter__(self) -> "Webhook":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    async def wait_for_posts(self, count: int = 1, timeout: float = 60.0) -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.bodies) < count:
            assert loop.time() < deadline, f"the webhook got {len(self.bodies)} POSTs, expected {count}"
            await asyncio.sleep(0.1)
        return self.bodies


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    with Webhook() as hook:
        yield hook


@pytest.fixture
def failing_webhook() -> Iterator[Webhook]:
    with Webhook(status=500) as hook:
        yield hook


# ------------------------------------------------------------------ tests


class TestApprove:
    """An approved action runs once, after the decision; the reviewer saw what and why."""

    async def test_signal_approves_a_4999_refund(self, harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.WARNING, logger="durable_agent.activities")
        async with harness.worker():
            handle = await harness.start(REFUND_4999)
            status = await wait_pending(handle)
            pending = status.pending_approvals[0]
            assert status.phase == "waiting_for_approval" and status.waiting_for == f"approval {pending.approval_id}"
            assert APR_3.fullmatch(pending.approval_id) and (pending.tool, pending.risk) == ("issue_refund", "medium")
            assert (pending.amount, pending.currency, pending.run_id) == (4999.0, "USD", handle.result_run_id)
            assert pending.args == {"order_id": "ord-789", "amount": 4999.0, "currency": "USD"}
            assert pending.reason == "amount 4999 USD is above the limit of 1000"
            assert pending.deadline - pending.requested_at == timedelta(seconds=300)
            # The last steps, for context: the lookup and the policy search.
            assert [c["action"]["tool"] for c in pending.context] == ["lookup_order", "search_kb"]
            assert shop.refunds_for("ord-789") == []  # nothing runs before the decision

            details = await current_details(handle)
            assert "Waiting for approval" in details and f"`{pending.approval_id}`" in details and "issue_refund" in details
            assert "amount 4999 USD is above the limit of 1000" in details and "Deadline: " in details
            assert (
                f"temporal workflow signal --workflow-id {handle.id} --name approve "
                f"""--input '{{"approval_id": "{pending.approval_id}", "reviewer": "YOUR_NAME"}}'"""
            ) in details

            await handle.signal("approve", {"approval_id": pending.approval_id, "reviewer": "alice", "comment": "VIP customer"})
            result = await handle.result()
            activities = await scheduled(handle)
        assert result.status == "success"
        assert [(a.approval_id, a.status, a.reviewer, a.comment) for a in result.approvals] == [
            (pending.approval_id, "approved", "alice", "VIP customer")
        ]
        assert [r["amount"] for r in shop.refunds_for("ord-789")] == [4999.0]
        assert tools_run(activities) == ["lookup_order", "search_kb", "issue_refund"]
        assert [name for name, _ in activities].count("notify_reviewer") == 1
        # notify_reviewer logged the wait once, with the command that approves it.
        lines = [r.getMessage() for r in caplog.records if f"approval {pending.approval_id} waits" in r.getMessage()]
        assert len(lines) == 1 and "--name approve" in lines[0]

    async def test_review_update_returns_the_decided_record(self, harness: Harness) -> None:
        async with harness.worker():
            handle = await harness.start(REFUND_4999)
            approval_id = (await wait_pending(handle)).pending_approvals[0].approval_id
            record = await handle.execute_update(
                "review", {"approval_id": approval_id, "approved": True, "reviewer": "bob"}, result_type=ApprovalRecord
            )
            result = await handle.result()
        assert (record.approval_id, record.tool, record.status, record.reviewer) == (approval_id, "issue_refund", "approved", "bob")
        assert record.decided_at is not None
        assert result.status == "success" and result.approvals == [record]
        assert [r["amount"] for r in shop.refunds_for("ord-789")] == [4999.0]


class TestReject:
    """A rejected action never runs, and the model hears who rejected it and why."""

    async def test_rejected_refund_is_not_executed_and_the_model_is_told(self, harness: Harness) -> None:
        async with harness.worker():
            handle = await harness.start(REFUND_4999)
            approval_id = await signal_decision(handle, "reject", reviewer="bob", comment="order under investigation")
            result = await handle.result()
            records = await handle.query("trace", result_type=list[DecisionRecord])
            activities = await scheduled(handle)
        assert result.status == "success"
        assert [(a.status, a.reviewer) for a in result.approvals] == [("rejected", "bob")]
        assert shop.refunds_for("ord-789") == []
        assert tools_run(activities) == ["lookup_order", "search_kb"]  # no run_tool for issue_refund
        assert records[2].action.tool == "issue_refund"
        assert records[2].observation["status"] == "rejected" and records[2].observation["approval_id"] == approval_id
        # The offline model read the rejection and answered with it.
        assert "REJECTED by bob: order under investigation. The action was not executed." in (result.answer or "")

    async def test_cancelled_run_leaves_nothing_pending(self, harness: Harness) -> None:
        async with harness.worker():
            handle = await harness.start(REFUND_4999)
            await wait_pending(handle)
            await handle.cancel()
            result = await handle.result()
            status = await handle.query("status", result_type=StatusView)
        assert result.status == "cancelled" and shop.refunds_for("ord-789") == []
        assert status.phase == "done" and status.pending_approvals == []  # nobody is asked to decide for a closed run


class TestTimeout:
    """No decision within the profile's timeout: timed_out, not executed, the model told."""

    async def test_300_seconds_pass_without_a_decision(self, time_harness: Harness) -> None:
        async with time_harness.worker():
            handle = await time_harness.start(REFUND_4999)
            result = await handle.result()  # the time-skipping server jumps over the 300 s timer
            history = await handle.fetch_history()
            activities = await scheduled(handle)
        assert result.status == "success"
        assert [(a.status, a.reviewer) for a in result.approvals] == [("timed_out", None)]
        assert APR_3.fullmatch(result.approvals[0].approval_id)
        assert shop.refunds_for("ord-789") == []
        assert tools_run(activities) == ["lookup_order", "search_kb"]
        assert "No reviewer decided within 300 s, so the action was not executed." in (result.answer or "")
        timers = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED]
        assert [t.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta() for t in timers] == [timedelta(seconds=300)]
        assert any(e.event_type == EventType.EVENT_TYPE_TIMER_FIRED for e in history.events)
        # Workflow time really moved past the deadline.
        started = history.events[0].event_time.ToDatetime()
        assert (history.events[-1].event_time.ToDatetime() - started) >= timedelta(seconds=300)


class TestRefusedDecisions:
    """Decisions that must not apply are refused and logged; the approval stays pending."""

    async def test_reviewer_not_on_the_allow_list(self, harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.WARNING, logger="temporalio.workflow")
        agents = AgentClient(harness.client, task_queue=harness.task_queue)
        async with harness.worker(support(approval={"reviewers": ["alice"]})):
            handle = await harness.start(REFUND_4999)
            approval_id = await signal_decision(handle, reviewer="mallory")
            await handle.signal("approve", {"approval_id": approval_id})  # no name: refused too when the list is set
            status = await handle.query("status", result_type=StatusView)
            assert [p.approval_id for p in status.pending_approvals] == [approval_id]
            assert refused_warnings(status) == [
                "DECISION_REFUSED: approve signal ignored: 'mallory' may not decide: allowed reviewers are alice",
                "DECISION_REFUSED: approve signal ignored: a reviewer with no name may not decide: allowed reviewers are alice",
            ]
            message = await update_refusal(handle, {"approval_id": approval_id, "approved": True, "reviewer": "mallory"})
            assert message == "'mallory' may not decide: allowed reviewers are alice"
            with pytest.raises(ApprovalRefused, match="may not decide"):
                await agents.approve(handle.id, approval_id, reviewer="mallory")
            assert await agents.pending_approvals(handle.id) != []
            record = await agents.approve(handle.id, approval_id, reviewer="alice")
            result = await handle.result()
            history = await handle.fetch_history()
        assert record.status == "approved" and result.approvals == [record]
        assert [r["amount"] for r in shop.refunds_for("ord-789")] == [4999.0]
        # Refused updates never entered history; only alice's was accepted.
        accepted = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED]
        assert len(accepted) == 1
        # Logged: the validator once per refused update (validators never run on replay). The
        # signal at least once: with no workflow cache, as here, the SDK rebuilds state for each
        # query and may log the last task's signals again; a caching worker logs it once.
        logged = [r.getMessage() for r in caplog.records if "may not decide" in r.getMessage()]
        assert sum("approve signal ignored: 'mallory'" in m for m in logged) >= 1
        assert sum("refused review update: 'mallory'" in m for m in logged) == 2

    async def test_unknown_and_already_decided_ids(self, harness: Harness) -> None:
        model, _ = harness.scripted(
            [
                tool_use("cancel_order", {"order_id": "ord-1001"}),
                tool_use("issue_refund", {"order_id": "ord-789", "amount": 4999, "currency": "USD"}),
                answer("done"),
            ]
        )
        async with harness.worker():
            handle = await harness.start({**CANCEL_1001, "model": model})
            apr1 = (await wait_pending(handle)).pending_approvals[0].approval_id
            await handle.signal("approve", {"approval_id": "apr-999", "reviewer": "alice"})
            assert "is not pending" in await update_refusal(handle, {"approval_id": "apr-999", "approved": True})
            first = await handle.execute_update("review", {"approval_id": apr1, "approved": True, "reviewer": "alice"}, result_type=ApprovalRecord)
            apr2 = (await pending_after(handle, apr1)).approval_id
            await handle.signal("reject", {"approval_id": apr1, "reviewer": "alice"})
            message = await update_refusal(handle, {"approval_id": apr1, "approved": False, "reviewer": "alice"})
            assert message == f"approval '{apr1}' was already decided: approved by alice; pending: {apr2}"
            await handle.execute_update("review", {"approval_id": apr2, "approved": False, "reviewer": "alice"})
            result = await handle.result()
        assert first.status == "approved" and apr1.startswith("apr-1-") and apr2.startswith("apr-2-")
        assert [(a.approval_id, a.status) for a in result.approvals] == [(apr1, "approved"), (apr2, "rejected")]
        assert [w.split(": ", 1)[1] for w in result.warnings if w.startswith("DECISION_REFUSED")] == [
            f"approve signal ignored: approval 'apr-999' is not pending; pending: {apr1}",
            f"reject signal ignored: approval '{apr1}' was already decided: approved by alice; pending: {apr2}",
        ]
        assert order_status("ord-1001") == "cancelled"  # the approval stood; the late reject changed nothing
        assert shop.refunds_for("ord-789") == []

    async def test_approval_id_required_when_two_wait(self, harness: Harness) -> None:
        model = ParallelCalls([("cancel_order", {"order_id": "ord-456"}), ("cancel_order", {"order_id": "ord-1001"})])
        register_provider("parallel-", model)
        harness.models.append("parallel-")
        async with harness.worker():
            handle = await harness.start({**CANCEL_1001, "model": "parallel-two"})
            status = await wait_pending(handle, count=2)
            # Both actions of the turn wait together, each with its own id and deadline.
            first, second = (p.approval_id for p in status.pending_approvals)
            assert [p.args["order_id"] for p in status.pending_approvals] == ["ord-456", "ord-1001"]
            assert first.startswith("apr-1-") and second.startswith("apr-1-2-")
            details = await current_details(handle)
            assert f"`{first}`" in details and f"`{second}`" in details
            await handle.signal("approve", {"reviewer": "alice"})
            assert await update_refusal(handle, {"approved": True, "reviewer": "alice"}) == (
                f"approval_id is required: name the approval you decide (pending: {first}, {second})"
            )
            status = await wait_pending(handle, count=2)
            assert refused_warnings(status) == [
                f"DECISION_REFUSED: approve signal ignored: approval_id is required: name the approval you decide (pending: {first}, {second})"
            ]
            # The second is decided first, while the run still waits on the first.
            await handle.execute_update("review", {"approval_id": second, "approved": True, "reviewer": "alice"})
            await handle.signal("reject", {"approval_id": first, "reviewer": "bob", "comment": "already shipped"})
            result = await handle.result()
            activities = await scheduled(handle)
        assert [(a.approval_id, a.status) for a in result.approvals] == [(first, "rejected"), (second, "approved")]
        assert [p["call"]["args"] for n, p in activities if n == "run_tool"] == [{"order_id": "ord-1001"}]
        assert [n for n, _ in activities].count("notify_reviewer") == 2
        assert (order_status("ord-456"), order_status("ord-1001")) == ("shipped", "cancelled")
        told = model.results()
        assert told[0]["is_error"] and "REJECTED by bob: already shipped" in told[0]["content"]
        assert '"status": "cancelled"' in told[1]["content"]


class TestAutonomy:
    """read_only refuses, autonomous asks nobody, and a run can only tighten its profile."""

    async def test_read_only_run_refuses_the_refund(self, harness: Harness) -> None:
        async with harness.worker():
            handle = await harness.start({"task": "Refund 20 USD on order ord-789", "autonomy": "read_only"})
            result = await handle.result()
            records = await handle.query("trace", result_type=list[DecisionRecord])
            activities = await scheduled(handle)
        assert result.status == "success" and result.approvals == []
        assert records[2].action.tool == "issue_refund" and records[2].observation["status"] == "refused"
        assert tools_run(activities) == ["lookup_order", "search_kb"]
        assert shop.refunds_for("ord-789") == []
        assert "REFUSED: the agent runs read-only and issue_refund is not a read-only tool" in (result.answer or "")

    async def test_autonomous_profile_cancels_without_approval(self, harness: Harness) -> None:
        async with harness.worker(support(autonomy="autonomous")):
            handle = await harness.start(CANCEL_1001)
            result = await handle.result()
            activities = await scheduled(handle)
            history = await handle.fetch_history()
        assert result.status == "success" and result.approvals == []
        assert tools_run(activities) == ["lookup_order", "search_kb", "cancel_order"]
        assert "notify_reviewer" not in [name for name, _ in activities]
        assert not any(e.event_type == EventType.EVENT_TYPE_TIMER_STARTED for e in history.events)
        assert order_status("ord-1001") == "cancelled"

    async def test_run_cannot_loosen_a_supervised_profile(self, harness: Harness) -> None:
        async with harness.worker():
            handle = await harness.start({**CANCEL_1001, "autonomy": "autonomous"})
            status = await wait_pending(handle)
            assert status.pending_approvals[0].tool == "cancel_order"
            assert any(w.startswith("AUTONOMY_NOT_LOOSENED: the run asked for autonomous") for w in status.warnings)
            await signal_decision(handle, "reject", reviewer="bob")
            result = await handle.result()
        assert [a.status for a in result.approvals] == ["rejected"]
        assert order_status("ord-1001") == "processing"


class TestWorkerCrash:
    """A run waiting for a person outlives the worker that started the wait."""

    async def test_approval_after_the_worker_is_replaced(self, harness: Harness) -> None:
        async with harness.worker():
            handle = await harness.start(REFUND_4999)
            approval_id = (await wait_pending(handle)).pending_approvals[0].approval_id
        # No worker at all now; the decision waits in history until one comes back.
        await handle.signal("approve", {"approval_id": approval_id, "reviewer": "alice"})
        async with harness.worker():
            result = await handle.result()
        assert result.status == "success" and [a.reviewer for a in result.approvals] == ["alice"]
        assert [r["amount"] for r in shop.refunds_for("ord-789")] == [4999.0]

    @pytest.mark.slow
    async def test_approval_after_sigkill_of_a_worker_process(self, harness: Harness) -> None:
        address = harness.client.service_client.config.target_host
        worker = subprocess.Popen(
            [sys.executable, "worker.py"],
            cwd=ROOT,
            env=subprocess_env(harness.state, address, AGENT_TASK_QUEUE=harness.task_queue),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            handle = await harness.start(REFUND_4999)
            approval_id = (await wait_pending(handle)).pending_approvals[0].approval_id
            os.killpg(worker.pid, signal.SIGKILL)  # no shutdown, no goodbye to the server
            worker.wait(timeout=30)
        finally:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(timeout=30)
        async with harness.worker():
            await handle.signal("approve", {"approval_id": approval_id, "reviewer": "alice"})
            result = await handle.result()
        assert result.status == "success" and [a.status for a in result.approvals] == ["approved"]
        assert [r["amount"] for r in shop.refunds_for("ord-789")] == [4999.0]


class TestNotifyReviewer:
    """A webhook hears of each approval; a broken one delays nothing."""

    async def test_webhook_receives_the_approval(self, harness: Harness, webhook: Webhook) -> None:
        async with harness.worker(support(approval={"webhook_url": webhook.url})):
            handle = await harness.start(REFUND_4999)
            await wait_pending(handle)
            body = (await webhook.wait_for_posts())[0]
            approval_id = await signal_decision(handle, reviewer="alice")
            result = await handle.result()
        assert result.status == "success"
        assert webhook.paths == ["/hooks/approvals/s3cr3t"]
        assert body["event"] == "approval_requested" and body["workflow_id"] == handle.id and body["agent"] == "support"
        assert body["approval"]["approval_id"] == approval_id and body["approval"]["tool"] == "issue_refund"
        assert body["approval"]["args_sha256"] == signing.args_digest(body["approval"]["args"])
        assert body["approval"]["args"]["amount"] == 4999.0 and body["approval"]["reason"].startswith("amount 4999 USD")
        assert f"--workflow-id {handle.id} --name approve" in body["approve_command"]
        assert "webhook_url" not in body  # the URL (and any token in it) stays out of the body

    async def test_failing_webhook_does_not_block_the_approval(self, harness: Harness, failing_webhook: Webhook) -> None:
        async with harness.worker(support(approval={"webhook_url": failing_webhook.url})):
            handle = await harness.start(REFUND_4999)
            await wait_pending(handle)
            await failing_webhook.wait_for_posts()
            await signal_decision(handle, reviewer="alice")
            result = await handle.result()
            history = await handle.fetch_history()
        assert result.status == "success" and [a.status for a in result.approvals] == ["approved"]
        assert [r["amount"] for r in shop.refunds_for("ord-789")] == [4999.0]
        # The notification never completed, yet the run did.
        notify = [
            e.event_id
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
            and e.activity_task_scheduled_event_attributes.activity_type.name == "notify_reviewer"
        ]
        completed = {
            e.activity_task_completed_event_attributes.scheduled_event_id
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
        }
        assert len(notify) == 1 and notify[0] not in completed


class TestClients:
    """Other services: durable_agent.client, and plain temporalio by names only."""

    async def test_agent_client_runs_and_approves(self, harness: Harness) -> None:
        agents = AgentClient(harness.client, task_queue=harness.task_queue)
        with pytest.raises(pydantic.ValidationError, match="colour"):
            await agents.start_run("Refund order ord-789", colour="blue")
        async with harness.worker():
            run_id = await agents.start_run("Refund order ord-789", agent="support", max_steps=10)
            pending = await agents.wait_for_approval(run_id, poll_interval=0.1)
            assert APR_3.fullmatch(pending.approval_id) and pending.tool == "issue_refund"
            assert [p.approval_id for p in await agents.pending_approvals(run_id)] == [pending.approval_id]
            record = await agents.approve(run_id, pending.approval_id, reviewer="carol", comment="ok")
            with pytest.raises(ApprovalRefused, match="was already decided|no approval is pending"):
                await agents.reject(run_id, pending.approval_id, reviewer="carol")
            result = await agents.result(run_id)
            status = await agents.status(run_id)
            summary = await (await agents.handle(run_id).describe()).static_summary()
        assert (record.status, record.reviewer, record.comment) == ("approved", "carol", "ok")
        assert result.status == "success" and result.approvals == [record]
        assert status.phase == "done" and status.pending_approvals == []
        assert summary == "support: Refund order ord-789"  # what the UI's workflow list shows

    async def test_agent_client_result_of_a_failed_run(self, harness: Harness) -> None:
        from durable_agent.retry import ErrorKind
        from durable_agent.testing import fail

        model, _ = harness.scripted([fail(ErrorKind.INVALID_REQUEST, "the request is malformed")])
        agents = AgentClient(harness.client, task_queue=harness.task_queue)
        async with harness.worker():
            result = await agents.result(await agents.start_run("x", model=model))
        assert result.status == "failed" and "malformed" in (result.error or "")

    async def test_plain_temporalio_example(self, harness: Harness, capsys: pytest.CaptureFixture[str]) -> None:
        async with harness.worker():
            result = await plain_temporalio_client.main(harness.client, "Refund order ord-789", task_queue=harness.task_queue, poll_interval=0.1)
        assert result["status"] == "success"
        assert [(a["status"], a["reviewer"]) for a in result["approvals"]] == [("approved", "example-service")]
        approval_id = result["approvals"][0]["approval_id"]
        assert APR_3.fullmatch(approval_id)
        assert [r["amount"] for r in shop.refunds_for("ord-789")] == [4999.0]
        assert f"{approval_id}: approved by example-service" in capsys.readouterr().out
