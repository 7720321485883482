"""MCP tool calls inside the ``run_tool`` activity: one call, the same gate as every tool.

The workflow decided the call (policy, approval, rate limit, budget) from the
tool's recorded :class:`~durable_agent.schemas.ToolInfo`; this module sends it to
the server and classifies what came back. The call's idempotency key travels in
the request's ``_meta``. A tool that is neither read-only nor idempotent is never
sent twice: a durable marker (a named record in the content store, written once
per idempotency key) is created right before it is sent, so an attempt that
finds the marker (its worker died mid-call) and an attempt that timed out or
lost its connection tell the model the outcome is unknown instead of sending it again.
"""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from temporalio import activity

from durable_agent import genai
from durable_agent.activities.common import (
    ERROR_CHARS,
    PREVIEW_CHARS,
    cut,
    elapsed_ms,
    heartbeating,
    log,
    retry_error,
    tool_result_text,
)
from durable_agent.jsonsafe import json_safe
from durable_agent.mcp.errors import INTERNAL_ERROR, INVALID_PARAMS, McpCallLost, McpErrorResponse, McpUnavailable
from durable_agent.mcp.mapping import McpAnswer, McpTool, answer_size, convert
from durable_agent.retry import TOOL_RETRY_POLICIES, ErrorKind, next_delay
from durable_agent.schemas import ToolCall, ToolCallInput, ToolCallOutput, ToolInfo

from durable_agent.mcp.catalog import ProfileTools
from durable_agent.mcp.config import is_mcp_entry

if TYPE_CHECKING:
    from durable_agent.mcp.catalog import McpCatalog
    from durable_agent.profiles import AgentsConfig, Profile
    from durable_agent.store import ContentStore

#: The ``_meta`` key that carries the call's idempotency key (the same on every attempt of the call).
IDEMPOTENCY_META_KEY = "durable-agent/idempotency-key"
#: Named records marking a call that must not be sent twice as sent.
SENT_MARKERS = "mcp-sent"
#: Characters an image counts for in the next call's cost estimate (about 1,600 tokens).
IMAGE_CHARS = 4_800


class _AlreadySent(Exception):
    """An earlier attempt of this call sent it (its worker stopped before the answer was recorded)."""


class McpToolActivities:
    """Sends MCP tool calls for ``run_tool``; mixed into the agent's activities."""

    config: AgentsConfig
    store: ContentStore
    mcp: McpCatalog | None

    async def mcp_profile_tools(self, agent: str, profile: Profile) -> ProfileTools:
        """The profile's MCP tools for a run starting now (its servers listed within the resolve activity's time)."""
        if self.mcp is None or not any(is_mcp_entry(entry) for entry in profile.tools):
            return ProfileTools()
        return await self.mcp.for_profile(agent, profile.tools, profile.tool_policy)

    def is_mcp_tool(self, name: str) -> bool:
        """``name`` is the model-facing name of a configured MCP server's tool."""
        return self.mcp is not None and self.mcp.server_of(name) is not None

    async def run_mcp_tool(self, request: ToolCallInput) -> ToolCallOutput:
        """One MCP tool call: heartbeating for its whole body, cancellable, in an ``execute_tool`` span."""
        assert self.mcp is not None
        call = request.call
        attempt = activity.info().attempt
        started = time.monotonic()
        async with heartbeating():
            try:
                tool = await self.mcp.tool(call.name)
            except McpUnavailable as exc:
                plan = TOOL_RETRY_POLICIES["tool_default"]
                raise retry_error(f"{call.name}: {exc}", ErrorKind.CONNECTION, next_delay(plan, ErrorKind.CONNECTION, attempt)) from None
            if tool is None:
                message = f"no tool named {call.name!r}: its MCP server does not offer it now"
                return ToolCallOutput(status="unknown_tool", error=message, preview=message)
            profile = self.config.agents.get(request.agent)
            info = self.mcp.info(tool, profile.tool_policy if profile else {}, request.agent)
            with genai.tool_span(call.name, call.id, args=call.args, description=info.description) as span:
                output = await self._send_mcp(tool, info, call, request.idempotency_key, attempt, started)
                genai.tool_outcome(span, output.status, output.preview if output.ref else None, output.error)
        return output

    async def _send_mcp(self, tool: McpTool, info: ToolInfo, call: ToolCall, key: str, attempt: int, started: float) -> ToolCallOutput:
        """Send the call once; a final outcome is returned, a failure worth another attempt raised with its delay."""
        assert self.mcp is not None
        plan = TOOL_RETRY_POLICIES.get(info.retry, TOOL_RETRY_POLICIES["tool_default"])
        once_only = not info.read_only and not info.idempotent
        marker = f"{SENT_MARKERS}/{hashlib.sha256(key.encode()).hexdigest()}"

        async def mark_sent() -> None:
            record = {"tool": call.name, "attempt": attempt, "sent_at": datetime.now(UTC).isoformat()}
            try:
                created = await self.store.create_named(marker, record)
            except Exception as exc:  # noqa: BLE001 - the store is down: nothing was sent, so another attempt may send it
                raise McpUnavailable(f"the call could not be marked as sent in the content store ({type(exc).__name__}); not sent") from None
            if not created:
                raise _AlreadySent()

        connection = self.mcp.connections[tool.server]
        try:
            result = await connection.call(
                tool.name,
                call.args,
                meta={IDEMPOTENCY_META_KEY: key},
                timeout=info.timeout_seconds,
                probe=once_only,
                before_send=mark_sent if once_only else None,
            )
        except _AlreadySent:
            return _outcome_unknown(call.name, "an earlier attempt sent it, and its worker stopped before the answer was recorded", started)
        except McpUnavailable as exc:
            kind = ErrorKind.TIMEOUT if exc.busy else ErrorKind.CONNECTION
            raise retry_error(f"{call.name}: {exc}", kind, next_delay(plan, kind, attempt)) from None
        except McpCallLost as exc:
            if once_only:
                return _outcome_unknown(call.name, str(exc), started)
            kind = ErrorKind.TIMEOUT if exc.timed_out else ErrorKind.CONNECTION
            raise retry_error(f"{call.name}: {exc}", kind, next_delay(plan, kind, attempt)) from None
        except McpErrorResponse as exc:
            message = cut(str(exc), ERROR_CHARS)
            if exc.code == INVALID_PARAMS:
                return ToolCallOutput(status="invalid_arguments", error=message, preview=message[:PREVIEW_CHARS], duration_ms=elapsed_ms(started))
            if exc.code == INTERNAL_ERROR and not once_only:
                raise retry_error(f"{call.name}: {message}", ErrorKind.TOOL_CRASH, next_delay(plan, ErrorKind.TOOL_CRASH, attempt)) from None
            return ToolCallOutput(status="error", error=message, preview=message[:PREVIEW_CHARS], duration_ms=elapsed_ms(started))
        limit = self.mcp.servers[tool.server].max_result_bytes
        size = answer_size(result)
        if size > limit:
            message = (
                f"{call.name} answered {size:,} characters, over the server's max_result_bytes of {limit:,}; the answer was "
                "dropped. The call did run on the server: ask for less (a filter, a page) rather than repeating it."
            )
            log.warning("MCP tool %s: an answer of %s characters dropped (limit %s)", call.name, size, limit, extra={"tool": call.name})
            return ToolCallOutput(status="error", error=message, preview=message[:PREVIEW_CHARS], duration_ms=elapsed_ms(started))
        return await self._mcp_done(call, convert(result), elapsed_ms(started))

    async def _mcp_done(self, call: ToolCall, answer: McpAnswer, duration_ms: int) -> ToolCallOutput:
        """Store the answer (text, structured content, images) and describe it; never raises, so nothing is sent again."""
        status: Literal["ok", "error"] = "error" if answer.is_error else "ok"
        output, warnings = json_safe(answer.output)
        text = tool_result_text(output)
        error = cut(text, ERROR_CHARS) if answer.is_error else None
        record: dict[str, object] = {"tool": call.name, "output": output}
        if answer.images:
            record["images"] = answer.images
        try:
            ref: str | None = await self.store.put(record)
        except Exception as exc:  # noqa: BLE001 - the store is down or full: the call is done all the same
            log.warning("result of %s not stored (the call is not sent again): %r", call.name, exc)
            note = f"RESULT_NOT_STORED: the full result could not be stored ({type(exc).__name__}); the model saw its first {PREVIEW_CHARS} characters"
            text = text[:PREVIEW_CHARS] + "\n[the rest of this result could not be stored]"
            return ToolCallOutput(status=status, preview=text, error=error, duration_ms=duration_ms, chars=len(text), warnings=[*warnings, note])
        chars = len(text) + IMAGE_CHARS * len(answer.images)
        return ToolCallOutput(status=status, ref=ref, preview=text[:PREVIEW_CHARS], error=error, duration_ms=duration_ms, chars=chars, warnings=warnings)


def _outcome_unknown(tool: str, why: str, started: float) -> ToolCallOutput:
    message = cut(
        f"OUTCOME UNKNOWN: {tool} was sent to its MCP server, but no answer came back ({why}). It was not sent again, because "
        "it is neither read-only nor idempotent: it may or may not have taken effect. Check with a read-only tool before "
        "calling it again, or tell the user.",
        ERROR_CHARS,
    )
    return ToolCallOutput(status="outcome_unknown", error=message, preview=message[:PREVIEW_CHARS], duration_ms=elapsed_ms(started))
