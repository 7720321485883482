"""What is on a task queue: who polls it, and which encryption keys its open runs need.

A worker checks these before it polls (and ``durable-agent worker --check`` says
what it found): a worker without the keys of the runs on its queue would fail
their tasks, and a queue of daily-budget ledgers and rate limiters that no worker
polls leaves every run that needs them waiting. The limits activities ask too,
when a ledger is slow to answer (:func:`answer_from_served_queue`), so the wait
names its cause.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TypeVar

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import TaskQueueKind, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest, GetWorkflowExecutionHistoryRequest
from temporalio.client import Client
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from durable_agent import contracts
from durable_agent.encryption import ENV_KEYS, payload_key_id
from durable_agent.profiles import AgentsConfig
from durable_agent.tools import ToolRegistry

#: Open runs sampled for the keys they use (the most recent first), and events read of each.
SAMPLED_RUNS = 20
SAMPLED_EVENTS = 50
#: Longest a look at the queue may take before the worker goes on without its answer.
LOOK_TIMEOUT_SECONDS = 10.0


async def workflow_pollers(client: Client, task_queue: str) -> int:
    """How many workers polled ``task_queue`` for workflow tasks lately (the server's recent pollers)."""
    return await _pollers(client, task_queue, TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW)


async def activity_pollers(client: Client, task_queue: str) -> int:
    """How many workers polled ``task_queue`` for activity tasks lately (a remote tool's queue)."""
    return await _pollers(client, task_queue, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY)


async def _pollers(client: Client, task_queue: str, kind: TaskQueueType.ValueType) -> int:
    response = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=task_queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
            task_queue_type=kind,
        )
    )
    return len(response.pollers)


#: An answer from the limits queue slower than this makes the caller look whether any worker polls it.
SERVED_CHECK_AFTER = 5.0
#: When none does, how long a call waits before it fails naming the queue (shorter than the activities' 30 s timeout).
UNSERVED_GIVE_UP_AFTER = 20.0
#: Seconds between two warnings that the same queue is not served, per process.
UNSERVED_WARN_EVERY = 60.0
_unserved_warned: dict[str, float] = {}
log = logging.getLogger("durable_agent.activities")
_Answer = TypeVar("_Answer")


async def answer_from_served_queue(
    call: Awaitable[_Answer], client: Client, queue: str, summary: str, *, give_up_after: float | None = UNSERVED_GIVE_UP_AFTER
) -> _Answer:
    """``call``'s answer (an update of a ledger or limiter on ``queue``); when it is slow, is ``queue`` served at all?

    Nothing answers an update of an entity on a queue nobody polls. When none does,
    this says so in the log once a minute, and fails the call at ``give_up_after``
    naming the queue (what ``temporal workflow describe`` then shows as the activity's
    last failure) rather than letting the activity run into its timeout saying nothing.

    Args:
        summary: What is kept there, e.g. ``"daily budget of support on 2026-11-25 UTC"``.
        give_up_after: Seconds from the call's start; ``None``: wait as long as the activity may.

    Raises:
        ApplicationError: ``LimitsQueueNotServed``, retryable, when no worker polls ``queue``.
    """
    answer = asyncio.ensure_future(call)
    try:
        return await _answer_or_unserved(answer, client, queue, summary, give_up_after)
    finally:
        if not answer.done():  # given up, or the activity was cancelled: the update is not waited for
            answer.cancel()
            await asyncio.gather(answer, return_exceptions=True)


async def _answer_or_unserved(
    answer: asyncio.Future[_Answer], client: Client, queue: str, summary: str, give_up_after: float | None
) -> _Answer:
    started = time.monotonic()
    done, _ = await asyncio.wait({answer}, timeout=SERVED_CHECK_AFTER)
    if done:
        return answer.result()
    try:
        served = await workflow_pollers(client, queue) > 0
    except Exception:  # noqa: BLE001 - the server cannot say (permissions, an old server): keep waiting
        served = True
    if served:
        return await answer
    message = (
        f"no worker polls task queue {queue!r}, where the {summary} is kept: start a worker without "
        "--no-limits (`durable-agent worker --check` says which queue is not served)"
    )
    now = time.monotonic()
    if now - _unserved_warned.get(queue, -UNSERVED_WARN_EVERY) >= UNSERVED_WARN_EVERY:
        _unserved_warned[queue] = now
        log.warning("%s; runs that need it wait", message)
    if give_up_after is None:
        return await answer
    done, _ = await asyncio.wait({answer}, timeout=max(0.0, started + give_up_after - now))
    if done:
        return answer.result()
    # Benign: the SDK logs no traceback for it; the warning above says it once a minute.
    raise ApplicationError(message, type="LimitsQueueNotServed", category=ApplicationErrorCategory.BENIGN)


@dataclass
class KeysInUse:
    """Key ids the open runs of a queue are encrypted with, each with a few of the runs."""

    runs_by_key: dict[str, list[str]] = field(default_factory=dict)

    def missing(self, key_ids: list[str]) -> dict[str, list[str]]:
        """The keys in use that ``key_ids`` (a worker's ring; empty without one) lacks."""
        return {kid: runs for kid, runs in self.runs_by_key.items() if kid not in key_ids}


async def keys_in_use(client: Client, task_queue: str, *, sample: int = SAMPLED_RUNS) -> KeysInUse:
    """The encryption keys of the activity results of the most recent open agent runs on ``task_queue``.

    Only activity results count: workers write them, through their own codec, whereas
    anyone who may signal a run can make a signal look encrypted under any key id.
    """
    query = f"TaskQueue = '{task_queue}' AND ExecutionStatus = 'Running' AND WorkflowType = '{contracts.AGENT_WORKFLOW}'"
    found = KeysInUse()
    async for run in client.list_workflows(query, limit=sample):
        history = await client.workflow_service.get_workflow_execution_history(
            GetWorkflowExecutionHistoryRequest(
                namespace=client.namespace,
                execution=WorkflowExecution(workflow_id=run.id, run_id=run.run_id),
                maximum_page_size=SAMPLED_EVENTS,
            )
        )
        kids = {
            kid
            for event in history.history.events
            if event.HasField("activity_task_completed_event_attributes")
            for payload in event.activity_task_completed_event_attributes.result.payloads
            if (kid := payload_key_id(payload)) is not None
        }
        for kid in sorted(kids):
            found.runs_by_key.setdefault(kid, []).append(run.id)
    return found


def missing_keys_problem(task_queue: str, missing: dict[str, list[str]], key_ids: list[str]) -> str:
    """What to tell the operator of a worker that lacks keys its queue's runs use (key ids only, never keys)."""
    kids = ", ".join(repr(kid) for kid in sorted(missing))
    runs = sorted({run for found in missing.values() for run in found})
    sample = ", ".join(runs[:3]) + (f" and {len(runs) - 3} more" if len(runs) > 3 else "")
    have = f"lists only {', '.join(repr(k) for k in key_ids)}" if key_ids else "is not set"
    return (
        f"open runs on task queue {task_queue!r} are encrypted with key {kids} ({sample}), but {ENV_KEYS} {have} on this "
        f"worker: it could not read them and would fail their tasks. Give it the same {ENV_KEYS} as the workers that serve them."
    )


async def missing_keys(client: Client, task_queue: str, key_ids: list[str]) -> str | None:
    """The problem :func:`missing_keys_problem` states, or ``None`` (no such runs, or the server cannot say in time)."""
    try:
        found = await asyncio.wait_for(keys_in_use(client, task_queue), LOOK_TIMEOUT_SECONDS)
    except Exception:  # noqa: BLE001 - no visibility, no permission, a slow server: the worker cannot tell, and goes on
        return None
    missing = found.missing(key_ids)
    return missing_keys_problem(task_queue, missing, key_ids) if missing else None


def limits_users(config: AgentsConfig, tools: ToolRegistry) -> list[str]:
    """What in ``config`` runs on the limits task queue: daily budgets, tool and model rate limits."""
    users = [f"agent {name!r} has a daily budget" for name, p in config.agents.items() if p.daily_budget_usd is not None]
    for name, profile in config.agents.items():
        limited = sorted(
            {t for t in profile.tools if (tool := tools.get(t)) is not None and tool.info.rate_limit}
            | {t for t in profile.tools if (remote := config.remote_tools.get(t)) is not None and remote.rate_limit}
            | set(profile.rate_limits)  # Python, MCP ("SERVER.TOOL", mcp__...) and remote tools alike
            | {name for name, policy in profile.tool_policy.items() if policy.rate_limit}
        )
        if limited:
            users.append(f"agent {name!r} calls rate-limited tools ({', '.join(limited)})")
    users.extend(f"model {model!r} has rate limits" for model in sorted(config.model_rate_limits()))
    return users


def unserved_limits_problem(limits_queue: str, users: list[str]) -> str:
    """What to tell the operator when nothing polls the limits queue that ``users`` need."""
    return (
        f"no worker polls task queue {limits_queue!r}, where the daily budget ledgers and rate limiters run "
        f"({'; '.join(users)}): runs that need them wait (phase waiting_for_budget) until one does. "
        "Run at least one worker without --no-limits (or with --limits-task-queue naming that queue)."
    )


@dataclass
class QueueFindings:
    """What a worker found on its queues before polling them.

    Attributes:
        missing_keys: Open runs need keys this worker lacks (it must not start).
        unserved_limits: Nothing polls the limits queue the profiles need (``--check`` fails;
            a worker that will serve it itself only notes it).
        notes: Everything else worth a line (the limits queue is served, or cannot be looked at).
        limits_users: What in the profiles needs the limits queue (empty: nothing does).
    """

    missing_keys: str | None = None
    unserved_limits: str | None = None
    #: Remote tools whose task queue nothing polls (``--check`` fails; a worker starting says so).
    unserved_remote: str | None = None
    notes: list[str] = field(default_factory=list)
    limits_users: list[str] = field(default_factory=list)


async def look_at_queues(
    client: Client,
    config: AgentsConfig,
    tools: ToolRegistry,
    *,
    task_queue: str,
    limits_queue: str,
    key_ids: list[str],
    serves_limits: bool,
) -> QueueFindings:
    """Check the keys of the runs on ``task_queue`` and who polls ``limits_queue`` (see :class:`QueueFindings`).

    Args:
        key_ids: The key ids of this worker's ``AGENT_ENCRYPTION_KEYS`` (empty: none set).
        serves_limits: This worker will poll the limits queue (it was not started with ``--no-limits``).
    """
    users = limits_users(config, tools) if limits_queue != task_queue else []
    findings = QueueFindings(missing_keys=await missing_keys(client, task_queue, key_ids), limits_users=users)
    await look_at_remote_queues(client, config, findings)
    if not users:
        return findings
    try:
        limits_pollers, agent_pollers = await asyncio.wait_for(
            asyncio.gather(workflow_pollers(client, limits_queue), workflow_pollers(client, task_queue)), LOOK_TIMEOUT_SECONDS
        )
    except Exception as exc:  # noqa: BLE001 - no permission, an old server: say so, do not stop the worker
        findings.notes.append(f"cannot tell whether a worker polls the limits queue {limits_queue!r} ({type(exc).__name__})")
        return findings
    if limits_pollers:
        findings.notes.append(f"limits queue {limits_queue!r} is served ({limits_pollers} poller{'s' * (limits_pollers != 1)})")
    elif not serves_limits or agent_pollers:
        # Workers are up and none serves it (or this one will not): runs that need it wait.
        findings.unserved_limits = unserved_limits_problem(limits_queue, users)
    else:
        findings.notes.append(f"nothing polls the limits queue {limits_queue!r} yet; this worker will")
    return findings


async def look_at_remote_queues(client: Client, config: AgentsConfig, findings: QueueFindings) -> None:
    """Whether a worker polls the task queue of each ``[remote_tools]`` entry (their activity pollers), into ``findings``."""
    by_queue: dict[str, list[str]] = {}
    for name, remote in config.remote_tools.items():
        by_queue.setdefault(remote.task_queue, []).append(f"{name} ({remote.activity})")
    if not by_queue:
        return
    try:
        counts = await asyncio.wait_for(asyncio.gather(*(activity_pollers(client, queue) for queue in by_queue)), LOOK_TIMEOUT_SECONDS)
    except Exception as exc:  # noqa: BLE001 - no permission, an old server: say so, do not stop the worker
        findings.notes.append(f"cannot tell whether workers poll the remote tools' task queues ({type(exc).__name__})")
        return
    unserved = []
    for (queue, names), count in zip(by_queue.items(), counts):
        if count:
            findings.notes.append(f"remote tools {', '.join(names)}: task queue {queue!r} is served ({count} poller{'s' * (count != 1)})")
        else:
            unserved.append(f"{queue!r} ({', '.join(names)})")
    if unserved:
        findings.unserved_remote = (
            f"no worker polls the task queue of remote tools: {'; '.join(unserved)}. Their calls wait up to their schedule_to_start "
            "(default: their timeout), then the model is told the tool is unavailable. Start the workers that serve them, "
            "or check task_queue and activity under [remote_tools]."
        )
