"""Decision records: one per step, in the ``trace`` query, the trace sink and the content store."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field


class ActionRecord(BaseModel):
    type: Literal["tool_call", "final_answer", "compaction"]
    tool: str | None = None
    args: dict[str, Any] | None = None
    reasoning: str | None = None


class CostRecord(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    estimated_cost: float = 0.0
    budget_remaining: float | None = Field(default=None, description="The run's budget left after this step.")
    daily_budget_remaining: float | None = Field(default=None, description="The agent's daily budget left, as last seen.")


class DecisionRecord(BaseModel):
    """One line of the decision trace: what the agent decided at a step and what came of it."""

    record_id: str | None = Field(default=None, description="{workflow id}/{first run id}/{step}/{call}: stable, unique.")
    timestamp: datetime
    agent_id: str
    session_id: str
    step: int
    action: ActionRecord
    observation: dict[str, Any]
    cost: CostRecord
    warnings: list[str] = Field(default_factory=list)
    parent_record_id: str | None = Field(default=None, description="A sub-agent's records: the parent's record of the call.")
    truncated: bool = Field(default=False, description="Text was cut for the trace query; the store has it whole.")
    policy_digest: str | None = Field(default=None, description="The policy the step was decided under (durable_agent.live_policy).")
    profile_digest: str | None = Field(default=None, description="The model, prompt and tool catalogue the step ran with.")


class RecordDecisionsInput(BaseModel):
    """Input of the ``record_decisions`` activity: one step's decision records, whole."""

    records: list[DecisionRecord]
