"""``AgentWorkflow``: the think -> act -> observe loop as a durable workflow.

The workflow decides; activities do. Each model call is the ``think`` activity
and each tool call the ``run_tool`` activity, so a crash anywhere resumes from
the last recorded step and repeats no side effect. The conversation itself never
enters the event history: the workflow carries a reference to it (see
:mod:`durable_agent.store`) and small state (step, usage, cost, approvals), so
the bytes recorded per step stay flat and a run continues as new before its
history gets large.

This class holds the loop; each other concern is a mixin of its own module:
approvals (:mod:`.approvals`), the shared budget and rate limits (:mod:`.limits`),
records, warnings and the result (:mod:`.records`), continue-as-new
(:mod:`.continuation`), and the state they share (:mod:`.state`).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from pydantic import ValidationError
from temporalio import workflow
from temporalio.workflow import ActivityCancellationType
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError
from temporalio.exceptions import TimeoutError as ActivityTimedOut

with workflow.unsafe.imports_passed_through():
    from durable_agent import contracts, fields, genai, inputs, policy, pricing, telemetry
    from durable_agent.errors import failure_message, validation_problems
    from durable_agent.retry import TOOL_RETRY_POLICIES, temporal_policy, unknown_outcome_message
    from durable_agent.schemas import (
        ActionRecord,
        AgentInput,
        AgentResult,
        ApprovalRecord,
        CostRecord,
        ResolveAgentInput,
        ResolvedAgent,
        StatusView,
        ToolCall,
        ToolCallInput,
        ToolCallOutput,
        ToolInfo,
        ToolResultPart,
        Usage,
    )

from durable_agent.workflows.approvals import Approvals
from durable_agent.workflows.continuation import CarriedState, Continuation
from durable_agent.workflows.limits import SharedLimits
from durable_agent.workflows.state import DEFAULT_HEARTBEAT_TIMEOUT, is_cancellation
from durable_agent.workflows.thinking import Thinking

#: Observation previews longer than this are cut in the trace.
PREVIEW_CHARS = 300
#: Where ``_act`` hands a tool result's warnings to the step's decision record.
RESULT_WARNINGS = "_result_warnings"
MIN_HEARTBEAT_TIMEOUT_SECONDS = 5.0
#: Numbers of the start input given as strings ("1.00") or booleans are refused (runs before it took them).
PATCH_STRICT_INPUT_NUMBERS = "strict-input-numbers"
#: Runs begun with this retry a timed-out tool that changes the world only when it is idempotent, and
#: report its outcome as unknown; runs begun before retry it by its plan and report it unavailable.
PATCH_UNKNOWN_OUTCOME = "tool-timeout-outcome-unknown"

__all__ = ["AgentWorkflow", "CarriedState", "is_cancellation", "tool_heartbeat_timeout"]


def _invalid_input(problems: str) -> ApplicationError:
    """The run's failure for an input it cannot use: at once, for good, naming the problem."""
    return ApplicationError("invalid AgentWorkflow input: " + problems, type="InvalidInput", non_retryable=True)


def _pause_outcome(held: ApprovalRecord) -> str:
    """Why a paused run stops: who stopped it (and their comment), or that nobody resumed it in time."""
    if held.status == "timed_out":
        return "no reviewer resumed the paused run in time"
    comment = f": {held.comment}" if held.comment else ""
    return f"the paused run was stopped by {held.reviewer or 'a reviewer'}{comment}"


def tool_cancellation(info: ToolInfo) -> ActivityCancellationType:
    """How a cancelled run stops a tool: one that changes the world is waited for, so the run
    reports "cancelled" only once the tool has stopped (a refund is not left half-committed)."""
    if info.read_only or not workflow.patched("tool-cancel-waits-for-completion"):
        return ActivityCancellationType.TRY_CANCEL
    return ActivityCancellationType.WAIT_CANCELLATION_COMPLETED


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
class AgentWorkflow(Approvals, SharedLimits, Continuation, Thinking):
    """One agent run. Input: an :class:`AgentInput` JSON object; result: :class:`AgentResult`."""

    @workflow.query(name=contracts.QUERY_STATUS, description="Where the run is: step, phase, cost, usage, pending approvals, warnings, budget left.")
    def get_status(self, *_ignored: Any) -> StatusView:
        return StatusView(
            step=self.step,
            phase=self.phase,
            agent=self.agent.name if self.agent else None,
            model=self.agent.model if self.agent else None,
            total_cost=pricing.shown_usd(self.total_cost),
            usage=self.usage,
            tools_used=list(self.tools_used),
            tools_used_unlisted=self.tools_used_unlisted,
            pending_approvals=list(self.pending.values()),
            warnings=self._warnings_view(),
            budget_remaining=self._budget_remaining(),
            status=self.status,
            answer=self.answer,
            waiting_for=self.waiting_for,
            daily_budget_remaining=self.daily_remaining,
        )

    @workflow.run
    async def run(self, *args: Any) -> AgentResult:
        # Untyped on purpose: whatever a client sends reaches _start_arguments, which refuses it
        # by name; a typed argument that fails to decode would fail the workflow task forever.
        self.input, carried = self._start_arguments(args)
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
            await self._store_large_task()
        assert self.agent is not None
        self.autonomy, loosening = policy.run_autonomy(self.agent.autonomy, self.input.autonomy)
        if loosening and carried is None:  # a continuation carries the warning already
            self._warn(loosening)
        self.budget_usd = self.input.budget_usd if self.input.budget_usd is not None else self.agent.budget_usd

        try:
            # The run's span in the GenAI conventions; every step's span is its child.
            with genai.agent_span(self.agent.name, workflow.info().workflow_id, self.agent.model):
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
        await self._return_daily_lease()  # what the run spent is charged, the rest goes back
        await self._records_written()  # every record kept before the run reports its end
        self.phase = "done"
        self.pending.clear()  # a closed run takes no more decisions; do not advertise any
        self._count_waiting()
        workflow.set_current_details(f"**{result.status}** after {result.steps} steps, ${result.total_cost:.4f}")
        if result.status == "failed":
            raise ApplicationError(result.error or "the run failed", result.model_dump(mode="json"), type="AgentRunFailed", non_retryable=True)
        return result

    def _start_arguments(self, args: tuple[Any, ...]) -> tuple[AgentInput, CarriedState | None]:
        """The run's input, and the state its previous run carried when it is a continuation.

        Raises:
            ApplicationError: ``InvalidInput``, non-retryable, naming the problem: the run fails at once.
        """
        continuation = workflow.info().continued_run_id is not None
        if len(args) != 1 and not (continuation and len(args) == 2):
            # Only a continue-as-new may hand a run its state: a client's second argument is refused.
            raise _invalid_input(f"AgentWorkflow takes one JSON object, got {len(args)} arguments")
        problems = inputs.start_input_problems(args[0])
        if problems:
            raise _invalid_input("; ".join(problems))
        # Runs that began before took "budget_usd": "1.00" as 1.0: only new ones refuse it.
        as_text = fields.text_numbers_problem(args[0], AgentInput)
        if as_text and workflow.patched(PATCH_STRICT_INPUT_NUMBERS):
            raise _invalid_input(as_text)
        try:
            request = AgentInput.model_validate(args[0])
        except ValidationError as exc:
            raise _invalid_input(validation_problems(exc, AgentInput)) from None
        if len(args) == 1:
            return request, None
        try:
            return request, CarriedState.model_validate(args[1])
        except ValidationError as exc:
            raise _invalid_input(f"the state carried from the previous run is invalid: {validation_problems(exc)}") from None

    async def _loop(self) -> AgentResult:
        assert self.input is not None and self.agent is not None
        max_steps = self.input.max_steps
        # A stored task's continuations hold a stub of it: its reference is what every run of the chain shares.
        fingerprint = telemetry.task_hash(self.task_ref or self.input.task)
        while self.step < max_steps:
            if self._should_continue_as_new():
                await self._continue_as_new()
            # The step's span encloses its think and tool activities' own spans.
            with telemetry.step_span(self.step + 1, fingerprint, self.agent.name) as span:
                self.step_span = span
                outcome = await self._run_step(max_steps)
            self.step_span = None
            self._flush_records()
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
        estimate = self._estimate_next_call(price)
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
        self.compaction_cost = 0.0
        try:
            out, move, step_warnings = await self._think_through_stops()
        except ActivityError:
            await self._release_daily()  # the call failed for good: its estimate is not spent
            raise
        self.step += 1
        step_cost = pricing.cost_usd(out.usage, price)
        self.usage = self.usage + out.usage
        # One rounding rule: the total is the sum of the steps' costs as their records show them.
        # Runs begun before it add unrounded costs, as they were recorded doing.
        if workflow.patched("costs-rounded-once"):
            step_cost = pricing.shown_usd(step_cost)
            self.total_cost = pricing.shown_usd(self.total_cost + step_cost)
        else:
            self.total_cost += step_cost
        self.last_usage = out.usage
        await self._settle_daily(step_cost + self.compaction_cost, out.daily_budget_usd)
        cost = CostRecord(
            **out.usage.model_dump(),
            estimated_cost=pricing.shown_usd(step_cost),
            budget_remaining=self._budget_remaining(),
            daily_budget_remaining=self.daily_remaining,
        )

        for warning in step_warnings:
            self._warn(f"step {self.step}: {warning}")
        if move is not None and move.kind in ("refused", "give_up"):
            return self._end_on_stop(out, move, cost, step_warnings, think_started)
        if not out.tool_calls:
            self.answer = out.text.strip()
            warnings = step_warnings + self._anomalies(None, step_cost, out.usage)[0]
            if move is None and out.stop_reason == "max_tokens":
                warnings.append("TRUNCATED: the answer hit max_tokens")
            self._record(
                ActionRecord(type="final_answer", reasoning=out.text),
                {"status": "answered", "duration_ms": out.duration_ms, **self._request_ids(out)},
                cost,
                warnings,
                started=think_started,
            )
            self.status = "success"
            return self._result()

        self.turn_calls = out.tool_calls
        for index, call in enumerate(out.tool_calls):
            warnings, action, why = self._anomalies(call, step_cost if index == 0 else 0.0, out.usage if index == 0 else Usage())
            if index == 0:
                warnings = step_warnings + warnings
            held: ApprovalRecord | None = None
            if action == "pause" and workflow.patched("anomaly-pause"):
                held = await self._pause_for_anomaly(call, why)
                if held.status != "approved":
                    action, why = "stop", f"{why}; {_pause_outcome(held)}"
            if action == "stop":
                observation = self._observe(
                    call, "stopped", f"STOPPED: {why}. The action was not executed.", error=True, approval_id=held.approval_id if held else None
                )
            else:
                observation = await self._act(call, index)
            warnings = warnings + observation.pop(RESULT_WARNINGS, [])
            if index == 0:
                observation.update(self._request_ids(out))
            self._record(
                ActionRecord(type="tool_call", tool=call.name, args=call.args, reasoning=out.text or None),
                observation,
                cost if index == 0 else CostRecord(),
                warnings,
                started=think_started,
            )
            if observation.get("status") == "budget_exceeded":
                return self._result()
            if observation.get("status") == "stopped":
                return self._stop_for_anomaly(why)
            if self.cancelled_during_tool:
                raise asyncio.CancelledError
        return None

    async def _pause_for_anomaly(self, call: ToolCall, why: str) -> ApprovalRecord:
        """Hold the run before ``call`` through the approval mechanism: approving resumes it, anything else stops it.

        The held decision names the anomaly in its reason, so the status query, the
        current details and the reviewer's notice say why the run waits.
        """
        return await self._request_decision(
            "pause",
            {"tool": call.name, "args": call.args},
            reason=f"the run is paused by an anomaly rule ({why}); approve to resume it (the action then goes through "
            "its own policy), reject to stop the run",
        )

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
        cancellation = tool_cancellation(info)
        # A tool that changes the world may have done its work when it times out (runs begun before say "unavailable").
        outcome_can_be_unknown = not info.read_only and workflow.patched(PATCH_UNKNOWN_OUTCOME)
        try:
            out: ToolCallOutput = await workflow.execute_activity(
                contracts.ACTIVITY_RUN_TOOL,
                ToolCallInput(session_id=workflow.info().workflow_id, agent=self.agent.name, call=call, idempotency_key=key, step=self.step),
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
            if outcome_can_be_unknown and isinstance(exc.cause, ActivityTimedOut):
                # Temporal timed out its last attempt (stuck past timeout + 30 s, or its worker died each time).
                return self._observe(
                    call,
                    "outcome_unknown",
                    unknown_outcome_message(f"{call.name} did not report back ({failure_message(exc)})"),
                    error=True,
                    approval_id=approval.approval_id if approval else None,
                )
            return self._observe(
                call,
                "unavailable",
                f"The tool {call.name} is unavailable right now ({failure_message(exc)}). Do not call it again in this run; "
                "try another approach or answer with what you have.",
                error=True,
                approval_id=approval.approval_id if approval else None,
            )
        if cancellation == ActivityCancellationType.WAIT_CANCELLATION_COMPLETED and workflow.cancellation_reason() is not None:
            self.cancelled_during_tool = True
        extra: dict[str, Any] = {"duration_ms": out.duration_ms}
        if approval is not None:
            extra["approval_id"] = approval.approval_id
        extra.update(rate_limit_note)
        self.pending_results.append(ToolResultPart(tool_use_id=call.id, ref=out.ref, text=None if out.ref else (out.error or out.preview), is_error=out.status != "ok"))
        self.pending_chars += out.chars
        observation: dict[str, Any] = {"status": out.status, "result_preview": out.preview[:PREVIEW_CHARS], **extra}
        if out.warnings:
            # What the activity had to change to keep the result (it never runs the tool again for it).
            observation[RESULT_WARNINGS] = list(out.warnings)
            for warning in out.warnings:
                self._warn(f"step {self.step}: {warning}")
        if out.error:
            observation["error"] = out.error
        if out.ref:
            observation["result_ref"] = out.ref
        return observation
