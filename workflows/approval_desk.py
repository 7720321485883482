"""The approval desk: held actions wait here for a person's decision, and decisions come in here.

An action the policy holds is not executed until a person decides. The desk
lists what waits (the ``status`` query, the reviewer inbox), notifies a reviewer
through the ``notify_reviewer`` activity, and waits for a decision with a durable
timer (the profile's timeout). Two things are held:

- a tool call (:meth:`ApprovalDesk.hold_tool_call`): the first held call of a turn
  opens every held call of the turn at once, so a reviewer sees them together;
- the run itself (:meth:`ApprovalDesk.hold_run`), e.g. when an anomaly rule pauses it.

Decisions come in through the signals ``approve`` and ``reject`` and the update
``review`` (:mod:`.decision_intake` parses and checks them). A decision is bound
to one action: it names the approval id (unique across the executions of a
workflow id), may carry the digest of the arguments it was made for, and is used
once (:meth:`ApprovalDesk.target`, :mod:`durable_agent.decisions`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey

with workflow.unsafe.imports_passed_through():
    from durable_agent import carry, contracts, decisions, money, policy, signing, telemetry
    from durable_agent.errors import failure_message
    from durable_agent.carry import CARRIED_APPROVALS, CarriedState
    from durable_agent.schemas import (
        ApprovalRecord,
        DecisionRecord,
        PendingApproval,
        ReviewerNotice,
        ToolCall,
        ToolInfo,
    )

from durable_agent.workflows.host import Host, is_cancellation
from durable_agent.workflows.progress import RunPhase
from durable_agent.workflows.settings import RunSettings

#: Patch: approval ids unique across executions (``apr-3-1a2b3c4d``); runs begun before keep ``apr-3``.
PATCH_UNIQUE_IDS = "approval-ids-unique"
#: Patch: the first held call of a turn opens the turn's other held calls too.
PATCH_OPENED_PER_TURN = "approvals-opened-per-turn"
#: Patch: the context shown to a reviewer has large arguments cut.
PATCH_CONTEXT_BOUNDED = "approval-context-bounded"
#: Patch: what waits is also in the run's memo, so the inbox lists it without querying (and replaying) each run.
PATCH_PENDING_IN_MEMO = "pending-approvals-in-memo"
#: Patch: a decision recorded in the same workflow task as its deadline stands (runs before: the deadline overwrote it).
PATCH_DECISION_BEATS_DEADLINE = "approval-decision-kept-at-deadline"
#: Patch: a run that ends with its approval mark set clears it (cancelled or failed while an approval waited).
PATCH_MARK_CLEARED_ON_CLOSE = "approval-mark-cleared-on-close"
#: Records shown to a reviewer as the context of a held action.
CONTEXT_RECORDS = 3


class ApprovalDesk:
    """What waits for a person, what was decided, and the run's approval records.

    Args:
        host: The workflow (clock, ids, activities, timers).
        settings: The run's profile (approval policy, tools) and autonomy.
        phase: Waiting shows as ``waiting_for_approval``.
        warn: Where refused decisions are listed (the record book's warnings).
        context: The latest decision records, shown to a reviewer with a held action.
        show: Writes the run's current details (what waits, and how to decide it).
    """

    def __init__(
        self,
        host: Host,
        settings: RunSettings,
        phase: RunPhase,
        warn: Callable[[str], None],
        context: Callable[[int], list[DecisionRecord]],
        show: Callable[[str], None],
    ) -> None:
        self._host = host
        self._settings = settings
        self._phase = phase
        self._warn = warn
        self._context = context
        self._show = show
        #: Held actions waiting for a decision, by approval id, oldest first.
        self._pending: dict[str, PendingApproval] = {}
        #: Decisions taken (and timeouts), by approval id, until the waiting action picks them up.
        self._decided: dict[str, ApprovalRecord] = {}
        #: The run's approval records, in order (a continuation lists the latest; the rest are counted).
        self._records: list[ApprovalRecord] = []
        self._records_unlisted = 0
        self._notifications: dict[str, workflow.ActivityHandle[Any]] = {}
        #: Pending approvals counted in the ``agent.approvals.waiting`` metric.
        self._counted = 0
        #: Whether the run's ``AgentAwaitingApproval`` mark is set now (cleared when the run closes).
        self._marked = False
        #: The run has ended: it takes no more decisions.
        self._closed = False
        #: Called as the run starts to wait for a decision (the record book writes what it holds).
        self.before_waiting: Callable[[], None] = lambda: None

    # ----------------------------------------------------------------- views

    def pending(self) -> list[PendingApproval]:
        """What waits for a decision now, oldest first."""
        return list(self._pending.values())

    def records(self) -> list[ApprovalRecord]:
        """The run's approval records (approved, rejected, timed out), in order."""
        return list(self._records)

    @property
    def records_unlisted(self) -> int:
        """Earlier approval records a continuation only counts."""
        return self._records_unlisted

    def close(self) -> None:
        """The run has ended: it takes no more decisions, so none is advertised.

        A run cancelled or failed while an approval waited clears its
        ``AgentAwaitingApproval`` mark here, so the inbox does not list it. (A
        terminated run never gets here: the inbox lists running runs only.)
        """
        self._closed = True
        self._pending.clear()
        self._count_waiting()
        if self._marked and self._host.patched(PATCH_MARK_CLEARED_ON_CLOSE):
            self._mark_awaiting(False)
            self._index_pending()

    # --------------------------------------------------------- holding actions

    async def hold_tool_call(
        self, call: ToolCall, index: int, decision: policy.PolicyDecision, turn: list[ToolCall], step: int,
        judge: Callable[[ToolInfo, dict[str, Any]], policy.PolicyDecision] | None = None,
    ) -> ApprovalRecord:
        """Hold ``call`` (the ``index``-th call of ``turn``, at ``step``) until a reviewer decides or its deadline passes.

        The first held call of a turn also opens those of the turn's later calls that
        need approval (by ``judge``, the run's verdict on a call; by default the policy's
        alone), so a reviewer sees every held action of the turn at once (each with its
        own id) and their deadlines run together rather than one after another.
        """
        agent = self._settings.profile
        approval_id = self._tool_call_id(step, index)
        if approval_id not in self._pending and approval_id not in self._decided:
            self._open_tool_call(call, index, decision, step)
            same_turn = index < len(turn) and turn[index].id == call.id
            # Runs begun before approvals opened per turn replay as they ran: one at a time.
            if same_turn and index + 1 < len(turn) and self._host.patched(PATCH_OPENED_PER_TURN):
                for later, other in enumerate(turn[index + 1 :], start=index + 1):
                    info = agent.tool(other.name)
                    if info is None:
                        continue
                    verdict = judge(info, other.args) if judge else policy.evaluate(info, other.args, self._settings.autonomy, agent.approval)
                    if verdict.verdict == "needs_approval":
                        self._open_tool_call(other, later, verdict, step)
        record = await self._await_decision(approval_id, call.name)
        self._records.append(record)
        return record

    async def hold_run(self, kind: str, args: dict[str, Any], *, reason: str, step: int, risk: str = "high") -> ApprovalRecord:
        """Hold the run itself for a person's decision of kind ``kind`` (e.g. ``"pause"``) and wait for it.

        The decision is listed (``tool`` is ``kind``), notified, and decided like any
        approval, by the same handlers and rules (signatures included), under the id
        ``<kind>-<step>-<tag>``. Its outcome joins the run's approval records. It adds
        commands to the history (a notification, a timer): callers guard a new use
        with ``workflow.patched``.
        """
        base = decisions.approval_id(step, 0, self._host.ids().first_execution_run_id).replace("apr-", f"{kind}-", 1)
        taken = set(self._pending) | set(self._decided) | {record.approval_id for record in self._records}
        approval_id = base
        for n in range(2, len(taken) + 3):
            if approval_id not in taken:
                break
            approval_id = f"{base}-{n}"
        self._open(approval_id, kind, args, risk=risk, reason=reason)
        record = await self._await_decision(approval_id, kind)
        self._records.append(record)
        return record

    async def _await_decision(self, approval_id: str, what: str) -> ApprovalRecord:
        """Wait until the open approval ``approval_id`` is decided or its deadline passes; its outcome."""
        pending = self._pending.get(approval_id)
        if pending is not None:  # else it was decided while an earlier action of the turn waited
            try:
                with self._phase.waiting("waiting_for_approval", f"approval {approval_id}"):
                    self.before_waiting()
                    self._show_pending()
                    remaining = (pending.deadline - self._host.now()).total_seconds()
                    if remaining <= 0:
                        raise asyncio.TimeoutError
                    await self._host.wait_condition(
                        lambda: approval_id in self._decided, timeout=remaining, timeout_summary=f"approval {approval_id} deadline"
                    )
            except asyncio.TimeoutError:
                self._pending.pop(approval_id, None)
                self._count_waiting()
                # A decision taken in the workflow task where the deadline fired was already told to its
                # reviewer: it stands. (Runs begun before replay as they ran: the deadline overwrote it.)
                if approval_id not in self._decided or not self._host.patched(PATCH_DECISION_BEATS_DEADLINE):
                    # A later decision naming it is told it timed out.
                    self._decided[approval_id] = ApprovalRecord(
                        approval_id=approval_id, tool=what, status="timed_out", decided_at=self._host.now()
                    )
        record = self._decided[approval_id]
        notify = self._notifications.pop(approval_id, None)
        if notify is not None and not notify.done():
            notify.cancel()
        if not self._pending:
            self._mark_awaiting(False)
        self._index_pending()
        return record

    def _tool_call_id(self, step: int, index: int) -> str:
        """``apr-<step>[-<n>]-<tag>``, unique across executions of the workflow id (older runs: ``apr-<step>[-<n>]``)."""
        if self._host.patched(PATCH_UNIQUE_IDS):
            return decisions.approval_id(step, index, self._host.ids().first_execution_run_id)
        return f"apr-{step}" + (f"-{index + 1}" if index else "")

    def _open_tool_call(self, call: ToolCall, index: int, decision: policy.PolicyDecision, step: int) -> None:
        """Open the approval of ``call``, with the money it moves when its tool says which argument that is."""
        info = self._settings.profile.tool(call.name)
        amount = policy.amount_of(call.args, info.amount_arg if info else None)
        # The currency the limits read (the tool's default when the call leaves it out), for the reviewer to see.
        currency = money.currency_of(info, call.args, self._settings.profile.approval) if info and amount is not None else None
        self._open(
            self._tool_call_id(step, index), call.name, call.args, risk=decision.risk, reason=decision.reason,
            amount=amount, currency=currency,
        )

    def _open(
        self, approval_id: str, what: str, args: dict[str, Any], *, risk: str, reason: str, amount: float | None = None,
        currency: str | None = None,
    ) -> PendingApproval:
        """List a held decision named ``approval_id`` about ``what`` (a tool, or another kind of hold) and notify a reviewer.

        It is listed in the ``status`` query and the inbox (with the last steps for
        context, and its deadline); the same rules decide it as any approval.
        """
        agent = self._settings.profile
        now = self._host.now()
        ids = self._host.ids()
        pending = PendingApproval(
            approval_id=approval_id,
            run_id=ids.run_id,
            workflow_id=ids.workflow_id,
            tool=what,
            args=args,
            args_sha256=signing.args_digest(args),
            amount=amount,
            currency=currency,
            risk=risk,
            reason=reason,
            requested_at=now,
            deadline=now + timedelta(seconds=agent.approval.timeout_seconds),
            context=[r.model_dump(mode="json", include={"step", "action", "observation"}) for r in self._reviewer_context()],
            require_signature=agent.approval.require_signature,
        )
        self._pending[approval_id] = pending
        self._count_waiting()
        self._mark_awaiting(True)
        self._index_pending()
        # Tell a human; the activity retries a failing webhook, and nothing waits for it.
        self._notifications[approval_id] = self._host.start_activity(
            contracts.ACTIVITY_NOTIFY_REVIEWER,
            ReviewerNotice(
                workflow_id=ids.workflow_id,
                namespace=ids.namespace,
                agent=agent.name,
                approval=pending,
                approve_command=self._approve_command(approval_id),
                require_signature=agent.approval.require_signature,
            ),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_attempts=5, initial_interval=timedelta(seconds=2)),
            summary=f"notify reviewer: {approval_id}",
        )
        self._notifications[approval_id].add_done_callback(self._notified)
        return pending

    def _notified(self, notify: asyncio.Future[Any]) -> None:
        """Take the notice's outcome, which nothing awaits: the SDK logs an error for every one left untaken.

        A decision cancels a notice still being sent; one that failed after its retries is
        worth a warning (the approval waits all the same, listed in the inbox and the UI).
        """
        if notify.cancelled():
            return
        failure = notify.exception()
        if failure is not None and not is_cancellation(failure):
            self._host.logger.warning("the reviewer could not be notified: %s", failure_message(failure))

    def _reviewer_context(self) -> list[DecisionRecord]:
        """The last steps, for the reviewer, with large arguments cut: the notice must stay under Temporal's payload limit."""
        records = self._context(CONTEXT_RECORDS)
        compacted = [carry.compact_record(record) for record in records]
        # Runs that opened an approval with a large context before the cut replay as they ran.
        if any(c is not r for c, r in zip(compacted, records)) and self._host.patched(PATCH_CONTEXT_BOUNDED):
            return compacted
        return records

    def _mark_awaiting(self, waiting: bool) -> None:
        """Mark the run for the reviewer inbox (the search attribute), when the namespace has it."""
        index = self._settings.profile.approval_index
        if index is None:
            return  # runs resolved without it (or before it existed) never set it
        self._marked = waiting
        self._host.upsert_search_attributes([SearchAttributeKey.for_bool(index).value_set(waiting)])

    def _index_pending(self) -> None:
        """Keep what waits in the run's memo, beside the search attribute: the inbox lists it from there.

        Listing runs with their memo is one visibility call for the whole namespace; asking
        each run for its ``status`` is a query per run per look (a replay for a run out of
        the worker's cache). Decisions are still made on the run's own answer.
        """
        agent = self._settings.profile
        if agent.approval_index is None or not self._host.patched(PATCH_PENDING_IN_MEMO):
            return
        pending = [approval.model_dump(mode="json") for approval in self._pending.values()]
        self._host.upsert_memo({contracts.MEMO_PENDING_APPROVALS: {"agent": agent.name, "approvals": pending}})

    def _count_waiting(self) -> None:
        """Bring the ``agent.approvals.waiting`` metric in line with what waits."""
        if self._settings.agent is not None and len(self._pending) != self._counted:
            telemetry.count_approvals_waiting(self._settings.agent.name, len(self._pending) - self._counted)
            self._counted = len(self._pending)

    def _approve_command(self, approval_id: str) -> str:
        ids = self._host.ids()
        if self.signatures_required:
            return policy.signed_approve_command(ids.workflow_id, approval_id)
        return policy.approve_command(ids.workflow_id, approval_id, namespace=ids.namespace)

    def _show_pending(self) -> None:
        """The run's current details in the Temporal UI: what waits, why, until when, and how to approve it."""
        commands = {approval_id: self._approve_command(approval_id) for approval_id in self._pending}
        self._show(policy.waiting_details(self.pending(), commands, signed=self.signatures_required))

    # --------------------------------------------------------- deciding

    @property
    def signatures_required(self) -> bool:
        """Only signed ``review`` updates decide (the profile's ``require_signature``)."""
        return self._settings.agent is not None and self._settings.agent.approval.require_signature

    def target(self, approval_id: str | None, reviewer: str | None, args_sha256: str | None, *, require_id: bool) -> PendingApproval:
        """The pending approval a decision applies to (see :func:`durable_agent.decisions.decision_target`).

        Raises:
            decisions.DecisionRefused: nothing is pending, or the decision does not name one that is.
        """
        agent = self._settings.agent
        if agent is None:
            raise decisions.DecisionRefused("no approval is pending")
        done = {record.approval_id: record for record in self._records} | self._decided
        if self._closed and approval_id not in done:  # one that was decided is told its outcome
            raise decisions.DecisionRefused("the run has ended: it takes no more decisions")
        # Signed decisions are checked against the keyring read at decision time, not the run's copy.
        allow_list = None if self.signatures_required else agent.approval
        return decisions.decision_target(self._pending, done, approval_id, reviewer, allow_list, args_sha256=args_sha256, require_id=require_id)

    def decide(self, approval_id: str, approved: bool, reviewer: str | None, comment: str | None) -> ApprovalRecord:
        """Decide the pending approval ``approval_id`` (found with :meth:`target`); the decided record."""
        pending = self._pending.pop(approval_id)
        self._count_waiting()
        record = ApprovalRecord(
            approval_id=approval_id,
            tool=pending.tool,
            status="approved" if approved else "rejected",
            reviewer=reviewer,
            comment=comment,
            decided_at=self._host.now(),
        )
        self._decided[approval_id] = record
        return record

    # ---------------------------------------------------------- continue-as-new

    def carry(self) -> dict[str, Any]:
        """This part of :class:`CarriedState`: the latest approval records (the earlier ones counted)."""
        return {
            "approvals": self._records[-CARRIED_APPROVALS:],
            "approvals_unlisted": self._records_unlisted + max(0, len(self._records) - CARRIED_APPROVALS),
        }

    def restore(self, carried: CarriedState) -> None:
        self._records = carried.approvals
        self._records_unlisted = carried.approvals_unlisted
