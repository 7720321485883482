"""The workers of one process, assembled from the configuration: the agents' task queue and the limits queue beside it.

``durable-agent worker``, the embedded worker of ``durable-agent run``, the tests and the
benchmarks all build their workers here, so they run the same workflows, activities and sandbox.
"""

from __future__ import annotations

import asyncio
import os
import pkgutil
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.common import WorkerDeploymentVersion
from temporalio.worker import PollerBehaviorSimpleMaximum, Worker
from temporalio.worker.workflow_sandbox import SandboxRestrictions

from durable_agent import contracts, deployments
from durable_agent.activities import (
    AgentActivities,
    ApprovalActivities,
    ApprovalIndex,
    BudgetActivities,
    RecordActivities,
)
from durable_agent.activities.budget import ModelRateLimits
from durable_agent.activities.budget import limits_task_queue as limits_task_queue_for
from durable_agent.activities.common import HeartbeatInterceptor
from durable_agent.connection import task_queue as default_task_queue
from durable_agent.cli import workflow_code
from durable_agent.cli.sandbox import WorkerSandbox
from durable_agent.converter import MissingKeyListener, guarded_client
from durable_agent.mcp.catalog import McpCatalog
from durable_agent.profiles import AgentsConfig
from durable_agent.store import ContentStore
from durable_agent.tools import ToolRegistry
from durable_agent.worker_options import WorkerTuning, shutdown_grace
from durable_agent.workflows import ENTITY_WORKFLOWS, WORKFLOWS

def core_modules() -> list[str]:
    """The modules the sandbox passes through: all of ``durable_agent`` but the modules defining workflow classes.

    Passing a package through passes all of its children, so neither ``durable_agent`` nor
    ``durable_agent.workflows`` is named: the modules of the workflow classes must be
    re-imported in each run's sandbox, where the sandbox's checks on clocks, randomness and
    I/O apply to them. The decision modules beside them are passed through (see
    :mod:`durable_agent.workflows`): one copy per worker, not one per run in its cache.
    """
    import durable_agent
    import durable_agent.workflows as workflows

    core = [f"durable_agent.{m.name}" for m in pkgutil.iter_modules(durable_agent.__path__) if m.name != "workflows"]
    decisions = [
        name for m in pkgutil.iter_modules(workflows.__path__)
        if (name := f"durable_agent.workflows.{m.name}") not in workflows.WORKFLOW_MODULES
    ]
    return core + decisions


def workflow_runner() -> WorkerSandbox:
    """The sandbox the workflows run in; the core modules and pydantic pass through (no re-import per run).

    The modules of the workflow classes are re-imported in each run's sandbox, from code compiled once
    (:mod:`.workflow_code`); the SDK's questions about each payload's context are answered without
    entering the sandbox (:mod:`.sandbox`).
    """
    workflow_code.install()
    return WorkerSandbox(
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
#: What a worker process may do (``durable-agent worker --role``).
ROLES = ("all", "workflows", "activities", "limits")
#: The activities the workflows run as local activities: a workflow worker must have them.
LOCAL_ACTIVITIES = (contracts.ACTIVITY_STORE_TASK, contracts.ACTIVITY_STORE_REMOTE_RESULT)


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
    role: str = "all",
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
        role: What this process does (``--role``): ``all`` (the default), ``workflows`` (the agent runs'
            workflow tasks, with the local activities they run in place), ``activities`` (model calls,
            tools, records: the agents queue's activity tasks) or ``limits`` (the ledgers and rate limiters).

    Raises:
        ValueError: a versioned worker whose limits queue is the agents' queue; an unknown role.
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
    # The conversations of every run the worker keeps cached stay in memory too (the SDK's default: 1,000),
    # within the megabytes the tuning allows.
    store.hold_conversations(
        sizing.get("max_cached_workflows", SDK_MAX_CACHED_WORKFLOWS), (tuning or WorkerTuning()).conversation_cache_mb * 2**20
    )
    # Whatever a client sends, the workflows get a value they can refuse by name (see durable_agent.converter).
    guarded = guarded_client(client, on_missing_key)
    if role not in ROLES:
        raise ValueError(f"unknown worker role {role!r}: one of {', '.join(ROLES)}")
    every_activity = (
        activities.all() + ApprovalActivities(activities.live).all() + BudgetActivities(client, config, limits_queue).all()
        + RecordActivities(store).all()
    )
    # A workflow worker runs the local activities of its workflows itself (a large task, a remote tool's result).
    in_place = [fn for fn in every_activity if getattr(fn, "__temporal_activity_definition").name in LOCAL_ACTIVITIES]
    workers = []
    if role != "limits":
        workers.append(
            Worker(
                guarded,
                task_queue=queue,
                # The entity workflows too: ledgers and limiters started here before they had a queue of their own.
                workflows=WORKFLOWS if role != "activities" else [],
                activities=every_activity if role != "workflows" else in_place,
                no_remote_activities=role == "workflows",  # its local activities only: never a think or a tool
                workflow_runner=workflow_runner(),
                activity_executor=activity_executor,
                deployment_config=deployments.worker_config(deployment, deployments.RUNS),
                # Every activity heartbeats for its whole body: a slow dependency costs time, never an attempt.
                interceptors=[HeartbeatInterceptor()],
                **{k: v for k, v in sizing.items() if role != "activities" or "workflow" not in k},
            )
        )
    if role in ("all", "limits") and serve_limits and limits_queue != queue:
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
