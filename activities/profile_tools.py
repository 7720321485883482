"""A profile's tools as a run sees their policy: a ``@tool`` function's or a remote tool's rules, an MCP tool's, each
with what the profile sets over them (rate limits, ``tool_policy``, ``protected_tools``).

``resolve_agent`` freezes them for a run; the live policy reader (:mod:`.policy`) reads them again at each step.
"""

from __future__ import annotations

from durable_agent import remote_tools
from durable_agent.profiles import AgentsConfig, Profile
from durable_agent.ratelimit import profile_lane
from durable_agent.schemas import ToolInfo
from durable_agent.tool_policy import apply as apply_tool_policy
from durable_agent.tool_policy import named_for, with_profile_names
from durable_agent.tools import ToolRegistry


def profile_tool_info(tools: ToolRegistry, config: AgentsConfig, agent: str, profile: Profile, tool_name: str) -> ToolInfo | None:
    """The policy of a ``@tool`` function or a remote tool as profile ``agent`` sets it (its rate limits and
    ``tool_policy``); None: this worker has no such tool."""
    remote = config.remote_tools.get(tool_name)
    tool = tools.get(tool_name)
    if remote is not None:
        info = remote_tools.tool_info(tool_name, remote)  # served by another worker: its config is all we know
    elif tool is not None:
        info = tool.info.model_copy()
    else:
        return None
    if tool_name in profile.rate_limits:
        info.rate_limit = profile.rate_limits[tool_name]
        info.rate_limit_lane = profile_lane(agent)  # held to its own limit, apart from other callers
    if tool_name in profile.rate_limit_wait:
        info.rate_limit_wait = profile.rate_limit_wait[tool_name]
    return apply_tool_policy(info, profile.tool_policy.get(tool_name), lane=profile_lane(agent))


def profile_mcp_info(info: ToolInfo, agent: str, profile: Profile) -> ToolInfo:
    """An MCP tool's policy with the profile's rate limits and protections that name it ("SERVER.TOOL" or mcp__SERVER__TOOL)."""
    return with_profile_names(
        info, rate_limits=profile.rate_limits, rate_limit_wait=profile.rate_limit_wait,
        protected_tools=profile.approval.protected_tools, lane=profile_lane(agent),
    )


def protected_by_name(info: ToolInfo, profile: Profile) -> ToolInfo:
    """``info``, protected when the profile's ``protected_tools`` names it in any of its forms."""
    return info.model_copy(update={"protected": True}) if named_for(profile.approval.protected_tools, info.name) else info
