"""Decisions at the edges of a run, on a real Temporal server: one outcome per approval, told to its reviewer.

- A ``review`` update that arrives as the approval's deadline fires gets the
  outcome the run records: approved (and the action runs), or refused as timed
  out; never "approved" while the run records ``timed_out``.
- The run ends only once its update handlers have finished: a signed review still
  reading the keyring when the run ends is answered with its outcome, not with
  ``AcceptedUpdateCompletedWorkflow``.
- On a profile that requires signatures, the validator refuses what the binding
  check refuses (unsigned, expired, another run or other arguments) before
  anything is written to the history.
- The ``AgentAwaitingApproval`` mark is cleared on every end the run sees.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError, WorkflowUpdateStage
from temporalio.common import SearchAttributeKey
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from durable_agent import contracts, signing
from durable_agent.activities.approvals import ApprovalActivities
from durable_agent.cli.worker import create_worker
from durable_agent.demo import shop
from durable_agent.profiles import load_config
from durable_agent.schemas import ApprovalRecord
from tests.conftest import Harness
from tests.test_approvals import REFUND_4999, support, wait_pending
from tests.test_signed_approvals import people, sign, signed_profile  # noqa: F401 - people is a fixture

AWAITING = SearchAttributeKey.for_bool(contracts.SEARCH_ATTRIBUTE_AWAITING_APPROVAL)


async def review_outcome(handle: WorkflowHandle[Any, Any], payload: dict[str, Any]) -> str:
    """Send ``review``; ``approved`` when it says so, else the refusal's message."""
    try:
        record = await handle.execute_update("review", payload, result_type=ApprovalRecord)
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        return f"refused: {cause.message if isinstance(cause, ApplicationError) else repr(cause)}"
    return record.status


async def sleep_until(moment: datetime) -> None:
    await asyncio.sleep(max(0.0, moment.timestamp() - time.time()))


def accepted_updates(events: list[Any]) -> int:
    return sum(1 for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED)


class TestReviewAtTheDeadline:
    """A review and the approval's deadline in the same moment: the reviewer is told what the run records."""

    async def test_a_review_in_the_deadlines_workflow_task_stands(self, harness: Harness) -> None:
        """Deterministic: the deadline fires while no worker runs; the review then lands in the same workflow task."""
        async with harness.worker(support(approval={"timeout_seconds": 3})):
            handle = await harness.start(REFUND_4999)
            pending = (await wait_pending(handle)).pending_approvals[0]
        await sleep_until(pending.deadline)
        await asyncio.sleep(1.0)  # the timer has fired on the server; its workflow task waits for a worker
        payload = {"approval_id": pending.approval_id, "approved": True, "reviewer": "alice", "args_sha256": pending.args_sha256}
        sent = asyncio.ensure_future(
            handle.start_update("review", payload, wait_for_stage=WorkflowUpdateStage.ACCEPTED, result_type=ApprovalRecord)
        )
        await asyncio.sleep(0.5)
        async with harness.worker(support(approval={"timeout_seconds": 3})):
            update = await sent
            told = await update.result()
            result = await handle.result()
        [recorded] = result.approvals
        assert (told.status, recorded.status) == ("approved", "approved")
        assert [r["amount"] for r in shop.refunds_for("ord-789")] == [4999.0]

    async def test_a_signed_review_checked_as_the_deadline_fires_gets_the_runs_outcome(
        self, harness: Harness, tmp_path: Path, people: dict[str, signing.SigningKey], monkeypatch: pytest.MonkeyPatch,  # noqa: F811
    ) -> None:
        """Deterministic: the keyring's answer and the deadline reach the run in one workflow task.

        The review is accepted and its handler reads the keyring; the workflow worker
        stops; the deadline passes and the keyring answers; a workflow worker comes back.
        """
        path, _ = signed_profile(tmp_path, people)
        path.write_text(path.read_text().replace("timeout_seconds = 300", "timeout_seconds = 4"))
        config = load_config(path)
        reading, answer = threading.Event(), threading.Event()
        read_keyring = ApprovalActivities._current

        def gated_keyring(self: ApprovalActivities) -> Any:
            reading.set()
            answer.wait(60)  # in a thread: the test says when the keyring answers
            return read_keyring(self)

        monkeypatch.setattr(ApprovalActivities, "_current", gated_keyring)
        # Built for another queue (a worker registers as it is made), then split into workflow and activity workers.
        group = create_worker(harness.client, config, task_queue=f"{harness.task_queue}-template", store=harness.store, max_cached_workflows=0)
        settings = {**group.agents.config(), "task_queue": harness.task_queue}

        def workflows_only() -> Worker:
            return Worker(**{**settings, "activities": [], "interceptors": []})  # type: ignore[misc]

        async with Worker(**{**settings, "workflows": []}):  # type: ignore[misc]
            async with workflows_only():
                handle = await harness.start(REFUND_4999)
                target = (await wait_pending(handle)).pending_approvals[0]
                review = sign(people["alice"], handle, target).model_dump(mode="json", exclude_none=True)
                said = asyncio.ensure_future(review_outcome(handle, review))
                await asyncio.to_thread(reading.wait, 60)
            await sleep_until(target.deadline)
            await asyncio.sleep(1.0)  # the deadline's timer has fired: its workflow task waits for a worker
            answer.set()
            await asyncio.sleep(1.0)  # the keyring's answer joins that workflow task
            async with workflows_only():
                told = await said
                result = await handle.result()
        [recorded] = result.approvals
        refunds = [r["amount"] for r in shop.refunds_for("ord-789")]
        if told == "approved":
            assert recorded.status == "approved" and refunds == [4999.0], (told, recorded)
        else:
            assert recorded.status == "timed_out" and "timed out" in told and refunds == [], (told, recorded)

    async def test_reviews_around_a_short_deadline_match_the_run(self, harness: Harness) -> None:
        """Many runs, each reviewed a few milliseconds before or after its deadline."""
        offsets = [-0.04, -0.02, -0.01, 0.0, 0.005, 0.01, 0.02, 0.04]
        async with harness.worker(support(approval={"timeout_seconds": 10})):  # time enough to open all of them
            handles = [await harness.start(REFUND_4999) for _ in offsets]
            targets = [status.pending_approvals[0] for status in await asyncio.gather(*(wait_pending(h) for h in handles))]

            async def review_at(handle: WorkflowHandle[Any, Any], approval: Any, offset: float) -> str:
                await asyncio.sleep(max(0.0, approval.deadline.timestamp() + offset - time.time()))
                return await review_outcome(handle, {"approval_id": approval.approval_id, "approved": True, "reviewer": "alice"})

            told = await asyncio.gather(*(review_at(h, t, o) for h, t, o in zip(handles, targets, offsets)))
            results = [await h.result() for h in handles]
        for said, result, target in zip(told, results, targets):
            [recorded] = result.approvals
            assert recorded.approval_id == target.approval_id
            if said == "approved":
                assert recorded.status == "approved" and "issue_refund" in result.tools_used, (said, recorded)
            else:
                assert recorded.status == "timed_out" and "timed out" in said, (said, recorded)
                assert "issue_refund" not in result.tools_used


class TestTheRunWaitsForItsHandlers:
    """A run never completes under a reviewer's update."""

    async def test_a_signed_review_still_checking_at_the_deadline_is_told_it_timed_out(
        self, harness: Harness, tmp_path: Path, people: dict[str, signing.SigningKey], monkeypatch: pytest.MonkeyPatch,  # noqa: F811
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        path, _ = signed_profile(tmp_path, people)
        path.write_text(path.read_text().replace("timeout_seconds = 300", "timeout_seconds = 3"))
        config = load_config(path)
        read_keyring = ApprovalActivities._current

        def slow_keyring(self: ApprovalActivities) -> Any:
            time.sleep(5)  # a keyring on a slow disk or network share (this runs in a thread)
            return read_keyring(self)

        monkeypatch.setattr(ApprovalActivities, "_current", slow_keyring)
        caplog.set_level(logging.WARNING)
        async with harness.worker(config):
            handle = await harness.start(REFUND_4999)
            target = (await wait_pending(handle)).pending_approvals[0]
            # A second before the deadline: accepted, then still reading the keyring when the deadline fires.
            await asyncio.sleep(max(0.0, target.deadline.timestamp() - 1.0 - time.time()))
            said = await review_outcome(handle, sign(people["alice"], handle, target).model_dump(mode="json", exclude_none=True))
            result = await handle.result()
        [recorded] = result.approvals
        assert recorded.status == "timed_out"
        assert said.startswith("refused: ") and "timed out" in said, said
        assert "AcceptedUpdateCompletedWorkflow" not in said
        assert not [r for r in caplog.records if "TMPRL1102" in r.getMessage()]
        assert shop.refunds_for("ord-789") == []


class TestTheValidatorRefusesBeforeHistory:
    """require_signature: what the binding check refuses never reaches the history."""

    async def test_a_storm_of_unsigned_reviews_writes_nothing(
        self, harness: Harness, tmp_path: Path, people: dict[str, signing.SigningKey]  # noqa: F811
    ) -> None:
        _, config = signed_profile(tmp_path, people)
        async with harness.worker(config):
            handle = await harness.start(REFUND_4999)
            target = (await wait_pending(handle)).pending_approvals[0]
            before = accepted_updates((await handle.fetch_history()).events)
            unsigned = {"approval_id": target.approval_id, "approved": True, "reviewer": "alice"}
            told: list[str] = []
            for _ in range(50):  # the server lets 10 updates be in flight at once
                told += await asyncio.gather(*(review_outcome(handle, unsigned) for _ in range(6)))
            alice = people["alice"]
            bound_wrong = {
                "expired": sign(alice, handle, target, expires_at=int(time.time()) - 5),
                "another run": sign(alice, handle, target.model_copy(update={"run_id": "0000-another-run"})),
                "other arguments": sign(alice, handle, target.model_copy(update={"args_sha256": signing.args_digest({"amount": 1})})),
            }
            wrong = {name: await review_outcome(handle, r.model_dump(mode="json", exclude_none=True)) for name, r in bound_wrong.items()}
            history = await handle.fetch_history()
            status = await wait_pending(handle)
            good = sign(alice, handle, target).model_dump(mode="json", exclude_none=True)
            approved = await review_outcome(handle, good)
            result = await handle.result()
        assert len(told) == 300 and set(told) == {
            "refused: this agent requires signed decisions: decide with `durable-agent approve ... --key FILE` or in the reviewer inbox"
        }
        assert "the decision expired at" in wrong["expired"]
        assert "the decision is for run 0000-another-run" in wrong["another run"]
        assert "args_sha256 does not match" in wrong["other arguments"]
        assert accepted_updates(history.events) == before == 0
        assert [p.approval_id for p in status.pending_approvals] == [target.approval_id]
        assert approved == "approved" and [a.status for a in result.approvals] == ["approved"]


async def awaiting_mark(handle: WorkflowHandle[Any, Any], expected: bool, timeout: float = 30.0) -> bool | None:
    """The run's ``AgentAwaitingApproval`` once it is ``expected``, or as it is after ``timeout`` seconds.

    ``describe`` may show a search attribute a moment after the workflow task that set it
    (the server's visibility store catches up on its own): under load the first look missed it.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        mark = (await handle.describe()).typed_search_attributes.get(AWAITING)
        if mark is expected or loop.time() > deadline:
            return mark
        await asyncio.sleep(0.1)


class TestTheAwaitingMarkIsCleared:
    """``AgentAwaitingApproval`` is false once the run has ended, however it ended."""

    async def test_after_a_timeout(self, harness: Harness) -> None:
        async with harness.worker(support(approval={"timeout_seconds": 1})):
            handle = await harness.start(REFUND_4999)
            await wait_pending(handle)
            marked = await awaiting_mark(handle, True)
            result = await handle.result()
            after = await awaiting_mark(handle, False)
        assert [a.status for a in result.approvals] == ["timed_out"]
        assert (marked, after) == (True, False)

    async def test_after_a_cancel_while_an_approval_waits(self, harness: Harness) -> None:
        async with harness.worker():
            handle = await harness.start(REFUND_4999)
            await wait_pending(handle)
            marked = await awaiting_mark(handle, True)
            await handle.cancel()
            result = await handle.result()
            after = await awaiting_mark(handle, False)
        assert result.status == "cancelled"
        assert (marked, after) == (True, False)
