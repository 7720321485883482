"""One tool call, through policy, approval, the run's budget, the tool's rate limit and its retries.

The ``run_tool`` activity does the work, with an idempotency key that stays the
same across retries; everything before it is decided here. What happens is an
:class:`~durable_agent.observations.Observation`: the tool ran, or the workflow
answered for it (refused, rejected, timed out, rate-limited, unavailable, over budget).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError
from temporalio.exceptions import TimeoutError as ActivityTimedOut
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from durable_agent import contracts, remote_tools, trace
    from durable_agent.errors import failure_message
    from durable_agent.observations import Observation, RateLimitNote
    from durable_agent.ratelimit import AcquireRequest, AcquireResult
    from durable_agent.retry import TOOL_RETRY_POLICIES, temporal_policy, unknown_outcome_message
    from durable_agent.schemas import ApprovalRecord, ToolCall, ToolCallInput, ToolCallOutput, ToolInfo
    from durable_agent.tools import parse_rate_limit

from durable_agent.workflows.approval_desk import ApprovalDesk
from durable_agent.workflows.conversation import Conversation
from durable_agent.workflows.daily_budget import limits_activity
from durable_agent.workflows.delegation import Delegation, DelegationRefused
from durable_agent.workflows.host import DEFAULT_HEARTBEAT_TIMEOUT, Host, cancelled_while_waited, is_cancellation
from durable_agent.workflows.money_limits import MoneyLimits
from durable_agent.workflows.progress import Progress
from durable_agent.workflows.remote_calls import RemoteCalls
from durable_agent.workflows.settings import RunSettings
from durable_agent.workflows.spend import Spend

#: The SDK sends a worker's heartbeats to the server at most every 0.8 x the heartbeat timeout,
#: however often the tool beats: at 5 s that left a loaded worker 1 s of slack, and one under
#: the test suite's load was taken for dead mid-transfer. 10 s leaves it 2 s.
MIN_HEARTBEAT_TIMEOUT_SECONDS = 10.0
#: Patch: a tool that changes the world is waited for when the run is cancelled.
PATCH_CANCEL_WAITS = "tool-cancel-waits-for-completion"
#: Patch: runs begun with it retry a timed-out tool that changes the world only when it is idempotent, and
#: report its outcome as unknown; runs begun before retry it by its plan and report it unavailable.
PATCH_UNKNOWN_OUTCOME = "tool-timeout-outcome-unknown"


def tool_cancellation(host: Host, info: ToolInfo) -> ActivityCancellationType:
    """How a cancelled run stops a tool: one that changes the world is waited for, so the run
    reports "cancelled" only once the tool has stopped (a refund is not left half-committed)."""
    if info.read_only or not host.patched(PATCH_CANCEL_WAITS):
        return ActivityCancellationType.TRY_CANCEL
    return ActivityCancellationType.WAIT_CANCELLATION_COMPLETED


def tool_heartbeat_timeout(info: ToolInfo) -> timedelta:
    """How long a tool call may go without a heartbeat before its worker counts as dead.

    The activity heartbeats every ``info.heartbeat_seconds`` (5 s by default) while
    the tool runs, so three missed beats mean the worker is gone; never under
    ``MIN_HEARTBEAT_TIMEOUT_SECONDS``, so a busy worker is not taken for a dead one.
    """
    if info.heartbeat_seconds is None:
        return DEFAULT_HEARTBEAT_TIMEOUT
    return timedelta(seconds=max(MIN_HEARTBEAT_TIMEOUT_SECONDS, 3 * info.heartbeat_seconds))


class ToolCalls:
    """Runs the model's tool calls, each through every check that may hold or refuse it.

    Args:
        host: The workflow (ids, clock, activities, timers).
        settings: The run's profile (tools, approval policy) and autonomy.
        progress: The run's step, phase and the tools it used.
        desk: Holds calls that need a person's approval.
        spend: The run's own budget (a spent budget runs no more tools).
        conversation: Where the tool's result, or the workflow's answer, goes for the model.
        show: Writes the run's current details.
        delegation: Runs the calls of sub-agents as child runs.
        money: What the run has moved without a person, and the verdict on each call (one of its own by default).
    """

    def __init__(
        self, host: Host, settings: RunSettings, progress: Progress, desk: ApprovalDesk, spend: Spend, conversation: Conversation,
        show: Callable[[str], None], delegation: Delegation, money: MoneyLimits | None = None,
    ) -> None:
        self._host = host
        self._settings = settings
        self._progress = progress
        self._desk = desk
        self._spend = spend
        self._conversation = conversation
        self._show = show
        self._remote = RemoteCalls(host, conversation)
        self._delegation = delegation
        self._money = money if money is not None else MoneyLimits(host, settings)

    def answer_for(self, call: ToolCall, status: str, text: str, approval_id: str | None = None) -> Observation:
        """The workflow answers ``call`` itself (nothing runs): the model reads ``text``."""
        self._conversation.tell(call.id, text)
        return Observation.answered_by_workflow(status, text, approval_id)

    async def act(self, call: ToolCall, index: int, turn: list[ToolCall]) -> Observation:
        """Run ``call``, the ``index``-th of the model's ``turn``, unless a check holds or refuses it."""
        agent = self._settings.profile
        step = self._progress.step
        info = agent.tool(call.name)
        if info is None:
            known = ", ".join(t.name for t in agent.tools)
            return self.answer_for(call, "unknown_tool", f"There is no tool named {call.name!r}. Available tools: {known}.")
        if info.subagent:
            return await self._delegate(call, index)

        if info.remote is not None:
            problem = remote_tools.argument_problem(info.input_schema, call.args)
            if problem is not None:  # nothing is held for approval, or scheduled, for a call that cannot be served
                text = f"INVALID ARGUMENTS for {call.name}: {problem}. Nothing was run; call it again with arguments that fit its schema."
                return self.answer_for(call, "invalid_arguments", text)
        decision = self._money.judge(info, call.args)
        if decision.verdict == "refuse":
            return self.answer_for(call, "refused", f"REFUSED: {decision.reason}.")
        approval: ApprovalRecord | None = None
        if decision.verdict == "needs_approval":
            approval = await self._desk.hold_tool_call(call, index, decision, turn, step, judge=self._money.judge)
            if approval.status == "rejected":
                who = approval.reviewer or "a reviewer"
                why = f": {approval.comment}" if approval.comment else ""
                return self.answer_for(call, "rejected", f"REJECTED by {who}{why}. The action was not executed.", approval.approval_id)
            if approval.status == "timed_out":
                text = f"No reviewer decided within {agent.approval.timeout_seconds:g} s, so the action was not executed."
                return self.answer_for(call, "timed_out", text, approval.approval_id)
        approval_id = approval.approval_id if approval else None
        if self._spend.spent_for(call.name) is not None:
            return self.answer_for(call, "budget_exceeded", "The budget is spent; the tool was not run.")

        ids = self._host.ids()
        key = f"{ids.workflow_id}/{ids.first_execution_run_id}/{step}/{index}/{call.id}"
        slot = await self._rate_limit_slot(call, info, key, approval_id)
        if isinstance(slot, Observation):
            return slot

        self._progress.phase.move("acting")
        self._show(f"step {step}: calling {call.name}")
        self._progress.used_tool(call.name)
        if approval is None:
            self._money.ran_without_approval(info, call.args)  # sent with nobody's approval: it counts, whatever the tool answers
        cancellation = tool_cancellation(self._host, info)
        if info.remote is not None:
            return await self._remote.call(call, info, key, approval_id=approval_id, slot=slot, cancellation=cancellation)
        plan = TOOL_RETRY_POLICIES.get(info.retry, TOOL_RETRY_POLICIES["tool_default"])
        # A tool that changes the world may have done its work when it times out.
        outcome_can_be_unknown = not info.read_only and self._host.patched(PATCH_UNKNOWN_OUTCOME)
        try:
            out = await self._host.execute_activity(
                contracts.ACTIVITY_RUN_TOOL,
                ToolCallInput(session_id=ids.workflow_id, agent=agent.name, call=call, idempotency_key=key, step=step),
                result_type=ToolCallOutput,
                start_to_close_timeout=timedelta(seconds=info.timeout_seconds + 30),
                heartbeat_timeout=tool_heartbeat_timeout(info),
                retry_policy=temporal_policy(plan, retry_timeouts=info.repeatable or not outcome_can_be_unknown),
                summary=f"call tool: {call.name}",
                cancellation_type=cancellation,
            )
        except ActivityError as exc:
            if is_cancellation(exc):
                raise
            failed = self._failed(call, exc, approval_id, outcome_can_be_unknown)
            failed.run_cancelled = cancelled_while_waited(self._host, cancellation, failed=True)
            return failed
        self._conversation.add_result(call.id, out)
        waited = cancelled_while_waited(self._host, cancellation, failed=False)
        return Observation.of_tool(out, approval_id=approval_id, rate_limit=slot, run_cancelled=waited)

    def _failed(self, call: ToolCall, exc: ActivityError, approval_id: str | None, outcome_can_be_unknown: bool) -> Observation:
        """What the model is told when the tool's activity did not return."""
        if outcome_can_be_unknown and isinstance(exc.cause, ActivityTimedOut):
            # Temporal timed out its last attempt (stuck past timeout + 30 s, or its worker died each time).
            text = unknown_outcome_message(f"{call.name} did not report back ({failure_message(exc)})")
            return self.answer_for(call, "outcome_unknown", text, approval_id)
        text = (
            f"The tool {call.name} is unavailable right now ({failure_message(exc)}). Do not call it again in this run; "
            "try another approach or answer with what you have."
        )
        return self.answer_for(call, "unavailable", text, approval_id)

    async def _delegate(self, call: ToolCall, index: int) -> Observation:
        """Hand ``call``'s task to the sub-agent it names (a child run of that profile); what came of it.

        No approval policy applies to the call itself: the child runs under its own, at
        the run's autonomy or tighter, and holds its own actions for a person.
        """
        step = self._progress.step
        if self._spend.spent_for(call.name) is not None:
            return self.answer_for(call, "budget_exceeded", "The budget is spent; the sub-agent was not started.")
        ids = self._host.ids()
        record_id = trace.record_id(ids.workflow_id, ids.first_execution_run_id, step, index)
        self._progress.phase.move("acting")
        self._show(f"step {step}: delegating to the sub-agent {call.name}")
        self._progress.used_tool(call.name)
        started = self._host.now()
        try:
            status, text, child_id = await self._delegation.delegate(call, step, index, record_id, self._spend.budget_remaining())
        except DelegationRefused as exc:
            return self.answer_for(call, "refused", str(exc))
        self._conversation.tell(call.id, text, is_error=status != "ok")
        duration_ms = int((self._host.now() - started).total_seconds() * 1000)
        return Observation(status=status, message=text, child_workflow_id=child_id, duration_ms=duration_ms)

    async def _rate_limit_slot(self, call: ToolCall, info: ToolInfo, key: str, approval_id: str | None) -> Observation | RateLimitNote | None:
        """Take a slot of the tool's shared rate limit and wait for it with a durable timer.

        Returns the slot the call was given (and the milliseconds it waited), for its
        record; ``None`` when the tool has no limit; or, when the call must not run
        (the tool fails fast, or its limiter is unreachable), the workflow's answer.
        """
        if info.rate_limit is None:
            return None
        limit, period = parse_rate_limit(info.rate_limit)
        request = AcquireRequest(
            tool=call.name, request_id=key, limit=limit, period_seconds=period, lane=info.rate_limit_lane,
            wait=info.rate_limit_wait, holder=self._host.ids().workflow_id,
        )
        try:
            slot = await limits_activity(
                self._host, contracts.ACTIVITY_RATE_LIMIT_ACQUIRE, request, AcquireResult, f"rate limit: {call.name} ({info.rate_limit})"
            )
        except ActivityError as exc:
            if is_cancellation(exc):
                raise
            text = f"The tool {call.name} is unavailable right now: its rate limiter could not be reached ({failure_message(exc)})."
            return self.answer_for(call, "unavailable", text, approval_id)
        if not slot.granted:
            return self.answer_for(call, "rate_limited", slot.message, approval_id)
        started = self._host.now()
        wait = slot.go_at - started
        note = RateLimitNote(slot=slot.go_at.isoformat())
        if wait <= timedelta(0):
            return note
        with self._progress.phase.waiting("waiting_for_rate_limit", f"rate limit of {call.name} ({info.rate_limit}) until {slot.go_at.isoformat()}"):
            self._show(
                f"**Waiting for the rate limit** of {call.name} ({info.rate_limit}, shared by all runs): "
                f"its turn comes at {slot.go_at.isoformat()}, in {wait.total_seconds():.1f} s."
            )
            await self._host.sleep(wait, summary=f"rate limit of {call.name}")
        note.wait_ms = int((self._host.now() - started).total_seconds() * 1000)
        return note
