"""Agent profiles: ``agents.toml``, validated once at worker start.

A bad file stops the worker with the file and the key named
(:class:`~durable_agent.errors.ConfigError`); a run never discovers it halfway.
"""

from __future__ import annotations

import importlib
import os
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydantic
from pydantic import Field, PrivateAttr, field_validator, model_validator

from durable_agent import money, signing, subagents
from durable_agent.contracts import TOOL_READ_RESULT
from durable_agent.errors import ConfigError, ToolDefinitionError
from durable_agent.fields import describe_text_number, looks_like_a_number, numbers_as_text, unknown_key_hint
from durable_agent.mcp.config import McpServerConfig, is_mcp_entry, merge_servers
from durable_agent.pricing import DEFAULT_FALLBACK_PRICE, DEFAULT_PRICES
from durable_agent.ratelimit import Window
from durable_agent.schemas.profile import DAILY_BUDGET_WAIT_SECONDS
from durable_agent.remote_tools import RemoteToolConfig, check_remote_tools
from durable_agent.schemas import AnomalyThresholds, ApprovalPolicy, Autonomy, ModelPrice, ReviewerKeyring, StrictModel
from durable_agent.tool_policy import ToolPolicy, apply as apply_tool_policy, check_profile_entries, names_a_tool
from durable_agent.tools import parse_rate_limit, registry

#: The Claude model used when a profile says ``model = "auto"`` and a key is present.
DEFAULT_CLAUDE_MODEL = "claude-sonnet-5-5"
OFFLINE_MODEL = "offline"


class Profile(StrictModel):
    """One agent: its model, prompt, tools and limits."""

    description: str = ""
    model: str = Field(default="auto", description="'auto' = Claude with ANTHROPIC_API_KEY, else 'offline'.")
    system_prompt: str = "You are a careful assistant. Use the tools to act; answer briefly when done."
    tools: list[str] = Field(default_factory=list)
    autonomy: Autonomy = Autonomy.SUPERVISED
    max_tokens: int = Field(default=1024, ge=1, le=128_000)
    continue_as_new_every: int = Field(default=250, ge=2, description="Steps per workflow run before continuing as new.")
    context_window_tokens: int | None = Field(
        default=None, ge=4096, description="Tokens the model may read; overrides the model's window (README: long runs)."
    )
    thinking_budget_tokens: int | None = Field(
        default=None, ge=1024, description="Extended thinking with this budget (must be under max_tokens); unset: off."
    )
    context_management: bool = Field(
        default=False, description="Also let the API clear old tool results server-side (models that offer it)."
    )
    parallel_tool_calls: bool = Field(
        default=True, description="Let the model make several tool calls a turn; the read-only ones run at once."
    )
    budget_usd: float | None = Field(default=None, ge=0, description="Per-run cap unless the run sets one.")
    daily_budget_usd: float | None = Field(default=None, ge=0, description="Shared by all runs of the agent per UTC day.")
    daily_budget_wait_seconds: float = Field(
        default=DAILY_BUDGET_WAIT_SECONDS, gt=0,
        description="How long a run waits for its daily budget's ledger (nothing serving the limits queue) before it fails.",
    )
    approval: ApprovalPolicy = Field(default_factory=ApprovalPolicy)
    anomalies: AnomalyThresholds = Field(default_factory=AnomalyThresholds)
    rate_limits: dict[str, str] = Field(default_factory=dict, description="Tool name -> 'N/unit', overrides the tool's.")
    rate_limit_wait: dict[str, bool] = Field(
        default_factory=dict, description="Tool name -> wait for a free slot (true) or tell the model at once (false)."
    )
    tool_policy: dict[str, ToolPolicy] = Field(
        default_factory=dict, description='Tool name, "SERVER.TOOL" or "SERVER.*" -> what this profile says of it (README: Tools).'
    )
    subagents: list[str] = Field(
        default_factory=list, description="Profiles this one may delegate to; the model sees each as a tool named after it."
    )
    max_depth: int = Field(default=3, ge=1, le=20, description="How deep delegation may go below a top-level run of this profile.")
    max_children: int = Field(default=10, ge=0, le=1000, description="Sub-agent runs one run may start.")

    @model_validator(mode="after")
    def _thinking_fits_the_allowance(self) -> "Profile":
        if self.thinking_budget_tokens is not None and self.thinking_budget_tokens >= self.max_tokens:
            raise ValueError(
                f"thinking_budget_tokens ({self.thinking_budget_tokens}) must be less than max_tokens ({self.max_tokens})"
            )
        return self

    @field_validator("rate_limits")
    @classmethod
    def _rate_limits_parse(cls, value: dict[str, str]) -> dict[str, str]:
        for spec in value.values():
            parse_rate_limit(spec)
        return value


class ModelRateLimits(StrictModel):
    """A model's rate limits, as the provider counts them per organisation: ``"N/period"`` each."""

    requests: str | None = Field(default=None, description="Requests per period, e.g. '50/min'.")
    input_tokens: str | None = Field(default=None, description="Input tokens per period, e.g. '30000/min'.")
    output_tokens: str | None = Field(default=None, description="Output tokens per period, e.g. '8000/min'.")

    @field_validator("requests", "input_tokens", "output_tokens")
    @classmethod
    def _parse(cls, value: str | None) -> str | None:
        if value is not None:
            parse_rate_limit(value)
        return value

    def windows(self) -> dict[str, Window]:
        """Dimension -> its window, for the limits that are set."""
        found = {}
        for dimension in ("requests", "input_tokens", "output_tokens"):
            spec = getattr(self, dimension)
            if spec is not None:
                amount, period = parse_rate_limit(spec)
                found[dimension] = Window(amount=amount, period_seconds=period)
        return found


class ModelSettings(StrictModel):
    """``[models."NAME"]``: what applies to every run of a model, whatever the profile."""

    rate_limits: ModelRateLimits = Field(default_factory=ModelRateLimits)


class Defaults(StrictModel):
    agent: str | None = None
    model: str = "auto"


class Pricing(StrictModel):
    models: dict[str, ModelPrice] = Field(default_factory=dict)
    fallback: ModelPrice = Field(default_factory=lambda: DEFAULT_FALLBACK_PRICE.model_copy())


class AgentsConfig(StrictModel):
    """The whole ``agents.toml``."""

    tool_modules: list[str] = Field(default_factory=list, description="Modules imported for their @tool functions.")
    defaults: Defaults = Field(default_factory=Defaults)
    pricing: Pricing = Field(default_factory=Pricing)
    models: dict[str, ModelSettings] = Field(
        default_factory=dict, description='Per model (name or name prefix): [models."NAME".rate_limits], shared by every run and worker.'
    )
    reviewer_keys: dict[str, str] = Field(
        default_factory=dict, description='Reviewer (or delegate) name -> "ed25519:BASE64" public key, for signed decisions.'
    )
    mcp_servers: dict[str, McpServerConfig] = Field(
        default_factory=dict, description="MCP servers by name: url and headers (streamable HTTP) or command, args, env (stdio)."
    )
    mcp_config: str | None = Field(
        default=None, description="A .mcp.json (Claude Code, Claude Desktop) whose mcpServers are added; relative to this file."
    )
    remote_tools: dict[str, RemoteToolConfig] = Field(
        default_factory=dict,
        description="Tools served by other workers: task_queue, activity, description, input_schema and policy keys (README: Tools).",
    )
    agents: dict[str, Profile]
    #: The file this was read from (None when built in code): the keyring is re-read from it at decision time.
    _source: Path | None = PrivateAttr(default=None)

    @field_validator("reviewer_keys")
    @classmethod
    def _keys_parse(cls, value: dict[str, str]) -> dict[str, str]:
        for name, key in value.items():
            try:
                signing.check_name(name)
                signing.parse_public_key(key)
            except signing.KeyFileError as exc:
                raise ValueError(f"{name}: {exc}") from None
        return value

    @model_validator(mode="after")
    def _default_agent_exists(self) -> "AgentsConfig":
        if not self.agents:
            raise ValueError("at least one [agents.NAME] table is required")
        if self.defaults.agent is not None and self.defaults.agent not in self.agents:
            raise ValueError(f"defaults.agent names {self.defaults.agent!r}, which is not under [agents]")
        return self

    @property
    def source(self) -> Path | None:
        """The file this configuration was read from, if any."""
        return self._source

    def keyring(self, agent: str) -> ReviewerKeyring:
        """Who may decide for ``agent`` by this configuration: its allow-list, delegates, and their public keys."""
        profile = self.agents.get(agent)
        if profile is None:
            return ReviewerKeyring(agent=agent)
        names = [*profile.approval.reviewers, *profile.approval.delegates]
        return ReviewerKeyring(
            agent=agent,
            reviewers=list(profile.approval.reviewers),
            delegates=list(profile.approval.delegates),
            keys={name: self.reviewer_keys[name] for name in names if name in self.reviewer_keys},
        )

    @property
    def default_agent(self) -> str:
        return self.defaults.agent or next(iter(self.agents))

    def model_rate_limits(self) -> dict[str, dict[str, Window]]:
        """Model name (or prefix) -> its rate-limit windows, for the models that have any."""
        return {name: windows for name, settings in self.models.items() if (windows := settings.rate_limits.windows())}

    def prices(self) -> dict[str, ModelPrice]:
        merged = dict(DEFAULT_PRICES)
        merged.update(self.pricing.models)
        return merged

    def resolve_model(self, profile: Profile, override: str | None, environ: dict[str, str] | None = None) -> str:
        """The model a run uses: the run's override, the profile's, the default; ``auto`` decided by the key."""
        env = os.environ if environ is None else environ
        model = override or (profile.model if profile.model != "auto" else self.defaults.model)
        if model == "auto":
            return DEFAULT_CLAUDE_MODEL if env.get("ANTHROPIC_API_KEY") else OFFLINE_MODEL
        return model


def _key(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def import_tool_modules(modules: list[str], *, file: str = "--tools", key: str = "tool_modules") -> None:
    """Import each module so its ``@tool`` functions register.

    Raises:
        ConfigError: naming the module that failed to import and why.
    """
    for index, module in enumerate(modules):
        try:
            importlib.import_module(module)
        except ToolDefinitionError as exc:
            raise ConfigError(file, f"{key}[{index}]", f"module {module!r} declares a bad tool: {exc}") from exc
        except Exception as exc:
            raise ConfigError(file, f"{key}[{index}]", f"cannot import module {module!r}: {exc!r}") from exc


def load_config(path: str | os.PathLike[str], *, extra_tool_modules: list[str] | None = None) -> AgentsConfig:
    """Read, validate and check ``agents.toml`` against the registered tools.

    Args:
        path: The TOML file.
        extra_tool_modules: Modules named on the command line (``--tools``), imported first.

    Raises:
        ConfigError: the file is missing or unreadable, or a key is invalid (an unknown
            key, with the key meant when one is close; a wrong type, a number in quotes
            included; a tool no module declares; a bad rate limit).
    """
    file = str(path)
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(file, "(file)", "not found; pass --config FILE or create agents.toml") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, "(syntax)", str(exc)) from None
    try:
        config = AgentsConfig.model_validate(raw)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            hint = unknown_key_hint(AgentsConfig, err["loc"])
            message = "unknown key" + (f"; {hint}" if hint else "")
        raise ConfigError(file, _key(err["loc"]), message + more) from None
    for key, given in numbers_as_text(raw, AgentsConfig, limit=1):
        # Pydantic would read "1.00" as 1.0; a number in quotes is more often a mistake than a wish.
        name = key.rpartition(".")[2]
        if looks_like_a_number(given):
            fix = f"write {name} = {str(given).strip()} (no quotes)"
        else:
            fix = "write a number" + ("" if isinstance(given, bool) else " (no quotes)")
        raise ConfigError(file, key, f"must be a number, not {describe_text_number(given)}: {fix}")
    import_tool_modules(extra_tool_modules or [], file="--tools", key="modules")
    import_tool_modules(config.tool_modules, file=file)
    mcp_json = (Path(path).parent / config.mcp_config) if config.mcp_config else None
    config.mcp_servers = merge_servers(file, config.mcp_servers, mcp_json)
    check_remote_tools(file, config.remote_tools, lambda name: name in registry)
    for name, profile in config.agents.items():
        for index, tool_name in enumerate(profile.tools):
            if is_mcp_entry(tool_name) or tool_name in config.remote_tools:
                continue  # an MCP server's tools: checked below, and against the server when the worker starts
            if tool_name not in registry:
                known = ", ".join([*registry.names(), *config.remote_tools]) or "none"
                raise ConfigError(
                    file,
                    f"agents.{name}.tools[{index}]",
                    f"no tool named {tool_name!r} is registered or under [remote_tools] (known: {known}); list the module that "
                    f"declares it under tool_modules (the demo's is durable_agent.demo.shop) or pass --tools MODULE",
                )
        check_profile_entries(file, name, profile.tools, profile.tool_policy, config.mcp_servers, _arguments_of(config))
        for key, tool_names in (("rate_limits", profile.rate_limits), ("rate_limit_wait", profile.rate_limit_wait)):
            for tool_name in tool_names:
                if not names_a_tool(profile.tools, tool_name):
                    raise ConfigError(file, f"agents.{name}.{key}.{tool_name}", "not one of this agent's tools")
        for index, tool_name in enumerate(profile.approval.protected_tools):
            if not names_a_tool(profile.tools, tool_name):
                raise ConfigError(
                    file, f"agents.{name}.approval.protected_tools[{index}]", f"{tool_name!r} is not one of this agent's tools"
                )
        check_signed_approvals(file, name, profile.approval, config.reviewer_keys)
        if profile.approval.max_amount is not None and profile.approval.max_amount < 0:
            raise ConfigError(file, f"agents.{name}.approval.max_amount", "must be 0 or more: the most one call may move without a person")
    subagents.check_config(file, config.agents, [*registry.names(), TOOL_READ_RESULT])
    config._source = Path(path)
    return config


def _arguments_of(config: AgentsConfig) -> Callable[[str], list[str] | None]:
    """A Python or remote tool's argument names (``None``: no such tool)."""

    def arguments(name: str) -> list[str] | None:
        if name in config.remote_tools:
            return config.remote_tools[name].argument_names()
        tool = registry.get(name)
        return list(tool.args_model.model_fields) if tool is not None else None

    return arguments


def check_signed_approvals(file: str, agent: str, approval: ApprovalPolicy, keys: dict[str, str]) -> None:
    """A profile that requires signatures must say who may decide, and each of them must be able to sign.

    Raises:
        ConfigError: no allow-list; a delegate without a key; nobody on the list able to sign (no key, no delegate).
    """
    where = f"agents.{agent}.approval"
    for index, delegate in enumerate(approval.delegates):
        if delegate not in keys:
            raise ConfigError(file, f"{where}.delegates[{index}]", f"{delegate!r} has no public key under [reviewer_keys]")
    if not approval.require_signature:
        return
    if not approval.reviewers:
        raise ConfigError(
            file, f"{where}.reviewers", "require_signature = true needs the names of those who may decide (reviewers = [...])"
        )
    if not approval.delegates and not any(reviewer in keys for reviewer in approval.reviewers):
        # A reviewer without a key is allowed (a key revoked, a new one to come), but not all of them.
        raise ConfigError(
            file,
            f"{where}.reviewers",
            "none of these reviewers has a key under [reviewer_keys] and no delegate (such as the inbox) may sign for them; "
            "add a key (`durable-agent keys new NAME --dir DIR` prints the line) or a delegate",
        )


def money_tools(profile: Profile) -> list[str]:
    """The profile's tools that move money (an ``amount_arg``, the tool's own or its ``tool_policy``'s), as its ``tools`` names them.

    An MCP server's tool moves money only by a ``tool_policy`` entry (annotations say nothing of money), so it is known here too.
    """
    found = []
    for name in profile.tools:
        if is_mcp_entry(name):
            continue
        tool = registry.get(name)
        if tool is not None and apply_tool_policy(tool.info, profile.tool_policy.get(name)).amount_arg is not None:
            found.append(name)
    found += [name for name, policy in profile.tool_policy.items() if is_mcp_entry(name) and policy.amount_arg is not None]
    return found


def money_limit_warnings(config: AgentsConfig, file: str) -> list[str]:
    """What the operator should know about money: supervised profiles whose tools move money with no limit set (every call waits)."""
    return [
        text
        for name, profile in config.agents.items()
        if profile.autonomy is Autonomy.SUPERVISED
        and (text := money.limit_unset_warning(file, name, profile.approval, money_tools(profile)))
    ]
