"""The worker's MCP tools: each server's tool list, fetched when a run starts and kept for its calls.

:class:`McpCatalog` is a tool source beside the ``@tool`` registry: it turns a
profile's ``"SERVER.*"`` and ``"SERVER.TOOL"`` entries into
:class:`~durable_agent.schemas.ToolInfo` (annotations, then the profile's
``tool_policy``), and finds the server and tool behind a model-facing name when
the call comes. A server down when a run starts costs that run its tools, never
the run: :meth:`for_profile` says so in warnings and in a line for the model.
"""

from __future__ import annotations

import asyncio
import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field

from durable_agent.errors import ConfigError
from durable_agent.mcp.errors import McpErrorResponse, McpUnavailable
from durable_agent.mcp.config import WILDCARD, McpServerConfig, is_mcp_entry, normalize, split_entry
from durable_agent.mcp.mapping import McpTool, from_listing, listing_problems, shared_names
from durable_agent.ratelimit import profile_lane
from durable_agent.schemas import ToolInfo
from durable_agent.tool_policy import ToolPolicy, apply, argument_problem, policy_for

#: Longest a run's start waits for its servers' tool lists (the resolve activity has 30 s in all).
DISCOVERY_SECONDS = 15.0


@dataclass
class ServerListing:
    """One server's tools as last listed: the usable ones, and why the others cannot be used."""

    tools: dict[str, McpTool] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)


@dataclass
class ProfileTools:
    """A profile's MCP tools for one run, and what the run and the model are told about those missing."""

    infos: list[ToolInfo] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    unavailable: list[str] = field(default_factory=list)

    def model_note(self) -> str:
        """A paragraph for the system prompt naming the tools this run does not have, or ``""``."""
        if not self.unavailable:
            return ""
        lines = "\n".join(f"- {line}" for line in self.unavailable)
        return f"\n\nSome of your tools are unavailable in this run; do not try to call them:\n{lines}"


class McpCatalog:
    """Every configured MCP server of one worker: connections, listings, and tool infos per profile."""

    def __init__(self, servers: dict[str, McpServerConfig], environ: Mapping[str, str] | None = None) -> None:
        self.servers = servers
        # The SDK is imported only by a worker that has servers to connect to.
        from durable_agent.mcp.client import McpConnection

        self.connections = {name: McpConnection(name, config, environ) for name, config in servers.items()}
        self._listings: dict[str, ServerListing] = {}
        self._prefixes = {f"mcp__{normalize(name)}__": name for name in servers}

    def server_of(self, model_name: str) -> str | None:
        """The server whose tool the model calls ``model_name``, if any."""
        matching = [prefix for prefix in self._prefixes if model_name.startswith(prefix)]
        return self._prefixes[max(matching, key=len)] if matching else None

    async def discover(self, server: str) -> ServerListing:
        """List ``server``'s tools now and keep the listing.

        Raises:
            McpUnavailable: the server did not answer.
            McpErrorResponse: it answered, but not with a tool list.
        """
        raw = await self.connections[server].list_tools()
        tools = [from_listing(server, tool) for tool in raw]
        problems = listing_problems(tools)
        listing = ServerListing(tools={t.name: t for t in tools if t.name not in problems}, problems=problems)
        self._listings[server] = listing
        return listing

    async def _discover_within(self, server: str, seconds: float) -> ServerListing:
        try:
            return await asyncio.wait_for(self.discover(server), seconds)
        except asyncio.TimeoutError:
            raise McpUnavailable(f"MCP server {server!r} did not list its tools within {seconds:g}s") from None

    async def tool(self, model_name: str) -> McpTool | None:
        """The tool the model calls ``model_name``: from the kept listing, else listed now (a worker new to the run).

        Raises:
            McpUnavailable: its server could not be reached to list it.
        """
        server = self.server_of(model_name)
        if server is None:
            return None
        for refresh in (False, True):
            listing = self._listings.get(server)
            if listing is None or refresh:
                try:
                    listing = await self.discover(server)
                except McpErrorResponse as exc:
                    raise McpUnavailable(str(exc)) from None
            for tool in listing.tools.values():
                if tool.model_name == model_name:
                    return tool
        return None

    def kept_tool(self, model_name: str) -> McpTool | None:
        """The tool the model calls ``model_name``, from a listing already kept (no connection is made)."""
        server = self.server_of(model_name)
        listing = self._listings.get(server) if server is not None else None
        if listing is None:
            return None
        return next((tool for tool in listing.tools.values() if tool.model_name == model_name), None)

    def info(self, tool: McpTool, policies: dict[str, ToolPolicy], agent: str | None) -> ToolInfo:
        """The tool's policy: the server's annotations, then the profile's ``tool_policy`` over them."""
        base = tool.info(self.servers[tool.server].timeout)
        # Named "SERVER.TOOL", or as the model sees it (mcp__SERVER__TOOL).
        policy = policy_for(policies, tool.entry if tool.entry in policies else tool.model_name, f"{tool.server}.{WILDCARD}")
        return apply(base, policy, lane=profile_lane(agent) if agent else None)

    async def for_profile(self, agent: str, entries: list[str], policies: dict[str, ToolPolicy]) -> ProfileTools:
        """The MCP tools of a profile's ``tools`` entries, listed from their servers now (concurrently)."""
        out = ProfileTools()
        wanted = [entry for entry in entries if is_mcp_entry(entry)]
        servers = list(dict.fromkeys(split_entry(entry)[0] for entry in wanted))
        known = [s for s in servers if s in self.servers]
        results = await asyncio.gather(*(self._discover_within(s, DISCOVERY_SECONDS) for s in known), return_exceptions=True)
        listings: dict[str, ServerListing | BaseException] = dict(zip(known, results))
        seen: set[str] = set()
        reported: set[str] = set()
        for entry in wanted:
            server, name = split_entry(entry)
            listing = listings.get(server)
            if listing is None:
                out.warnings.append(f"MCP_TOOL_UNAVAILABLE: {entry}: no MCP server named {server!r} is configured on this worker")
                out.unavailable.append(f"{entry}: not configured")
                continue
            if isinstance(listing, BaseException):
                if server not in reported:
                    reported.add(server)
                    where = self.servers[server].source
                    out.warnings.append(
                        f"MCP_SERVER_UNAVAILABLE: {server} ({where.file}: {where.key}) could not be listed when the run "
                        f"started ({listing}); its tools are not available in this run"
                    )
                    out.unavailable.append(f"the tools of the MCP server {server!r} (it could not be reached when this run started)")
                continue
            chosen = sorted(listing.tools.values(), key=lambda t: t.name) if name == WILDCARD else [t for t in [listing.tools.get(name)] if t]
            if name != WILDCARD and not chosen:
                why = listing.problems.get(name) or f"the server does not offer a tool named {name!r}"
                out.warnings.append(f"MCP_TOOL_UNAVAILABLE: {entry}: {why}")
                out.unavailable.append(f"{entry} (the server does not offer it now)")
            elif name == WILDCARD:
                for bad, why in sorted(listing.problems.items()):
                    out.warnings.append(f"MCP_TOOL_UNAVAILABLE: {server}.{bad}: {why}")
            for tool in chosen:
                info = self.info(tool, policies, agent)
                problem = argument_problem(info)
                if problem is not None:
                    out.warnings.append(f"MCP_TOOL_UNAVAILABLE: {tool.entry}: tool_policy: {problem}")
                    out.unavailable.append(f"{tool.model_name} (its policy cannot be checked)")
                elif info.name not in seen:
                    seen.add(info.name)
                    out.infos.append(info)
        return out

    async def check(
        self, file: str, profiles: Mapping[str, tuple[list[str], dict[str, ToolPolicy]]], *, require_all: bool = False
    ) -> dict[str, ServerListing | str]:
        """What the worker checks at start: every server listed, every tool and policy usable.

        Args:
            file: The agents.toml, for errors about its profiles.
            profiles: Agent name -> (its ``tools`` entries, its ``tool_policy``).
            require_all: A server that does not answer is an error too (``worker --check``).

        Returns:
            Server name -> its listing, or why it could not be listed (when not ``require_all``).

        Raises:
            ConfigError: naming the file and key: a server's tool the model cannot be given (its
                schema, its name), a profile naming a tool its server does not offer, a
                ``tool_policy`` the tool's arguments do not allow, or (``require_all``) a server down.
        """
        results = await asyncio.gather(*(self.discover(name) for name in self.servers), return_exceptions=True)
        report: dict[str, ServerListing | str] = {}
        for name, result in zip(self.servers, results):
            where = self.servers[name].source
            if isinstance(result, BaseException):
                if not isinstance(result, McpUnavailable | McpErrorResponse):
                    raise result
                if require_all or isinstance(result, McpErrorResponse):
                    raise ConfigError(where.file, where.key, str(result))
                report[name] = str(result)
                continue
            for tool_name, why in result.problems.items():
                raise ConfigError(where.file, where.key, f"tool {tool_name!r}: {why}")
            report[name] = result
        listed = {name: list(r.tools.values()) for name, r in report.items() if isinstance(r, ServerListing)}
        for server, why in shared_names(listed).items():
            where = self.servers[server].source
            raise ConfigError(where.file, where.key, why)
        for agent, (entries, policies) in profiles.items():
            self._check_profile(file, agent, entries, policies, report)
        return report

    def _check_profile(
        self, file: str, agent: str, entries: list[str], policies: dict[str, ToolPolicy], report: Mapping[str, ServerListing | str]
    ) -> None:
        for index, entry in enumerate(entries):
            server, name = split_entry(entry) if is_mcp_entry(entry) else ("", "")
            listing = report.get(server)
            if not isinstance(listing, ServerListing):
                continue
            if name != WILDCARD and name not in listing.tools:
                close = difflib.get_close_matches(name, list(listing.tools), n=1)
                hint = f"; did you mean {server}.{close[0]!r}?" if close else f" (it offers: {', '.join(sorted(listing.tools)) or 'nothing'})"
                raise ConfigError(file, f"agents.{agent}.tools[{index}]", f"MCP server {server!r} has no tool named {name!r}{hint}")
            for tool in listing.tools.values() if name == WILDCARD else [listing.tools[name]]:
                problem = argument_problem(self.info(tool, policies, agent))
                if problem is not None:
                    key = next((k for k in (tool.entry, tool.model_name) if k in policies), f"{server}.{WILDCARD}")
                    raise ConfigError(file, f'agents.{agent}.tool_policy."{key}"', problem)

    def listings(self) -> dict[str, ServerListing]:
        """The listings kept so far, by server."""
        return dict(self._listings)

    async def close(self) -> None:
        """Close every connection (stdio servers are stopped)."""
        await asyncio.gather(*(connection.close() for connection in self.connections.values()), return_exceptions=True)
