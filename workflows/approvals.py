"""Approvals: an action the policy holds is not executed until a person decides.

Signals ``approve`` and ``reject`` and the update ``review`` decide a pending
approval; the run waits for a decision with a durable timer (the profile's
timeout), and notifies a reviewer through the ``notify_reviewer`` activity.

A decision is bound to one action: it names the approval id (unique across the
executions of a workflow id), may carry the digest of the arguments it was made
for, and is used once (:mod:`durable_agent.decisions`). A profile with
``require_signature`` takes only ``review`` updates signed with Ed25519; the run
checks them against the reviewer keyring that the ``reviewer_keyring`` activity
reads from the worker's configuration at decision time, so a reviewer or key
revoked while the run waits no longer counts. Every refusal leaves the run
waiting and is listed in its warnings.

For other parts of the workflow (e.g. an anomaly rule that pauses the run),
:meth:`Approvals._request_decision` opens a held decision of any kind and waits for it.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any, TypeVar

from pydantic import ValidationError
from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from durable_agent import carry, contracts, decisions, inputs, policy, signing
    from durable_agent.errors import failure_message, validation_problems
    from durable_agent.schemas import (
        ApprovalRecord,
        Decision,
        DecisionRecord,
        KeyringRequest,
        PendingApproval,
        ReviewerKeyring,
        ReviewerNotice,
        ReviewRequest,
        ToolCall,
    )

from durable_agent.workflows.records import RunRecords

#: A decision payload model: the signals' :class:`Decision` or the update's :class:`ReviewRequest`.
_DecisionT = TypeVar("_DecisionT", Decision, ReviewRequest)

#: Patch: approval ids unique across executions (``apr-3-1a2b3c4d``); runs begun before keep ``apr-3``.
PATCH_UNIQUE_IDS = "approval-ids-unique"
#: Patch: a decision must name its approval. Decisions replayed from before it keep the old leniency.
PATCH_BOUND_DECISIONS = "bound-decisions"
#: Reading the keyring at decision time: quick, and a few tries while a worker is busy.
KEYRING_TIMEOUT = timedelta(seconds=15)
KEYRING_RETRY = RetryPolicy(maximum_attempts=3, initial_interval=timedelta(seconds=1))

_DESCRIBE_DECISION = '{"approval_id": "...", "reviewer": "...", "comment": "..."}; approval_id is required'


class Approvals(RunRecords):
    """Pending approvals, the handlers that decide them, and waiting for a decision."""

    @workflow.signal(name=contracts.SIGNAL_APPROVE, description=f"Approve a pending action: {_DESCRIBE_DECISION}.")
    def approve(self, *payloads: Any) -> None:
        # Any number of payloads of any shape: a bad one is refused here, never by the SDK (see durable_agent.inputs).
        self._apply_signal(payloads, approved=True)

    @workflow.signal(name=contracts.SIGNAL_REJECT, description=f"Reject a pending action: {_DESCRIBE_DECISION}.")
    def reject(self, *payloads: Any) -> None:
        self._apply_signal(payloads, approved=False)

    @workflow.update(
        name=contracts.UPDATE_REVIEW,
        description='Decide a pending action and get the decided record: {"approval_id": "...", "approved": true, '
        '"reviewer": "...", "comment": "..."}; signed decisions add "run_id", "args_sha256" and "signature".',
    )
    async def review(self, *payloads: Any) -> ApprovalRecord:
        request = self._review_request(payloads)
        if not self._signatures_required():
            target = self._review_target(request, require_id=workflow.patched(PATCH_BOUND_DECISIONS))
            return self._decide(target.approval_id, request.approved, request.reviewer, request.comment)
        try:
            target = await self._check_signed(request)
        except decisions.DecisionRefused as exc:
            raise self._refused(f"{contracts.UPDATE_REVIEW} update refused", exc) from None
        return self._decide(target.approval_id, request.approved, request.reviewer, request.comment)

    @review.validator
    def _validate_review(self, *payloads: Any) -> None:
        """Refuse a bad decision before it is accepted: the caller gets the reason, history stays clean.

        Signed decisions are only parsed here: whether they count depends on the
        keyring as it is now, which the handler reads; their refusals are listed.
        """
        try:
            request = self._review_request(payloads)
            if not self._signatures_required():
                self._review_target(request, require_id=True)
        except ApplicationError as exc:
            # Validators run only for new updates, never on replay, so this logs once.
            workflow.logger.warning("refused %s update: %s", contracts.UPDATE_REVIEW, exc.message)
            raise

    def _review_request(self, payloads: tuple[Any, ...]) -> ReviewRequest:
        try:
            return self._parse_decision(ReviewRequest, payloads, contracts.UPDATE_REVIEW)
        except decisions.DecisionRefused as exc:
            raise ApplicationError(str(exc), type="DecisionRefused", non_retryable=True) from None

    def _review_target(self, request: ReviewRequest, *, require_id: bool) -> PendingApproval:
        """The approval an unsigned review decides, or a non-retryable refusal.

        An ``ApplicationError`` fails only the update (any other exception in the
        handler would fail the workflow task), and says to the caller that trying
        the same decision again cannot help.
        """
        try:
            return self._target(request.approval_id, request.reviewer, request.args_sha256, require_id=require_id)
        except decisions.DecisionRefused as exc:
            raise ApplicationError(str(exc), type="DecisionRefused", non_retryable=True) from None

    @staticmethod
    def _parse_decision(model: type[_DecisionT], payloads: tuple[Any, ...], handler: str) -> _DecisionT:
        """The decision in ``payloads`` (one JSON object; none means ``{}``), or a refusal naming what is wrong."""
        try:
            return model.model_validate(inputs.single_payload(payloads, handler))
        except inputs.PayloadRefused as exc:
            raise decisions.DecisionRefused(f"invalid payload: {exc}") from None
        except ValidationError as exc:
            raise decisions.DecisionRefused(f"invalid payload: {validation_problems(exc)}") from None

    def _apply_signal(self, payloads: tuple[Any, ...], *, approved: bool) -> None:
        name = contracts.SIGNAL_APPROVE if approved else contracts.SIGNAL_REJECT
        try:
            decision = self._parse_decision(Decision, payloads, name)
            if self._signatures_required():
                raise decisions.DecisionRefused(
                    "this agent requires signed decisions: decide with `durable-agent approve ... --key FILE` or in the reviewer inbox"
                )
            require_id = workflow.patched(PATCH_BOUND_DECISIONS)
            target = self._target(decision.approval_id, decision.reviewer, decision.args_sha256, require_id=require_id)
        except decisions.DecisionRefused as exc:
            # A signal cannot answer its sender: the refusal goes to the log and the run's warnings.
            self._refused(f"{name} signal ignored", exc)
            return
        self._decide(target.approval_id, approved, decision.reviewer, decision.comment)

    def _refused(self, what: str, exc: decisions.DecisionRefused) -> ApplicationError:
        """Log and list a refused decision; the error that fails an update with the reason."""
        message = f"DECISION_REFUSED: {what}: {exc}"
        workflow.logger.warning(message)
        self._warn(message)
        return ApplicationError(str(exc), type="DecisionRefused", non_retryable=True)

    def _signatures_required(self) -> bool:
        return self.agent is not None and self.agent.approval.require_signature

    def _target(self, approval_id: str | None, reviewer: str | None, args_sha256: str | None, *, require_id: bool) -> PendingApproval:
        """The pending approval a decision applies to (see :func:`durable_agent.decisions.decision_target`)."""
        if self.agent is None:
            raise decisions.DecisionRefused("no approval is pending")
        done = {record.approval_id: record for record in self.approvals} | self.decided
        # Signed decisions are checked against the keyring read at decision time, not the run's copy.
        allow_list = None if self._signatures_required() else self.agent.approval
        return decisions.decision_target(
            self.pending, done, approval_id, reviewer, allow_list, args_sha256=args_sha256, require_id=require_id
        )

    async def _check_signed(self, request: ReviewRequest) -> PendingApproval:
        """The approval a signed review decides, once its binding, reviewer and signature check out.

        Raises:
            decisions.DecisionRefused: see :func:`durable_agent.decisions.check_binding` and ``check_signer``.
        """
        assert self.agent is not None
        target = self._target(request.approval_id, request.reviewer, request.args_sha256, require_id=True)
        decisions.check_binding(request, target, now=workflow.now())
        try:
            keyring = await workflow.execute_activity(
                contracts.ACTIVITY_REVIEWER_KEYRING,
                KeyringRequest(agent=self.agent.name),
                result_type=ReviewerKeyring,
                start_to_close_timeout=KEYRING_TIMEOUT,
                retry_policy=KEYRING_RETRY,
                summary=f"reviewer keys for {request.approval_id}",
            )
        except ActivityError as exc:
            raise decisions.DecisionRefused(f"the reviewer keys could not be read: {failure_message(exc)}") from None
        info = workflow.info()
        decisions.check_signer(request, target, keyring, namespace=info.namespace, workflow_id=info.workflow_id)
        # Still waiting? It may have been decided or timed out while the keys were read.
        return self._target(request.approval_id, request.reviewer, request.args_sha256, require_id=True)

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
        record = await self._hold(approval_id, call.name)
        self.approvals.append(record)
        return record

    async def _request_decision(self, kind: str, args: dict[str, Any], *, reason: str, risk: str = "high") -> ApprovalRecord:
        """Hold the run for a person's decision of kind ``kind`` (e.g. ``"pause"``) and wait for it.

        The internal API for holds other than a tool call's: the decision is listed
        (``tool`` is ``kind``), notified, and decided like any approval, by the same
        handlers and rules (signatures included), under the id ``<kind>-<step>-<tag>``.
        Its outcome joins the run's ``approvals``. It adds commands to the history (a
        notification, a timer): callers guard a new use with ``workflow.patched``.
        """
        base = decisions.approval_id(self.step, 0, workflow.info().first_execution_run_id).replace("apr-", f"{kind}-", 1)
        taken = set(self.pending) | set(self.decided) | {record.approval_id for record in self.approvals}
        approval_id = base
        for n in range(2, len(taken) + 3):
            if approval_id not in taken:
                break
            approval_id = f"{base}-{n}"
        self._open_hold(approval_id, kind, args, risk=risk, reason=reason)
        record = await self._hold(approval_id, kind)
        self.approvals.append(record)
        return record

    async def _hold(self, approval_id: str, what: str) -> ApprovalRecord:
        """Wait until the open approval ``approval_id`` is decided or its deadline passes; return the outcome.

        The internal API for any held decision: open one with :meth:`_open_hold`
        (for a tool call, :meth:`_open_approval` does), then await this. It does not
        add the outcome to the run's ``approvals``; the caller decides that.
        """
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
            record = ApprovalRecord(approval_id=approval_id, tool=what, status="timed_out", decided_at=workflow.now())
            self.decided[approval_id] = record  # a later decision naming it is told it timed out
        finally:
            self.waiting_for = None
        notify = self._notifications.pop(approval_id, None)
        if notify is not None and not notify.done():
            notify.cancel()
        if not self.pending:
            self._mark_awaiting(False)
        return record

    def _approval_id(self, index: int) -> str:
        """``apr-<step>[-<n>]-<tag>``, unique across executions of the workflow id (older runs: ``apr-<step>[-<n>]``)."""
        if workflow.patched(PATCH_UNIQUE_IDS):
            return decisions.approval_id(self.step, index, workflow.info().first_execution_run_id)
        return f"apr-{self.step}" + (f"-{index + 1}" if index else "")

    def _open_approval(self, call: ToolCall, index: int, decision: policy.PolicyDecision) -> None:
        """Record ``call`` as pending (with the last steps for context and its deadline) and notify a reviewer."""
        assert self.agent is not None
        info = self.agent.tool(call.name)
        amount = policy.amount_of(call.args, info.amount_arg if info else None)
        currency = call.args.get(info.currency_arg) if info and info.currency_arg else None
        self._open_hold(
            self._approval_id(index),
            call.name,
            call.args,
            risk=decision.risk,
            reason=decision.reason,
            amount=amount,
            currency=currency if isinstance(currency, str) else None,
        )

    def _open_hold(
        self,
        approval_id: str,
        what: str,
        args: dict[str, Any],
        *,
        risk: str,
        reason: str,
        amount: float | None = None,
        currency: str | None = None,
    ) -> PendingApproval:
        """Open a held decision named ``approval_id`` about ``what`` (a tool, or another kind of hold).

        It is listed in the ``status`` query and the inbox, a reviewer is notified,
        and the same rules decide it as a tool call's approval. Await :meth:`_hold`.
        """
        assert self.agent is not None
        now = workflow.now()
        info = workflow.info()
        pending = PendingApproval(
            approval_id=approval_id,
            run_id=info.run_id,
            tool=what,
            args=args,
            args_sha256=signing.args_digest(args),
            amount=amount,
            currency=currency,
            risk=risk,
            reason=reason,
            requested_at=now,
            deadline=now + timedelta(seconds=self.agent.approval.timeout_seconds),
            context=[r.model_dump(mode="json", include={"step", "action", "observation"}) for r in self._approval_context()],
            require_signature=self.agent.approval.require_signature,
        )
        self.pending[approval_id] = pending
        self._mark_awaiting(True)
        # Tell a human; the activity retries a failing webhook, and nothing waits for it.
        self._notifications[approval_id] = workflow.start_activity(
            contracts.ACTIVITY_NOTIFY_REVIEWER,
            ReviewerNotice(
                workflow_id=info.workflow_id,
                namespace=info.namespace,
                agent=self.agent.name,
                approval=pending,
                approve_command=self._approve_command(approval_id),
                require_signature=self.agent.approval.require_signature,
            ),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_attempts=5, initial_interval=timedelta(seconds=2)),
            summary=f"notify reviewer: {approval_id}",
        )
        return pending

    def _mark_awaiting(self, waiting: bool) -> None:
        """Mark the run for the reviewer inbox (the search attribute), when the namespace has it."""
        assert self.agent is not None
        if self.agent.approval_index is None:
            return  # runs resolved without it (or before it existed) never set it
        workflow.upsert_search_attributes([SearchAttributeKey.for_bool(self.agent.approval_index).value_set(waiting)])

    def _approve_command(self, approval_id: str) -> str:
        info = workflow.info()
        if self._signatures_required():
            return policy.signed_approve_command(info.workflow_id, approval_id)
        return policy.approve_command(info.workflow_id, approval_id, namespace=info.namespace)

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
        assert self.agent is not None
        how = (
            "Reject: add `--reject`. Or decide in the reviewer inbox."
            if self._signatures_required()
            else "Reject: the same with `--name reject`. Or use More Actions > Send a Signal here."
        )
        blocks = [
            f"**Waiting for approval** `{p.approval_id}`: {p.tool} `{json.dumps(p.args, sort_keys=True)}`\n\n"
            f"Why: {p.reason} (risk {p.risk}). Deadline: {p.deadline.isoformat()}.\n\n"
            f"Run `{p.run_id}`, args_sha256 `{p.args_sha256}`.\n\n"
            f"Approve: `{self._approve_command(p.approval_id)}`\n\n{how}"
            for p in self.pending.values()
        ]
        self._details("\n\n".join(blocks))
