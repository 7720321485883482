"""What an operator checks before a deploy: ``durable-agent mcp list [--config FILE] [--json]``.

Remote tools (``[remote_tools]``) are listed after the servers: where each is served and its policy.

Connects to every MCP server of the configuration (``[mcp_servers]`` and the
``.mcp.json`` that ``mcp_config`` names), lists its tools with the name the model
sees and the policy their annotations map onto, and under each tool what a
profile's ``tool_policy`` makes of it. Header and env values are never printed.
Exit status: 0 when every server answered, 1 when one did not, 2 for a bad configuration.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from durable_agent.mcp.catalog import McpCatalog, ServerListing
from durable_agent.mcp.errors import McpErrorResponse, McpUnavailable
from durable_agent import remote_tools
from durable_agent.mcp.config import WILDCARD
from durable_agent.mcp.mapping import policy_text
from durable_agent.profiles import AgentsConfig
from durable_agent.tool_policy import apply


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``mcp`` subcommand's actions and options."""
    from durable_agent.cli.worker import default_config_path

    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="every configured server's tools, with the policy they map onto")
    listing.add_argument("--config", default=default_config_path(), metavar="FILE", help="agent profiles (default: agents.toml)")
    listing.add_argument("--tools", action="append", default=[], metavar="MODULE", help="import extra @tool modules (as the worker)")
    listing.add_argument("--json", action="store_true", help="one JSON object instead of the table")


async def main(args: argparse.Namespace) -> int:
    """List the servers' tools; the exit status."""
    from durable_agent.cli.worker import env_tool_modules, load_or_exit

    config = load_or_exit(args.config, env_tool_modules() + args.tools)
    catalog = McpCatalog(config.mcp_servers)
    try:
        servers = await describe(config, catalog)
    finally:
        await catalog.close()
    remote = describe_remote(config)
    if args.json:
        print(json.dumps({"servers": servers, "remote_tools": remote}, indent=2))
    else:
        print_table(servers)
        print_remote(remote)
    if not servers and not remote:
        print("mcp list: no MCP servers are configured ([mcp_servers] or mcp_config)", file=sys.stderr)
    return 1 if any("error" in server for server in servers) else 0


async def describe(config: AgentsConfig, catalog: McpCatalog) -> list[dict[str, Any]]:
    """Each server, its tools and their mapped policy (and each profile's override), as plain data."""
    out: list[dict[str, Any]] = []
    for name, server in config.mcp_servers.items():
        entry: dict[str, Any] = {
            "server": name,
            "source": f"{server.source.file}: {server.source.key}",
            "transport": server.transport,
            "target": server.describe(),
        }
        try:
            listing: ServerListing = await catalog.discover(name)
        except (McpUnavailable, McpErrorResponse) as exc:
            entry["error"] = str(exc)
            out.append(entry)
            continue
        entry["used_by"] = [
            agent for agent, profile in config.agents.items() if any(e == f"{name}.{WILDCARD}" or e.startswith(f"{name}.") for e in profile.tools)
        ]
        tools = []
        for tool in sorted(listing.tools.values(), key=lambda t: t.name):
            base = tool.info(server.timeout)
            row: dict[str, Any] = {"tool": tool.name, "model_name": tool.model_name, "policy": tool.policy_text(base), "profiles": {}}
            for agent, profile in config.agents.items():
                if tool.entry in profile.tools or f"{name}.{WILDCARD}" in profile.tools:
                    info = catalog.info(tool, profile.tool_policy, agent)
                    row["profiles"][agent] = tool.policy_text(info)
            tools.append(row)
        entry["tools"] = tools
        entry["unusable"] = dict(sorted(listing.problems.items()))
        out.append(entry)
    return out


def print_table(servers: list[dict[str, Any]]) -> None:
    """The servers as an operator reads them."""
    for server in servers:
        print(f"{server['server']}  ({server['transport']}: {server['target']}; {server['source']})")
        if "error" in server:
            print(f"  NOT AVAILABLE: {server['error']}")
            continue
        print(f"  used by: {', '.join(server['used_by']) or 'no profile'}")
        if not server["tools"]:
            print("  (no tools)")
        width = max((len(t["model_name"]) for t in server["tools"]), default=0)
        for tool in server["tools"]:
            print(f"  {tool['model_name']:<{width}}  {tool['policy']}")
            for agent, policy in tool["profiles"].items():
                if policy != tool["policy"]:  # what the profile's tool_policy makes of it
                    print(f"  {'':<{width}}    in {agent}: {policy}")
        for tool_name, why in server["unusable"].items():
            print(f"  UNUSABLE {tool_name}: {why}")
        print()


def describe_remote(config: AgentsConfig) -> list[dict[str, Any]]:
    """Each ``[remote_tools]`` entry: where it is served, its policy and each profile's override, as plain data."""
    out: list[dict[str, Any]] = []
    for name, remote in config.remote_tools.items():
        base = remote_tools.tool_info(name, remote)
        row: dict[str, Any] = {
            "tool": name, "activity": remote.activity, "task_queue": remote.task_queue, "policy": policy_text(base), "profiles": {},
        }
        for agent, profile in config.agents.items():
            if name in profile.tools:
                row["profiles"][agent] = policy_text(apply(base, profile.tool_policy.get(name)))
        out.append(row)
    return out


def print_remote(remote: list[dict[str, Any]]) -> None:
    """The remote tools as an operator reads them."""
    if not remote:
        return
    print("remote tools (activities other workers serve)")
    for tool in remote:
        print(f"  {tool['tool']}  {tool['activity']} on task queue {tool['task_queue']!r}; used by: {', '.join(tool['profiles']) or 'no profile'}")
        print(f"    {tool['policy']}")
        for agent, policy in tool["profiles"].items():
            if policy != tool["policy"]:
                print(f"    in {agent}: {policy}")
    print()
