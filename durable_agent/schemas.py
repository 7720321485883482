"""Data shapes shared by workflows, activities, the worker, the starter and clients.

Everything that crosses the Temporal boundary is a pydantic model, serialised by
``temporalio.contrib.pydantic.pydantic_data_converter``. Models that users type
by hand (the run input, approval decisions) forbid unknown fields so a typo is an
error that names the field rather than a silently ignored setting.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from durable_agent.inputs import MAX_COMMENT_CHARS, MAX_NAME_CHARS, MAX_TASK_CHARS


class Autonomy(str, Enum):
    """How much an agent may do without a human. Ordered from tightest to loosest."""

    READ_ONLY = "read_only"
    SUPERVISED = "supervised"
    AUTONOMOUS = "autonomous"

    @property
    def rank(self) -> int:
        return _AUTONOMY_RANK[self]

    def tighten(self, requested: "Autonomy | None") -> "Autonomy":
        """Return the tighter of this level and ``requested`` (a run may only tighten)."""
        if requested is None or requested.rank >= self.rank:
            return self
        return requested


_AUTONOMY_RANK = {Autonomy.READ_ONLY: 0, Autonomy.SUPERVISED: 1, Autonomy.AUTONOMOUS: 2}

#: How a run ended. ``stopped``: an anomaly rule stopped it; ``refused``: the model refused the task.
RunStatus = Literal["success", "max_steps_exceeded", "budget_exceeded", "cancelled", "failed", "stopped", "refused"]
Phase = Literal[
    "starting",
    "thinking",
    "acting",
    "waiting_for_approval",
    "waiting_for_rate_limit",
    "waiting_for_budget",
    "continuing",
    "compacting",
    "done",
]


class StrictModel(BaseModel):
    """Base for models that people write by hand: unknown fields are errors, numbers are finite.

    ``Infinity`` and ``NaN`` (which JSON parsers and pydantic accept, also as strings)
    would defeat every limit compared with them, so each number field refuses them by name.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class AgentInput(StrictModel):
    """Input of one ``AgentWorkflow`` run (the JSON object given to ``temporal workflow start``)."""

    task: str = Field(min_length=1, max_length=MAX_TASK_CHARS, description="What the agent should do.")
    agent: str | None = Field(default=None, max_length=MAX_NAME_CHARS, description="Profile name; the default profile when absent.")
    max_steps: int = Field(default=20, ge=1, le=100_000, description="Think-act iterations before giving up.")
    budget_usd: float | None = Field(default=None, ge=0, description="Per-run spending cap in USD.")
    autonomy: Autonomy | None = Field(default=None, description="May only tighten the profile's level.")
    model: str | None = Field(default=None, max_length=MAX_NAME_CHARS, description="Model override, e.g. 'offline' or a Claude model id.")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Free JSON, kept with the run.")

    @field_validator("task")
    @classmethod
    def _task_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("task must not be blank")
        return value


class Usage(BaseModel):
    """Token usage as the Messages API reports it."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_creation_input_tokens=self.cache_creation_input_tokens + other.cache_creation_input_tokens,
            cache_read_input_tokens=self.cache_read_input_tokens + other.cache_read_input_tokens,
        )

    @property
    def total_tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_creation_input_tokens
            + self.cache_read_input_tokens
        )


class ApprovalRecord(BaseModel):
    """The outcome of one approval request."""

    approval_id: str
    tool: str
    status: Literal["approved", "rejected", "timed_out"]
    reviewer: str | None = None
    comment: str | None = None
    decided_at: datetime | None = None


class PendingApproval(BaseModel):
    """An action held for review, as the ``status`` query and the inbox show it."""

    approval_id: str = Field(description="Unique across executions of the workflow id: a decision names it.")
    run_id: str = Field(default="", description="The execution the approval waits in; signed decisions name it.")
    tool: str
    args: dict[str, Any]
    args_sha256: str = Field(default="", description="SHA-256 of the canonical JSON of args (signing.args_digest).")
    amount: float | None = Field(default=None, description="The money the call moves, from the tool's amount_arg.")
    currency: str | None = None
    risk: str
    reason: str
    deadline: datetime
    requested_at: datetime
    context: list[dict[str, Any]] = Field(default_factory=list, description="The last steps, for the reviewer.")
    require_signature: bool = Field(default=False, description="Only signed decisions count (durable-agent approve, the inbox).")


class Decision(StrictModel):
    """Payload of the ``approve`` and ``reject`` signals (profiles that do not require signatures)."""

    approval_id: str | None = Field(default=None, max_length=MAX_NAME_CHARS, description="Required: the approval decided.")
    reviewer: str | None = Field(default=None, max_length=MAX_NAME_CHARS)
    comment: str | None = Field(default=None, max_length=MAX_COMMENT_CHARS)
    args_sha256: str | None = Field(default=None, max_length=64, description="When given, must match the action that waits.")


class DecisionSignature(StrictModel):
    """An Ed25519 signature of a decision (see :func:`durable_agent.signing.decision_message`)."""

    signer: str = Field(max_length=MAX_NAME_CHARS, description="The key's name under [reviewer_keys]: the reviewer, or a delegate signing for them.")
    expires_at: int = Field(description="Unix time in seconds; the decision is refused after it.")
    value: str = Field(max_length=200, description="The base64 signature.")


class ReviewRequest(StrictModel):
    """Payload of the ``review`` update."""

    approval_id: str | None = Field(default=None, max_length=MAX_NAME_CHARS, description="Required: the approval decided.")
    approved: bool
    reviewer: str | None = Field(default=None, max_length=MAX_NAME_CHARS)
    comment: str | None = Field(default=None, max_length=MAX_COMMENT_CHARS)
    args_sha256: str | None = Field(default=None, max_length=64, description="When given, must match the action that waits.")
    run_id: str | None = Field(default=None, max_length=MAX_NAME_CHARS, description="When given, must be the execution the approval waits in.")
    signature: DecisionSignature | None = Field(default=None, description="Required by profiles with require_signature.")


class ReviewerKeyring(BaseModel):
    """Who may decide for an agent now, read from the worker's configuration at decision time.

    Public keys only: it is recorded in the run's history.
    """

    agent: str
    reviewers: list[str] = Field(default_factory=list, description="The allow-list.")
    delegates: list[str] = Field(default_factory=list, description="Keys that may sign for a reviewer on the allow-list.")
    keys: dict[str, str] = Field(default_factory=dict, description="Name -> ed25519:BASE64, for the names above.")


class KeyringRequest(BaseModel):
    """Input of the ``reviewer_keyring`` activity."""

    agent: str


class ReviewerNotice(BaseModel):
    """Input of the ``notify_reviewer`` activity; also the body of the webhook POST (plus ``event``)."""

    workflow_id: str
    namespace: str = "default"
    agent: str
    approval: PendingApproval
    approve_command: str = Field(default="", description="The exact `temporal` CLI command that approves it.")
    webhook_url: str | None = Field(
        default=None, description="Ignored: notices of older workers carried it. The activity reads the URL from its configuration."
    )
    require_signature: bool = Field(default=False, description="Decisions must be signed (durable-agent approve, the inbox).")


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
    truncated: bool = Field(default=False, description="Text was cut for the trace query; the store has it whole.")


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


# --- Activity payloads -------------------------------------------------------------


class ToolInfo(BaseModel):
    """What the workflow knows of a tool: its policy metadata, never its code."""

    name: str
    description: str = ""
    input_schema: dict[str, Any] = Field(default_factory=dict)
    read_only: bool = False
    destructive: bool = False
    risk: Literal["low", "medium", "high"] = "low"
    amount_arg: str | None = None
    currency_arg: str | None = None
    protected: bool = False
    timeout_seconds: float = 60.0
    retry: str = "tool_default"
    rate_limit: str | None = None
    rate_limit_wait: bool = Field(default=True, description="Over the limit: wait for a slot, or tell the model at once.")
    rate_limit_lane: str = Field(default="", description="Whose limit it is: '' the tool's own, agent:<name> a profile's.")
    heartbeat_seconds: float | None = None
    idempotent: bool = Field(
        default=False, description="Running it twice does what running it once does (it honours its idempotency key)."
    )

    @property
    def repeatable(self) -> bool:
        """Whether another attempt after a timeout is safe: the tool changes nothing, or is declared idempotent.

        A timed-out attempt may have done its work; running a tool that is neither
        again could do it twice, so its outcome is reported as unknown instead.
        """
        return self.read_only or self.idempotent


class ApprovalPolicy(StrictModel):
    """Which actions wait for a person (supervised autonomy only)."""

    high_risk_actions: list[Literal["low", "medium", "high"]] = Field(default_factory=lambda: ["high"])  # type: ignore[arg-type]  # pydantic's stub infers list[str]
    protected_tools: list[str] = Field(default_factory=list)
    max_amount: float | None = None
    destructive_needs_approval: bool = True
    reviewers: list[str] = Field(default_factory=list, description="Allowed reviewers; empty: anyone (unsigned profiles only).")
    timeout_seconds: float = Field(default=300.0, gt=0)
    webhook_url: str | None = Field(
        default=None, description="Where notify_reviewer POSTs. A secret: read from the worker's configuration, in no payload."
    )
    webhook_plaintext: bool = Field(
        default=False, description="With encryption on, send the arguments and last steps in the webhook body anyway."
    )
    require_signature: bool = Field(default=False, description="Only Ed25519-signed decisions count ([reviewer_keys]).")
    delegates: list[str] = Field(
        default_factory=list, description="Keys (e.g. the inbox's) that may sign for any reviewer on the allow-list."
    )
    inbox_url: str | None = Field(default=None, description="The reviewer inbox's address; notifications link into it.")


class AnomalyThresholds(StrictModel):
    """Per-profile thresholds for the anomaly rules."""

    loop_repeats: int = Field(default=3, ge=2, description="Same tool with same args this many times in a row.")
    step_cost_usd: float = Field(default=0.50, gt=0, description="One step costing more than this is HIGH_COST.")
    step_tokens: int = Field(default=50_000, gt=0, description="One step using more tokens is HIGH_TOKEN_USAGE.")
    cycle_repeats: int = Field(default=2, ge=2, description="A cycle of 2-3 identical calls (A-B-A-B) repeated this many times.")
    median_factor: float = Field(default=10.0, gt=1, description="A step costing this many times the run's median step is HIGH_COST.")
    median_min_steps: int = Field(default=5, ge=1, description="Earlier steps needed before the median rule applies.")
    on_loop: Literal["warn", "pause", "stop"] = Field(default="warn", description="What POSSIBLE_LOOP does to the run.")
    on_high_cost: Literal["warn", "pause", "stop"] = Field(default="warn", description="What HIGH_COST does to the run.")
    on_high_tokens: Literal["warn", "pause", "stop"] = Field(default="warn", description="What HIGH_TOKEN_USAGE does to the run.")


class ResolvedAgent(BaseModel):
    """A profile frozen for one run: recorded once in history so replays never re-read config."""

    name: str
    model: str
    autonomy: Autonomy
    max_tokens: int
    prompt_ref: str
    tools: list[ToolInfo]
    approval: ApprovalPolicy
    anomalies: AnomalyThresholds
    budget_usd: float | None = None
    daily_budget_usd: float | None = None
    continue_as_new_every: int = 250
    prices: dict[str, "ModelPrice"] = Field(default_factory=dict)
    fallback_price: "ModelPrice"
    warnings: list[str] = Field(default_factory=list)
    approval_index: str | None = Field(
        default=None, description="The search attribute that marks runs awaiting approval, when the server has it."
    )
    context_window_tokens: int | None = Field(default=None, description="The profile's override of the model's window.")
    thinking_budget_tokens: int | None = Field(default=None, description="Extended thinking's budget; None: off.")
    context_management: bool = Field(default=False, description="Ask the API to clear old tool results itself (tier 3).")
    prompt_tokens: int = Field(default=0, description="Estimated tokens of the system prompt and tool schemas.")
    limits_task_queue: str | None = Field(
        default=None, description="Where the worker starts the daily-budget ledgers and rate limiters (named when a run waits for them)."
    )

    def tool(self, name: str) -> ToolInfo | None:
        for info in self.tools:
            if info.name == name:
                return info
        return None


class ModelPrice(StrictModel):
    """USD per million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_write: float | None = Field(default=None, ge=0, description="Defaults to 1.25 x input.")
    cache_read: float | None = Field(default=None, ge=0, description="Defaults to 0.1 x input.")


ResolvedAgent.model_rebuild()


class ResolveAgentInput(BaseModel):
    agent: str | None
    model_override: str | None = None


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
    daily_budget_usd: float | None = Field(
        default=None, description="The agent's daily budget as configured on the worker now: a lowered one ends the run's lease early."
    )
    over_window: bool = Field(default=False, description="Not sent (or refused by the API): the prompt does not fit the window.")
    prompt_tokens: int | None = Field(default=None, description="Tokens of the prompt as counted before sending.")


class ToolCallInput(BaseModel):
    session_id: str
    agent: str
    call: ToolCall
    idempotency_key: str
    step: int


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


class RecordDecisionsInput(BaseModel):
    """Input of the ``record_decisions`` activity: one step's decision records, whole."""

    records: list[DecisionRecord]
