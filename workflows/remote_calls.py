"""Remote tools: the model's call scheduled as another worker's activity, on that worker's task queue.

:class:`~durable_agent.workflows.tool_calls.ToolCalls` takes a remote call through
the same gate as every tool (schema, policy, approval, budget, rate limit); this
component does the call itself. The workflow schedules activity
``info.remote.activity`` on ``info.remote.task_queue`` with the arguments as one
JSON object, and keeps the JSON value that comes back as any tool's result: a
local activity stores it, so the model reads it from the content store and the
history holds the value once (with ``AGENT_ENCRYPTION_KEYS``, encrypted by the
data converter as every payload is).

Timeouts: ``schedule_to_start`` bounds the wait for a worker of that queue (a
queue nobody polls makes the tool unavailable, and nothing ran); ``timeout`` each
attempt. A heartbeat timeout is set only when the tool's configuration asks for
one, since a worker in another language may never heartbeat. The activity id is
the call's idempotency key (the same on every attempt), for the other worker to
deduplicate with.
"""

from __future__ import annotations

import asyncio

import json
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutType
from temporalio.exceptions import TimeoutError as ActivityTimedOut
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from durable_agent import contracts
    from durable_agent.errors import failure_message
    from durable_agent.observations import PREVIEW_CHARS, Observation, RateLimitNote
    from durable_agent.retry import TOOL_RETRY_POLICIES, temporal_policy, unknown_outcome_message
    from durable_agent.schemas import RemoteResultInput, RemoteTarget, ToolCall, ToolCallOutput, ToolInfo

from durable_agent.workflows.conversation import Conversation
from durable_agent.workflows.host import Host, cancelled_while_waited, is_cancellation

#: How long storing a remote tool's result may take (a local activity; its retries within).
STORE_RESULT_TIMEOUT = timedelta(seconds=30)


def remote_options(call: ToolCall, info: ToolInfo, remote: RemoteTarget, key: str, cancellation: ActivityCancellationType) -> dict[str, Any]:
    """The activity options of a remote tool's call (pure, for tests to read)."""
    plan = TOOL_RETRY_POLICIES.get(info.retry, TOOL_RETRY_POLICIES["tool_default"])
    options: dict[str, Any] = {
        "task_queue": remote.task_queue,
        "activity_id": key,
        "start_to_close_timeout": timedelta(seconds=info.timeout_seconds),
        "schedule_to_start_timeout": timedelta(seconds=remote.schedule_to_start_seconds),
        # A timed-out attempt of a tool that changes the world and is not idempotent may have done its work.
        "retry_policy": temporal_policy(plan, retry_timeouts=info.repeatable),
        "cancellation_type": cancellation,
        "summary": f"call remote tool: {call.name} ({remote.activity} on {remote.task_queue})",
    }
    if remote.heartbeat_timeout_seconds is not None:
        options["heartbeat_timeout"] = timedelta(seconds=remote.heartbeat_timeout_seconds)
    return options


class RemoteCalls:
    """Calls remote tools and hands their results to the conversation.

    Args:
        host: The workflow (activities, clock).
        conversation: Where the tool's result, or the workflow's answer, goes for the model.
    """

    def __init__(self, host: Host, conversation: Conversation) -> None:
        self._host = host
        self._conversation = conversation

    def _answer(self, call: ToolCall, status: str, text: str, approval_id: str | None) -> Observation:
        self._conversation.tell(call.id, text)
        return Observation.answered_by_workflow(status, text, approval_id)

    async def call(
        self, call: ToolCall, info: ToolInfo, key: str, *, approval_id: str | None, slot: RateLimitNote | None,
        cancellation: ActivityCancellationType,
    ) -> Observation:
        """Run the remote activity for ``call`` and observe it (an unserved queue, a timeout and a failure included)."""
        remote = info.remote
        assert remote is not None, "a remote call of a tool that is not remote"
        started = self._host.now()
        try:
            value = await self._run_to_its_end(call, info, remote, key, cancellation)
        except ActivityError as exc:
            if is_cancellation(exc):
                raise
            failed = self._failed(call, info, remote, exc, approval_id)
            failed.run_cancelled = cancelled_while_waited(self._host, cancellation, failed=True)
            return failed
        duration_ms = int((self._host.now() - started).total_seconds() * 1000)
        out = await self._stored(call, value, key, duration_ms)
        self._conversation.add_result(call.id, out)
        waited = cancelled_while_waited(self._host, cancellation, failed=False)
        return Observation.of_tool(out, approval_id=approval_id, rate_limit=slot, run_cancelled=waited)

    async def _run_to_its_end(
        self, call: ToolCall, info: ToolInfo, remote: RemoteTarget, key: str, cancellation: ActivityCancellationType
    ) -> Any:
        """The remote activity's value. One that changes the world is not cancelled with the run: the run
        waits for its end and records it, so a cancel arriving with its result never loses what it did."""
        options = remote_options(call, info, remote, key, cancellation)
        if cancellation != ActivityCancellationType.WAIT_CANCELLATION_COMPLETED:
            return await self._host.execute_activity(remote.activity, call.args, result_type=Any, **options)  # type: ignore[arg-type]
        running = self._host.start_activity(remote.activity, call.args, result_type=Any, **options)
        try:
            return await asyncio.shield(running)
        except asyncio.CancelledError:
            return await running

    def _failed(self, call: ToolCall, info: ToolInfo, remote: RemoteTarget, exc: ActivityError, approval_id: str | None) -> Observation:
        """What the model is told when the remote activity did not return a result."""
        cause = exc.cause
        if isinstance(cause, ActivityTimedOut) and cause.type == TimeoutType.SCHEDULE_TO_START:
            text = (
                f"The tool {call.name} is unavailable right now: no worker of task queue {remote.task_queue!r} picked the call up "
                f"within {remote.schedule_to_start_seconds:g} s, so nothing ran. Do not call it again in this run; "
                "try another approach or answer with what you have."
            )
            return self._answer(call, "unavailable", text, approval_id)
        if isinstance(cause, ActivityTimedOut) and not info.repeatable:
            text = unknown_outcome_message(f"{call.name} ({remote.activity} on {remote.task_queue}) did not report back ({failure_message(exc)})")
            return self._answer(call, "outcome_unknown", text, approval_id)
        if isinstance(cause, ApplicationError) and cause.non_retryable:
            # The other worker's own verdict on this call (bad input, a refusal): the model may act on it.
            text = f"ERROR from {call.name}: {cause.message}"
            return self._answer(call, "error", text, approval_id)
        text = (
            f"The tool {call.name} is unavailable right now ({failure_message(exc)}). Do not call it again in this run; "
            "try another approach or answer with what you have."
        )
        return self._answer(call, "unavailable", text, approval_id)

    async def _stored(self, call: ToolCall, value: Any, key: str, duration_ms: int) -> ToolCallOutput:
        """The result kept in the content store (a local activity); inline when the store cannot take it."""
        storing = asyncio.ensure_future(
            self._host.execute_local_activity(
                contracts.ACTIVITY_STORE_REMOTE_RESULT,
                RemoteResultInput(call=call, value=value, idempotency_key=key, duration_ms=duration_ms),
                result_type=ToolCallOutput,
                start_to_close_timeout=STORE_RESULT_TIMEOUT,
                schedule_to_close_timeout=STORE_RESULT_TIMEOUT * 4,
                summary=f"store result: {call.name}",
            )
        )
        try:
            try:
                return await asyncio.shield(storing)
            except asyncio.CancelledError:
                # The run was cancelled as the tool finished: it did its work, so its result is kept and
                # recorded all the same (the run then ends cancelled).
                return await storing
        except ActivityError as exc:
            if is_cancellation(exc):
                raise
            # The tool did its work: never run it again; the model gets what fits in a preview.
            text = json.dumps(value, ensure_ascii=False, default=str)[:PREVIEW_CHARS]
            note = f"RESULT_NOT_STORED: the result of {call.name} could not be stored ({failure_message(exc)}); the model saw its start"
            return ToolCallOutput(status="ok", preview=text, duration_ms=duration_ms, chars=len(text), warnings=[note[:300]])
