"""A run's policy as the worker's configuration says now, reported by the ``think`` activity.

The workflow decides right after each model call, so the ``think`` activity hands it
the profile's policy as ``agents.toml`` holds it at that moment, but only when it
differs from what the run was last told (its digest), so histories stay small.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from durable_agent import live_policy
from durable_agent.activities import profile_tools  # the same rules resolve_agent applies
from durable_agent.activities.live_config import ConfigUnreadable, LiveConfig
from durable_agent.live_policy import LivePolicy
from durable_agent.mcp.catalog import McpCatalog
from durable_agent.profiles import AgentsConfig, Profile
from durable_agent.tools import ToolRegistry


#: Policies kept (one per agent and tool list in use; more means runs of many kinds, and the memo starts over).
KNOWN_POLICIES = 256


@dataclass
class PolicyReport:
    """The configured policy (None: unchanged since ``digest`` was reported, or unreadable) and its digest."""

    digest: str | None = None
    policy: LivePolicy | None = None
    warnings: list[str] = field(default_factory=list)


class PolicyReader:
    """Reads a profile's policy from the configuration as it is now (re-read when its file changes)."""

    def __init__(self, live: LiveConfig, tools: ToolRegistry, mcp: McpCatalog | None) -> None:
        self.live = live
        self.tools = tools
        self.mcp = mcp
        # Every step asks; the answer changes only with the file. So the policy and its digest are kept per
        # configuration read (the object, held so its id is never another's), agent and tools.
        self._known: dict[tuple[str, tuple[str, ...]], tuple[AgentsConfig, LivePolicy, str]] = {}

    async def report(self, agent: str, tool_names: list[str], reported: str | None) -> PolicyReport:
        """The policy run ``agent`` (with the tools ``tool_names``) must decide under, unless its digest is ``reported``."""
        try:
            config = await asyncio.to_thread(self.live.current)
        except ConfigUnreadable as exc:
            # Never loosen on a broken file: the run keeps deciding under the policy it has.
            return PolicyReport(digest=reported, warnings=[f"POLICY_NOT_REFRESHED: {exc}; the run decides under the policy it has"])
        profile = config.agents.get(agent)
        if profile is None:
            why = f"profile {agent!r} is no longer configured; the run decides under the policy it has"
            return PolicyReport(digest=reported, warnings=[f"POLICY_NOT_REFRESHED: {why}"])
        key = (agent, tuple(tool_names))
        known = self._known.get(key)
        if known is not None and known[0] is config:
            _, configured, digest = known
        else:
            rules, listed_now = self._tool_rules(config, agent, profile, tool_names)
            configured = LivePolicy(
                autonomy=profile.autonomy, approval=live_policy.without_webhook(profile.approval), anomalies=profile.anomalies, tools=rules
            )
            digest = live_policy.policy_digest(configured)
            if not listed_now:  # an MCP server's listing may change with no change to the file
                if len(self._known) >= KNOWN_POLICIES:
                    self._known.clear()
                self._known[key] = (config, configured, digest)
        return PolicyReport(digest=digest, policy=None if digest == reported else configured)

    def _tool_rules(
        self, config: AgentsConfig, agent: str, profile: Profile, tool_names: list[str]
    ) -> tuple[dict[str, dict[str, object]], bool]:
        """The rules of the run's tools as configured now, and whether any came from an MCP server's listing.

        A tool this worker cannot describe is left out (the run keeps its own).
        """
        rules: dict[str, dict[str, object]] = {}
        listed = False
        for name in tool_names:
            info = profile_tools.profile_tool_info(self.tools, config, agent, profile, name)
            if info is None and self.mcp is not None and (tool := self.mcp.kept_tool(name)) is not None:
                info = profile_tools.profile_mcp_info(self.mcp.info(tool, profile.tool_policy, agent), agent, profile)
                listed = True
            if info is not None:
                rules[name] = live_policy.tool_rules(profile_tools.protected_by_name(info, profile))
        return rules, listed
