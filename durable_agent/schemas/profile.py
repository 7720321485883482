"""An agent profile as a run sees it: frozen once (``ResolvedAgent``), with its tools' policy metadata,
approval policy, anomaly thresholds and prices.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from durable_agent.schemas.common import Autonomy, StrictModel


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
    parallel_tool_calls: bool = Field(
        default=False, description="The model may make several tool calls a turn (False for runs resolved before the switch)."
    )
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
