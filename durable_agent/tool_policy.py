"""Per-tool policy overrides: ``[agents.NAME.tool_policy."TOOL"]``, for Python and MCP tools alike.

A profile may say more about a tool than its author did (an MCP server's
annotations, a ``@tool`` decorator): which argument carries money, how risky it
is, its rate limit and timeout. The override is laid over the tool's own
metadata when a run starts (:func:`apply`) and recorded with the run, so the
workflow's policy checks read one :class:`~durable_agent.schemas.ToolInfo`
whatever the tool's origin. Keys are a Python tool's name, ``"SERVER.TOOL"`` or
``"SERVER.*"`` (every tool of that server; a ``"SERVER.TOOL"`` entry wins over it).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from typing import Any, Literal

from pydantic import Field, model_validator

from durable_agent.errors import ConfigError
from durable_agent.mcp.config import MAX_TOOL_NAME, WILDCARD, is_mcp_entry, model_facing_name, split_entry
from durable_agent.schemas import StrictModel, ToolInfo
from durable_agent.tools import RateLimitText


class ToolPolicy(StrictModel):
    """What a profile says about one tool; every key left out keeps the tool's own value."""

    read_only: bool | None = Field(default=None, description="The tool changes nothing (allowed in read_only autonomy).")
    destructive: bool | None = Field(default=None, description="Waits for approval when supervised.")
    idempotent: bool | None = Field(default=None, description="Safe to send again after a timeout or a lost connection.")
    risk: Literal["low", "medium", "high"] | None = None
    amount_arg: str | None = Field(default=None, description="The argument that carries money (compared with max_amount).")
    currency_arg: str | None = Field(default=None, description="The argument that carries its currency.")
    protected: bool | None = Field(default=None, description="Always waits for approval when supervised.")
    rate_limit: RateLimitText | None = Field(default=None, description="'N/unit', this profile's own limit on the tool.")
    rate_limit_wait: bool | None = Field(default=None, description="Over the limit: wait for a slot, or tell the model at once.")
    timeout: float | None = Field(default=None, gt=0, le=86_400, description="Seconds one call may take.")

    @model_validator(mode="after")
    def _consistent(self) -> "ToolPolicy":
        if self.read_only and self.destructive:
            raise ValueError("a tool cannot be both read_only and destructive")
        return self


def policy_for(policies: dict[str, ToolPolicy], key: str, server_key: str | None = None) -> ToolPolicy | None:
    """The override of tool ``key``: its own entry over its server's ``"SERVER.*"`` entry, if any."""
    own = policies.get(key)
    wide = policies.get(server_key) if server_key is not None else None
    if wide is None:
        return own
    if own is None:
        return wide
    return ToolPolicy.model_validate({**wide.model_dump(exclude_none=True), **own.model_dump(exclude_none=True)})


def apply(info: ToolInfo, policy: ToolPolicy | None, *, lane: str | None = None) -> ToolInfo:
    """``info`` with ``policy`` laid over it.

    Marking a tool read-only makes it not destructive (and safe to retry); marking it
    destructive makes it not read-only and, unless the policy names a risk, high-risk.

    Args:
        info: The tool's own metadata.
        policy: The profile's override (``None``: ``info`` unchanged).
        lane: The rate-limit lane of the profile, for a rate limit the policy sets.
    """
    if policy is None:
        return info
    update: dict[str, Any] = {}
    if policy.read_only is not None:
        update["read_only"] = policy.read_only
        if policy.read_only:
            update["destructive"] = False
    if policy.destructive is not None:
        update["destructive"] = policy.destructive
        if policy.destructive:
            update["read_only"] = False
            update["risk"] = "high"
    if policy.idempotent is not None:
        update["idempotent"] = policy.idempotent
    for key in ("risk", "amount_arg", "currency_arg", "protected", "rate_limit_wait"):
        value = getattr(policy, key)
        if value is not None:
            update[key] = value
    if policy.timeout is not None:
        update["timeout_seconds"] = float(policy.timeout)
    if policy.rate_limit is not None:
        update["rate_limit"] = policy.rate_limit
        if lane is not None:
            update["rate_limit_lane"] = lane  # held to the profile's own limit, apart from other callers
    return info.model_copy(update=update)


def argument_problem(info: ToolInfo) -> str | None:
    """Why the policy cannot be checked on this tool's calls (an amount_arg it does not take), or ``None``."""
    properties = info.input_schema.get("properties")
    names = set(properties) if isinstance(properties, dict) else set()
    for key in ("amount_arg", "currency_arg"):
        arg = getattr(info, key)
        if arg is not None and arg not in names:
            known = ", ".join(sorted(names)) or "none"
            return f"{key} {arg!r} is not one of the arguments of {info.name} ({known})"
    return None


def model_name(name: str) -> str:
    """The name the model calls a tool that a profile names: ``"SERVER.TOOL"`` becomes ``mcp__SERVER__TOOL``, others stay."""
    return model_facing_name(*split_entry(name)) if is_mcp_entry(name) else name


def names_a_tool(entries: list[str], name: str) -> bool:
    """Whether ``name`` (a Python or remote tool's name, ``"SERVER.TOOL"`` or ``mcp__SERVER__TOOL``) is one of ``entries``' tools.

    What ``rate_limits``, ``rate_limit_wait`` and ``approval.protected_tools`` may name: a tool
    a ``"SERVER.*"`` entry brings in counts too (its server is checked against it when the worker starts).
    """
    if name in entries:
        return True
    wanted = model_name(name)
    for entry in entries:
        if not is_mcp_entry(entry):
            continue
        server, tool = split_entry(entry)
        if tool == WILDCARD and wanted.startswith(model_facing_name(server, "")):
            return True
        if model_facing_name(server, tool) == wanted:
            return True
    return False


def named_for(names: Mapping[str, Any] | list[str], tool: str) -> Any:
    """What ``names`` (a profile's ``rate_limits``, ``protected_tools``...) says of the tool the model calls ``tool``, or ``None``.

    A list answers ``True`` when it names the tool; a mapping answers the value of the key that names it.
    """
    for name in names:
        if model_name(name) == tool:
            return names[name] if isinstance(names, Mapping) else True
    return None


def with_profile_names(
    info: ToolInfo, *, rate_limits: Mapping[str, str], rate_limit_wait: Mapping[str, bool], protected_tools: list[str], lane: str
) -> ToolInfo:
    """``info`` with what a profile's ``rate_limits``, ``rate_limit_wait`` and ``protected_tools`` say of it by any of its names.

    Python tools were always named there; an MCP tool may be named ``"SERVER.TOOL"`` or
    ``mcp__SERVER__TOOL`` and a remote tool by its name. A protected tool is recorded as
    such in its :class:`ToolInfo`, so the workflow's check needs no name matching of its own.
    """
    update: dict[str, Any] = {}
    limit = named_for(rate_limits, info.name)
    if limit is not None:
        update.update(rate_limit=limit, rate_limit_lane=lane)  # held to the profile's own limit, apart from other callers
    wait = named_for(rate_limit_wait, info.name)
    if wait is not None:
        update["rate_limit_wait"] = wait
    if named_for(protected_tools, info.name):
        update["protected"] = True
    return info.model_copy(update=update) if update else info


def check_profile_entries(
    file: str, agent: str, entries: list[str], policies: dict[str, ToolPolicy], servers: Mapping[str, object], python_args: Callable[[str], list[str] | None]
) -> None:
    """A profile's MCP ``tools`` entries and its ``tool_policy`` keys, checked when the worker starts.

    Args:
        file: The agents.toml, named in errors.
        agent: The profile's name.
        entries: Its ``tools``.
        policies: Its ``tool_policy``.
        servers: The configured MCP servers by name.
        python_args: A Python tool's argument names (``None``: no such tool).

    Raises:
        ConfigError: an entry naming no configured server, a model-facing name over 64 characters,
            a ``tool_policy`` key that is none of the profile's tools, an ``amount_arg`` a Python tool does not take.
    """
    for index, entry in enumerate(entries):
        if not is_mcp_entry(entry):
            continue
        server, tool = split_entry(entry)
        key = f"agents.{agent}.tools[{index}]"
        if server not in servers:
            close = difflib.get_close_matches(server, list(servers), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f" (configured: {', '.join(sorted(servers)) or 'none'})"
            raise ConfigError(file, key, f"no MCP server named {server!r} under [mcp_servers] or in mcp_config{hint}")
        if not tool or "." in tool:
            raise ConfigError(file, key, f"name an MCP server's tools as '{server}.*' or '{server}.TOOL'")
        if tool != WILDCARD and len(model_facing_name(server, tool)) > MAX_TOOL_NAME:
            raise ConfigError(
                file, key, f"the model would call it {model_facing_name(server, tool)}, over the API's {MAX_TOOL_NAME} characters"
            )
    for name, policy in policies.items():
        key = f'agents.{agent}.tool_policy."{name}"'
        if is_mcp_entry(name):
            server, tool = split_entry(name)
            if f"{server}.{WILDCARD}" not in entries and name not in entries:
                raise ConfigError(file, key, f"not one of this agent's tools (its tools list has no '{server}.*' or '{name}')")
            continue
        if name.startswith("mcp__") and names_a_tool(entries, name):
            continue  # an MCP tool as the model sees it: checked against its server when the worker starts
        if name not in entries:
            raise ConfigError(file, key, "not one of this agent's tools")
        args = python_args(name) or []
        for field_name in ("amount_arg", "currency_arg"):
            arg = getattr(policy, field_name)
            if arg is not None and arg not in args:
                raise ConfigError(file, f"{key}.{field_name}", f"{name} takes no argument {arg!r} (it takes: {', '.join(args) or 'none'})")
