"""``AgentWorkflow``: the think -> act -> observe loop as a durable workflow.

The workflow decides; activities do. Each model call is the ``think`` activity
and each tool call the ``run_tool`` activity, so a crash anywhere resumes from
the last recorded step and repeats no side effect. The conversation itself never
enters the event history: the workflow carries a reference to it (see
:mod:`durable_agent.store`) and small state (step, usage, cost, approvals), so
the bytes recorded per step stay flat and a run continues as new before its
history gets large.

This class holds the loop and the handlers. Each concern is a component of its
own module that owns its state; the loop asks them and they answer:

- :mod:`.settings`: the input and the resolved profile, fixed as the run starts;
- :mod:`.progress`: step, phase (a small state machine), tools used, outcome;
- :mod:`.conversation` and :mod:`.thinking`: what the model is told, stop reasons, compaction;
- :mod:`.tool_calls`: one tool call through policy, approval, budget and rate limit;
- :mod:`.turn_calls` and :mod:`.turns`: a turn's calls, alone or at once, through the anomaly rules, each recorded;
- :mod:`.approval_desk` and :mod:`.decision_intake`: held actions, and the decisions that come in for them;
- :mod:`.spend` and :mod:`.daily_budget`: the run's cost and budget, the agent's shared daily budget;
- :mod:`.money_limits`: the money the run moves without a person, held to the profile's limits;
- :mod:`.anomaly_watch`: loops and costly steps;
- :mod:`.records`: decision records, warnings, the ``trace`` query;
- :mod:`.delegation` and :mod:`.parent_link`: sub-agents as child runs, and a child's reports to its parent;
- :mod:`.continuation`: continue-as-new, carrying each component's part.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

with workflow.unsafe.imports_passed_through():
    from durable_agent import contracts, genai, inputs, observations, policy, pricing, stops, subagents, telemetry
    from durable_agent.errors import failure_message
    from durable_agent.observations import Observation
    from durable_agent.schemas import (
        ActionRecord,
        AgentResult,
        ApprovalRecord,
        ChildReport,
        CostRecord,
        DecisionRecord,
        StatusView,
        ToolCall,
    )

from durable_agent.workflows import continuation
from durable_agent.workflows.anomaly_watch import AnomalyWatch
from durable_agent.workflows.approval_desk import ApprovalDesk
from durable_agent.workflows.continuation import CarriedState, Carries
from durable_agent.workflows.conversation import Conversation
from durable_agent.workflows.daily_budget import DailyBudget
from durable_agent.workflows.decision_intake import DecisionIntake
from durable_agent.workflows.delegation import Delegation
from durable_agent.workflows.money_limits import MoneyLimits
from durable_agent.workflows.host import TemporalHost, is_cancellation
from durable_agent.workflows.parent_link import ParentReporter
from durable_agent.workflows.progress import Progress
from durable_agent.workflows.records import RecordBook
from durable_agent.workflows.settings import RunSettings
from durable_agent.workflows.spend import Spend
from durable_agent.workflows.thinking import Reply, Thinker
from durable_agent.workflows.tool_calls import ToolCalls
from durable_agent.workflows.turn_calls import TurnCalls
from durable_agent.workflows.views import RunView

#: Patch: a run ends (and reports) only once its update handlers have finished.
PATCH_HANDLERS_FINISHED = "run-ends-after-handlers"
#: Patch: a continuation resolves its tools again (MCP servers listed, remote tools read) before its first step.
PATCH_TOOLS_RESOLVED_AT_CONTINUE = "tools-resolved-at-continue-as-new"
#: Patch: the daily lease is given back while the last records are written, not before.
PATCH_BOOKS_CLOSED_TOGETHER = "books-closed-together"

__all__ = ["AgentWorkflow", "CarriedState"]

_DESCRIBE_DECISION = '{"approval_id": "...", "reviewer": "...", "comment": "..."}; approval_id is required'


@workflow.defn(name=contracts.AGENT_WORKFLOW)
class AgentWorkflow:
    """One agent run. Input: an :class:`AgentInput` JSON object; result: :class:`AgentResult`."""

    def __init__(self) -> None:
        host = self._host = TemporalHost()
        self.settings = RunSettings()
        self.progress = Progress()
        self.book = RecordBook(host, self.settings)
        self.delegation = Delegation(host, self.settings, self.book.warn)
        self.spend = Spend(host, self.settings, self.delegation)
        self.daily = DailyBudget(host, self.settings, self.progress.phase, self.book.warn)
        self.conversation = Conversation(host, self.settings)
        self.anomalies = AnomalyWatch(self.settings, self.book.warn)
        self.desk = ApprovalDesk(host, self.settings, self.progress.phase, self.book.warn, self.book.latest, self._details)
        self.intake = DecisionIntake(host, self.settings, self.desk, self.book.warn)
        self.desk.before_waiting = self.book.before_waiting  # records are written before a run waits for a person
        self.thinker = Thinker(host, self.settings, self.conversation, self.spend, self.book, self.progress.phase, self._details)
        self.money = MoneyLimits(host, self.settings)
        self.tools = ToolCalls(
            host, self.settings, self.progress, self.desk, self.spend, self.conversation, self._details, self.delegation, self.money
        )
        self.view = RunView(self.settings, self.progress, self.spend, self.book, self.desk, self.daily, self.delegation)
        self.turn = TurnCalls(host, self.settings, self.progress, self.spend, self.anomalies, self.desk, self.tools, self.conversation, self.book)
        #: A sub-agent's reports to its parent run (none for a top-level run).
        self.reporter = ParentReporter(host, self._report)

    def _carriers(self) -> list[Carries]:
        """The components that carry a part of the state into a continuation."""
        return [
            self.settings, self.progress, self.spend, self.book, self.desk, self.conversation, self.anomalies, self.daily, self.delegation,
            self.money,
        ]

    # ------------------------------------------------------------------ handlers

    @workflow.query(name=contracts.QUERY_STATUS, description="Where the run is: step, phase, cost, usage, pending approvals, warnings, budget left.")
    def get_status(self, *_ignored: Any) -> StatusView:
        return self.view.status()

    @workflow.query(name=contracts.QUERY_TRACE, description="The decision records of this run, one per step, in order (long texts cut; whole in the store).")
    def get_trace(self, *_ignored: Any) -> list[DecisionRecord]:
        return self.book.query()

    @workflow.signal(name=contracts.SIGNAL_APPROVE, description=f"Approve a pending action: {_DESCRIBE_DECISION}.")
    def approve(self, *payloads: Any) -> None:
        # Any number of payloads of any shape: a bad one is refused by the intake, never by the SDK (see durable_agent.inputs).
        if not self.delegation.forward_signal(payloads, approved=True):  # a sub-agent's approval goes to the sub-agent
            self.intake.take_signal(payloads, approved=True)

    @workflow.signal(name=contracts.SIGNAL_REJECT, description=f"Reject a pending action: {_DESCRIBE_DECISION}.")
    def reject(self, *payloads: Any) -> None:
        if not self.delegation.forward_signal(payloads, approved=False):
            self.intake.take_signal(payloads, approved=False)

    @workflow.signal(name=contracts.SIGNAL_CHILD_REPORT, description="Internal: a sub-agent run's totals so far, sent by the sub-agent.")
    def child_report(self, *payloads: Any) -> None:
        self.delegation.take_report(payloads)

    @workflow.update(
        name=contracts.UPDATE_REVIEW,
        description='Decide a pending action and get the decided record: {"approval_id": "...", "approved": true, '
        '"reviewer": "...", "comment": "..."}; signed decisions add "run_id", "args_sha256" and "signature".',
    )
    async def review(self, *payloads: Any) -> ApprovalRecord:
        child_approval = self.delegation.owns_review(payloads)
        if child_approval is not None:
            return await self.delegation.forward_review(payloads, child_approval)
        return await self.intake.take_review(payloads)

    @review.validator
    def _validate_review(self, *payloads: Any) -> None:
        if self.delegation.owns_review(payloads) is None:
            self.intake.check_review(payloads)

    # ---------------------------------------------------------------------- run

    @workflow.run
    async def run(self, *args: Any) -> AgentResult:
        # Untyped on purpose: whatever a client sends reaches start_arguments, which refuses it
        # by name; a typed argument that fails to decode would fail the workflow task forever.
        request, carried = continuation.start_arguments(self._host, args, continued=workflow.info().continued_run_id is not None)
        self.settings.input = request
        if carried is not None:
            continuation.restore(self._carriers(), carried)
            # MCP tool lists and remote tools read again for each execution (runs continued before did not).
            if self._host.patched(PATCH_TOOLS_RESOLVED_AT_CONTINUE):
                for warning in await self.settings.refresh_tools(self._host):
                    self.book.warn(warning)
        else:
            await self.settings.resolve_agent(self._host)
            for warning in self.settings.profile.warnings:
                self.book.warn(warning)
            await self.conversation.store_large_task()
        agent = self.settings.profile
        self.settings.autonomy, loosening = policy.run_autonomy(agent.autonomy, request.autonomy)
        # A continuation carries the warning already; a sub-agent is given its parent's level, which only ever tightens.
        if loosening and carried is None and request.parent is None:
            self.book.warn(loosening)
        self.spend.set_budget(subagents.run_budget(request.budget_usd, agent.budget_usd, sub_agent=request.parent is not None))
        self.reporter.start(request.parent)

        try:
            # The run's span in the GenAI conventions; every step's span is its child.
            with genai.agent_span(agent.name, workflow.info().workflow_id, agent.model):
                result = await self._loop()
        except (asyncio.CancelledError, CancelledError, ActivityError) as exc:
            if isinstance(exc, ActivityError) and not is_cancellation(exc):
                # A model call that failed for good (bad key, invalid request, retries spent).
                self.progress.end("failed", None)
                result = self._result(error=failure_message(exc))
            else:
                # Cancelled while waiting, or while an activity ran (which was cancelled with the run).
                self.progress.end("cancelled", self.progress.answer or "The run was cancelled.")
                result = self._result()
        self.desk.close()  # a closed run takes no more decisions; do not advertise any
        result = await self._handlers_finished(result)
        await self._close_books()
        await self.delegation.settled()
        self.progress.phase.move("done")
        await self.reporter.stop()
        workflow.set_current_details(f"**{result.status}** after {result.steps} steps, ${result.total_cost:.4f}")
        if result.status == "failed":
            raise ApplicationError(result.error or "the run failed", result.model_dump(mode="json"), type="AgentRunFailed", non_retryable=True)
        return result

    async def _close_books(self) -> None:
        """Charge what the run spent to its daily lease (the rest goes back) and keep every record, before it reports its end.

        Neither waits for the other, so both go out in one workflow task; runs begun
        before did one, then the other, as their histories say.
        """
        if self.daily.holds_lease() and self._host.patched(PATCH_BOOKS_CLOSED_TOGETHER):
            await asyncio.gather(self.daily.give_back(), self.book.written())
            return
        await self.daily.give_back()
        await self.book.written()

    async def _handlers_finished(self, result: AgentResult) -> AgentResult:
        """Wait for the handlers still running (a signed ``review`` reading the keyring): each reviewer is told the
        outcome, never ``AcceptedUpdateCompletedWorkflow``. The desk is closed first, so none decides now."""
        if workflow.all_handlers_finished() or not workflow.patched(PATCH_HANDLERS_FINISHED):
            return result
        await workflow.wait_condition(workflow.all_handlers_finished)
        return result.model_copy(update={"warnings": self.book.warnings(), "approvals": self.desk.records()})

    async def _loop(self) -> AgentResult:
        request, agent = self.settings.task_input, self.settings.profile
        max_steps = request.max_steps
        # A stored task's continuations hold a stub of it: its reference is what every run of the chain shares.
        fingerprint = telemetry.task_hash(self.conversation.task_ref or request.task)
        while self.progress.step < max_steps:
            if continuation.should_continue_as_new(
                steps_here=self.progress.steps_here,
                every=agent.continue_as_new_every,
                waiting_for_decision=bool(self.desk.pending()),
                suggested=workflow.info().is_continue_as_new_suggested(),
            ):
                await self._continue_as_new()
            # The step's span encloses its think and tool activities' own spans.
            with telemetry.step_span(self.progress.step + 1, fingerprint, agent.name) as span, self.book.describing(span):
                outcome = await self._run_step(max_steps)
            self.book.flush()
            if outcome is not None:
                return outcome
        answer = f"Stopped after {self.progress.step} steps without a final answer (max_steps={max_steps})."
        self.progress.end("max_steps_exceeded", self.progress.answer or answer)
        return self._result()

    async def _run_step(self, max_steps: int) -> AgentResult | None:
        """One think -> act -> observe iteration; the run's result when it ends the run."""
        # Budget: refuse a model call that could take the run over its cap.
        price = self.spend.price()
        estimate = self.conversation.estimate_next_call(price)
        over = self.spend.over_budget_with(estimate)
        if over is not None:
            return self._stop_for_budget(over)
        admission = await self.daily.admit(estimate, self.progress.step)
        if admission.unreachable:
            self.progress.end("failed", f"Stopped before step {self.progress.step + 1}: {admission.why}.")
            return self._result(error=admission.why)
        if not admission.granted:
            return self._stop_for_budget(admission.why)

        self.progress.phase.move("thinking")
        self._details(f"thinking (step {self.progress.step + 1} of at most {max_steps})")
        think_started = workflow.now()
        self.spend.begin_step()
        try:
            reply = await self.thinker.think_through_stops(self.progress.step)
        except ActivityError:
            await self.daily.release(self.progress.step)  # the call failed for good: its estimate is not spent
            raise
        step = self.progress.next_step()
        out, move = reply.out, reply.move
        step_cost = self.spend.charge_step(out.usage, price)
        await self.daily.settle(self.spend.step_total(step_cost), out.daily_budget_usd, step)
        cost = CostRecord(
            **out.usage.model_dump(),
            estimated_cost=pricing.shown_usd(step_cost),
            budget_remaining=self.spend.budget_remaining(),
            daily_budget_remaining=self.daily.remaining,
        )

        for warning in reply.warnings:
            self.book.warn(f"step {step}: {warning}")
        if move is not None and move.kind in ("refused", "give_up"):
            return self._end_on_reply(reply, move, cost, think_started)
        if not out.tool_calls:
            warnings = reply.warnings + self.anomalies.check(step, None, step_cost, out.usage).warnings
            if move is None and out.stop_reason == "max_tokens":
                warnings.append("TRUNCATED: the answer hit max_tokens")
            self.book.record(
                step, ActionRecord(type="final_answer", reasoning=out.text), observations.answered(out.duration_ms, reply.request_ids),
                cost, warnings, started=think_started,
            )
            self.progress.end("success", out.text.strip())
            return self._result()

        self.settings.take_policy(self._host, out, self.book.warn)  # the step's calls, under the policy as configured now
        ending = await self.turn.run(step, out, step_cost, cost, reply.warnings, reply.request_ids, think_started)
        return self._after_call(ending.call, ending.observation, ending.why) if ending is not None else None

    def _after_call(self, call: ToolCall, observation: Observation, why: str) -> AgentResult | None:
        """The run's result when a tool call's outcome ends the run."""
        if observation.status == "budget_exceeded":
            return self._stop_for_budget(self.spend.spent_for(call.name) or "the run's budget is spent")
        if observation.status == "stopped":
            return self._stop_for_anomaly(why)
        if observation.run_cancelled:
            raise asyncio.CancelledError
        return None

    def _end_on_reply(self, reply: Reply, move: stops.NextMove, cost: CostRecord, started: datetime) -> AgentResult:
        """End the run on a refusal, or fail it when no reply could be acted on; a record either way."""
        out = reply.out
        refused = move.kind == "refused"
        self.book.record(
            self.progress.step, ActionRecord(type="final_answer", reasoning=out.text or None),
            observations.reply_ended_run(refused, out.stop_reason, reply.request_ids), cost, reply.warnings, started=started,
        )
        if refused:
            self.progress.end(
                "refused",
                "The model declined to continue with this task (stop reason: refusal). "
                "Nothing further was done; no tool call from the refused reply was run.",
            )
            return self._result()
        self.progress.end("failed", None)
        return self._result(error=move.warning or f"the model's reply could not be acted on (stop reason {out.stop_reason})")

    def _stop_for_budget(self, message: str) -> AgentResult:
        self.progress.end("budget_exceeded", f"Stopped: {message}.")
        self.book.warn(f"BUDGET_EXCEEDED: {message}")
        return self._result()

    def _stop_for_anomaly(self, reason: str) -> AgentResult:
        """End the run with status ``stopped``: an anomaly rule (or a reviewer of a paused run) said so."""
        self.progress.end("stopped", f"Stopped: {reason}.")
        return self._result()

    async def _continue_as_new(self) -> None:
        request = self.settings.task_input
        self.progress.phase.move("continuing")
        await self.book.written()
        await workflow.wait_condition(workflow.all_handlers_finished)
        await self.delegation.settled()
        await self.reporter.stop()  # the continuation reports on from where this one stopped
        carried = continuation.assemble(self._carriers())
        start = request.model_dump(mode="json", exclude_none=True)
        task_ref = self.conversation.task_ref
        if task_ref is not None and inputs.task_is_large(request.task):
            # The model has the whole task in the conversation; the continuation's input names it.
            start["task"] = inputs.task_stub(request.task, task_ref)
        bounded = continuation.within_payload_limit(self._host, start, carried, book=self.book, step=self.progress.step)
        # With Worker Versioning the next execution starts on the deployment's current build (this one is pinned).
        workflow.continue_as_new(args=[start, bounded], initial_versioning_behavior=workflow.ContinueAsNewVersioningBehavior.AUTO_UPGRADE)

    # ------------------------------------------------------------------ outputs

    def _details(self, text: str) -> None:
        """The run's current details in the Temporal UI: ``text``, then what it has spent and has left."""
        left = []
        if self.spend.budget_usd is not None:
            left.append(f"${self.spend.budget_remaining():.4f} of the run's budget left")
        if self.daily.remaining is not None:
            left.append(f"${self.daily.remaining:.4f} of the daily budget left")
        budgets = f" {'; '.join(left)}." if left else ""
        workflow.set_current_details(f"{text}\n\nSpent ${self.spend.run_cost():.4f} over {self.progress.step} steps.{budgets}")

    def _result(self, error: str | None = None) -> AgentResult:
        return self.view.result(error)

    def _report(self) -> ChildReport:
        """What a sub-agent tells its parent: its totals (its own children's included) and what waits in it."""
        return ChildReport(
            workflow_id=self._host.ids().workflow_id,
            steps=self.progress.step,
            total_cost=self.spend.run_cost(),
            usage=self.spend.run_usage(),
            pending_approvals=self.view.pending_approvals(),
        )
