"""What a run shows: its ``status`` query and its result, assembled from the components that own each part."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from durable_agent import pricing
    from durable_agent.schemas import AgentResult, PendingApproval, StatusView

from durable_agent.workflows.approval_desk import ApprovalDesk
from durable_agent.workflows.daily_budget import DailyBudget
from durable_agent.workflows.delegation import Delegation
from durable_agent.workflows.progress import Progress
from durable_agent.workflows.records import RecordBook
from durable_agent.workflows.settings import RunSettings
from durable_agent.workflows.spend import Spend


class RunView:
    """Reads the components (never writes them) to answer ``status`` and to make the run's result."""

    def __init__(
        self, settings: RunSettings, progress: Progress, spend: Spend, book: RecordBook, desk: ApprovalDesk, daily: DailyBudget,
        delegation: Delegation,
    ) -> None:
        self._settings = settings
        self._progress = progress
        self._spend = spend
        self._book = book
        self._desk = desk
        self._daily = daily
        self._delegation = delegation

    def pending_approvals(self) -> list[PendingApproval]:
        """What waits for a decision: the run's own held actions, then its sub-agents'."""
        return self._desk.pending() + self._delegation.pending()

    def status(self) -> StatusView:
        agent = self._settings.agent
        return StatusView(
            step=self._progress.step,
            phase=self._progress.phase.phase,
            agent=agent.name if agent else None,
            model=agent.model if agent else None,
            total_cost=pricing.shown_usd(self._spend.run_cost()),
            usage=self._spend.run_usage(),
            tools_used=list(self._progress.tools_used),
            tools_used_unlisted=self._progress.tools_used_unlisted,
            pending_approvals=self.pending_approvals(),
            warnings=self._book.warnings(),
            budget_remaining=self._spend.budget_remaining(),
            status=self._progress.status,
            answer=self._progress.answer,
            waiting_for=self._progress.phase.waiting_for,
            daily_budget_remaining=self._daily.remaining,
            children=self._delegation.children(),
        )

    def result(self, error: str | None = None) -> AgentResult:
        agent = self._settings.agent
        return AgentResult(
            status=self._progress.status or "failed",
            answer=self._progress.answer,
            steps=self._progress.step,
            tools_used=list(self._progress.tools_used),
            tools_used_unlisted=self._progress.tools_used_unlisted,
            total_cost=pricing.shown_usd(self._spend.run_cost()),
            usage=self._spend.run_usage(),
            warnings=self._book.warnings(),
            approvals=self._desk.records(),
            approvals_unlisted=self._desk.records_unlisted,
            error=error,
            model=agent.model if agent else None,
            agent=agent.name if agent else None,
            budget_remaining=self._spend.budget_remaining(),
            daily_budget_remaining=self._daily.remaining,
            children=self._delegation.children(),
        )
