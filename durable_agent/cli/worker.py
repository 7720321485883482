"""Run a durable-agent worker: ``durable-agent worker [--tools MODULE]... [--config agents.toml]``.

``python worker.py`` is the same command.

Polls task queue ``agents`` (``AGENT_TASK_QUEUE``) on the Temporal server named
by the standard environment (``TEMPORAL_ADDRESS``..., default ``localhost:7233``).
A bad configuration stops it at once, naming the file and the key.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NoReturn


from durable_agent import deployments, logs, redaction, telemetry, trace, worker_options
from durable_agent.activities import (
    ensure_approval_index,
)
from durable_agent.activities.budget import limits_task_queue as limits_task_queue_for
from durable_agent.cli import worker_checks
from durable_agent.cli.hints import cannot_connect
from durable_agent.connection import connect, target_address
from durable_agent.connection import task_queue as default_task_queue
from durable_agent.decisions import unauthenticated_allow_list
from durable_agent.encryption import KeyRing
from durable_agent.errors import ConfigError
from durable_agent.mcp.catalog import McpCatalog, ServerListing
from durable_agent.profiles import AgentsConfig, import_tool_modules, load_config, money_limit_warnings
from durable_agent.store import open_store

from durable_agent.cli.worker_group import ROLES, SDK_MAX_CACHED_WORKFLOWS, WorkerGroup, core_modules, create_worker, tool_timeouts, workflow_runner

__all__ = [
    "ROLES", "SDK_MAX_CACHED_WORKFLOWS", "WorkerGroup", "core_modules", "create_worker", "tool_timeouts", "workflow_runner",
]

log = logging.getLogger("durable_agent.worker")

#: Exit as soon as the command is done (see durable_agent.cli.entry): a Temporal client's threads can crash the teardown.
SKIP_INTERPRETER_TEARDOWN = True


def env_tool_modules() -> list[str]:
    return [m.strip() for m in os.environ.get("AGENT_TOOL_MODULES", "").split(",") if m.strip()]


def plaintext_opt_ins(config: AgentsConfig) -> list[str]:
    """What the operator chose to send in clear although payloads are encrypted (said when a worker starts)."""
    if not redaction.encryption_on():
        return []
    found = []
    if redaction.trace_plaintext():
        found.append(f"{redaction.TRACE_PLAINTEXT_ENV} is set: the trace sink gets whole records, in clear")
    for name, profile in config.agents.items():
        if profile.approval.webhook_url and profile.approval.webhook_plaintext:
            found.append(f"agent {name!r} sets webhook_plaintext: its webhook gets held actions' arguments, in clear")
    return found


def default_config_path() -> str:
    """``AGENT_CONFIG``, else ``agents.toml`` here, else the one in the source checkout this runs from."""
    if os.environ.get("AGENT_CONFIG"):
        return os.environ["AGENT_CONFIG"]
    if os.path.exists("agents.toml"):
        return "agents.toml"
    return str(Path(__file__).resolve().parents[2] / "agents.toml")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``worker`` subcommand's options."""
    parser.add_argument("--tools", action="append", default=[], metavar="MODULE", help="import extra @tool modules (repeatable; env AGENT_TOOL_MODULES)")
    parser.add_argument("--config", default=default_config_path(), metavar="FILE", help="agent profiles (default: agents.toml)")
    parser.add_argument("--task-queue", default=None, help="default: AGENT_TASK_QUEUE or 'agents'")
    parser.add_argument(
        "--limits-task-queue", default=None, metavar="QUEUE",
        help="where daily-budget ledgers and rate limiters run (default: AGENT_LIMITS_TASK_QUEUE or '<task queue>-limits')",
    )
    parser.add_argument("--no-limits", action="store_true", help="do not poll the limits task queue (other workers serve it)")
    parser.add_argument(
        "--role", choices=ROLES, default=os.environ.get("AGENT_WORKER_ROLE", "all"),
        help="all (default), or only the agent runs' workflow tasks, only their activities (model calls, tools), or only the "
        "limits queue (ledgers, rate limiters): size each apart (env AGENT_WORKER_ROLE)",
    )
    parser.add_argument("--address", default=None, help="Temporal address (default: TEMPORAL_ADDRESS or localhost:7233)")
    parser.add_argument("--log-level", default=os.environ.get("AGENT_LOG_LEVEL", "INFO"))
    parser.add_argument(
        "--check",
        action="store_true",
        help="check the configuration, the keys, the content store (write and read), every MCP server and Temporal, then exit: 0 when all is well",
    )
    parser.add_argument(
        "--log-format", choices=logs.FORMATS, default=None, help="text (default) or json lines with run id, step and tool (env AGENT_LOG_FORMAT)"
    )
    parser.add_argument(
        "--metrics-port", type=int, default=None, metavar="N", help="serve Prometheus metrics on http://0.0.0.0:N/metrics (env AGENT_METRICS_PORT)"
    )
    worker_options.add_arguments(parser)
    deployments.add_arguments(parser)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return parser.parse_args(argv)


def load_or_exit(config_path: str, tool_modules: list[str]) -> AgentsConfig:
    try:
        # The environment's modules first, so that a bad one is named by its variable, not
        # by a --tools flag nobody typed (importing them again below is a no-op).
        import_tool_modules(env_tool_modules(), file="AGENT_TOOL_MODULES", key="modules")
        return load_config(config_path, extra_tool_modules=tool_modules)
    except ConfigError as exc:
        print(f"worker: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def reviewer_warnings(config: AgentsConfig, file: str) -> list[str]:
    """What the operator should know about who may decide: allow-lists that check only a typed name."""
    return [text for name, profile in config.agents.items() if (text := unauthenticated_allow_list(file, name, profile.approval))]


async def check_mcp_servers(config: AgentsConfig, mcp: McpCatalog, *, every: bool) -> str:
    """Connect to every MCP server and check its tools against the profiles; a summary for ``--check``.

    A server that does not answer stops ``--check`` (status 1) and is only logged otherwise (its
    runs go on without its tools); a tool or a policy that cannot work stops the worker (status 2).
    """
    if not config.mcp_servers:
        return ""
    profiles = {name: (profile.tools, profile.tool_policy) for name, profile in config.agents.items()}
    try:
        report = await mcp.check(str(config.source or "agents.toml"), profiles)
    except ConfigError as exc:
        await mcp.close()
        fail(2, f"configuration error: {exc}")
    down = {name: why for name, why in report.items() if isinstance(why, str)}
    for name, why in down.items():
        source = config.mcp_servers[name].source
        if every:
            await mcp.close()
            fail(1, f"cannot use the MCP server {name} ({source.file}: {source.key}): {why}")
        log.warning("MCP server %s (%s: %s) is not answering (%s); runs start without its tools until it does", name, source.file, source.key, why)
    listed = [f"{name} ({len(listing.tools)} tools)" for name, listing in report.items() if isinstance(listing, ServerListing)]
    return f", MCP servers: {', '.join(listed)}" if listed else ""


def fail(status: int, message: str) -> NoReturn:
    print(f"worker: {message}", file=sys.stderr)
    raise SystemExit(status)


async def main(args: argparse.Namespace) -> int:
    """Run a worker until SIGINT or SIGTERM; the exit status (bad configuration: 2, store or server unusable: 1).

    With ``--check``, stop after the checks a worker makes at start and exit 0 if they pass.
    """
    try:
        log_format = logs.log_format(args.log_format)
        port = telemetry.metrics_port(args.metrics_port)
    except ValueError as exc:
        fail(2, f"configuration error: {exc}")
    logs.configure(args.log_level, log_format)
    config = load_or_exit(args.config, env_tool_modules() + args.tools)
    try:
        tuning = worker_options.from_args(args)
        deployment = deployments.from_args(args)
        queue = args.task_queue or default_task_queue()
        limits_queue = limits_task_queue_for(queue, args.limits_task_queue or os.environ.get("AGENT_LIMITS_TASK_QUEUE") or None)
        serves_limits = args.role in ("all", "limits") and not args.no_limits
        deployments.check_task_queues(deployment, queue, limits_queue)
        ring = KeyRing.from_env()
        store = open_store(ring)
    except ValueError as exc:  # EncryptionConfigError and bad AGENT_STORE_URL included
        fail(2, f"configuration error: {exc}")
    try:
        await store.check()
    except Exception as exc:  # noqa: BLE001 - any client error means the store is unusable; it is reported whole
        fail(1, f"the content store at {store.location} is not usable: {exc}")
    mcp = McpCatalog(config.mcp_servers)
    mcp_summary = await check_mcp_servers(config, mcp, every=args.check)
    trace.configure(os.environ.get("AGENT_TRACE_FILE") or None)
    for opt_in in plaintext_opt_ins(config):
        log.warning("encryption is on, but %s", opt_in)
    try:
        telemetry.setup(prometheus_port=None if args.check else port)
    except OSError as exc:
        fail(2, f"cannot serve metrics on port {port}: {exc}")
    address = target_address(args.address)
    sdk_metrics: Any = contextlib.nullcontext()
    overrides: dict[str, Any] = {}
    if telemetry.metrics_exported():
        # The Temporal SDK's own metrics (task latencies, polls, slots) go out beside ours.
        runtime, sdk_metrics = telemetry.temporal_runtime()
        overrides["runtime"] = runtime
    try:
        client = await connect(args.address, **overrides)
    except Exception as exc:  # noqa: BLE001 - reported with the address, then exit
        print(cannot_connect("worker", address, exc), file=sys.stderr)
        return 1
    # A check only looks; a worker registers the inbox's search attribute where it may.
    warnings = reviewer_warnings(config, args.config) + money_limit_warnings(config, args.config)
    warnings += [w for w in [await ensure_approval_index(client, register=not args.check)] if w]
    limits_queue = limits_task_queue_for(queue, args.limits_task_queue or os.environ.get("AGENT_LIMITS_TASK_QUEUE") or None)
    # Keys the queue's open runs need, and a worker for the limits queue (see worker_checks).
    findings = await worker_checks.look(
        client, config, task_queue=queue, limits_queue=limits_queue, ring=ring, serves_limits=serves_limits
    )
    if args.check:
        for warning in warnings:
            print(f"worker: warning: {warning}", file=sys.stderr)
        await store.close()
        await mcp.close()
        # Where this build stands (current, ramping, or the command that makes it current); unknown: status 1.
        known, where = await deployments.status_line(client, deployment) if deployment else (True, "")
        if where:
            print(f"worker: {where}", file=sys.stdout if known else sys.stderr)
        if worker_checks.check_status(findings) or not known:
            return 1
        print(f"worker: ok (Temporal at {address}, store at {store.location}, encryption {'on' if ring else 'off'}{mcp_summary})")
        return 0
    for warning in warnings:
        log.warning("%s", warning)
    if deployment is not None:
        log.info("%s", (await deployments.status_line(client, deployment))[1])
    refusal = worker_checks.start_problem(findings, limits_queue=limits_queue, serves_limits=serves_limits)
    if refusal:
        await store.close()
        await mcp.close()
        fail(2, refusal)
    stop = asyncio.Event()
    keys_missing = worker_checks.StopWithoutKeys(ring, stop)
    tool_pool = ThreadPoolExecutor(max_workers=tuning.tool_threads, thread_name_prefix="tool")
    worker = create_worker(
        client, config, task_queue=queue, store=store, tuning=tuning, tool_executor=tool_pool,
        limits_task_queue=args.limits_task_queue, serve_limits=serves_limits, mcp=mcp, on_missing_key=keys_missing,
        deployment=deployment, role=args.role,
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    polls = {"all": f"task queue {queue!r}", "workflows": f"the workflow tasks of task queue {queue!r}",
             "activities": f"the activity tasks of task queue {queue!r}", "limits": f"the limits task queue {limits_queue!r}"}[args.role]
    log.info(
        "worker polling %s on %s (agents: %s; store: %s; encryption: %s)",
        polls, address, ", ".join(config.agents), store.location, "on" if ring else "off",
    )
    if port is not None:
        log.info("metrics for Prometheus at http://0.0.0.0:%d/metrics", port)
    try:
        async with sdk_metrics, worker:
            await stop.wait()
            grace = worker.config().get("graceful_shutdown_timeout")
            log.info("stopping: no new tasks; activities in flight get up to %s to finish", grace)
    finally:
        tool_pool.shutdown(wait=False, cancel_futures=True)
        await store.close()
    log.info("worker stopped")
    if keys_missing.reason:
        print(f"worker: stopped: {keys_missing.reason}", file=sys.stderr)
        return 2
    return 0
