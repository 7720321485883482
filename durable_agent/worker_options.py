"""How a worker is sized and how it stops: flags and environment of ``durable-agent worker``.

Agent work is many slow, concurrent, I/O-bound activities (model calls of
seconds to minutes, tools waiting on other services) and light workflow tasks,
so the defaults allow far more concurrent activities than CPU cores.

A rolling deploy sends SIGTERM: the worker stops polling at once and gives the
activities in flight ``shutdown_grace_seconds`` to finish (by default the
longest tool timeout of the loaded profiles, and at least two minutes for a
model call), so no model call is paid twice and no tool is cut in the middle of
its work. Set the orchestrator's grace period (Kubernetes
``terminationGracePeriodSeconds``, compose ``stop_grace_period``) a little above it.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, fields

from durable_agent.store_cache import DEFAULT_MAX_BYTES

#: The least grace a worker gives a model call in flight before it exits.
MIN_SHUTDOWN_GRACE_SECONDS = 120.0


@dataclass(frozen=True)
class WorkerTuning:
    """Concurrency and shutdown settings of one worker process."""

    max_concurrent_activities: int = 200
    """Model calls and tools running at once (I/O-bound: far above the core count)."""
    max_concurrent_workflow_tasks: int = 100
    """Workflow tasks (short, CPU-bound decisions) at once."""
    max_cached_workflows: int = 1000
    """Runs kept in memory between tasks; 0 replays every task from history."""
    workflow_pollers: int = 5
    """Concurrent long polls for workflow tasks."""
    activity_pollers: int = 10
    """Concurrent long polls for activity tasks."""
    tool_threads: int = 32
    """Threads of the pool that runs synchronous tools (owned by the worker, bounded)."""
    conversation_cache_mb: int = DEFAULT_MAX_BYTES // 2**20
    """Megabytes of conversations kept in memory (the least recently used, such as runs waiting for a person, go first)."""
    shutdown_grace_seconds: float | None = None
    """Time given to activities in flight after SIGTERM; None: the longest tool timeout, at least 120 s."""


_ENV = {
    "max_concurrent_activities": "AGENT_MAX_CONCURRENT_ACTIVITIES",
    "max_concurrent_workflow_tasks": "AGENT_MAX_CONCURRENT_WORKFLOW_TASKS",
    "max_cached_workflows": "AGENT_MAX_CACHED_WORKFLOWS",
    "workflow_pollers": "AGENT_WORKFLOW_POLLERS",
    "activity_pollers": "AGENT_ACTIVITY_POLLERS",
    "tool_threads": "AGENT_TOOL_THREADS",
    "conversation_cache_mb": "AGENT_CONVERSATION_CACHE_MB",
    "shutdown_grace_seconds": "AGENT_SHUTDOWN_GRACE_SECONDS",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per :class:`WorkerTuning` field, each defaulting to its environment variable."""
    defaults = WorkerTuning()
    group = parser.add_argument_group("sizing and shutdown")
    for field in fields(WorkerTuning):
        env = _ENV[field.name]
        default = getattr(defaults, field.name)
        shown = "the longest tool timeout, at least 120" if default is None else default
        group.add_argument(
            "--" + field.name.replace("_", "-"),
            type=float if field.name == "shutdown_grace_seconds" else int,
            default=None,
            metavar="N",
            help=f"env {env}; default {shown}",
        )


def from_args(args: argparse.Namespace) -> WorkerTuning:
    """Flags first, then the environment, then the defaults.

    Raises:
        ValueError: naming the variable or flag whose value is not a positive number.
    """
    values: dict[str, object] = {}
    for field in fields(WorkerTuning):
        flag = getattr(args, field.name, None)
        env = _ENV[field.name]
        convert = float if field.name == "shutdown_grace_seconds" else int
        if flag is not None:
            value, source = flag, "--" + field.name.replace("_", "-")
        elif os.environ.get(env, "").strip():
            raw = os.environ[env].strip()
            try:
                value = convert(raw)
            except ValueError:
                raise ValueError(f"{env}={raw!r} is not a number") from None
            source = env
        else:
            continue
        least = 0 if field.name in ("max_cached_workflows", "shutdown_grace_seconds", "conversation_cache_mb") else 1
        if value < least:
            raise ValueError(f"{source} must be at least {least}, not {value}")
        values[field.name] = value
    return WorkerTuning(**values)  # type: ignore[arg-type]


def shutdown_grace(tuning: WorkerTuning, tool_timeouts: list[float]) -> float:
    """Seconds of grace after SIGTERM: the configured value, or the longest tool timeout (at least 120 s)."""
    if tuning.shutdown_grace_seconds is not None:
        return tuning.shutdown_grace_seconds
    return max([MIN_SHUTDOWN_GRACE_SECONDS, *tool_timeouts])
