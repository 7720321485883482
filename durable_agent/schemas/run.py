"""A run's input, its result, and the ``status`` query's answer."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, field_validator

from durable_agent.inputs import MAX_NAME_CHARS, MAX_TASK_CHARS
from durable_agent.schemas.approvals import ApprovalRecord, PendingApproval
from durable_agent.schemas.common import Autonomy, Phase, RunStatus, StrictModel, Usage
from durable_agent.schemas.delegation import ChildRun, ParentLink


class AgentInput(StrictModel):
    """Input of one ``AgentWorkflow`` run (the JSON object given to ``temporal workflow start``)."""

    task: str = Field(min_length=1, max_length=MAX_TASK_CHARS, description="What the agent should do.")
    agent: str | None = Field(default=None, max_length=MAX_NAME_CHARS, description="Profile name; the default profile when absent.")
    max_steps: int = Field(default=20, ge=1, le=100_000, description="Think-act iterations before giving up.")
    budget_usd: float | None = Field(default=None, ge=0, description="Per-run spending cap in USD.")
    autonomy: Autonomy | None = Field(default=None, description="May only tighten the profile's level.")
    model: str | None = Field(default=None, max_length=MAX_NAME_CHARS, description="Model override, e.g. 'offline' or a Claude model id.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Free JSON, kept with the run.")
    parent: ParentLink | None = Field(default=None, description="Set by a run that delegates to this one (a sub-agent).")

    @field_validator("task")
    @classmethod
    def _task_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("task must not be blank")
        return value


class AgentResult(BaseModel):
    """What an ``AgentWorkflow`` run returns."""

    status: RunStatus
    answer: str | None = None
    steps: int = 0
    tools_used: list[str] = Field(default_factory=list)
    tools_used_unlisted: int = Field(default=0, description="Earlier tool calls not listed in tools_used (long runs list the latest).")
    total_cost: float = 0.0
    usage: Usage = Field(default_factory=Usage)
    warnings: list[str] = Field(default_factory=list)
    approvals: list[ApprovalRecord] = Field(default_factory=list)
    approvals_unlisted: int = Field(default=0, description="Earlier approvals not listed (long runs list the latest).")
    error: str | None = None
    model: str | None = None
    agent: str | None = None
    budget_remaining: float | None = Field(default=None, description="The run's budget left (None: no per-run budget).")
    daily_budget_remaining: float | None = Field(
        default=None, description="The agent's daily budget left, as last seen (None: no daily budget)."
    )
    children: list[ChildRun] = Field(
        default_factory=list, description="Sub-agent runs; total_cost and usage include theirs."
    )


class StatusView(BaseModel):
    """Result of the ``status`` query."""

    step: int
    phase: Phase
    agent: str | None
    model: str | None
    total_cost: float
    usage: Usage
    tools_used: list[str]
    tools_used_unlisted: int = 0
    pending_approvals: list[PendingApproval]
    warnings: list[str]
    budget_remaining: float | None
    status: RunStatus | None = None
    answer: str | None = None
    waiting_for: str | None = None
    daily_budget_remaining: float | None = Field(
        default=None, description="The agent's daily budget left, as last seen (None: no daily budget)."
    )
    children: list[ChildRun] = Field(default_factory=list, description="Sub-agent runs so far (their cost is in total_cost).")
