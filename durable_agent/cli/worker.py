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
import pkgutil
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn

from temporalio.client import Client
from temporalio.common import WorkerDeploymentVersion
from temporalio.worker import PollerBehaviorSimpleMaximum, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from durable_agent import deployments, logs, redaction, telemetry, trace, worker_options
from durable_agent.activities import (
    AgentActivities,
    ApprovalActivities,
    ApprovalIndex,
    BudgetActivities,
    RecordActivities,
    ensure_approval_index,
)
from durable_agent.activities.budget import ModelRateLimits
from durable_agent.activities.budget import limits_task_queue as limits_task_queue_for
from durable_agent.activities.common import HeartbeatInterceptor
from durable_agent.cli import worker_checks
from durable_agent.cli.hints import cannot_connect
from durable_agent.connection import connect, target_address
from durable_agent.connection import task_queue as default_task_queue
from durable_agent.converter import MissingKeyListener, guarded_client
from durable_agent.decisions import unauthenticated_allow_list
from durable_agent.encryption import KeyRing
from durable_agent.errors import ConfigError
from durable_agent.mcp.catalog import McpCatalog, ServerListing
from durable_agent.profiles import AgentsConfig, import_tool_modules, load_config, money_limit_warnings
from durable_agent.store import ContentStore, open_store
from durable_agent.tools import ToolRegistry
from durable_agent.worker_options import WorkerTuning, shutdown_grace
from durable_agent.workflows import ENTITY_WORKFLOWS, WORKFLOWS

log = logging.getLogger("durable_agent.worker")

#: Exit as soon as the command is done (see durable_agent.cli.entry): a Temporal client's threads can crash the teardown.
SKIP_INTERPRETER_TEARDOWN = True


def env_tool_modules() -> list[str]:
    return [m.strip() for m in os.environ.get("AGENT_TOOL_MODULES", "").split(",") if m.strip()]


def core_modules() -> list[str]:
    """The modules of ``durable_agent`` that the sandbox passes through: all but the workflows.

    Passing a package through passes all of its children, so ``durable_agent`` itself is
    not named: the workflow modules must be re-imported in each run's sandbox, where the
    sandbox's checks on clocks, randomness and I/O apply to them.
    """
    import durable_agent

    return [f"durable_agent.{m.name}" for m in pkgutil.iter_modules(durable_agent.__path__) if m.name != "workflows"]


def workflow_runner() -> SandboxedWorkflowRunner:
    """The sandbox the workflows run in; the core modules and pydantic pass through (no re-import per run)."""
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(
            # cryptography: signed approvals are verified in the workflow; its Rust core imports
            # Python modules lazily, which must be the host's, never a sandbox copy.
            *core_modules(), "pydantic", "pydantic_core", "cryptography",
            # Remote tools' arguments are checked against their JSON Schema in the workflow.
            "jsonschema", "jsonschema_specifications", "referencing", "rpds", "attrs", "attr",
        )
    )


class WorkerGroup:
    """The workers of one process: the agents' task queue, and the limits queue beside it.

    ``async with`` runs them all; :meth:`run` runs them until cancelled.
    """

    def __init__(self, workers: list[Worker], closers: Sequence[Callable[[], Awaitable[None]]] = ()) -> None:
        self.workers = workers
        #: Called once the workers have stopped (the MCP connections: stdio servers are stopped).
        self.closers = list(closers)

    @property
    def agents(self) -> Worker:
        """The worker of the agents' task queue."""
        return self.workers[0]

    def config(self) -> Any:
        """The agents worker's configuration (``Worker.config``)."""
        return self.agents.config()

    async def __aenter__(self) -> "WorkerGroup":
        entered: list[Worker] = []
        try:
            for worker in self.workers:
                await worker.__aenter__()
                entered.append(worker)
        except BaseException:
            for worker in reversed(entered):
                await worker.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc: Any) -> None:
        # Shut down together: each waits for its own tasks in flight.
        try:
            await asyncio.gather(*(worker.__aexit__(*exc) for worker in self.workers))
        finally:
            for close in self.closers:
                await close()

    async def run(self) -> None:
        await asyncio.gather(*(worker.run() for worker in self.workers))


#: ``Worker(max_cached_workflows=...)``'s default in the Temporal SDK.
SDK_MAX_CACHED_WORKFLOWS = 1000


def create_worker(
    client: Client,
    config: AgentsConfig,
    *,
    task_queue: str | None = None,
    store: ContentStore | None = None,
    max_cached_workflows: int | None = None,
    activity_executor: ThreadPoolExecutor | None = None,
    tuning: WorkerTuning | None = None,
    tool_executor: Executor | None = None,
    limits_task_queue: str | None = None,
    serve_limits: bool = True,
    mcp: McpCatalog | None = None,
    deployment: WorkerDeploymentVersion | None = None,
    on_missing_key: MissingKeyListener | None = None,
) -> WorkerGroup:
    """The workers that run every durable-agent workflow and activity, as one group.

    Args:
        client: A client using the pydantic data converter (see :func:`durable_agent.connection.connect`);
            the worker uses a copy whose converter never fails on an untyped payload
            (:func:`durable_agent.converter.guarded_client`).
        config: The validated agent profiles.
        task_queue: Defaults to ``AGENT_TASK_QUEUE`` or ``agents``.
        store: The content store; the default is under ``AGENT_STATE_DIR``.
        max_cached_workflows: 0 makes every task replay from history (tests use it to catch non-determinism).
        tuning: Concurrency, pollers and the shutdown grace period. Without it (tests, the embedded
            default) the worker uses the SDK's sizing and stops without waiting for activities.
        tool_executor: The bounded pool synchronous tools run in (the loop's default pool without one).
        limits_task_queue: Where daily-budget ledgers and rate limiters start: ``AGENT_LIMITS_TASK_QUEUE``,
            else ``<task_queue>-limits``, their own queue so agent load cannot starve them.
        serve_limits: Poll the limits queue too (the default); ``False`` when other workers serve it.
        mcp: The MCP servers' connections (as checked at start); made from ``config`` without one.
            The group closes them when it stops.
        deployment: The Worker Deployment version (``--deployment-name``, ``--build-id``): agent runs are
            pinned to it, ledgers and limiters auto-upgrade (see :mod:`durable_agent.deployments`).
            ``None`` (the default, and the embedded worker of ``durable-agent run``): unversioned.
        on_missing_key: Told when a task arrives encrypted under a key this worker lacks (the task
            fails and is retried elsewhere; see :mod:`durable_agent.converter`).

    Raises:
        ValueError: a versioned worker whose limits queue is the agents' queue.
    """
    queue = task_queue or default_task_queue()
    limits_queue = limits_task_queue_for(queue, limits_task_queue or os.environ.get("AGENT_LIMITS_TASK_QUEUE") or None)
    deployments.check_task_queues(deployment, queue, limits_queue)
    model_windows = config.model_rate_limits()
    model_limits = ModelRateLimits(client, model_windows, limits_queue) if model_windows else None
    store = store or ContentStore()
    activities = AgentActivities(
        config, store, tool_executor=tool_executor, model_limits=model_limits, index=ApprovalIndex(client), mcp=mcp,
        limits_queue=limits_queue,
    )
    sizing: dict[str, Any] = {}
    if tuning is not None:
        sizing = {
            "max_cached_workflows": tuning.max_cached_workflows,
            "max_concurrent_activities": tuning.max_concurrent_activities,
            "max_concurrent_workflow_tasks": tuning.max_concurrent_workflow_tasks,
            "workflow_task_poller_behavior": PollerBehaviorSimpleMaximum(tuning.workflow_pollers),
            "activity_task_poller_behavior": PollerBehaviorSimpleMaximum(tuning.activity_pollers),
            "graceful_shutdown_timeout": timedelta(seconds=shutdown_grace(tuning, tool_timeouts(config, activities.tools))),
        }
    if max_cached_workflows is not None:
        sizing["max_cached_workflows"] = max_cached_workflows
    # The conversations of every run the worker keeps cached stay in memory too (the SDK's default: 1,000).
    store.hold_conversations(sizing.get("max_cached_workflows", SDK_MAX_CACHED_WORKFLOWS))
    # Whatever a client sends, the workflows get a value they can refuse by name (see durable_agent.converter).
    guarded = guarded_client(client, on_missing_key)
    workers = [
        Worker(
            guarded,
            task_queue=queue,
            # The entity workflows too: ledgers and limiters started here before they had a queue of their own.
            workflows=WORKFLOWS,
            activities=activities.all()
            + ApprovalActivities(activities.live).all()
            + BudgetActivities(client, config, limits_queue).all()
            + RecordActivities(store).all(),
            workflow_runner=workflow_runner(),
            activity_executor=activity_executor,
            deployment_config=deployments.worker_config(deployment, deployments.RUNS),
            # Every activity heartbeats for its whole body: a slow dependency costs time, never an attempt.
            interceptors=[HeartbeatInterceptor()],
            **sizing,
        )
    ]
    if serve_limits and limits_queue != queue:
        entity_sizing = {k: v for k, v in sizing.items() if k in ("max_cached_workflows", "workflow_task_poller_behavior")}
        workers.append(
            Worker(
                guarded, task_queue=limits_queue, workflows=ENTITY_WORKFLOWS, workflow_runner=workflow_runner(),
                deployment_config=deployments.worker_config(deployment, deployments.ENTITIES), **entity_sizing,
            )
        )
    return WorkerGroup(workers, closers=[activities.mcp.close] if activities.mcp is not None else [])


def tool_timeouts(config: AgentsConfig, tools: ToolRegistry) -> list[float]:
    """The timeouts of every tool the profiles use (the grace period covers the longest)."""
    found = [tool.info.timeout_seconds for name in {t for p in config.agents.values() for t in p.tools} if (tool := tools.get(name))]
    found += [server.timeout for server in config.mcp_servers.values()]
    found += [policy.timeout for p in config.agents.values() for policy in p.tool_policy.values() if policy.timeout is not None]
    return found


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
        client, config, task_queue=queue, limits_queue=limits_queue, ring=ring, serves_limits=not args.no_limits
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
    refusal = worker_checks.start_problem(findings, limits_queue=limits_queue, serves_limits=not args.no_limits)
    if refusal:
        await store.close()
        await mcp.close()
        fail(2, refusal)
    stop = asyncio.Event()
    keys_missing = worker_checks.StopWithoutKeys(ring, stop)
    tool_pool = ThreadPoolExecutor(max_workers=tuning.tool_threads, thread_name_prefix="tool")
    worker = create_worker(
        client, config, task_queue=queue, store=store, tuning=tuning, tool_executor=tool_pool,
        limits_task_queue=args.limits_task_queue, serve_limits=not args.no_limits, mcp=mcp, on_missing_key=keys_missing,
        deployment=deployment,
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "worker polling task queue %r on %s (agents: %s; store: %s; encryption: %s)",
        queue, address, ", ".join(config.agents), store.location, "on" if ring else "off",
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
