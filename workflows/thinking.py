"""Thinking: one step's model calls, whatever their stop reason, and compaction when the window is full.

A step usually takes one ``think`` activity. It takes more when the reply cannot
be acted on as it is (cut by ``max_tokens``, paused by the API) or when the
conversation no longer fits the model's context window: then the ``compact_context``
activity makes it fit (a recorded step of its own, ``action.type`` ``compaction``)
and the step thinks again, once. See :mod:`durable_agent.stops` and
:mod:`durable_agent.context` for the rules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from durable_agent import context, observations, stops, telemetry
    from durable_agent.schemas import ActionRecord, CostRecord, ThinkOutput

from durable_agent.workflows.conversation import Conversation
from durable_agent.workflows.host import Host
from durable_agent.workflows.progress import RunPhase
from durable_agent.workflows.records import RecordBook
from durable_agent.workflows.settings import RunSettings
from durable_agent.workflows.spend import Spend

#: Patch: replies that cannot be acted on as they are (cut, paused, over the window) are handled.
PATCH_STOP_REASONS = "stop-reasons"
#: Patch: a conversation that no longer fits the window is compacted.
PATCH_CONTEXT_COMPACTION = "context-compaction"


@dataclass(frozen=True)
class Reply:
    """A step's reply, once it can be acted on or ends the run."""

    #: The last reply, its ``usage`` summed over every model call of the step.
    out: ThinkOutput
    #: The move that ended the step when it is not the plain act/answer (``None`` for a
    #: history recorded before stop reasons were handled, or a reply acted on as it came).
    move: stops.NextMove | None
    #: What the step's record and the run's warnings say about it.
    warnings: list[str]
    #: The API request ids behind the step's calls, for its record.
    request_ids: list[str]


class Thinker:
    """The model side of a step: think, handle the stop reason, compact when needed.

    Args:
        host: The workflow (patches, clock).
        settings: The run's profile (model, allowance, window).
        conversation: What is said, and the activities that say it.
        spend: Charged for compactions.
        book: Compactions are recorded there.
        phase: Compacting shows as its own phase.
        show: Writes the run's current details.
    """

    def __init__(
        self, host: Host, settings: RunSettings, conversation: Conversation, spend: Spend, book: RecordBook, phase: RunPhase,
        show: Callable[[str], None],
    ) -> None:
        self._host = host
        self._settings = settings
        self._conversation = conversation
        self._spend = spend
        self._book = book
        self._phase = phase
        self._show = show

    async def think_through_stops(self, step: int) -> Reply:
        """Think (step ``step + 1``) until the reply can be acted on or ends the run, whatever its stop reason.

        Compaction's own cost is in its own record, and in the run's usage and cost.
        """
        agent = self._settings.profile
        out = await self._think(step)
        plain = out.stop_reason not in stops.NOT_ACTIONABLE and not out.over_window
        if plain or not self._host.patched(PATCH_STOP_REASONS):
            return self._reply(out, None, [], [out.request_id])
        limits = context.model_limits(agent.model, agent.context_window_tokens)
        allowance = agent.max_tokens
        usage, warnings, request_ids = out.usage, [], [out.request_id]
        asked_again, pauses, compacted = False, 0, False
        while True:
            if out.over_window:
                move = stops.NextMove("compact", max_tokens=allowance)
                if compacted:
                    move = stops.NextMove(
                        "give_up", warning=f"CONTEXT_WINDOW: the prompt ({out.prompt_tokens} tokens) still does not fit after compaction"
                    )
            else:
                move = stops.after_reply(
                    out.stop_reason,
                    has_tool_calls=bool(out.tool_calls),
                    cut_tool_calls=out.cut_tool_calls,
                    max_tokens=allowance,
                    model_max_output=limits.max_output,
                    asked_again=asked_again,
                    pauses=pauses,
                    compacted=compacted,
                )
            if move.warning:
                warnings.append(move.warning)
            if move.kind == "compact":
                if not self._host.patched(PATCH_CONTEXT_COMPACTION):
                    move = stops.NextMove("give_up", warning="CONTEXT_WINDOW: the conversation no longer fits the model's context window")
                    warnings.append(move.warning or "")
                    break
                compacted = True
                reason = "the API reported the window full" if not out.over_window else f"prompt of {out.prompt_tokens} tokens over the limit"
                if not await self._compact(step, allowance, reason):
                    move = stops.NextMove("give_up", warning="CONTEXT_WINDOW: compaction could not make the conversation fit the window")
                    warnings.append(move.warning or "")
                    break
            elif move.kind not in ("retry_larger", "ask_again", "continue"):
                break
            else:
                allowance = move.max_tokens or allowance
                asked_again = asked_again or move.kind == "ask_again"
                pauses += move.kind == "continue"
            out = await self._think(step, max_tokens=allowance, user_text=move.prompt)
            usage = usage + out.usage
            request_ids.append(out.request_id)
        return self._reply(out.model_copy(update={"usage": usage}), move, warnings, request_ids)

    async def _think(self, step: int, *, max_tokens: int | None = None, user_text: str | None = None) -> ThinkOutput:
        """One model call for step ``step + 1``; it writes the records of the steps before (see :mod:`.records`)."""
        records = self._book.for_think()
        try:
            out = await self._conversation.think(step + 1, max_tokens=max_tokens, user_text=user_text, records=records)
        except BaseException:
            self._book.not_written(records)  # written before the run ends, once per id whatever the call did
            raise
        if not out.records_written:
            self._book.not_written(records)  # the next think, or record_decisions, writes them
        return out

    def _reply(self, out: ThinkOutput, move: stops.NextMove | None, warnings: list[str], request_ids: list[str | None]) -> Reply:
        self._conversation.remember_usage(out.usage)
        return Reply(out, move, warnings, [r for r in request_ids if r])

    async def _compact(self, step: int, allowance: int, reason: str) -> bool:
        """Compact the conversation (a recorded step, with its span and cost); whether it fits now.

        The record belongs to the step being thought (``step + 1``), as its first record.
        """
        agent = self._settings.profile
        started = self._host.now()
        with self._phase.detour("compacting"):
            self._show(f"compacting the conversation ({reason})")
            out = await self._conversation.compact(step, allowance, reason)
        cost_usd = self._spend.charge_compaction(out.usage)
        with telemetry.compaction_span(step + 1, agent.name) as span, self._book.describing(span):
            self._book.record(
                step + 1,
                ActionRecord(type="compaction", args={"tiers": out.tiers}, reasoning=out.summary_preview or None),
                observations.compacted(out, reason),
                CostRecord(**out.usage.model_dump(), estimated_cost=cost_usd, budget_remaining=self._spend.budget_remaining()),
                [],
                started=started,
            )
        return out.fits
