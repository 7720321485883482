"""Run a durable-agent worker: ``durable-agent worker [--tools MODULE]... [--config agents.toml]``.

``python worker.py`` is the same command.

Polls task queue ``agents`` (``AGENT_TASK_QUEUE``) on the Temporal server named
by the standard environment (``TEMPORAL_ADDRESS``..., default ``localhost:7233``).
A bad configuration stops it at once, naming the file and the key.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import pkgutil
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from durable_agent import telemetry, trace
from durable_agent.activities import AgentActivities, BudgetActivities
from durable_agent.connection import connect, target_address
from durable_agent.connection import task_queue as default_task_queue
from durable_agent.converter import guarded_client
from durable_agent.errors import ConfigError
from durable_agent.profiles import AgentsConfig, load_config
from durable_agent.store import ContentStore
from durable_agent.workflows import WORKFLOWS

log = logging.getLogger("durable_agent.worker")


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
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*core_modules(), "pydantic", "pydantic_core")
    )


def create_worker(
    client: Client,
    config: AgentsConfig,
    *,
    task_queue: str | None = None,
    store: ContentStore | None = None,
    max_cached_workflows: int = 1000,
    activity_executor: ThreadPoolExecutor | None = None,
) -> Worker:
    """A worker that runs every durable-agent workflow and activity.

    Args:
        client: A client using the pydantic data converter (see :func:`durable_agent.connection.connect`);
            the worker uses a copy whose converter never fails on an untyped payload
            (:func:`durable_agent.converter.guarded_client`).
        config: The validated agent profiles.
        task_queue: Defaults to ``AGENT_TASK_QUEUE`` or ``agents``.
        store: The content store; the default is under ``AGENT_STATE_DIR``.
        max_cached_workflows: 0 makes every task replay from history (tests use it to catch non-determinism).
    """
    activities = AgentActivities(config, store or ContentStore())
    return Worker(
        # Whatever a client sends, the workflows get a value they can refuse by name (see durable_agent.converter).
        guarded_client(client),
        task_queue=task_queue or default_task_queue(),
        workflows=WORKFLOWS,
        activities=activities.all() + BudgetActivities(client).all(),
        workflow_runner=workflow_runner(),
        max_cached_workflows=max_cached_workflows,
        activity_executor=activity_executor,
    )


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
    parser.add_argument("--address", default=None, help="Temporal address (default: TEMPORAL_ADDRESS or localhost:7233)")
    parser.add_argument("--log-level", default=os.environ.get("AGENT_LOG_LEVEL", "INFO"))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return parser.parse_args(argv)


def load_or_exit(config_path: str, tool_modules: list[str]) -> AgentsConfig:
    try:
        return load_config(config_path, extra_tool_modules=tool_modules)
    except ConfigError as exc:
        print(f"worker: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


async def main(args: argparse.Namespace) -> int:
    """Run a worker until SIGINT or SIGTERM; the exit status (bad configuration: 2, no server: 1)."""
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_or_exit(args.config, env_tool_modules() + args.tools)
    trace.configure(os.environ.get("AGENT_TRACE_FILE") or None)
    telemetry.setup()
    address = target_address(args.address)
    try:
        client = await connect(args.address)
    except Exception as exc:
        print(f"worker: cannot connect to Temporal at {address}: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    queue = args.task_queue or default_task_queue()
    worker = create_worker(client, config, task_queue=queue)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("worker polling task queue %r on %s (agents: %s)", queue, address, ", ".join(config.agents))
    async with worker:
        await stop.wait()
    log.info("worker stopped")
    return 0
