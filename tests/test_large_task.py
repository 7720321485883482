"""A large task goes into the content store once; the run refers to it from then on (issue 14).

A 1 MB task once broke continue-as-new (the task was carried into every continuation's
input, over Temporal's 2 MB limit) and was then refused outright. Now it runs: the
model sees all of it, and nothing recorded after the start input grows with its size.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client

from durable_agent import inputs
from durable_agent.testing import answer, tool_use
from tests.conftest import Harness, make_config

#: Largest event a run records besides the client's own start input: far below the task's size.
EVENT_BYTES = 64 * 1024
MARKER = "MARKER-END-OF-TASK-5c1e"


def big_task(chars: int) -> str:
    """A task of ``chars`` characters: an instruction, filler, and a marker at its very end."""
    head = "Look up order ord-789 and say what you find. "
    filler = "Background notes, line after line. " * (chars // 35 + 1)
    return head + filler[: chars - len(head) - len(MARKER)] + MARKER


def first_user_text(messages: list[dict[str, Any]]) -> str:
    content = messages[0]["content"]
    return content if isinstance(content, str) else "".join(b.get("text", "") for b in content if b.get("type") == "text")


async def run_histories(client: Client, workflow_id: str, first_run_id: str) -> list[list[HistoryEvent]]:
    """The events of every run of a workflow, first run first, following its continue-as-new chain."""
    runs, run_id = [], first_run_id
    while run_id:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        runs.append(list(history.events))
        last = history.events[-1]
        next_run = last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
        run_id = next_run if last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW else ""
    return runs


def test_task_is_large_and_its_stub() -> None:
    assert not inputs.task_is_large("x" * inputs.TASK_INLINE_BYTES)
    assert inputs.task_is_large("x" * (inputs.TASK_INLINE_BYTES + 1))
    assert inputs.task_is_large("é" * (inputs.TASK_INLINE_BYTES // 2 + 1))  # bytes of UTF-8, not characters
    stub = inputs.task_stub("a" * 500_000, "sha256:" + "0" * 64)
    assert stub.startswith("a" * inputs.TASK_STUB_CHARS + " [")
    assert "500,000 characters, stored as sha256:" in stub and len(stub) < 400
    assert not inputs.task_is_large(stub)  # a continuation's stub is kept as it is


async def test_a_1_mb_task_runs_across_continue_as_new_by_reference(harness: Harness) -> None:
    task = big_task(1_000_000)
    script = [tool_use("lookup_order", {"order_id": "ord-789"}), tool_use("lookup_order", {"order_id": "ord-789"}), answer("done")]
    model, scripted = harness.scripted(script)
    profile = {"system_prompt": "You look up orders.", "tools": ["lookup_order"], "autonomy": "autonomous", "continue_as_new_every": 2}
    async with harness.worker(make_config({"reader": {**profile, "model": model}})):
        handle = await harness.start({"task": task, "agent": "reader"})
        result = await asyncio.wait_for(handle.result(), 60)
    assert (result.status, result.steps, result.answer) == ("success", 3, "done")

    # The agent saw the whole task, in the first call and after the continuation alike.
    assert len(scripted.requests) == 3
    for request in scripted.requests:
        assert first_user_text(request.messages) == task

    assert handle.first_execution_run_id is not None
    runs = await run_histories(harness.client, handle.id, handle.first_execution_run_id)
    assert len(runs) == 2, "the run continued as new once"
    failed = [e for events in runs for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED]
    assert failed == []
    # The client's start input holds the task; nothing recorded after it does.
    assert runs[0][0].ByteSize() > 1_000_000
    sizes = [(e.event_type, e.ByteSize()) for e in runs[0][1:] + runs[1]]
    assert max(size for _, size in sizes) < EVENT_BYTES, [s for s in sizes if s[1] >= EVENT_BYTES]
    # The continuation's input names the task: its start and where the rest is.
    continued = runs[1][0].workflow_execution_started_event_attributes.input.payloads[0]
    start_input = json.loads(continued.data)[0] if continued.data.startswith(b"[") else json.loads(continued.data)
    assert start_input["task"].startswith(task[: inputs.TASK_STUB_CHARS])
    assert "1,000,000 characters, stored as sha256:" in start_input["task"]
