"""Decision records, run warnings, current details and the result of an agent run.

One decision record per step (per tool call of a turn) goes to the ``trace``
query and, once and never on replay, to the trace sink and the metrics.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from durable_agent import anomalies, contracts, pricing, telemetry, trace
    from durable_agent.schemas import (
        ActionRecord,
        AgentResult,
        CostRecord,
        DecisionRecord,
        ToolCall,
        ToolResultPart,
        Usage,
    )

from durable_agent.workflows.state import RunState

#: Decision records kept in workflow state for the ``trace`` query (the sink has all).
TRACE_KEPT = 500
#: Most bytes of JSON the ``trace`` query answers with: the latest records that fit.
TRACE_QUERY_BYTES = 1_000_000
#: Run-level warnings of one kind listed in the status and the result; more are only counted.
WARNINGS_PER_KIND = 10


def _warning_kind(text: str) -> str:
    """``POSSIBLE_LOOP`` of ``"step 7: POSSIBLE_LOOP: ..."``; the whole text when it has no kind."""
    body = re.sub(r"^step \d+: ", "", text)
    head, sep, _ = body.partition(":")
    return head if sep and head.replace("_", "").isalnum() and head.isupper() else body


class RunRecords(RunState):
    """Records, warnings, details and the result: what a run tells the world about itself."""

    @workflow.query(name=contracts.QUERY_TRACE, description="The decision records of this run, one per step, in order.")
    def get_trace(self, *_ignored: Any) -> list[DecisionRecord]:
        """The latest records, oldest first, at most ``TRACE_QUERY_BYTES`` of JSON (the sink has every one)."""
        kept: list[DecisionRecord] = []
        size = 0
        for record in reversed(self.trace):
            size += len(record.model_dump_json())
            if size > TRACE_QUERY_BYTES and kept:
                break
            kept.append(record)
        kept.reverse()
        return kept

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

