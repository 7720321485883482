"""Thinking: one step's model calls, whatever their stop reason, and compaction when the window is full.

A step usually takes one ``think`` activity. It takes more when the reply cannot
be acted on as it is (cut by ``max_tokens``, paused by the API) or when the
conversation no longer fits the model's context window: then the ``compact_context``
activity makes it fit (a recorded step of its own, ``action.type`` ``compaction``)
and the step thinks again, once. See :mod:`durable_agent.stops` and
:mod:`durable_agent.context` for the rules.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from durable_agent import context, contracts, inputs, pricing, stops, telemetry
    from durable_agent.errors import failure_message
    from durable_agent.retry import MODEL_RETRY, temporal_policy
    from durable_agent.schemas import (
        ActionRecord,
        AgentResult,
        CompactInput,
        CompactOutput,
        CostRecord,
        ThinkInput,
        ThinkOutput,
    )

from durable_agent.workflows.records import RunRecords
from durable_agent.workflows.state import DEFAULT_HEARTBEAT_TIMEOUT, is_cancellation

#: Runs begun before large tasks went into the content store sent them inline.
PATCH_TASK_BY_REFERENCE = "task-by-reference"


class Thinking(RunRecords):
    """The model side of a step: think, handle the stop reason, compact when needed."""

    async def _think_through_stops(self) -> tuple[ThinkOutput, stops.NextMove | None, list[str]]:
        """Think until the reply can be acted on or ends the run, whatever its stop reason.

        Returns the step's reply (its usage summed over every call of the step), the move
        that ended the step when it is not the plain act/answer (``None`` for a history
        recorded before stop reasons were handled), and the step's warnings. Compaction's
        own cost is in its own record, and in the run's usage and cost.
        """
        assert self.agent is not None
        out = await self._think()
        plain = out.stop_reason not in stops.NOT_ACTIONABLE and not out.over_window
        if plain or not workflow.patched("stop-reasons"):
            return out, None, []
        limits = context.model_limits(self.agent.model, self.agent.context_window_tokens)
        allowance = self.agent.max_tokens
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
                if not workflow.patched("context-compaction"):
                    move = stops.NextMove("give_up", warning="CONTEXT_WINDOW: the conversation no longer fits the model's context window")
                    warnings.append(move.warning or "")
                    break
                compacted = True
                reason = "the API reported the window full" if not out.over_window else f"prompt of {out.prompt_tokens} tokens over the limit"
                if not await self._compact(allowance, reason):
                    move = stops.NextMove("give_up", warning="CONTEXT_WINDOW: compaction could not make the conversation fit the window")
                    warnings.append(move.warning or "")
                    break
            elif move.kind not in ("retry_larger", "ask_again", "continue"):
                break
            else:
                allowance = move.max_tokens or allowance
                asked_again = asked_again or move.kind == "ask_again"
                pauses += move.kind == "continue"
            out = await self._think(max_tokens=allowance, user_text=move.prompt)
            usage = usage + out.usage
            request_ids.append(out.request_id)
        combined = out.model_copy(update={"usage": usage})
        self.step_request_ids = [r for r in request_ids if r]
        return combined, move, warnings

    def _request_ids(self, out: ThinkOutput) -> dict[str, Any]:
        """The API request ids behind this step's reply, for its record."""
        ids = self.step_request_ids or ([out.request_id] if out.request_id else [])
        self.step_request_ids = []
        return {"request_ids": ids} if ids else {}

    def _end_on_stop(
        self, out: ThinkOutput, move: stops.NextMove, cost: CostRecord, warnings: list[str], started: datetime
    ) -> AgentResult:
        """End the run on a refusal, or fail it when no reply could be acted on; a record either way."""
        refused = move.kind == "refused"
        observation = {"status": "refused" if refused else "failed", "stop_reason": out.stop_reason, **self._request_ids(out)}
        self._record(ActionRecord(type="final_answer", reasoning=out.text or None), observation, cost, warnings, started=started)
        if refused:
            self.status = "refused"
            self.answer = (
                "The model declined to continue with this task (stop reason: refusal). "
                "Nothing further was done; no tool call from the refused reply was run."
            )
            return self._result()
        self.status = "failed"
        self.answer = None
        return self._result(error=move.warning or f"the model's reply could not be acted on (stop reason {out.stop_reason})")

    async def _store_large_task(self) -> None:
        """Put a large task into the content store, so no activity or continuation input carries it.

        A local activity: its input (the task) is not recorded in the history, only the
        reference it returns. Runs begun before this sent the task inline, and replay so.

        Raises:
            ApplicationError: ``TaskNotStored``, non-retryable, when the store would not take it.
        """
        assert self.input is not None
        if not inputs.task_is_large(self.input.task) or not workflow.patched(PATCH_TASK_BY_REFERENCE):
            return
        try:
            self.task_ref = await workflow.execute_local_activity(
                contracts.ACTIVITY_STORE_TASK,
                self.input.task,
                result_type=str,
                start_to_close_timeout=timedelta(seconds=30),
                schedule_to_close_timeout=timedelta(minutes=5),
                summary="store the task",
            )
        except ActivityError as exc:
            if is_cancellation(exc):
                raise
            message = f"the task could not be put into the content store ({contracts.ACTIVITY_STORE_TASK}): {failure_message(exc)}"
            raise ApplicationError(message, type="TaskNotStored", non_retryable=True) from None

    async def _think(self, *, max_tokens: int | None = None, user_text: str | None = None) -> ThinkOutput:
        """One ``think`` activity with the step's pending input (the task, tool results, a note)."""
        assert self.input is not None and self.agent is not None
        allowance = max_tokens or self.agent.max_tokens
        task_due = not self.sent_task  # the first call sends the task: inline, or by reference when large
        request = ThinkInput(
            session_id=workflow.info().workflow_id,
            agent=self.agent.name,
            model=self.agent.model,
            max_tokens=allowance,
            prompt_ref=self.agent.prompt_ref,
            head=self.head,
            user_text=(self.input.task if self.task_ref is None else None) if task_due else user_text,
            user_ref=self.task_ref if task_due else None,
            tool_results=self.pending_results,
            step=self.step + 1,
            context_window=self.agent.context_window_tokens,
            thinking_budget_tokens=self.agent.thinking_budget_tokens,
            context_management=self.agent.context_management,
        )
        out: ThinkOutput = await workflow.execute_activity(
            contracts.ACTIVITY_THINK,
            request,
            result_type=ThinkOutput,
            start_to_close_timeout=stops.think_timeout(allowance),
            heartbeat_timeout=DEFAULT_HEARTBEAT_TIMEOUT,
            retry_policy=temporal_policy(MODEL_RETRY),
            summary=f"step {self.step + 1}: think ({self.agent.model})",
        )
        self.head = out.head
        self.sent_task = True
        self.pending_results = []
        self.pending_chars = 0
        if out.prompt_tokens is not None:
            # What the next call resends, and how much of it this call left in the prompt cache.
            self.next_prompt_tokens = out.prompt_tokens + out.usage.output_tokens
            self.cached_prompt_tokens = out.usage.cache_read_input_tokens + out.usage.cache_creation_input_tokens
            self.last_think_at = workflow.now()
        return out

    def _estimate_next_call(self, price: Any) -> float:
        """The next model call's cost, estimated before it is made (budget checks and reservations)."""
        assert self.input is not None and self.agent is not None
        new_chars = self.pending_chars + (0 if self.sent_task else len(self.input.task))
        if not workflow.patched("honest-estimates"):
            return pricing.estimate_call_usd(price, previous=self.last_usage, new_input_chars=new_chars, max_tokens=self.agent.max_tokens)
        window = context.known_window(self.agent.model, self.agent.context_window_tokens)
        warm = self.last_think_at is not None and (workflow.now() - self.last_think_at).total_seconds() < pricing.CACHE_TTL_SECONDS
        if self.next_prompt_tokens is not None:
            prompt = self.next_prompt_tokens
        elif self.last_usage is not None:  # a continuation of a run begun before prompts were counted
            last = self.last_usage
            prompt = last.input_tokens + last.cache_read_input_tokens + last.cache_creation_input_tokens + last.output_tokens
        else:  # the first call: the system prompt and the tool schemas go too
            prompt = self.agent.prompt_tokens
        return pricing.estimate_next_call_usd(
            price,
            prompt_tokens=prompt,
            new_input_chars=new_chars,
            max_tokens=self.agent.max_tokens,
            cached_tokens=self.cached_prompt_tokens,
            cache_warm=warm,
            prompt_limit=context.prompt_limit(window, self.agent.max_tokens) if window is not None else None,
        )

    async def _compact(self, allowance: int, reason: str) -> bool:
        """Compact the conversation (a recorded step, with its span and cost); whether it fits now."""
        assert self.agent is not None and self.head is not None
        started = workflow.now()
        phase, self.phase = self.phase, "compacting"
        self._details(f"compacting the conversation ({reason})")
        out: CompactOutput = await workflow.execute_activity(
            contracts.ACTIVITY_COMPACT,
            CompactInput(
                session_id=workflow.info().workflow_id,
                agent=self.agent.name,
                model=self.agent.model,
                prompt_ref=self.agent.prompt_ref,
                head=self.head,
                max_tokens=allowance,
                context_window=self.agent.context_window_tokens,
                step=self.step,
                reason=reason,
            ),
            result_type=CompactOutput,
            start_to_close_timeout=stops.think_timeout(4096),
            heartbeat_timeout=DEFAULT_HEARTBEAT_TIMEOUT,
            retry_policy=temporal_policy(MODEL_RETRY),
            summary=f"step {self.step + 1}: compact context",
        )
        self.phase = phase
        self.head = out.head
        cost_usd = pricing.shown_usd(pricing.cost_usd(out.usage, self._price()))  # the one rounding rule
        self.usage = self.usage + out.usage
        self.total_cost = pricing.shown_usd(self.total_cost + cost_usd)
        self.compaction_cost += cost_usd
        self.compactions += 1
        self.next_prompt_tokens, self.cached_prompt_tokens = out.tokens_after, 0
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
        step_span, self.step_span = self.step_span, None
        # The record belongs to the step being thought, as its first record (its own record id).
        self.step += 1
        with telemetry.compaction_span(self.step, self.agent.name) as span:
            self.step_span = span
            self._record(
                ActionRecord(type="compaction", args={"tiers": out.tiers}, reasoning=out.summary_preview or None),
                observation,
                CostRecord(**out.usage.model_dump(), estimated_cost=cost_usd, budget_remaining=self._budget_remaining()),
                [],
                started=started,
            )
        self.step -= 1
        self.step_span = step_span
        return out.fits
