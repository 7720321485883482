"""What a step observed, as its decision record's ``observation`` shows it. Pure shapes and builders.

A tool call's outcome is an :class:`Observation` while the workflow handles it,
and becomes the record's ``observation`` object (:meth:`Observation.as_record`)
only when the step is recorded; what the record lists elsewhere (the result's
warnings) or what only the loop needs (the run was cancelled meanwhile) stays out.
The other records' observations (an answer, a reply the run ends on, a compaction)
are built here too, so every key a record may carry is written in this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from durable_agent.schemas import CompactOutput, ToolCallOutput

#: Observation previews longer than this are cut (the store keeps the whole result).
PREVIEW_CHARS = 300


@dataclass
class RateLimitNote:
    """The rate-limit slot a tool call was given, and how long it waited for it."""

    slot: str
    wait_ms: int = 0


@dataclass
class Observation:
    """One tool call's outcome: it ran (``result_preview``), or the workflow answered for it (``message``).

    Attributes:
        status: ``ok``, ``error``...: the tool's; ``refused``, ``rejected``, ``timed_out``,
            ``rate_limited``, ``unavailable``, ``budget_exceeded``, ``stopped``: the workflow's.
        duration_ms: How long the tool ran (0 when it did not).
        message: What the workflow told the model instead of running the tool.
        result_preview: The first :data:`PREVIEW_CHARS` characters of the tool's result.
        approval_id: The approval that held the call, if one did.
        rate_limit: The rate-limit slot the call waited for, if its tool has a limit.
        error: The tool's error text.
        result_ref: Where the whole result is kept in the content store.
        request_ids: The API request ids of the step's model calls (on the turn's first call).
        result_warnings: What the activity had to change to keep the result; the record lists
            them with the step's warnings, not in ``observation``.
        run_cancelled: The run was cancelled while this tool (which changes the world, so is
            waited for) finished its work: recorded, then the run ends as cancelled.
        child_workflow_id: The sub-agent run the call started.
    """

    status: str
    duration_ms: int = 0
    message: str | None = None
    result_preview: str | None = None
    approval_id: str | None = None
    rate_limit: RateLimitNote | None = None
    error: str | None = None
    result_ref: str | None = None
    request_ids: list[str] = field(default_factory=list)
    result_warnings: list[str] = field(default_factory=list)
    run_cancelled: bool = False
    child_workflow_id: str | None = None

    @classmethod
    def answered_by_workflow(cls, status: str, message: str, approval_id: str | None = None) -> Observation:
        """The workflow answered for the call: nothing ran, the model reads ``message``."""
        return cls(status=status, message=message, approval_id=approval_id)

    @classmethod
    def of_tool(cls, out: ToolCallOutput, *, approval_id: str | None, rate_limit: RateLimitNote | None, run_cancelled: bool) -> Observation:
        """What the tool (local, MCP or remote) returned, as the run observes it."""
        return cls(
            status=out.status,
            duration_ms=out.duration_ms,
            result_preview=out.preview[:PREVIEW_CHARS],
            approval_id=approval_id,
            rate_limit=rate_limit,
            error=out.error,
            result_ref=out.ref,
            # What the activity had to change to keep the result (it never runs the tool again for it).
            result_warnings=list(out.warnings),
            run_cancelled=run_cancelled,
        )

    def as_record(self) -> dict[str, Any]:
        """The decision record's ``observation``: the keys that apply, always in the same order."""
        record: dict[str, Any] = {"status": self.status}
        if self.message is not None:
            record["message"] = self.message
        if self.result_preview is not None:
            record["result_preview"] = self.result_preview
        record["duration_ms"] = self.duration_ms
        if self.approval_id:
            record["approval_id"] = self.approval_id
        if self.rate_limit is not None:
            record["rate_limit_slot"] = self.rate_limit.slot
            record["rate_limit_wait_ms"] = self.rate_limit.wait_ms
        if self.error:
            record["error"] = self.error
        if self.result_ref:
            record["result_ref"] = self.result_ref
        if self.request_ids:
            record["request_ids"] = list(self.request_ids)
        if self.child_workflow_id:
            record["child_workflow_id"] = self.child_workflow_id
        return record


def _request_ids(ids: list[str]) -> dict[str, Any]:
    return {"request_ids": list(ids)} if ids else {}


def answered(duration_ms: int, request_ids: list[str]) -> dict[str, Any]:
    """The observation of a final answer."""
    return {"status": "answered", "duration_ms": duration_ms, **_request_ids(request_ids)}


def reply_ended_run(refused: bool, stop_reason: str | None, request_ids: list[str]) -> dict[str, Any]:
    """The observation of a reply the run ends on: the model refused, or no reply could be acted on."""
    return {"status": "refused" if refused else "failed", "stop_reason": stop_reason, **_request_ids(request_ids)}


def compacted(out: CompactOutput, reason: str) -> dict[str, Any]:
    """The observation of a compaction: what it made of the conversation, and why it was made."""
    observation: dict[str, Any] = {
        "status": "compacted" if out.fits else "still_too_long",
        "reason": reason,
        "tokens_before": out.tokens_before,
        "tokens_after": out.tokens_after,
        "elided_results": out.elided_results,
        "summarised_messages": out.summarised_messages,
        "duration_ms": out.duration_ms,
    }
    if out.request_id:
        observation["request_ids"] = [out.request_id]
    return observation
