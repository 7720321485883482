"""Approvals: an action the policy holds is not executed until a person decides.

Signals ``approve`` and ``reject`` and the update ``review`` decide a pending
approval; the run waits for a decision with a durable timer (the profile's
timeout), and notifies a reviewer through the ``notify_reviewer`` activity.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any, TypeVar

from pydantic import ValidationError
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from durable_agent import carry, contracts, inputs, policy
    from durable_agent.errors import validation_problems
    from durable_agent.schemas import ApprovalRecord, Decision, DecisionRecord, PendingApproval, ReviewerNotice, ReviewRequest, ToolCall

from durable_agent.workflows.records import RunRecords

#: A decision payload model: the signals' :class:`Decision` or the update's :class:`ReviewRequest`.
_DecisionT = TypeVar("_DecisionT", Decision, ReviewRequest)


class Approvals(RunRecords):
    """Pending approvals, the handlers that decide them, and waiting for a decision."""


    @workflow.signal(name=contracts.SIGNAL_APPROVE, description='Approve a pending action: {"approval_id": "...", "reviewer": "...", "comment": "..."} (approval_id optional when one is pending).')
    def approve(self, *payloads: Any) -> None:
        # Any number of payloads of any shape: a bad one is refused here, never by the SDK (see durable_agent.inputs).
        self._apply_signal(payloads, approved=True)

    @workflow.signal(name=contracts.SIGNAL_REJECT, description='Reject a pending action: {"approval_id": "...", "reviewer": "...", "comment": "..."} (approval_id optional when one is pending).')
    def reject(self, *payloads: Any) -> None:
        self._apply_signal(payloads, approved=False)

    @workflow.update(name=contracts.UPDATE_REVIEW, description='Decide a pending action and get the decided record: {"approval_id": "...", "approved": true, "reviewer": "...", "comment": "..."}.')
    def review(self, *payloads: Any) -> ApprovalRecord:
        request, approval_id = self._review_target(payloads)
        return self._decide(approval_id, request.approved, request.reviewer, request.comment)

    @review.validator
    def _validate_review(self, *payloads: Any) -> None:
        """Refuse a bad decision before it is accepted: the caller gets the reason, history stays clean."""
        try:
            self._review_target(payloads)
        except ApplicationError as exc:
            # Validators run only for new updates, never on replay, so this logs once.
            workflow.logger.warning("refused %s update: %s", contracts.UPDATE_REVIEW, exc.message)
            raise

    def _review_target(self, payloads: tuple[Any, ...]) -> tuple[ReviewRequest, str]:
        """The review request and the approval it decides, or a non-retryable refusal.

        An ``ApplicationError`` fails only the update (any other exception in the
        handler would fail the workflow task), and says to the caller that trying
        the same decision again cannot help.
        """
        try:
            request = self._parse_decision(ReviewRequest, payloads, contracts.UPDATE_REVIEW)
            return request, self._check_decision(request.approval_id, request.reviewer)
        except policy.DecisionRefused as exc:
            raise ApplicationError(str(exc), type="DecisionRefused", non_retryable=True) from None

    @staticmethod
    def _parse_decision(model: type[_DecisionT], payloads: tuple[Any, ...], handler: str) -> _DecisionT:
        """The decision in ``payloads`` (one JSON object; none means ``{}``), or a refusal naming what is wrong."""
        try:
            return model.model_validate(inputs.single_payload(payloads, handler))
        except inputs.PayloadRefused as exc:
            raise policy.DecisionRefused(f"invalid payload: {exc}") from None
        except ValidationError as exc:
            raise policy.DecisionRefused(f"invalid payload: {validation_problems(exc)}") from None

    def _apply_signal(self, payloads: tuple[Any, ...], *, approved: bool) -> None:
        name = contracts.SIGNAL_APPROVE if approved else contracts.SIGNAL_REJECT
        try:
            decision = self._parse_decision(Decision, payloads, name)
            approval_id = self._check_decision(decision.approval_id, decision.reviewer)
        except policy.DecisionRefused as exc:
            # A signal cannot answer its sender: the refusal goes to the log and the run's warnings.
            message = f"DECISION_REFUSED: {name} signal ignored: {exc}"
            workflow.logger.warning(message)
            self._warn(message)
            return
        self._decide(approval_id, approved, decision.reviewer, decision.comment)

    def _check_decision(self, approval_id: str | None, reviewer: str | None) -> str:
        """The pending approval a decision applies to (see :func:`durable_agent.policy.decision_target`)."""
        if self.agent is None:
            raise policy.DecisionRefused("no approval is pending")
        done = set(self.decided) | {record.approval_id for record in self.approvals}
        return policy.decision_target(list(self.pending), done, approval_id, reviewer, self.agent.approval)

    def _decide(self, approval_id: str, approved: bool, reviewer: str | None, comment: str | None) -> ApprovalRecord:
        pending = self.pending.pop(approval_id)
        record = ApprovalRecord(
            approval_id=approval_id,
            tool=pending.tool,
            status="approved" if approved else "rejected",
            reviewer=reviewer,
            comment=comment,
            decided_at=workflow.now(),
        )
        self.decided[approval_id] = record
        return record

    # --------------------------------------------------------------------- run

    async def _wait_for_approval(self, call: ToolCall, index: int, decision: policy.PolicyDecision) -> ApprovalRecord:
        """Hold ``call`` until a reviewer decides or its deadline passes; return the outcome.

        The first approval of a turn also opens those of the turn's later calls that
        need one, so a reviewer sees every held action of the turn at once (each with
        its own id) and their deadlines run together rather than one after another.
        """
        assert self.agent is not None
        approval_id = self._approval_id(index)
        if approval_id not in self.pending and approval_id not in self.decided:
            self._open_approval(call, index, decision)
            same_turn = index < len(self.turn_calls) and self.turn_calls[index].id == call.id
            # Runs begun before approvals opened per turn replay as they ran: one at a time.
            if same_turn and index + 1 < len(self.turn_calls) and workflow.patched("approvals-opened-per-turn"):
                for later, other in enumerate(self.turn_calls[index + 1 :], start=index + 1):
                    info = self.agent.tool(other.name)
                    verdict = policy.evaluate(info, other.args, self.autonomy, self.agent.approval) if info else None
                    if verdict is not None and verdict.verdict == "needs_approval":
                        self._open_approval(other, later, verdict)
        pending = self.pending.get(approval_id)
        try:
            if pending is not None:  # else it was decided while an earlier action of the turn waited
                self.phase = "waiting_for_approval"
                self.waiting_for = f"approval {approval_id}"
                self._show_pending()
                remaining = (pending.deadline - workflow.now()).total_seconds()
                if remaining <= 0:
                    raise asyncio.TimeoutError
                await workflow.wait_condition(
                    lambda: approval_id in self.decided, timeout=remaining, timeout_summary=f"approval {approval_id} deadline"
                )
            record = self.decided[approval_id]
        except asyncio.TimeoutError:
            self.pending.pop(approval_id, None)
            record = ApprovalRecord(approval_id=approval_id, tool=call.name, status="timed_out", decided_at=workflow.now())
        finally:
            self.waiting_for = None
        notify = self._notifications.pop(approval_id, None)
        if notify is not None and not notify.done():
            notify.cancel()
        self.approvals.append(record)
        return record

    def _approval_id(self, index: int) -> str:
        """``apr-<step>`` for a turn's first call, ``apr-<step>-<n>`` for its n-th: unique within a run."""
        return f"apr-{self.step}" + (f"-{index + 1}" if index else "")

    def _open_approval(self, call: ToolCall, index: int, decision: policy.PolicyDecision) -> None:
        """Record ``call`` as pending (with the last steps for context and its deadline) and notify a reviewer."""
        assert self.agent is not None
        approval_id = self._approval_id(index)
        now = workflow.now()
        pending = PendingApproval(
            approval_id=approval_id,
            tool=call.name,
            args=call.args,
            risk=decision.risk,
            reason=decision.reason,
            requested_at=now,
            deadline=now + timedelta(seconds=self.agent.approval.timeout_seconds),
            context=[r.model_dump(mode="json", include={"step", "action", "observation"}) for r in self._approval_context()],
        )
        self.pending[approval_id] = pending
        info = workflow.info()
        # Tell a human; the activity retries a failing webhook, and nothing waits for it.
        self._notifications[approval_id] = workflow.start_activity(
            contracts.ACTIVITY_NOTIFY_REVIEWER,
            ReviewerNotice(
                workflow_id=info.workflow_id,
                namespace=info.namespace,
                agent=self.agent.name,
                approval=pending,
                approve_command=policy.approve_command(info.workflow_id, approval_id, namespace=info.namespace),
                webhook_url=self.agent.approval.webhook_url,
            ),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_attempts=5, initial_interval=timedelta(seconds=2)),
            summary=f"notify reviewer: {approval_id}",
        )

    def _approval_context(self) -> list[DecisionRecord]:
        """The last steps, for the reviewer, with large arguments cut: the notice must stay under Temporal's payload limit."""
        records = self.trace[-3:]
        compacted = [carry.compact_record(record) for record in records]
        # Runs that opened an approval with a large context before the cut replay as they ran.
        if any(c is not r for c, r in zip(compacted, records)) and workflow.patched("approval-context-bounded"):
            return compacted
        return records

    def _show_pending(self) -> None:
        """The run's current details in the Temporal UI: what waits, why, until when, and how to approve it."""
        info = workflow.info()
        blocks = [
            f"**Waiting for approval** `{p.approval_id}`: {p.tool} `{json.dumps(p.args, sort_keys=True)}`\n\n"
            f"Why: {p.reason} (risk {p.risk}). Deadline: {p.deadline.isoformat()}.\n\n"
            f"Approve: `{policy.approve_command(info.workflow_id, p.approval_id, namespace=info.namespace)}`\n\n"
            f"Reject: the same with `--name reject`. Or use More Actions > Send a Signal here."
            for p in self.pending.values()
        ]
        self._details("\n\n".join(blocks))
