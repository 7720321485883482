"""An agent profile as a run sees it: frozen once (``ResolvedAgent``), with its tools' policy metadata,
approval policy, anomaly thresholds and prices.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from durable_agent.schemas.common import Autonomy, StrictModel

#: How long a run waits for its daily budget's ledger by default (``daily_budget_wait_seconds``): an hour.
DAILY_BUDGET_WAIT_SECONDS = 3600.0


class RemoteTarget(BaseModel):
    """Where a remote tool (``[remote_tools.NAME]``) is served: an activity on another worker's task queue."""

    task_queue: str
    activity: str
    schedule_to_start_seconds: float = Field(description="How long a call waits for that queue's worker before the tool counts as unavailable.")
    heartbeat_timeout_seconds: float | None = Field(default=None, description="Only for activities that heartbeat; None: no heartbeat timeout.")
#: A currency code as profiles and tools write it: ``USD``, ``JPY``, ``USDT`` (compared in upper case).
CURRENCY_CODE = re.compile(r"^[A-Z][A-Z0-9]{1,9}$")


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
    currency_default: str | None = Field(
        default=None, description="The currency of a call that leaves currency_arg out (its default in the tool's signature)."
    )
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
    remote: RemoteTarget | None = Field(default=None, description="Set for a remote tool: the workflow schedules that activity itself.")
    subagent: bool = Field(default=False, description="A sub-agent: calling it starts a child run of the profile of this name.")

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
    # No bound here: histories of runs begun with any number must still decode (load_config refuses a negative one).
    max_amount: float | None = Field(
        default=None, description="The most one call may move without a person (amount_arg); unset: every amount waits."
    )
    max_amount_per_run: float | None = Field(
        default=None, ge=0, description="The most one run's calls may move without a person, together; unset: max_amount."
    )
    currency: str = Field(default="USD", description="The currency of max_amount and max_amount_per_run.")
    rates: dict[str, Annotated[float, Field(gt=0)]] = Field(
        default_factory=dict, description="Currency -> one unit's value in the profile's currency; an amount in another currency waits."
    )
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

    @field_validator("currency")
    @classmethod
    def _currency_code(cls, value: str) -> str:
        return _currency_code(value)

    @field_validator("rates")
    @classmethod
    def _rate_codes(cls, value: dict[str, float]) -> dict[str, float]:
        return {_currency_code(code): rate for code, rate in value.items()}

    @model_validator(mode="after")
    def _own_rate_is_one(self) -> "ApprovalPolicy":
        own = self.rates.get(self.currency)
        if own is not None and own != 1:
            raise ValueError(f"rates.{self.currency} is {own:g}, but {self.currency} is this profile's currency (its rate is 1): remove it")
        return self


def _currency_code(value: str) -> str:
    """``value`` in upper case, when it is a currency code (``USD``, ``jpy``, ``USDT``)."""
    code = value.strip().upper()
    if not CURRENCY_CODE.match(code):
        raise ValueError(f"{value!r} is not a currency code (letters and digits, such as USD, EUR, JPY)")
    return code


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
    daily_budget_wait_seconds: float = Field(
        default=DAILY_BUDGET_WAIT_SECONDS, description="How long a run waits for its daily budget's ledger before it fails."
    )
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
    max_depth: int = Field(default=3, description="How deep delegation to sub-agents may go below a top-level run.")
    max_children: int = Field(default=10, description="Sub-agent runs one run may start.")
    limits_task_queue: str | None = Field(
        default=None, description="Where the worker starts the daily-budget ledgers and rate limiters (named when a run waits for them)."
    )

    def tool(self, name: str) -> ToolInfo | None:
        for info in self.tools:
            if info.name == name:
                return info
        return None


class LivePolicy(BaseModel):
    """The policy half of a profile, as the worker's configuration holds it now (:mod:`durable_agent.live_policy`)."""

    autonomy: Autonomy = Field(description="The profile's autonomy: a ceiling the run's own request may only tighten.")
    approval: ApprovalPolicy
    anomalies: AnomalyThresholds
    tools: dict[str, dict[str, Any]] = Field(default_factory=dict, description="Each tool's rules (TOOL_RULES), by model-facing name.")


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
