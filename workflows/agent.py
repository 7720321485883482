"""``AgentWorkflow``: the think -> act -> observe loop as a durable workflow.

The workflow decides; activities do. Each model call is the ``think`` activity
and each tool call the ``run_tool`` activity, so a crash anywhere resumes from
the last recorded step and repeats no side effect. The conversation itself never
enters the event history: the workflow carries a reference to it (see
:mod:`durable_agent.store`) and small state (step, usage, cost, approvals), so
the bytes recorded per step stay flat and a run continues as new before its
history gets large.
"""

from __future__ import annotations

import asyncio
import json
import re
from datetime import datetime, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

with workflow.unsafe.imports_passed_through():
    from durable_agent import anomalies, budget, contracts, policy, pricing, telemetry, trace
    from durable_agent.budget import Balance, ReserveRequest, ReserveResult, SettleRequest
    from durable_agent.errors import failure_message
    from durable_agent.ratelimit import AcquireRequest, AcquireResult
    from durable_agent.retry import MODEL_RETRY, TOOL_RETRY_POLICIES, temporal_policy
    from durable_agent.schemas import (
        ActionRecord,
        AgentInput,
        AgentResult,
        ApprovalRecord,
        Autonomy,
        CostRecord,
        Decision,
        DecisionRecord,
        PendingApproval,
        Phase,
        ResolveAgentInput,
        ResolvedAgent,
        ReviewerNotice,
        ReviewRequest,
        RunStatus,
        StatusView,
        ThinkInput,
        ThinkOutput,
        ToolCall,
        ToolCallInput,
        ToolCallOutput,
        ToolInfo,
        ToolResultPart,
        Usage,
    )
    from durable_agent.tools import parse_rate_limit

#: Decision records kept in workflow state for the ``trace`` query (the sink has all).
TRACE_KEPT = 500
#: Observation previews longer than this are cut in the trace.
PREVIEW_CHARS = 300
#: Calls to the shared ledgers and rate limiters: quick, retried for a few minutes while the server is busy.
LIMITS_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30), maximum_attempts=10)
LIMITS_TIMEOUT = timedelta(seconds=30)
#: What a ledger or rate limiter activity returns.
_LimitsResult = TypeVar("_LimitsResult", ReserveResult, Balance, AcquireResult)
#: Heartbeat timeout of model calls and of tools that do not set ``heartbeat``: how soon a
#: killed worker's activity is retried elsewhere (activities heartbeat every 5 s).
DEFAULT_HEARTBEAT_TIMEOUT = timedelta(seconds=15)
MIN_HEARTBEAT_TIMEOUT_SECONDS = 5.0


class CarriedState(BaseModel):
    """What a run hands to its continuation (continue-as-new)."""

    agent: ResolvedAgent
    step: int
    usage: Usage
    total_cost: float
    tools_used: list[str]
    warnings: list[str]
    warnings_unlisted: dict[str, int] = {}
    approvals: list[ApprovalRecord]
    head: str | None
    pending_results: list[ToolResultPart]
    recent_actions: list[str]
    trace: list[DecisionRecord]
    last_usage: Usage | None = None
    pending_chars: int = 0
    sent_task: bool = True


#: A decision payload model: the signals' :class:`Decision` or the update's :class:`ReviewRequest`.
_DecisionT = TypeVar("_DecisionT", Decision, ReviewRequest)


def _problems(exc: ValidationError) -> str:
    """Pydantic's complaints, one per field, in words a person typing JSON can act on."""
    problems = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(input)"
        if err["type"] == "extra_forbidden":
            problems.append(f"{field}: unknown field")
        else:
            problems.append(f"{field}: {err['msg']}")
    return "; ".join(problems)


def _invalid_input(exc: ValidationError) -> ApplicationError:
    return ApplicationError("invalid AgentWorkflow input: " + _problems(exc), type="InvalidInput", non_retryable=True)


#: Run-level warnings of one kind listed in the status and the result; more are only counted.
WARNINGS_PER_KIND = 10


def _warning_kind(text: str) -> str:
    """``POSSIBLE_LOOP`` of ``"step 7: POSSIBLE_LOOP: ..."``; the whole text when it has no kind."""
    body = re.sub(r"^step \d+: ", "", text)
    head, sep, _ = body.partition(":")
    return head if sep and head.replace("_", "").isalnum() and head.isupper() else body


def is_cancellation(exc: BaseException) -> bool:
    """Whether ``exc`` is the run's own cancellation reaching it through an activity.

    Cancelling a run cancels the activity in flight, and the workflow sees that as an
    ``ActivityError`` caused by ``CancelledError``: it must stop the run, never be
    taken for a failing tool or model (which the run would carry on without).
    """
    return isinstance(exc, CancelledError) or (isinstance(exc, ActivityError) and isinstance(exc.cause, CancelledError))


def tool_heartbeat_timeout(info: ToolInfo) -> timedelta:
    """How long a tool call may go without a heartbeat before its worker counts as dead.

    The activity heartbeats every ``info.heartbeat_seconds`` (5 s by default) while
    the tool runs, so three missed beats mean the worker is gone; never under 5 s,
    so a busy worker is not taken for a dead one.
    """
    if info.heartbeat_seconds is None:
        return DEFAULT_HEARTBEAT_TIMEOUT
    return timedelta(seconds=max(MIN_HEARTBEAT_TIMEOUT_SECONDS, 3 * info.heartbeat_seconds))


@workflow.defn(name=contracts.AGENT_WORKFLOW)
class AgentWorkflow:
    """One agent run. Input: an :class:`AgentInput` JSON object; result: :class:`AgentResult`."""

    def __init__(self) -> None:
        self.input: AgentInput | None = None
        self.agent: ResolvedAgent | None = None
        self.autonomy: Autonomy = Autonomy.SUPERVISED
        self.budget_usd: float | None = None
        self.phase: Phase = "starting"
        self.step = 0
        self.usage = Usage()
        self.total_cost = 0.0
        self.tools_used: list[str] = []
        self.warnings: list[str] = []
        self.warnings_unlisted: dict[str, int] = {}
        self.approvals: list[ApprovalRecord] = []
        self.pending: dict[str, PendingApproval] = {}
        self.decided: dict[str, ApprovalRecord] = {}
        #: The tool calls of the current turn, so a turn's held actions are opened together.
        self.turn_calls: list[ToolCall] = []
        self._notifications: dict[str, workflow.ActivityHandle[Any]] = {}
        self.trace: list[DecisionRecord] = []
        self.head: str | None = None
        self.pending_results: list[ToolResultPart] = []
        self.pending_chars = 0
        self.recent_actions: list[str] = []
        self.last_usage: Usage | None = None
        self.status: RunStatus | None = None
        self.answer: str | None = None
        self.waiting_for: str | None = None
        self.step_span: Any = None
        self.started_at_step = 0
        self.sent_task = False
        self.daily_remaining: float | None = None
        self.daily_reservation: SettleRequest | None = None

    # ------------------------------------------------------------------ queries

    @workflow.query(name=contracts.QUERY_STATUS, description="Where the run is: step, phase, cost, usage, pending approvals, warnings, budget left.")
    def get_status(self) -> StatusView:
        return StatusView(
            step=self.step,
            phase=self.phase,
            agent=self.agent.name if self.agent else None,
            model=self.agent.model if self.agent else None,
            total_cost=round(self.total_cost, 6),
            usage=self.usage,
            tools_used=list(self.tools_used),
            pending_approvals=list(self.pending.values()),
            warnings=self._warnings_view(),
            budget_remaining=self._budget_remaining(),
            status=self.status,
            answer=self.answer,
            waiting_for=self.waiting_for,
            daily_budget_remaining=self.daily_remaining,
        )

    @workflow.query(name=contracts.QUERY_TRACE, description="The decision records of this run, one per step, in order.")
    def get_trace(self) -> list[DecisionRecord]:
        return list(self.trace)

    # ------------------------------------------------------------ approvals in

    @workflow.signal(name=contracts.SIGNAL_APPROVE, description='Approve a pending action: {"approval_id": "...", "reviewer": "...", "comment": "..."} (approval_id optional when one is pending).')
    def approve(self, payload: Any = None) -> None:
        self._apply_signal(payload, approved=True)

    @workflow.signal(name=contracts.SIGNAL_REJECT, description='Reject a pending action: {"approval_id": "...", "reviewer": "...", "comment": "..."} (approval_id optional when one is pending).')
    def reject(self, payload: Any = None) -> None:
        self._apply_signal(payload, approved=False)

    @workflow.update(name=contracts.UPDATE_REVIEW, description='Decide a pending action and get the decided record: {"approval_id": "...", "approved": true, "reviewer": "...", "comment": "..."}.')
    def review(self, payload: Any) -> ApprovalRecord:
        request, approval_id = self._review_target(payload)
        return self._decide(approval_id, request.approved, request.reviewer, request.comment)

    @review.validator
    def _validate_review(self, payload: Any) -> None:
        """Refuse a bad decision before it is accepted: the caller gets the reason, history stays clean."""
        try:
            self._review_target(payload)
        except ApplicationError as exc:
            # Validators run only for new updates, never on replay, so this logs once.
            workflow.logger.warning("refused %s update: %s", contracts.UPDATE_REVIEW, exc.message)
            raise

    def _review_target(self, payload: Any) -> tuple[ReviewRequest, str]:
        """The review request and the approval it decides, or a non-retryable refusal.

        An ``ApplicationError`` fails only the update (any other exception in the
        handler would fail the workflow task), and says to the caller that trying
        the same decision again cannot help.
        """
        try:
            request = self._parse_decision(ReviewRequest, payload)
            return request, self._check_decision(request.approval_id, request.reviewer)
        except policy.DecisionRefused as exc:
            raise ApplicationError(str(exc), type="DecisionRefused", non_retryable=True) from None

    @staticmethod
    def _parse_decision(model: type[_DecisionT], payload: Any) -> _DecisionT:
        try:
            return model.model_validate({} if payload is None else payload)
        except ValidationError as exc:
            raise policy.DecisionRefused(f"invalid payload: {_problems(exc)}") from None

    def _apply_signal(self, payload: Any, *, approved: bool) -> None:
        name = contracts.SIGNAL_APPROVE if approved else contracts.SIGNAL_REJECT
        try:
            decision = self._parse_decision(Decision, payload)
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

    @workflow.run
    async def run(self, request: Any, carried: CarriedState | None = None) -> AgentResult:
        if not isinstance(request, dict):
            raise ApplicationError(
                f"invalid AgentWorkflow input: expected a JSON object, got {type(request).__name__}",
                type="InvalidInput",
                non_retryable=True,
            )
        try:
            self.input = AgentInput.model_validate(request)
        except ValidationError as exc:
            raise _invalid_input(exc) from None
        if carried is not None:
            self._restore(carried)
        else:
            try:
                self.agent = await workflow.execute_activity(
                    contracts.ACTIVITY_RESOLVE_AGENT,
                    ResolveAgentInput(agent=self.input.agent, model_override=self.input.model),
                    result_type=ResolvedAgent,
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=RetryPolicy(maximum_attempts=5),
                    summary=f"resolve agent {self.input.agent or '(default)'}",
                )
            except ActivityError as exc:
                # An unknown profile or a missing key: say so plainly, as the run's failure.
                cause = exc.cause
                if isinstance(cause, ApplicationError):
                    raise ApplicationError(cause.message, type=cause.type, non_retryable=True) from None
                raise
            for warning in self.agent.warnings:
                self._warn(warning)
        assert self.agent is not None
        self.autonomy, loosening = policy.run_autonomy(self.agent.autonomy, self.input.autonomy)
        if loosening and carried is None:  # a continuation carries the warning already
            self._warn(loosening)
        self.budget_usd = self.input.budget_usd if self.input.budget_usd is not None else self.agent.budget_usd

        try:
            result = await self._loop()
        except (asyncio.CancelledError, CancelledError, ActivityError) as exc:
            if isinstance(exc, ActivityError) and not is_cancellation(exc):
                # A model call that failed for good (bad key, invalid request, retries spent).
                self.status = "failed"
                self.answer = None
                result = self._result(error=failure_message(exc))
            else:
                # Cancelled while waiting, or while an activity ran (which was cancelled with the run).
                self.status = "cancelled"
                self.answer = self.answer or "The run was cancelled."
                result = self._result()
        self.phase = "done"
        self.pending.clear()  # a closed run takes no more decisions; do not advertise any
        workflow.set_current_details(f"**{result.status}** after {result.steps} steps, ${result.total_cost:.4f}")
        if result.status == "failed":
            raise ApplicationError(result.error or "the run failed", result.model_dump(mode="json"), type="AgentRunFailed", non_retryable=True)
        return result

    async def _loop(self) -> AgentResult:
        assert self.input is not None and self.agent is not None
        max_steps = self.input.max_steps
        fingerprint = telemetry.task_hash(self.input.task)
        while self.step < max_steps:
            if self._should_continue_as_new():
                await self._continue_as_new()
            # The step's span encloses its think and tool activities' own spans.
            with telemetry.step_span(self.step + 1, fingerprint, self.agent.name) as span:
                self.step_span = span
                outcome = await self._run_step(max_steps)
            self.step_span = None
            if outcome is not None:
                return outcome
        self.status = "max_steps_exceeded"
        self.answer = self.answer or f"Stopped after {self.step} steps without a final answer (max_steps={max_steps})."
        return self._result()

    async def _run_step(self, max_steps: int) -> AgentResult | None:
        """One think -> act -> observe iteration; the run's result when it ends the run."""
        assert self.input is not None and self.agent is not None
        # Budget: refuse a model call that could take the run over its cap.
        price = self._price()
        estimate = pricing.estimate_call_usd(
            price,
            previous=self.last_usage,
            new_input_chars=self.pending_chars + (0 if self.sent_task else len(self.input.task)),
            max_tokens=self.agent.max_tokens,
        )
        if self.budget_usd is not None and self.total_cost + estimate > self.budget_usd:
            return self._stop_for_budget(
                f"the run's budget of ${self.budget_usd:.4f} would be exceeded by the next model call "
                f"(spent ${self.total_cost:.4f}, next call estimated at up to ${estimate:.4f})"
            )
        granted, why = await self._reserve_daily(estimate)
        if not granted:
            return self._stop_for_budget(why)

        self.phase = "thinking"
        self._details(f"thinking (step {self.step + 1} of at most {max_steps})")
        think_started = workflow.now()
        try:
            out = await self._think()
        except ActivityError:
            await self._release_daily()  # the call failed for good: its estimate is not spent
            raise
        self.step += 1
        step_cost = pricing.cost_usd(out.usage, price)
        self.usage = self.usage + out.usage
        self.total_cost += step_cost
        self.last_usage = out.usage
        await self._settle_daily(step_cost)
        cost = CostRecord(
            **out.usage.model_dump(),
            estimated_cost=round(step_cost, 8),
            budget_remaining=self._budget_remaining(),
            daily_budget_remaining=self.daily_remaining,
        )

        if not out.tool_calls:
            self.answer = out.text.strip()
            warnings = self._anomalies(None, step_cost, out.usage)
            if out.stop_reason == "max_tokens":
                warnings.append("TRUNCATED: the answer hit max_tokens")
            self._record(
                ActionRecord(type="final_answer", reasoning=out.text),
                {"status": "answered", "duration_ms": out.duration_ms},
                cost,
                warnings,
                started=think_started,
            )
            self.status = "success"
            return self._result()

        self.turn_calls = out.tool_calls
        for index, call in enumerate(out.tool_calls):
            warnings = self._anomalies(call, step_cost if index == 0 else 0.0, out.usage if index == 0 else Usage())
            observation = await self._act(call, index)
            self._record(
                ActionRecord(type="tool_call", tool=call.name, args=call.args, reasoning=out.text or None),
                observation,
                cost if index == 0 else CostRecord(),
                warnings,
                started=think_started,
            )
            if observation.get("status") == "budget_exceeded":
                return self._result()
        return None

    # ------------------------------------------------------------------ think

    async def _think(self) -> ThinkOutput:
        assert self.input is not None and self.agent is not None
        request = ThinkInput(
            session_id=workflow.info().workflow_id,
            agent=self.agent.name,
            model=self.agent.model,
            max_tokens=self.agent.max_tokens,
            prompt_ref=self.agent.prompt_ref,
            head=self.head,
            user_text=None if self.sent_task else self.input.task,
            tool_results=self.pending_results,
            step=self.step + 1,
        )
        out: ThinkOutput = await workflow.execute_activity(
            contracts.ACTIVITY_THINK,
            request,
            result_type=ThinkOutput,
            start_to_close_timeout=timedelta(minutes=5),
            heartbeat_timeout=DEFAULT_HEARTBEAT_TIMEOUT,
            retry_policy=temporal_policy(MODEL_RETRY),
            summary=f"step {self.step + 1}: think ({self.agent.model})",
        )
        self.head = out.head
        self.sent_task = True
        self.pending_results = []
        self.pending_chars = 0
        return out

    # -------------------------------------------------------------------- act

    async def _act(self, call: ToolCall, index: int) -> dict[str, Any]:
        """Run one tool call through policy, approval, rate limit and retries; return the observation."""
        assert self.agent is not None
        info = self.agent.tool(call.name)
        if info is None:
            known = ", ".join(t.name for t in self.agent.tools)
            return self._observe(call, "unknown_tool", f"There is no tool named {call.name!r}. Available tools: {known}.", error=True)

        decision = policy.evaluate(info, call.args, self.autonomy, self.agent.approval)
        if decision.verdict == "refuse":
            return self._observe(call, "refused", f"REFUSED: {decision.reason}.", error=True)
        approval: ApprovalRecord | None = None
        if decision.verdict == "needs_approval":
            approval = await self._wait_for_approval(call, index, decision)
            if approval.status == "rejected":
                who = approval.reviewer or "a reviewer"
                why = f": {approval.comment}" if approval.comment else ""
                return self._observe(
                    call, "rejected", f"REJECTED by {who}{why}. The action was not executed.", error=True, approval_id=approval.approval_id
                )
            if approval.status == "timed_out":
                return self._observe(
                    call,
                    "timed_out",
                    f"No reviewer decided within {self.agent.approval.timeout_seconds:g} s, so the action was not executed.",
                    error=True,
                    approval_id=approval.approval_id,
                )
        if self.budget_usd is not None and self.total_cost > self.budget_usd:
            self._stop_for_budget(f"the run's budget of ${self.budget_usd:.4f} is spent (${self.total_cost:.4f}); {call.name} was not run")
            return self._observe(call, "budget_exceeded", "The budget is spent; the tool was not run.", error=True)

        key = f"{workflow.info().workflow_id}/{workflow.info().first_execution_run_id}/{self.step}/{index}/{call.id}"
        refused, rate_limit_note = await self._wait_for_rate_limit(call, info, key, approval.approval_id if approval else None)
        if refused is not None:
            return refused

        self.phase = "acting"
        self._details(f"step {self.step}: calling {call.name}")
        self.tools_used.append(call.name)
        plan = TOOL_RETRY_POLICIES.get(info.retry, TOOL_RETRY_POLICIES["tool_default"])
        try:
            out: ToolCallOutput = await workflow.execute_activity(
                contracts.ACTIVITY_RUN_TOOL,
                ToolCallInput(session_id=workflow.info().workflow_id, agent=self.agent.name, call=call, idempotency_key=key, step=self.step),
                result_type=ToolCallOutput,
                start_to_close_timeout=timedelta(seconds=info.timeout_seconds + 30),
                heartbeat_timeout=tool_heartbeat_timeout(info),
                retry_policy=temporal_policy(plan),
                summary=f"call tool: {call.name}",
            )
        except ActivityError as exc:
            if is_cancellation(exc):
                raise
            return self._observe(
                call,
                "unavailable",
                f"The tool {call.name} is unavailable right now ({failure_message(exc)}). Do not call it again in this run; "
                "try another approach or answer with what you have.",
                error=True,
                approval_id=approval.approval_id if approval else None,
            )
        extra: dict[str, Any] = {"duration_ms": out.duration_ms}
        if approval is not None:
            extra["approval_id"] = approval.approval_id
        extra.update(rate_limit_note)
        self.pending_results.append(ToolResultPart(tool_use_id=call.id, ref=out.ref, text=None if out.ref else (out.error or out.preview), is_error=out.status != "ok"))
        self.pending_chars += out.chars
        observation: dict[str, Any] = {"status": out.status, "result_preview": out.preview[:PREVIEW_CHARS], **extra}
        if out.error:
            observation["error"] = out.error
        if out.ref:
            observation["result_ref"] = out.ref
        return observation

    def _observe(self, call: ToolCall, status: str, text: str, *, error: bool, approval_id: str | None = None) -> dict[str, Any]:
        """An observation the workflow writes itself (nothing ran); the model reads ``text``."""
        self.pending_results.append(ToolResultPart(tool_use_id=call.id, text=text, is_error=error))
        self.pending_chars += len(text)
        observation: dict[str, Any] = {"status": status, "message": text, "duration_ms": 0}
        if approval_id:
            observation["approval_id"] = approval_id
        return observation

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
            context=[r.model_dump(mode="json", include={"step", "action", "observation"}) for r in self.trace[-3:]],
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

    # ------------------------------------------------------------------ budget

    async def _reserve_daily(self, estimate: float) -> tuple[bool, str]:
        """Reserve ``estimate`` from the agent's shared daily budget (when it has one).

        Returns whether it was granted and, if not, the ledger's message naming the budget.
        The day is the workflow's own clock's, so a replay charges the same ledger.
        """
        assert self.agent is not None
        if self.agent.daily_budget_usd is None:
            return True, ""
        info = workflow.info()
        request = ReserveRequest(
            agent=self.agent.name,
            day=budget.day_of(workflow.now()),
            limit_usd=self.agent.daily_budget_usd,
            reservation_id=f"{info.workflow_id}/{info.first_execution_run_id}/{self.step + 1}",
            amount_usd=estimate,
            holder=info.workflow_id,
        )
        result = await self._limits_activity(
            contracts.ACTIVITY_BUDGET_RESERVE, request, ReserveResult, f"reserve ${estimate:.4f} of {self.agent.name}'s daily budget"
        )
        self.daily_remaining = result.remaining_usd
        if not result.granted:
            return False, result.message
        self.daily_reservation = SettleRequest(agent=request.agent, day=request.day, reservation_id=request.reservation_id)
        return True, ""

    async def _settle_daily(self, actual: float) -> None:
        """Replace the open reservation with the call's ``actual`` cost."""
        await self._close_reservation(actual)

    async def _release_daily(self) -> None:
        """Give the open reservation back uncharged (its model call never completed)."""
        await self._close_reservation(None)

    async def _close_reservation(self, actual: float | None) -> None:
        """Settle (``actual`` cost) or release (``None``) the open daily reservation, if any.

        A ledger that stays unreachable does not stop the run: the reservation then
        expires on its own, and the run says so in its warnings.
        """
        reservation, self.daily_reservation = self.daily_reservation, None
        if reservation is None:
            return
        name = contracts.ACTIVITY_BUDGET_RELEASE if actual is None else contracts.ACTIVITY_BUDGET_SETTLE
        payload = reservation.model_copy(update={"actual_usd": actual or 0.0})
        try:
            balance = await self._limits_activity(name, payload, Balance, f"{name.removeprefix('budget_')} daily reservation of step {self.step}")
        except ActivityError as exc:
            if is_cancellation(exc):
                raise
            self._warn(f"DAILY_BUDGET_UNSETTLED: reservation {reservation.reservation_id} left to expire ({failure_message(exc)})")
            return
        self.daily_remaining = balance.remaining_usd

    async def _limits_activity(self, name: str, payload: BaseModel, result_type: type[_LimitsResult], summary: str) -> _LimitsResult:
        """One call to a shared ledger or rate limiter: short, and retried while the server is busy."""
        return await workflow.execute_activity(
            name, payload, result_type=result_type, start_to_close_timeout=LIMITS_TIMEOUT, retry_policy=LIMITS_RETRY, summary=summary
        )

    # -------------------------------------------------------------- rate limit

    async def _wait_for_rate_limit(
        self, call: ToolCall, info: ToolInfo, key: str, approval_id: str | None
    ) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """Take a slot of the tool's shared rate limit and wait for it with a durable timer.

        Returns an observation when the call must not run (the tool fails fast, or
        its limiter is unreachable), else ``None``; and, for the call's record, the
        slot it was given and the milliseconds it waited.
        """
        if info.rate_limit is None:
            return None, {}
        limit, period = parse_rate_limit(info.rate_limit)
        request = AcquireRequest(
            tool=call.name, request_id=key, limit=limit, period_seconds=period, wait=info.rate_limit_wait, holder=workflow.info().workflow_id
        )
        try:
            slot = await self._limits_activity(
                contracts.ACTIVITY_RATE_LIMIT_ACQUIRE, request, AcquireResult, f"rate limit: {call.name} ({info.rate_limit})"
            )
        except ActivityError as exc:
            if is_cancellation(exc):
                raise
            text = f"The tool {call.name} is unavailable right now: its rate limiter could not be reached ({failure_message(exc)})."
            return self._observe(call, "unavailable", text, error=True, approval_id=approval_id), {}
        if not slot.granted:
            return self._observe(call, "rate_limited", slot.message, error=True, approval_id=approval_id), {}
        started = workflow.now()
        wait = slot.go_at - started
        note: dict[str, Any] = {"rate_limit_slot": slot.go_at.isoformat(), "rate_limit_wait_ms": 0}
        if wait <= timedelta(0):
            return None, note
        self.phase = "waiting_for_rate_limit"
        self.waiting_for = f"rate limit of {call.name} ({info.rate_limit}) until {slot.go_at.isoformat()}"
        self._details(
            f"**Waiting for the rate limit** of {call.name} ({info.rate_limit}, shared by all runs): "
            f"its turn comes at {slot.go_at.isoformat()}, in {wait.total_seconds():.1f} s."
        )
        try:
            await workflow.sleep(wait, summary=f"rate limit of {call.name}")
        finally:
            self.waiting_for = None
        note["rate_limit_wait_ms"] = int((workflow.now() - started).total_seconds() * 1000)
        return None, note

    # ------------------------------------------------------------- bookkeeping

    def _price(self) -> Any:
        assert self.agent is not None
        return pricing.find_price(self.agent.model, self.agent.prices) or self.agent.fallback_price

    def _budget_remaining(self) -> float | None:
        if self.budget_usd is None:
            return None
        return round(max(0.0, self.budget_usd - self.total_cost), 6)

    def _stop_for_budget(self, message: str) -> AgentResult:
        self.status = "budget_exceeded"
        self.answer = f"Stopped: {message}."
        self._warn(f"BUDGET_EXCEEDED: {message}")
        return self._result()

    def _anomalies(self, call: ToolCall | None, step_cost: float, usage: Usage) -> list[str]:
        assert self.agent is not None
        if call is not None:
            self.recent_actions.append(anomalies.action_signature(call.name, call.args))
            self.recent_actions = self.recent_actions[-20:]
        found = anomalies.detect(
            self.recent_actions if call is not None else [],
            step_cost=step_cost,
            step_tokens=usage.total_tokens,
            thresholds=self.agent.anomalies,
        )
        for warning in found:
            self._warn(f"step {self.step}: {warning}")
        return found

    def _warn(self, text: str) -> None:
        """Record a run-level warning: listed up to WARNINGS_PER_KIND per kind, counted beyond.

        A loop repeated for thousands of steps, or a flood of bad signals, must not grow
        the state that continue-as-new carries and the result returns.
        """
        kind = _warning_kind(text)
        if sum(1 for listed in self.warnings if _warning_kind(listed) == kind) < WARNINGS_PER_KIND:
            if text not in self.warnings:
                self.warnings.append(text)
        else:
            self.warnings_unlisted[kind] = self.warnings_unlisted.get(kind, 0) + 1

    def _warnings_view(self) -> list[str]:
        """The listed warnings, then one line per kind saying how many more there were."""
        more = [
            f"{kind}: {count} more not listed (each step's decision record has its own)"
            for kind, count in sorted(self.warnings_unlisted.items())
        ]
        return [*self.warnings, *more]

    def _record(self, action: ActionRecord, observation: dict[str, Any], cost: CostRecord, warnings: list[str], *, started: datetime) -> None:
        assert self.agent is not None
        now = workflow.now()
        observation.setdefault("duration_ms", int((now - started).total_seconds() * 1000))
        record = DecisionRecord(
            timestamp=now,
            agent_id=self.agent.name,
            session_id=workflow.info().workflow_id,
            step=self.step,
            action=action,
            observation=observation,
            cost=cost,
            warnings=warnings,
        )
        self.trace.append(record)
        if len(self.trace) > TRACE_KEPT:
            del self.trace[: len(self.trace) - TRACE_KEPT]
        if self.step_span is not None:
            telemetry.describe_step(self.step_span, record)
        if not workflow.unsafe.is_replaying():
            # The record's place within its step: the trace's own length stops growing at TRACE_KEPT.
            nth = sum(1 for kept in self.trace if kept.step == self.step)
            key = f"{workflow.info().workflow_id}/{workflow.info().first_execution_run_id}/{self.step}/{nth}/{action.tool}"
            with workflow.unsafe.sandbox_unrestricted():
                trace.emit(key, record)
                telemetry.record_step_metrics(record, (now - started).total_seconds() * 1000, self.agent.model)

    def _details(self, text: str) -> None:
        if self.phase not in ("waiting_for_approval", "waiting_for_rate_limit"):
            self.waiting_for = None
        left = []
        if self.budget_usd is not None:
            left.append(f"${self._budget_remaining():.4f} of the run's budget left")
        if self.daily_remaining is not None:
            left.append(f"${self.daily_remaining:.4f} of the daily budget left")
        budgets = f" {'; '.join(left)}." if left else ""
        workflow.set_current_details(f"{text}\n\nSpent ${self.total_cost:.4f} over {self.step} steps.{budgets}")

    def _result(self, error: str | None = None) -> AgentResult:
        return AgentResult(
            status=self.status or "failed",
            answer=self.answer,
            steps=self.step,
            tools_used=list(self.tools_used),
            total_cost=round(self.total_cost, 6),
            usage=self.usage,
            warnings=self._warnings_view(),
            approvals=list(self.approvals),
            error=error,
            model=self.agent.model if self.agent else None,
            agent=self.agent.name if self.agent else None,
            budget_remaining=self._budget_remaining(),
            daily_budget_remaining=self.daily_remaining,
        )

    # --------------------------------------------------------- continue-as-new

    def _should_continue_as_new(self) -> bool:
        assert self.agent is not None
        if self.pending or self.step == self.started_at_step:  # nothing done in this run yet
            return False
        steps_here = self.step - self.started_at_step
        return steps_here >= self.agent.continue_as_new_every or workflow.info().is_continue_as_new_suggested()

    async def _continue_as_new(self) -> None:
        assert self.input is not None and self.agent is not None
        self.phase = "continuing"
        await workflow.wait_condition(workflow.all_handlers_finished)
        carried = CarriedState(
            agent=self.agent,
            step=self.step,
            usage=self.usage,
            total_cost=self.total_cost,
            tools_used=self.tools_used,
            warnings=self.warnings,
            warnings_unlisted=self.warnings_unlisted,
            approvals=self.approvals,
            head=self.head,
            pending_results=self.pending_results,
            recent_actions=self.recent_actions,
            trace=self.trace[-50:],
            last_usage=self.last_usage,
            pending_chars=self.pending_chars,
            sent_task=self.sent_task,
        )
        workflow.continue_as_new(args=[self.input.model_dump(mode="json", exclude_none=True), carried])

    def _restore(self, carried: CarriedState) -> None:
        self.agent = carried.agent
        self.step = carried.step
        self.usage = carried.usage
        self.total_cost = carried.total_cost
        self.tools_used = carried.tools_used
        self.warnings = carried.warnings
        self.warnings_unlisted = dict(carried.warnings_unlisted)
        self.approvals = carried.approvals
        self.head = carried.head
        self.pending_results = carried.pending_results
        self.recent_actions = carried.recent_actions
        self.trace = carried.trace
        self.last_usage = carried.last_usage
        self.pending_chars = carried.pending_chars
        self.started_at_step = carried.step
        self.sent_task = carried.sent_task
