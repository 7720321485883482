"""Payloads of the model and tool activities: ``think``, ``compact_context`` and ``run_tool``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from durable_agent.schemas.common import Usage
from durable_agent.schemas.profile import LivePolicy
from durable_agent.schemas.records import DecisionRecord


class ToolResultPart(BaseModel):
    """A tool result to append to the conversation before the next model call.

    Either ``ref`` (full output kept in the content store) or ``text`` (a short
    observation the workflow wrote itself, e.g. a rejection).
    """

    tool_use_id: str
    ref: str | None = None
    text: str | None = None
    is_error: bool = False


class ThinkInput(BaseModel):
    """One model call. Sizes stay flat: the conversation is a reference, not a copy."""

    session_id: str
    agent: str
    model: str
    max_tokens: int
    prompt_ref: str
    head: str | None = Field(description="Reference of the conversation so far (None: empty).")
    user_text: str | None = Field(default=None, description="A user message to append first (the task).")
    user_ref: str | None = Field(default=None, description="Reference of a stored task to append first as the user message (a large task).")
    tool_results: list[ToolResultPart] = Field(default_factory=list)
    step: int
    context_window: int | None = Field(default=None, description="Tokens the model can read; None: the model's own.")
    thinking_budget_tokens: int | None = None
    context_management: bool = False
    policy_digest: str | None = Field(default=None, description="The digest of the policy last reported to the run (None: report it).")
    parallel_tool_calls: bool = Field(default=False, description="The model may make several tool calls in one turn.")
    expected_prompt_tokens: int | None = Field(
        default=None,
        description="The prompt's size from the last call's usage and what is new; the API counts tokens only when it nears the window.",
    )
    records: list[DecisionRecord] = Field(
        default_factory=list, description="Decision records of earlier steps, written (once per id) before the model call."
    )


class CompactInput(BaseModel):
    """Make the conversation ``head`` fit again: elide old tool results, then summarise older turns."""

    session_id: str
    agent: str
    model: str
    prompt_ref: str
    head: str
    max_tokens: int = Field(description="The output allowance the next call needs room for.")
    context_window: int | None = None
    step: int
    reason: str = ""


class CompactOutput(BaseModel):
    """A compaction's outcome: the new conversation head and what it took."""

    head: str
    tokens_before: int
    tokens_after: int
    tiers: list[str] = Field(default_factory=list, description="'elide' and/or 'summary', in the order applied.")
    elided_results: int = 0
    summarised_messages: int = 0
    fits: bool = Field(description="The conversation now fits under the window with room for the allowance.")
    usage: Usage = Field(default_factory=Usage)
    summary_preview: str = ""
    request_id: str | None = None
    duration_ms: int = 0


class ToolCall(BaseModel):
    id: str
    name: str
    args: dict[str, Any] = Field(default_factory=dict)


class ThinkOutput(BaseModel):
    """One model call's outcome. A reply that must not be acted on is not appended to ``head``."""

    head: str
    text: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    stop_reason: str | None = None
    model: str
    duration_ms: int = 0
    truncated: bool = Field(default=False, description="Cut by max_tokens (or the window): kept out of the conversation, never acted on.")
    cut_tool_calls: list[str] = Field(default_factory=list, description="Tools whose calls the cut reply was writing.")
    request_id: str | None = Field(default=None, description="The API's id of the request that answered.")
    records_written: bool = Field(default=True, description="False when the records handed over could not be written (written later).")
    daily_budget_usd: float | None = Field(
        default=None, description="The agent's daily budget as configured on the worker now: a lowered one ends the run's lease early."
    )
    over_window: bool = Field(default=False, description="Not sent (or refused by the API): the prompt does not fit the window.")
    prompt_tokens: int | None = Field(default=None, description="Tokens of the prompt as counted before sending.")
    policy: LivePolicy | None = Field(
        default=None, description="The profile's policy as configured on the worker now, when it differs from the one last reported."
    )
    policy_digest: str | None = Field(default=None, description="The digest of the configured policy (durable_agent.live_policy).")
    policy_warnings: list[str] = Field(default_factory=list, description="Why the policy could not be read now (the run keeps its own).")


class ToolCallInput(BaseModel):
    session_id: str
    agent: str
    call: ToolCall
    idempotency_key: str
    step: int


class RemoteResultInput(BaseModel):
    """A remote tool's result, to be stored like any tool's (the ``store_remote_result`` local activity)."""

    call: ToolCall
    #: The JSON value the other worker's activity returned.
    value: Any = None
    idempotency_key: str
    duration_ms: int = 0


class ToolCallOutput(BaseModel):
    #: ``outcome_unknown``: a tool that changes the world timed out (it may or may not have done its work) and was not run again.
    status: Literal["ok", "error", "invalid_arguments", "unknown_tool", "outcome_unknown"]
    ref: str | None = None
    preview: str = ""
    error: str | None = None
    duration_ms: int = 0
    chars: int = Field(default=0, description="Size of the full result, for the next call's cost estimate.")
    warnings: list[str] = Field(
        default_factory=list,
        description="What had to be changed to keep the result (RESULT_CONVERTED, RESULT_NOT_STORED), or was refused (READ_RESULT_REFUSED).",
    )
