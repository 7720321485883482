"""Decision records, run warnings, anomalies, current details and the result of an agent run.

One decision record per step (per tool call of a turn), each with a stable
``record_id``. The whole records of a step go to the ``record_decisions``
activity at the end of the step, which keeps each once in the content store and
the trace sink (see :mod:`durable_agent.trace`); the ``trace`` query keeps a
slim copy (long texts cut) under a byte cap. Metrics and log lines are emitted
once, never on replay.
"""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from durable_agent import anomalies, contracts, pricing, telemetry, trace
    from durable_agent.schemas import (
        ActionRecord,
        AgentResult,
        CostRecord,
        DecisionRecord,
        RecordDecisionsInput,
        ToolCall,
        ToolResultPart,
        Usage,
    )

from durable_agent.workflows.state import RunState

#: Decision records kept in workflow state for the ``trace`` query (the store has all, whole).
TRACE_KEPT = 500
#: Recording a step's records: retried for up to ten minutes while the store is unreachable.
RECORD_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))
RECORD_TIMEOUT = timedelta(minutes=10)
#: One attempt: a few file or object writes. Short, so a killed worker's attempt is retried soon.
RECORD_ATTEMPT_TIMEOUT = timedelta(seconds=20)
#: Step costs the median rule remembers (carried across continue-as-new).
COSTS_KEPT = 50
#: Run-level warnings of one kind listed in the status and the result; more are only counted.
WARNINGS_PER_KIND = 10


def _warning_kind(text: str) -> str:
    """``POSSIBLE_LOOP`` of ``"step 7: POSSIBLE_LOOP: ..."``; the whole text when it has no kind."""
    body = re.sub(r"^step \d+: ", "", text)
    head, sep, _ = body.partition(":")
    return head if sep and head.replace("_", "").isalnum() and head.isupper() else body


class RunRecords(RunState):
    """Records, warnings, details and the result: what a run tells the world about itself."""

    @workflow.query(name=contracts.QUERY_TRACE, description="The decision records of this run, one per step, in order (long texts cut; whole in the store).")
    def get_trace(self, *_ignored: Any) -> list[DecisionRecord]:
        return trace.capped(self.trace)

    def _observe(self, call: ToolCall, status: str, text: str, *, error: bool, approval_id: str | None = None) -> dict[str, Any]:
        """An observation the workflow writes itself (nothing ran); the model reads ``text``."""
        self.pending_results.append(ToolResultPart(tool_use_id=call.id, text=text, is_error=error))
        self.pending_chars += len(text)
        observation: dict[str, Any] = {"status": status, "message": text, "duration_ms": 0}
        if approval_id:
            observation["approval_id"] = approval_id
        return observation

    def _price(self) -> Any:
        assert self.agent is not None
        return pricing.find_price(self.agent.model, self.agent.prices) or self.agent.fallback_price

    def _budget_remaining(self) -> float | None:
        if self.budget_usd is None:
            return None
        return pricing.shown_usd(max(0.0, self.budget_usd - self.total_cost))

    def _stop_for_budget(self, message: str) -> AgentResult:
        self.status = "budget_exceeded"
        self.answer = f"Stopped: {message}."
        self._warn(f"BUDGET_EXCEEDED: {message}")
        return self._result()

    def _stop_for_anomaly(self, reason: str) -> AgentResult:
        """End the run with status ``stopped``: an anomaly rule (or a reviewer of a paused run) said so."""
        self.status = "stopped"
        self.answer = f"Stopped: {reason}."
        return self._result()

    def _anomalies(self, call: ToolCall | None, step_cost: float, usage: Usage) -> tuple[list[str], anomalies.AnomalyAction, str]:
        """The step's anomalies as warnings, what the profile says they make the run do, and why.

        Returns:
            ``(warnings, action, reason)``: ``action`` is ``warn``, ``pause`` or ``stop``;
            ``reason`` names the anomalies that call for it.
        """
        assert self.agent is not None
        if call is not None:
            self.recent_actions.append(anomalies.action_signature(call.name, call.args))
            self.recent_actions = self.recent_actions[-20:]
        found = anomalies.detect(
            self.recent_actions if call is not None else [],
            step_cost=step_cost,
            step_tokens=usage.total_tokens,
            thresholds=self.agent.anomalies,
            previous_costs=self.step_costs,
        )
        if step_cost > 0:  # a turn's later calls carry no cost of their own
            self.step_costs = [*self.step_costs, step_cost][-COSTS_KEPT:]
        # A final answer ends the run anyway: its anomalies only warn.
        action, acting = anomalies.strongest_action(found, self.agent.anomalies) if call is not None else ("warn", [])
        for anomaly in found:
            self._warn(f"step {self.step}: {anomaly}")
            telemetry.count_anomaly(self.agent.name, anomaly.kind, action if anomaly in acting else "warn")
        return [str(a) for a in found], action, "; ".join(str(a) for a in acting)

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
        info = workflow.info()
        if self.step_records and self.step_records[0].step != self.step:
            self._flush_records()  # a step that ended the loop without passing its end (it cannot, but be sure)
        record = DecisionRecord(
            record_id=trace.record_id(info.workflow_id, info.first_execution_run_id, self.step, len(self.step_records)),
            timestamp=now,
            agent_id=self.agent.name,
            session_id=info.workflow_id,
            step=self.step,
            action=action,
            observation=observation,
            cost=cost,
            warnings=warnings,
        )
        first = self.step_records[0] if self.step_records else None
        self.step_records.append(record)
        same_reasoning = first is not None and first.action.reasoning == action.reasoning
        self.trace.append(trace.for_query(record, first.record_id if first is not None and same_reasoning else None))
        if len(self.trace) > TRACE_KEPT:
            del self.trace[: len(self.trace) - TRACE_KEPT]
        if self.step_span is not None:
            telemetry.describe_step(self.step_span, record)
        # Replay-safe: the meter drops what a replay records, the workflow logger logs nothing then.
        telemetry.record_step_metrics(record, (now - started).total_seconds() * 1000, self.agent.model)
        if self.daily_remaining is not None:
            telemetry.set_daily_budget_remaining(self.agent.name, self.daily_remaining)
        workflow.logger.info(
            "step %d: %s -> %s", self.step, action.tool or "answer", observation.get("status"),
            extra={"step": self.step, "tool": action.tool, "record_id": record.record_id, "agent": self.agent.name},
        )

    def _records_stored(self) -> bool:
        """Whether this run keeps its records through the ``record_decisions`` activity (all new runs)."""
        return workflow.patched("decision-records-stored")

    def _flush_records(self) -> None:
        """Hand the step's records to the ``record_decisions`` activity, without waiting for it."""
        if not self.step_records:
            return
        records, self.step_records = self.step_records, []
        if not self._records_stored():
            # A run begun before records were stored writes its lines from here, as it did then.
            if not workflow.unsafe.is_replaying():
                with workflow.unsafe.sandbox_unrestricted():
                    for record in records:
                        trace.emit(record)
            return
        self.record_writes = [handle for handle in self.record_writes if not handle.done()]
        for batch in trace.batches(records):
            self.record_writes.append(
                workflow.start_activity(
                    contracts.ACTIVITY_RECORD_DECISIONS,
                    RecordDecisionsInput(records=batch),
                    schedule_to_close_timeout=RECORD_TIMEOUT,
                    start_to_close_timeout=RECORD_ATTEMPT_TIMEOUT,
                    retry_policy=RECORD_RETRY,
                    summary=f"record step {batch[0].step}",
                )
            )

    async def _records_written(self) -> None:
        """Wait until every step handed over is recorded (before the run ends or continues as new).

        A store that stays unreachable for RECORD_TIMEOUT costs the run its records, not its
        result: that is said in its warnings.
        """
        self._flush_records()
        writes, self.record_writes = self.record_writes, []
        for handle in writes:
            try:
                await handle
            except ActivityError as exc:
                self._warn(f"RECORDS_NOT_STORED: {exc.cause or exc}")
            except asyncio.CancelledError:
                return  # cancelled while closing: the activities go on, the run ends

    def _count_waiting(self) -> None:
        """Bring the ``agent.approvals.waiting`` metric in line with this run's pending approvals."""
        if self.agent is not None and len(self.pending) != self.waiting_counted:
            telemetry.count_approvals_waiting(self.agent.name, len(self.pending) - self.waiting_counted)
            self.waiting_counted = len(self.pending)

    def _details(self, text: str) -> None:
        self._count_waiting()  # the details change whenever an approval opens or closes
        if self.phase not in ("waiting_for_approval", "waiting_for_rate_limit", "waiting_for_budget"):
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
            tools_used_unlisted=self.tools_used_unlisted,
            total_cost=pricing.shown_usd(self.total_cost),
            usage=self.usage,
            warnings=self._warnings_view(),
            approvals=list(self.approvals),
            approvals_unlisted=self.approvals_unlisted,
            error=error,
            model=self.agent.model if self.agent else None,
            agent=self.agent.name if self.agent else None,
            budget_remaining=self._budget_remaining(),
            daily_budget_remaining=self.daily_remaining,
        )

