"""The worker's checks of its task queues, at start and in ``worker --check``, and its stop when keys are missing.

* Open runs on the queue encrypted with keys this worker lacks: it would fail their
  tasks, so it does not start (exit 2) and ``--check`` fails (exit 1).
* Nothing polls the limits queue the profiles need (daily budgets, rate limits):
  ``--check`` fails while workers are up and none serves it, and a worker started
  with ``--no-limits`` says so on its start line.
* A worker without ``AGENT_ENCRYPTION_KEYS`` that is handed an encrypted activity
  (only a worker with keys writes those, so it is no forged payload) stops, so that it
  takes no more attempts from runs that workers with the keys would finish.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from temporalio.client import Client
from temporalio.converter import ActivitySerializationContext, SerializationContext

from durable_agent.encryption import ENV_KEYS, KeyRing, MissingEncryptionKey
from durable_agent.profiles import AgentsConfig
from durable_agent.queues import QueueFindings, look_at_queues
from durable_agent.tools import registry

log = logging.getLogger("durable_agent.worker")


async def look(
    client: Client, config: AgentsConfig, *, task_queue: str, limits_queue: str, ring: KeyRing | None, serves_limits: bool
) -> QueueFindings:
    """What is on the worker's queues (see :func:`durable_agent.queues.look_at_queues`)."""
    return await look_at_queues(
        client, config, registry, task_queue=task_queue, limits_queue=limits_queue,
        key_ids=ring.key_ids if ring is not None else [], serves_limits=serves_limits,
    )


def check_status(findings: QueueFindings) -> int:
    """Print what ``--check`` found (problems to standard error); 1 when something is wrong, else 0."""
    for note in findings.notes:
        print(f"worker: {note}")
    problems = [p for p in (findings.missing_keys, findings.unserved_limits, findings.unserved_remote) if p]
    for problem in problems:
        print(f"worker: {problem}", file=sys.stderr)
    return 1 if problems else 0


def start_problem(findings: QueueFindings, *, limits_queue: str, serves_limits: bool) -> str | None:
    """Why the worker must not start (it lacks keys that open runs need), after logging the warnings of its start line."""
    for note in findings.notes:
        log.info("%s", note)
    if findings.unserved_remote:
        log.warning("%s", findings.unserved_remote)
    if serves_limits or not findings.limits_users:
        return findings.missing_keys
    if findings.unserved_limits:
        log.warning("started with --no-limits: %s", findings.unserved_limits)
    else:
        log.warning(
            "started with --no-limits, and the profiles need task queue %r (%s): other workers must serve it, "
            "or runs that need it wait",
            limits_queue, "; ".join(findings.limits_users),
        )
    return findings.missing_keys


class StopWithoutKeys:
    """The listener that stops a worker without keys once an encrypted activity reaches it.

    Args:
        ring: The worker's keys; with any, it never stops (a key it lacks may be a forgery's).
        stop: Set to stop the worker.
    """

    def __init__(self, ring: KeyRing | None, stop: asyncio.Event) -> None:
        self.ring = ring
        self.stop = stop
        #: Why the worker stopped itself (its exit status is then 2).
        self.reason: str | None = None

    def __call__(self, exc: MissingEncryptionKey, context: SerializationContext | None) -> None:
        if self.ring is not None or self.reason is not None or not isinstance(context, ActivitySerializationContext):
            return
        self.reason = (
            f"activities on task queue {context.activity_task_queue!r} arrive encrypted with key {exc.kid!r}, and {ENV_KEYS} "
            "is not set on this worker: it stops, so that workers with the keys run them. Set the same "
            f"{ENV_KEYS} as theirs and start it again"
        )
        log.error("stopping: %s", self.reason)
        self.stop.set()
