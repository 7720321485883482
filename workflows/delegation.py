"""Delegation: a run's sub-agents, each a child ``AgentWorkflow``.

A profile's ``subagents`` are tools to its model (:mod:`durable_agent.subagents`); a
call of one starts a child run with an id derived from the parent's
(``PARENT/researcher-3-1``), the parent's autonomy (never looser) and what is left of
the parent's budget as its cap. While the child runs it reports its totals to the
parent (the ``child_report`` signal, see :mod:`.parent_link`), so the parent's cost,
``budget_remaining`` and ``pending_approvals`` include the child's as they happen;
decisions sent to the parent for a child's approval are forwarded to the child.
Whatever the child ends with (success, failure, budget spent, stopped, cancelled by
someone else) is an observation for the parent's model: the parent carries on.
Cancelling the parent cancels its children (the child handle is cancelled with the
run, and the parent close policy asks the server to cancel them too).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError, CancelledError, ChildWorkflowError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    from durable_agent import contracts, genai, inputs, pricing, subagents
    from durable_agent.carry import CarriedState
    from durable_agent.errors import failure_message
    from durable_agent.schemas import AgentResult, ApprovalRecord, ChildReport, ChildRun, PendingApproval, ToolCall, Usage

from durable_agent.workflows.host import Host
from durable_agent.workflows.settings import RunSettings

#: Patch: a call of a sub-agent starts a child workflow (runs begun before had no sub-agents).
PATCH_SUBAGENTS = "subagent-child-workflows"
#: Approvals of one child listed at most (a report is a signal anyone may send: it must not grow the run's state).
MAX_REPORTED_APPROVALS = 100
#: How long a ``review`` update sent to the parent waits for the child to take the decision.
FORWARDED_REVIEW_WAIT = timedelta(seconds=60)


class DelegationRefused(Exception):
    """A sub-agent call that starts no child; the message is the parent model's observation."""


class Delegation:
    """The run's sub-agent runs: started, followed while they run, listed when they end.

    Args:
        host: The workflow (ids, child workflows, signals to other workflows).
        settings: The run's profile (its sub-agents and limits), input (its parent link) and autonomy.
        warn: Where refused reports and forwarding failures are listed.
    """

    def __init__(self, host: Host, settings: RunSettings, warn: Callable[[str], None]) -> None:
        self._host = host
        self._settings = settings
        self._warn = warn
        #: Every child this run (and the runs it continued from) started, in order.
        self._children: list[ChildRun] = []
        #: The latest report of each running child.
        self._reports: dict[str, ChildReport] = {}
        #: Decisions on their way to a child.
        self._forwards: list[asyncio.Task[None]] = []
        #: Bumped by every report taken: a run that is itself a sub-agent reports on to its parent.
        self.changes = 0

    # ------------------------------------------------------------------ views

    def children(self) -> list[ChildRun]:
        """The children, with their latest totals (running ones as last reported)."""
        out = []
        for child in self._children:
            report = self._reports.get(child.workflow_id)
            if report is not None and child.status == "running":
                child = child.model_copy(update={"total_cost": report.total_cost, "steps": report.steps, "usage": report.usage})
            out.append(child)
        return out

    def cost(self) -> float:
        """What the children have spent, as last reported (ended ones: as their results say)."""
        return pricing.shown_usd(sum(child.total_cost for child in self.children()))

    def usage(self) -> Usage:
        total = Usage()
        for child in self.children():
            total = total + child.usage
        return total

    def pending(self) -> list[PendingApproval]:
        """The running children's approvals that wait (each names the ``workflow_id`` that waits)."""
        return [approval for report in self._reports.values() for approval in report.pending_approvals]

    def _pending_by_id(self, approval_id: Any) -> PendingApproval | None:
        if not isinstance(approval_id, str):
            return None
        return next((p for p in self.pending() if p.approval_id == approval_id), None)

    # -------------------------------------------------------------- delegating

    async def delegate(self, call: ToolCall, step: int, index: int, record_id: str, budget_remaining: float | None) -> tuple[str, str, str | None]:
        """Run sub-agent ``call.name`` on ``call.args["task"]`` as a child workflow and wait for it.

        Returns:
            The observation's status (``ok``, or ``subagent_<status>``), what the model reads,
            and the child's workflow id (``None`` when none was started).

        Raises:
            DelegationRefused: the call starts no child (its reason is the observation).
            asyncio.CancelledError: the run itself was cancelled (its child with it).
        """
        request = self._child_input(call, budget_remaining, record_id)
        ids = self._host.ids()
        child_id = subagents.child_workflow_id(ids.workflow_id, call.name, step, index)
        self._host.patched(PATCH_SUBAGENTS)
        child = ChildRun(workflow_id=child_id, agent=call.name, parent_record_id=record_id)
        self._children.append(child)
        # The call's execute_tool span: Temporal's tracing carries it into the child, whose invoke_agent span is beneath it.
        with genai.tool_span(call.name, call.id, args=call.args, description=f"sub-agent {call.name}") as span:
            status, text = await self._run_child(child, request)
            genai.tool_outcome(span, status)
        return status, text, child_id

    async def _run_child(self, child: ChildRun, request: dict[str, Any]) -> tuple[str, str]:
        """Start ``child`` with ``request`` and wait for it; the observation's status and what the model reads."""
        ids = self._host.ids()
        child_id = child.workflow_id
        try:
            handle = await self._host.start_child_workflow(
                contracts.AGENT_WORKFLOW,
                request,
                id=child_id,
                result_type=AgentResult,
                parent_close_policy=ParentClosePolicy.REQUEST_CANCEL,
                static_summary=f"sub-agent {child.agent} of {ids.workflow_id}",
            )
            result: AgentResult = await handle
            if self._host.cancel_requested():
                # The run was cancelled while its child ran: the child was cancelled with it and has ended.
                self._end(child, result)
                raise asyncio.CancelledError
        except ChildWorkflowError as exc:
            result = _ended_result(exc)
            if self._host.cancel_requested():
                self._end(child, result)
                raise asyncio.CancelledError from None
        except (asyncio.CancelledError, CancelledError):
            if child.status == "running":
                self._end(child, AgentResult(status="cancelled"))
            raise
        except Exception as exc:  # the child could not start (an id taken by a run not ours)
            self._end(child, AgentResult(status="failed", error=failure_message(exc)))
            return "subagent_failed", subagents.outcome_text(child, None, f"it could not be started: {failure_message(exc)}")
        self._end(child, result)
        status = "ok" if result.status == "success" else f"subagent_{result.status}"
        return status, subagents.outcome_text(child, result.answer, result.error)

    def _child_input(self, call: ToolCall, budget_remaining: float | None, record_id: str) -> dict[str, Any]:
        """The child's start input, or the refusal of the call."""
        agent = self._settings.profile
        link = self._settings.task_input.parent
        depth = (link.depth if link else 0) + 1
        max_depth = min(link.max_depth, agent.max_depth) if link else agent.max_depth
        if depth > max_depth:
            raise DelegationRefused(
                f"REFUSED: delegating to {call.name} would go {depth} sub-agents deep, over the limit of {max_depth} (max_depth). "
                "Do the task yourself or answer with what you have."
            )
        if len(self._children) >= agent.max_children:
            raise DelegationRefused(
                f"REFUSED: this run has started {len(self._children)} sub-agent runs, the limit (max_children = "
                f"{agent.max_children}). Do the task yourself or answer with what you have."
            )
        task = call.args.get("task")
        extra = sorted(set(call.args) - {"task"})
        if not isinstance(task, str) or not task.strip() or extra:
            raise DelegationRefused(f'REFUSED: {call.name} takes one argument, {{"task": "what to do"}}, a non-empty string.')
        if len(task) > inputs.MAX_TASK_CHARS:
            raise DelegationRefused(f"REFUSED: the task is {len(task):,} characters, over the limit of {inputs.MAX_TASK_CHARS:,}.")
        if budget_remaining is not None and budget_remaining <= 0:
            raise DelegationRefused(f"REFUSED: the run's budget is spent; {call.name} was not started.")
        ids = self._host.ids()
        request: dict[str, Any] = {
            "task": task,
            "agent": call.name,
            "autonomy": self._settings.autonomy.value,
            "parent": {"workflow_id": ids.workflow_id, "record_id": record_id, "depth": depth, "max_depth": max_depth, "agent": agent.name},
        }
        if budget_remaining is not None:
            request["budget_usd"] = budget_remaining
        return request

    def _end(self, child: ChildRun, result: AgentResult) -> None:
        """Note how ``child`` ended: its status and totals (its own children's included)."""
        report = self._reports.pop(child.workflow_id, None)
        cost, steps, usage = result.total_cost, result.steps, result.usage
        if result.status in ("failed", "cancelled") and report is not None and report.total_cost > cost:
            cost, steps, usage = report.total_cost, report.steps, report.usage  # its result could not say; its report did
        child.status, child.total_cost, child.steps, child.usage = result.status, cost, steps, usage

    # ---------------------------------------------------------- child reports

    def take_report(self, payloads: tuple[Any, ...]) -> None:
        """A running child's totals (the ``child_report`` signal); anyone else's is ignored and listed."""
        try:
            report = ChildReport.model_validate(inputs.single_payload(payloads, contracts.SIGNAL_CHILD_REPORT))
        except (inputs.PayloadRefused, ValidationError) as exc:
            self._warn(f"CHILD_REPORT_IGNORED: a {contracts.SIGNAL_CHILD_REPORT} signal that is not a report: {str(exc)[:200]}")
            return
        running = {c.workflow_id for c in self._children if c.status == "running"}
        if report.workflow_id not in running:
            self._warn(f"CHILD_REPORT_IGNORED: {inputs.quoted(report.workflow_id)} is not a running sub-agent of this run")
            return
        # A child lists its own approvals and its children's (whose ids begin with its own): none of another run's.
        report.pending_approvals = [
            p for p in report.pending_approvals if p.workflow_id == report.workflow_id or p.workflow_id.startswith(f"{report.workflow_id}/")
        ][:MAX_REPORTED_APPROVALS]
        self._reports[report.workflow_id] = report
        self.changes += 1

    # ------------------------------------------------------- forwarded decisions

    def forward_signal(self, payloads: tuple[Any, ...], *, approved: bool) -> bool:
        """Forward an ``approve``/``reject`` signal naming a child's approval to that child; whether it did."""
        name = contracts.SIGNAL_APPROVE if approved else contracts.SIGNAL_REJECT
        try:
            payload = inputs.single_payload(payloads, name)
        except inputs.PayloadRefused:
            return False  # the run's own intake refuses it, saying why
        target = self._pending_by_id(payload.get("approval_id"))
        if target is None:
            return False
        self._forward(target.workflow_id, name, payload)
        return True

    def owns_review(self, payloads: tuple[Any, ...]) -> PendingApproval | None:
        """The child's approval a ``review`` update names, or ``None`` (the run's own desk takes it).

        Raises:
            ApplicationError: it names a child's approval that cannot be decided through the parent.
        """
        try:
            payload = inputs.single_payload(payloads, contracts.UPDATE_REVIEW)
        except inputs.PayloadRefused:
            return None
        target = self._pending_by_id(payload.get("approval_id"))
        if target is None:
            return None
        if target.require_signature or payload.get("signature") is not None:
            raise ApplicationError(
                f"approval {target.approval_id} waits in the sub-agent {target.workflow_id}, whose decisions are signed: "
                f"a signature names the run that waits, so decide it there (durable-agent approve {target.workflow_id} ...)",
                type="DecisionRefused", non_retryable=True,
            )
        digest = payload.get("args_sha256")
        if digest is not None and digest != target.args_sha256:
            raise ApplicationError(f"args_sha256 does not match the arguments of {target.approval_id}", type="DecisionRefused", non_retryable=True)
        if not isinstance(payload.get("approved"), bool):
            raise ApplicationError("review takes approved: true or false", type="DecisionRefused", non_retryable=True)
        return target

    async def forward_review(self, payloads: tuple[Any, ...], target: PendingApproval) -> ApprovalRecord:
        """Send a ``review`` decision to the child that waits, and wait until it has taken it; the decided record.

        Raises:
            ApplicationError: the child did not take it in time (its warnings say why, e.g. a reviewer not allowed).
        """
        payload = inputs.single_payload(payloads, contracts.UPDATE_REVIEW)
        approved = bool(payload.get("approved"))
        decision = {k: payload[k] for k in ("approval_id", "reviewer", "comment", "args_sha256") if payload.get(k) is not None}
        self._forward(target.workflow_id, contracts.SIGNAL_APPROVE if approved else contracts.SIGNAL_REJECT, decision)
        try:
            await self._host.wait_condition(
                lambda: self._pending_by_id(target.approval_id) is None,
                timeout=FORWARDED_REVIEW_WAIT.total_seconds(),
                timeout_summary=f"forwarded decision {target.approval_id}",
            )
        except asyncio.TimeoutError:
            raise ApplicationError(
                f"the decision was sent to the sub-agent {target.workflow_id}, which has not taken it: see its warnings",
                type="DecisionRefused", non_retryable=True,
            ) from None
        return ApprovalRecord(
            approval_id=target.approval_id, tool=target.tool, status="approved" if approved else "rejected",
            reviewer=payload.get("reviewer"), comment=payload.get("comment"), decided_at=self._host.now(),
        )

    def _forward(self, workflow_id: str, signal: str, payload: dict[str, Any]) -> None:
        async def send() -> None:
            try:
                await self._host.signal_external(workflow_id, signal, payload)
            except Exception as exc:  # the child ended meanwhile: the decision has nothing to decide
                self._warn(f"DECISION_NOT_FORWARDED: {signal} for {workflow_id}: {failure_message(exc)}")

        self._forwards = [task for task in self._forwards if not task.done()]
        self._forwards.append(asyncio.get_running_loop().create_task(send()))

    async def settled(self) -> None:
        """Wait for decisions still on their way to a child (before the run ends or continues as new)."""
        forwards, self._forwards = self._forwards, []
        for task in forwards:
            await task

    # ---------------------------------------------------------- continue-as-new

    def carry(self) -> dict[str, Any]:
        """This part of :class:`CarriedState`: the children started (none runs across a continuation)."""
        return {"children": self.children()}

    def restore(self, carried: CarriedState) -> None:
        self._children = list(carried.children)


def _ended_result(exc: ChildWorkflowError) -> AgentResult:
    """What a child that did not return a result ended with: its failed result when it carried one, else why it ended."""
    cause = exc.cause
    if isinstance(cause, ApplicationError) and cause.details and isinstance(cause.details[0], dict):
        try:
            return AgentResult.model_validate(cause.details[0])
        except ValidationError:
            pass
    if isinstance(cause, CancelledError):
        return AgentResult(status="cancelled", error="the sub-agent was cancelled")
    return AgentResult(status="failed", error=failure_message(exc))
