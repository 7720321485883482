"""The tool calls of one model turn: checked, run (alone or at once), observed and recorded, in the model's order.

A call whose anomalies say ``pause`` waits at the approval desk first (approving
resumes the run, anything else stops it); one that says ``stop`` is not run. A
read-only group that needs nobody runs at once (:mod:`.turns`). Each call keeps its
own decision record. The first call whose outcome ends the run (its budget spent,
an anomaly stop, the run cancelled while it ran) is handed back to the loop.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from durable_agent.observations import Observation
    from durable_agent.schemas import ActionRecord, ApprovalRecord, CostRecord, ThinkOutput, ToolCall, Usage

from durable_agent.workflows import turns
from durable_agent.workflows.anomaly_watch import AnomalyWatch, Finding
from durable_agent.workflows.approval_desk import ApprovalDesk
from durable_agent.workflows.conversation import Conversation
from durable_agent.workflows.host import Host
from durable_agent.workflows.progress import Progress
from durable_agent.workflows.records import RecordBook
from durable_agent.workflows.settings import RunSettings
from durable_agent.workflows.spend import Spend
from durable_agent.workflows.tool_calls import ToolCalls

#: Patch: an anomaly rule set to ``pause`` holds the run for a person.
PATCH_ANOMALY_PAUSE = "anomaly-pause"


def pause_outcome(held: ApprovalRecord) -> str:
    """Why a paused run stops: who stopped it (and their comment), or that nobody resumed it in time."""
    if held.status == "timed_out":
        return "no reviewer resumed the paused run in time"
    comment = f": {held.comment}" if held.comment else ""
    return f"the paused run was stopped by {held.reviewer or 'a reviewer'}{comment}"


@dataclass
class Ending:
    """A call whose outcome ends the run, and why (the anomaly, for a stop)."""

    call: ToolCall
    observation: Observation
    why: str


def ends_the_run(observation: Observation) -> bool:
    return observation.status in ("budget_exceeded", "stopped") or observation.run_cancelled


class TurnCalls:
    """Runs a turn's tool calls through the anomaly rules and :class:`ToolCalls`, recording each."""

    def __init__(
        self, host: Host, settings: RunSettings, progress: Progress, spend: Spend, anomalies: AnomalyWatch, desk: ApprovalDesk,
        tools: ToolCalls, conversation: Conversation, book: RecordBook,
    ) -> None:
        self._host = host
        self._settings = settings
        self._progress = progress
        self._spend = spend
        self._anomalies = anomalies
        self._desk = desk
        self._tools = tools
        self._conversation = conversation
        self._book = book

    async def run(
        self, step: int, out: ThinkOutput, step_cost: float, cost: CostRecord, warnings: list[str], request_ids: list[str], started: datetime
    ) -> Ending | None:
        """Run the calls of ``out``; the first that ends the run, if one does (the rest are not run)."""
        calls, index = out.tool_calls, 0
        while index < len(calls):
            # Every call of a group is checked before any of it runs; a group of more than one runs at once.
            size = turns.concurrent_group(self._host, self._settings, self._spend, calls, index)
            group = list(enumerate(calls[index : index + size], start=index))
            findings = [self._anomalies.check(step, call, step_cost if n == 0 else 0.0, out.usage if n == 0 else Usage()) for n, call in group]
            if size > 1 and all(finding.action not in ("pause", "stop") for finding in findings):
                observed = await asyncio.gather(*(self._tools.act(call, n, calls) for n, call in group))
                self._conversation.order_results([call.id for call in calls])
                done = [(observation, finding.reason) for observation, finding in zip(observed, findings)]
            else:
                done = [await self._alone(call, n, calls, finding) for (n, call), finding in zip(group, findings)]
            for (n, call), finding, (observation, why) in zip(group, findings, done):
                for warning in observation.result_warnings:
                    self._book.warn(f"step {step}: {warning}")
                if n == 0:
                    observation.request_ids = request_ids
                self._book.record(
                    step,
                    ActionRecord(type="tool_call", tool=call.name, args=call.args, reasoning=out.text or None),
                    observation.as_record(),
                    cost if n == 0 else CostRecord(),
                    (warnings if n == 0 else []) + finding.warnings + observation.result_warnings,
                    started=started,
                )
                if ends_the_run(observation):
                    return Ending(call, observation, why)
            index += size
        return None

    async def _alone(self, call: ToolCall, index: int, turn: list[ToolCall], finding: Finding) -> tuple[Observation, str]:
        """Run ``call`` on its own, unless its anomalies pause the run (for a person) or stop it; what came of it and why."""
        action, why = finding.action, finding.reason
        held: ApprovalRecord | None = None
        if action == "pause" and self._host.patched(PATCH_ANOMALY_PAUSE):
            held = await self._pause_for_anomaly(call, why)
            if held.status != "approved":
                action, why = "stop", f"{why}; {pause_outcome(held)}"
        if action == "stop":
            text = f"STOPPED: {why}. The action was not executed."
            return self._tools.answer_for(call, "stopped", text, held.approval_id if held else None), why
        return await self._tools.act(call, index, turn), why

    async def _pause_for_anomaly(self, call: ToolCall, why: str) -> ApprovalRecord:
        """Hold the run before ``call`` at the approval desk: approving resumes it, anything else stops it.

        The held decision names the anomaly in its reason, so the status query, the
        current details and the reviewer's notice say why the run waits.
        """
        return await self._desk.hold_run(
            "pause",
            {"tool": call.name, "args": call.args},
            reason=f"the run is paused by an anomaly rule ({why}); approve to resume it (the action then goes through "
            "its own policy), reject to stop the run",
            step=self._progress.step,
        )
