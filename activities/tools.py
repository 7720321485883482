"""The ``run_tool`` activity: one tool call, classified once, never re-run for our own failure.

A tool that returned has done its work: its result is made JSON-safe and stored
right away, and nothing after that can raise, so nothing of ours makes the tool
run again. A failing tool is retried per its retry plan, by error kind, except
that a tool that changes the world and is not declared idempotent is never run
again after a timeout: its outcome is unknown, and the model is told so.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Coroutine
from concurrent.futures import Executor
from typing import Any

from temporalio import activity

from durable_agent import contracts, genai, redaction, results
from durable_agent.activities.common import (
    HEARTBEAT_EVERY,
    PREVIEW_CHARS,
    cut,
    elapsed_ms,
    error_text,
    heartbeating,
    log,
    quoting_error,
    retry_error,
    tool_result_text,
)
from durable_agent.activities.context import ContextActivities
from durable_agent.activities.mcp import McpToolActivities
from durable_agent.errors import InvalidToolArguments, ToolAuthError, ToolError, ToolRateLimited, ToolTimeout
from durable_agent.jsonsafe import json_safe
from durable_agent.results import RunChain
from durable_agent.retry import TOOL_RETRY_POLICIES, ErrorKind, RetryPlan, next_delay, unknown_outcome_message
from durable_agent.schemas import RemoteResultInput, ToolCall, ToolCallInput, ToolCallOutput
from durable_agent.tool_policy import apply as apply_tool_policy
from durable_agent.tools import Tool, ToolContext, ToolRegistry


class ToolActivities(ContextActivities, McpToolActivities):
    """Runs the worker's tools (and the built-in ``read_result``, and the MCP servers' tools)."""

    tools: ToolRegistry
    #: The worker's bounded pool for synchronous tools.
    tool_executor: Executor | None

    @activity.defn(name=contracts.ACTIVITY_RUN_TOOL)
    async def run_tool(self, request: ToolCallInput) -> ToolCallOutput:
        """Run one tool call. Final outcomes are returned; retryable failures are raised with their delay."""
        call: ToolCall = request.call
        if self.is_mcp_tool(call.name):
            return await self.run_mcp_tool(request)
        tool = self.tools.get(call.name)
        if tool is None and call.name == contracts.TOOL_READ_RESULT:
            return await self.read_result(call, RunChain.of_tool_call(activity.info().workflow_id, request.idempotency_key))
        if tool is None:
            return ToolCallOutput(status="unknown_tool", error=f"no tool named {call.name!r}", preview=f"no tool named {call.name!r}")
        tool = self._with_profile_policy(tool, request.agent)
        info = activity.info()
        context = ToolContext(
            idempotency_key=request.idempotency_key,
            session_id=request.session_id,
            agent=request.agent,
            step=request.step,
            attempt=info.attempt,
            heartbeat=activity.heartbeat,
        )
        plan = TOOL_RETRY_POLICIES.get(tool.info.retry, TOOL_RETRY_POLICIES["tool_default"])
        started = time.monotonic()
        with genai.tool_span(call.name, call.id, args=call.args, description=tool.info.description) as span:
            output = await self._invoke_tool(tool, call, context, plan, started)
            genai.tool_outcome(span, output.status, output.preview if output.ref else None, output.error)
        return output

    @activity.defn(name=contracts.ACTIVITY_STORE_REMOTE_RESULT)
    async def store_remote_result(self, request: RemoteResultInput) -> ToolCallOutput:
        """Keep a remote tool's result as any tool's: JSON-safe, in the content store, described for the model.

        The workflow runs it as a local activity right after the remote activity returned:
        its input (the result) is not recorded again, only the reference and preview it
        returns. It never raises, so the remote tool is never run again for our failure.
        """
        chain = RunChain.of_tool_call(activity.info().workflow_id, request.idempotency_key)
        return await self._tool_done(request.call, request.value, request.duration_ms, chain)

    def _with_profile_policy(self, tool: Tool, agent: str) -> Tool:
        """The tool as the run's profile sees it: its ``tool_policy`` (a timeout, idempotency) laid over the decorator's."""
        profile = self.config.agents.get(agent)
        policy = profile.tool_policy.get(tool.name) if profile is not None else None
        return tool if policy is None else dataclasses.replace(tool, info=apply_tool_policy(tool.info, policy))

    async def _invoke_tool(self, tool: Tool, call: ToolCall, context: ToolContext, plan: RetryPlan, started: float) -> ToolCallOutput:
        """Invoke the tool; a final outcome is returned, a retryable failure raised with its delay."""
        info = activity.info()
        try:
            # At the pace the tool asked for: the workflow's heartbeat timeout follows it.
            async with heartbeating(min(HEARTBEAT_EVERY, tool.info.heartbeat_seconds or HEARTBEAT_EVERY)):
                work = asyncio.wait_for(tool.invoke(call.args, context, self.tool_executor), timeout=tool.info.timeout_seconds)
                result, cancelled_midway = await _to_its_end(tool, work)
        except InvalidToolArguments as exc:
            message = error_text(exc)
            return ToolCallOutput(status="invalid_arguments", error=message, preview=message[:PREVIEW_CHARS])
        except ToolError as exc:
            kind = _tool_error_kind(exc)
            retry_after = exc.retry_after if isinstance(exc, ToolRateLimited) else None
            if not exc.retryable:
                message = error_text(exc)
                return ToolCallOutput(status="error", error=message, preview=message[:PREVIEW_CHARS], duration_ms=elapsed_ms(started))
            if kind is ErrorKind.TIMEOUT:
                return self._timed_out(tool, call, plan, f"{call.name}: {error_text(exc)}", started)
            delay = next_delay(plan, kind, info.attempt, retry_after)
            raise quoting_error(call.name, error_text(exc), kind, delay) from None
        except (asyncio.TimeoutError, TimeoutError):
            return self._timed_out(tool, call, plan, f"{call.name} timed out after {tool.info.timeout_seconds:g}s", started)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            delay = next_delay(plan, ErrorKind.TOOL_CRASH, info.attempt)
            shown = repr(exc) if redaction.content_in_logs() else f"{type(exc).__name__} (its message is {redaction.WITHHELD})"
            log.warning("tool %s crashed (attempt %s): %s", call.name, info.attempt, shown, extra={"tool": call.name})
            raise quoting_error(f"{call.name} crashed: {type(exc).__name__}", error_text(exc), ErrorKind.TOOL_CRASH, delay) from None
        output = await self._tool_done(call, result, elapsed_ms(started), RunChain.of_tool_call(info.workflow_id, context.idempotency_key))
        if cancelled_midway:
            output.warnings.append(
                f"CANCELLED_WHILE_RUNNING: the run was cancelled while {call.name} ran; it changes the world, "
                "so it ran to its end and its result is kept"
            )
        return output

    def _timed_out(self, tool: Tool, call: ToolCall, plan: RetryPlan, what_happened: str, started: float) -> ToolCallOutput:
        """A timed-out attempt: retried by the plan when that is safe, else its outcome is unknown.

        A tool that changes the world may have done its work before it timed out. Unless it
        is declared idempotent it is never run again, and when it is, its last attempt's
        timeout leaves the outcome as unknown as the first one's. Either way the model is
        told so, and the step's record says ``outcome_unknown``; a read-only tool is
        retried and then reported unavailable, as any other failure.

        Raises:
            ApplicationError: retryable with the plan's delay, or (read-only, retries spent) not.
        """
        attempt = activity.info().attempt
        delay = next_delay(plan, ErrorKind.TIMEOUT, attempt) if tool.info.repeatable else None
        if delay is not None or tool.info.read_only:
            raise retry_error(what_happened, ErrorKind.TIMEOUT, delay)
        log.warning(
            "%s (attempt %s); %s changes the world, so its outcome is unknown and it is not run again%s",
            what_happened, attempt, call.name, "" if tool.info.idempotent else " (declare it idempotent=True if running it twice is safe)",
            extra={"tool": call.name},
        )
        message = unknown_outcome_message(what_happened)
        return ToolCallOutput(status="outcome_unknown", error=message, preview=message[:PREVIEW_CHARS], duration_ms=elapsed_ms(started))

    async def _tool_done(self, call: ToolCall, result: Any, duration_ms: int, chain: RunChain | None = None) -> ToolCallOutput:
        """The outcome of a tool that returned: never raises, so nothing of ours can make the tool run again.

        The result is made JSON-safe once, here (what could not be kept as it was is
        said in ``warnings``), and kept naming the run that produced it (``chain``: only
        that run may read it back); if storing it fails, the model gets the preview and a note.
        """
        try:
            output, warnings = json_safe(result)
            text = tool_result_text(output)
        except Exception as exc:  # noqa: BLE001 - json_safe does not raise; this is the belt to its braces
            output, text = None, f"[the result of {call.name} could not be read: {type(exc).__name__}]"
            warnings = [f"RESULT_CONVERTED: {text}"]
        try:
            ref: str | None = await self.store.put(results.tool_result(call.name, output, chain))
        except Exception as exc:  # noqa: BLE001 - the store is down or full: the tool's work is done all the same
            log.warning("result of %s not stored (the tool is not run again): %r", call.name, exc)
            ref = None
            note = f"RESULT_NOT_STORED: the full result could not be stored ({type(exc).__name__}); the model saw its first {PREVIEW_CHARS} characters"
            warnings = [*warnings, cut(note, 300)]
            text = text[:PREVIEW_CHARS] + "\n[the rest of this result could not be stored]"
            return ToolCallOutput(status="ok", ref=None, preview=text, duration_ms=duration_ms, chars=len(text), warnings=warnings)
        return ToolCallOutput(status="ok", ref=ref, preview=text[:PREVIEW_CHARS], duration_ms=duration_ms, chars=len(text), warnings=warnings)


async def _to_its_end(tool: Tool, work: Coroutine[Any, Any, Any]) -> tuple[Any, bool]:
    """Await ``work`` (the tool's call); whether the activity was cancelled while it ran.

    A tool that changes the world, once started, runs to its own end even when the
    run is cancelled (the workflow waits for it): its result is returned, so the run
    records it before it ends ``cancelled``, instead of leaving a refund done but
    unrecorded, or cut off halfway. Its own timeout still applies. A read-only tool
    is simply cancelled.
    """
    if tool.info.read_only:
        return await work, False
    running = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(running), False
    except asyncio.CancelledError:
        if running.cancelled():
            raise
    log.warning("cancelled while %s runs: it changes the world, so it runs to its end and its result is kept", tool.name,
                extra={"tool": tool.name})
    while not running.done():
        try:
            await asyncio.shield(running)
        except asyncio.CancelledError:
            continue  # asked again: the answer is the same
    current = asyncio.current_task()
    if current is not None:
        while current.cancelling():
            current.uncancel()  # the cancellation is answered by the tool's result
    return running.result(), True


def _tool_error_kind(exc: ToolError) -> ErrorKind:
    if isinstance(exc, ToolTimeout):
        return ErrorKind.TIMEOUT
    if isinstance(exc, ToolRateLimited):
        return ErrorKind.RATE_LIMIT
    if isinstance(exc, ToolAuthError):
        return ErrorKind.AUTH
    return ErrorKind.TOOL_CRASH
