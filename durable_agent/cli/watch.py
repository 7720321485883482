"""Watching a run from the starter: its steps as they happen, the approvals that wait, the result.

The display reads the run through its ``status`` and ``trace`` queries, which only
a worker can answer. While no worker polls the run's task queue, the starter says
so, again every little while, with the command that starts one, instead of
waiting in silence.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import timedelta
from typing import Any

from temporalio.client import Client, WorkflowHandle

from durable_agent import contracts
from durable_agent.cli.hints import approve_commands
from durable_agent.schemas import AgentResult, DecisionRecord, StatusView

#: How long one status or trace query may take before the display tries again (a worker that just went away).
QUERY_TIMEOUT = timedelta(seconds=10)


async def has_poller(client: Client, task_queue: str) -> bool:
    """Whether a worker polls ``task_queue`` for workflow tasks (True when the server cannot tell)."""
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


class WorkerWatch:
    """Whether a worker polls the run's task queue; while none does, says so now and then, and how to start one.

    Args:
        client: The starter's client.
        task_queue: The queue the run was started on.
        start_worker: The command that starts a worker from the person's shell.
        out: Where to say it (standard error: the display may be ``--json``).
        check_every: Seconds between looks at the queue's pollers.
        repeat_every: Seconds between two reminders while no worker comes.
    """

    def __init__(
        self, client: Client, task_queue: str, start_worker: str, out: Any, *, check_every: float = 2.0, repeat_every: float = 15.0
    ) -> None:
        self.client = client
        self.task_queue = task_queue
        self.start_worker = start_worker
        self.out = out
        self.check_every = check_every
        self.repeat_every = repeat_every
        self.since = time.monotonic()
        self.polled = True
        self._checked: float | None = None
        self._said: float | None = None

    async def worker_polls(self) -> bool:
        """Look (at most every ``check_every`` s); while no worker polls, remind every ``repeat_every`` s."""
        now = time.monotonic()
        if self._checked is None or now - self._checked >= self.check_every:
            self._checked = now
            was = self.polled
            self.polled = await has_poller(self.client, self.task_queue)
            if self.polled and not was and self._said is not None:
                print(f"starter: a worker polls task queue {self.task_queue!r} now; the run goes on", file=self.out, flush=True)
        if not self.polled and (self._said is None or now - self._said >= self.repeat_every):
            self._said = now
            print(self.waiting(), file=self.out, flush=True)
        return self.polled

    def waiting(self) -> str:
        """The reminder: what the run waits for and how to give it that."""
        waited = time.monotonic() - self.since
        so_far = f" ({waited:.0f} s so far)" if waited >= 1 else ""
        return (
            f"starter: waiting for a worker on task queue {self.task_queue!r}{so_far}: none polls it, so the run cannot start. "
            f"Start one in another terminal with `{self.start_worker}`, or stop here (Ctrl-C) and run again with --worker"
        )


# -------------------------------------------------------------------------- display


def _short(value: Any, limit: int = 90) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_record(record: DecisionRecord, total_cost: float) -> str:
    """One line for a decision record: the step, what it did and what came of it, tokens and cost so far."""
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


def approval_commands(
    workflow_id: str, approval_id: str, address: str | None, *, signed: bool = False, args_sha256: str | None = None
) -> str:
    """The approve and reject commands for one approval, ready to paste in the shell the starter runs in.

    ``address`` is the server's, when the person's environment would not find it by itself.
    """
    reviewer = os.environ.get("USER") or "YOUR_NAME"
    lines = approve_commands(workflow_id, approval_id, reviewer=reviewer, address=address, signed=signed, args_sha256=args_sha256)
    return "\n".join(f"     {name}:{' ' * (8 - len(name))}{line}" for name, line in lines)


async def _ask(prompt: str) -> str:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, lambda: input(prompt))


async def follow(
    handle: WorkflowHandle[Any, Any], address: str | None, out: Any, *, prompt: bool, watch: WorkerWatch | None = None
) -> AgentResult:
    """Print the run's steps as they happen; return its result.

    Args:
        handle: The run.
        address: The server's address for the printed commands, when the environment does not name it.
        out: Where the steps go.
        prompt: Offer to decide approvals on the terminal.
        watch: Says when no worker polls the run's queue (nothing is queried meanwhile: only a worker answers).
    """
    result_task = asyncio.create_task(handle.result())
    asking: asyncio.Task[str] | None = None
    try:
        # The trace query keeps only the latest records (and a run may continue as new),
        # so records are recognised by identity, not by their position in the list.
        shown: set[tuple[int, str, str | None]] = set()
        announced: set[str] = set()
        last_phase = None
        last_wait: str | None = None
        last_progress: tuple[Any, ...] | None = None
        while True:
            finished = result_task.done()  # one more look after the end, so the last steps print
            status, records = None, []
            if finished or watch is None or await watch.worker_polls():
                try:
                    status = await handle.query(contracts.QUERY_STATUS, result_type=StatusView, rpc_timeout=QUERY_TIMEOUT)
                    # A new decision record always comes with a change here (a step begun, a tool
                    # used, an approval decided, the run ended): fetch the trace (up to 500
                    # records) only then, not at every poll.
                    progress = (status.step, status.phase, status.status, len(status.tools_used), len(status.pending_approvals))
                    if progress != last_progress or finished:
                        records = await handle.query(
                            contracts.QUERY_TRACE, result_type=list[DecisionRecord], rpc_timeout=QUERY_TIMEOUT
                        )
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
                    where = f" in the sub-agent {pending.workflow_id}" if pending.workflow_id not in ("", handle.id) else ""
                    print(
                        f"\n  >> APPROVAL NEEDED {pending.approval_id}{where}: {pending.tool}({_short(pending.args, 80)})\n"
                        f"     why: {pending.reason} (risk {pending.risk}); decide before {pending.deadline:%Y-%m-%d %H:%M:%S} UTC\n"
                        f"{approval_commands(handle.id, pending.approval_id, address, signed=pending.require_signature, args_sha256=pending.args_sha256)}",
                        file=out,
                        flush=True,
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
        return AgentResult.model_validate(result_task.result())
    finally:
        result_task.cancel()
        if asking is not None:
            asking.cancel()


def print_result(result: AgentResult, out: Any) -> None:
    """The result as the starter shows it: status, steps, cost and tokens, tools, approvals, warnings, the answer."""
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
