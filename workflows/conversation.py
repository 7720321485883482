"""The conversation and its context window: what the model has been told, and what it is told next.

The conversation itself never enters the event history: it lives in the content
store (:mod:`durable_agent.store`) and the workflow carries the reference of its
head, the tool results the next model call appends, and what it knows of the
prompt's size and cache. This component owns the activities that read or change
the conversation: ``think`` (one model call), ``compact_context`` (make it fit
the window again) and ``store_task`` (a large task kept by reference).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from durable_agent import context, contracts, inputs, pricing, stops
    from durable_agent.carry import CarriedState
    from durable_agent.errors import failure_message
    from durable_agent.retry import MODEL_RETRY, temporal_policy
    from durable_agent.schemas import (
        CompactInput,
        CompactOutput,
        DecisionRecord,
        ModelPrice,
        ThinkInput,
        ThinkOutput,
        ToolCallOutput,
        ToolResultPart,
        Usage,
    )

from durable_agent.workflows.host import DEFAULT_HEARTBEAT_TIMEOUT, Host, is_cancellation
from durable_agent.workflows.settings import RunSettings
from durable_agent.workflows.turns import parallel_calls_allowed

#: Runs begun before large tasks went into the content store sent them inline.
PATCH_TASK_BY_REFERENCE = "task-by-reference"
#: Runs begun before estimates counted the prompt and its cache estimate from the last call's usage.
PATCH_HONEST_ESTIMATES = "honest-estimates"


class Conversation:
    """The conversation's head, the results waiting for the next call, and the size of the next prompt.

    Args:
        host: The workflow (clock, ids, activities).
        settings: The run's input (its task) and profile (model, window, prompt).
    """

    def __init__(self, host: Host, settings: RunSettings) -> None:
        self._host = host
        self._settings = settings
        #: The reference of the conversation so far (``None``: nothing said yet).
        self._head: str | None = None
        #: Tool results (and the workflow's own notes) the next model call appends.
        self._pending_results: list[ToolResultPart] = []
        self._pending_chars = 0
        self._sent_task = False
        #: The task's reference in the content store when it is too large to carry (``inputs.TASK_INLINE_BYTES``).
        self._task_ref: str | None = None
        #: Usage of the last step's model calls (estimates of runs begun before prompts were counted).
        self._last_usage: Usage | None = None
        #: Tokens the next model call resends (the last prompt and its reply, or the compacted conversation).
        self._next_prompt_tokens: int | None = None
        #: Of those, the tokens the last call left in the prompt cache.
        self._cached_prompt_tokens = 0
        #: When the last model call was made (the cache lives five minutes from it).
        self._last_think_at: datetime | None = None

    @property
    def task_ref(self) -> str | None:
        """The stored task's reference, when the task was too large to carry."""
        return self._task_ref

    # ------------------------------------------------------------ what is said

    def tell(self, call_id: str, text: str, *, is_error: bool = True) -> None:
        """Answer tool call ``call_id`` with the workflow's own ``text`` (nothing ran: a refusal, a rejection...; or a sub-agent's answer)."""
        self._pending_results.append(ToolResultPart(tool_use_id=call_id, text=text, is_error=is_error))
        self._pending_chars += len(text)

    def add_result(self, call_id: str, out: ToolCallOutput) -> None:
        """Answer tool call ``call_id`` with what the tool returned (by reference when it was stored)."""
        text = None if out.ref else (out.error or out.preview)
        self._pending_results.append(ToolResultPart(tool_use_id=call_id, ref=out.ref, text=text, is_error=out.status != "ok"))
        self._pending_chars += out.chars

    def order_results(self, call_ids: list[str]) -> None:
        """Put the waiting results in the order of ``call_ids`` (the model's), however the calls finished."""
        place = {call_id: n for n, call_id in enumerate(call_ids)}
        self._pending_results.sort(key=lambda part: place.get(part.tool_use_id, len(place)))

    def remember_usage(self, usage: Usage) -> None:
        """The usage of the step's model calls, for the next estimate of runs begun before prompts were counted."""
        self._last_usage = usage

    # --------------------------------------------------------------- activities

    async def store_large_task(self) -> None:
        """Put a large task into the content store, so no activity or continuation input carries it.

        A local activity: its input (the task) is not recorded in the history, only the
        reference it returns. Runs begun before this sent the task inline, and replay so.

        Raises:
            ApplicationError: ``TaskNotStored``, non-retryable, when the store would not take it.
        """
        task = self._settings.task_input.task
        if not inputs.task_is_large(task) or not self._host.patched(PATCH_TASK_BY_REFERENCE):
            return
        try:
            self._task_ref = await self._host.execute_local_activity(
                contracts.ACTIVITY_STORE_TASK,
                task,
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

    async def think(
        self, step: int, *, max_tokens: int | None = None, user_text: str | None = None, records: list[DecisionRecord] | None = None
    ) -> ThinkOutput:
        """One ``think`` activity for step ``step``, with what waits to be said (the task, tool results, a note).

        ``records`` (of earlier steps) are written by the activity before its model call.
        """
        agent = self._settings.profile
        task = self._settings.task_input.task
        allowance = max_tokens or agent.max_tokens
        task_due = not self._sent_task  # the first call sends the task: inline, or by reference when large
        request = ThinkInput(
            session_id=self._host.ids().workflow_id,
            agent=agent.name,
            model=agent.model,
            max_tokens=allowance,
            prompt_ref=agent.prompt_ref,
            head=self._head,
            user_text=(task if self._task_ref is None else None) if task_due else user_text,
            user_ref=self._task_ref if task_due else None,
            tool_results=self._pending_results,
            step=step,
            context_window=agent.context_window_tokens,
            thinking_budget_tokens=agent.thinking_budget_tokens,
            context_management=agent.context_management,
            policy_digest=self._settings.reported_policy_digest,
            expected_prompt_tokens=self._expected_prompt_tokens(),
            records=records or [],
            parallel_tool_calls=parallel_calls_allowed(self._host, self._settings) if agent.tools else False,
        )
        out = await self._host.execute_activity(
            contracts.ACTIVITY_THINK,
            request,
            result_type=ThinkOutput,
            start_to_close_timeout=stops.think_timeout(allowance),
            heartbeat_timeout=DEFAULT_HEARTBEAT_TIMEOUT,
            retry_policy=temporal_policy(MODEL_RETRY),
            summary=f"step {step}: think ({agent.model})",
        )
        self._head = out.head
        self._sent_task = True
        self._pending_results = []
        self._pending_chars = 0
        if out.prompt_tokens is not None:
            # What the next call resends, and how much of it this call left in the prompt cache.
            self._next_prompt_tokens = out.prompt_tokens + out.usage.output_tokens
            self._cached_prompt_tokens = out.usage.cache_read_input_tokens + out.usage.cache_creation_input_tokens
            self._last_think_at = self._host.now()
        return out

    def _expected_prompt_tokens(self) -> int | None:
        """The next prompt's size from the last step's usage (what it sent and got back) and what is new."""
        last = self._last_usage
        if last is None:
            return None
        sent = last.input_tokens + last.cache_read_input_tokens + last.cache_creation_input_tokens + last.output_tokens
        return sent + self._pending_chars // context.CHARS_PER_TOKEN

    async def compact(self, step: int, allowance: int, reason: str) -> CompactOutput:
        """Make the conversation fit the window again, with room for ``allowance`` tokens of reply (for step ``step + 1``)."""
        agent = self._settings.profile
        assert self._head is not None, "a conversation is compacted only after a model call"
        out = await self._host.execute_activity(
            contracts.ACTIVITY_COMPACT,
            CompactInput(
                session_id=self._host.ids().workflow_id,
                agent=agent.name,
                model=agent.model,
                prompt_ref=agent.prompt_ref,
                head=self._head,
                max_tokens=allowance,
                context_window=agent.context_window_tokens,
                step=step,
                reason=reason,
            ),
            result_type=CompactOutput,
            start_to_close_timeout=stops.think_timeout(4096),
            heartbeat_timeout=DEFAULT_HEARTBEAT_TIMEOUT,
            retry_policy=temporal_policy(MODEL_RETRY),
            summary=f"step {step + 1}: compact context",
        )
        self._head = out.head
        self._next_prompt_tokens, self._cached_prompt_tokens = out.tokens_after, 0
        return out

    # ---------------------------------------------------------------- estimate

    def estimate_next_call(self, price: ModelPrice) -> float:
        """The next model call's cost, estimated before it is made (budget checks and reservations)."""
        agent = self._settings.profile
        task = self._settings.task_input.task
        new_chars = self._pending_chars + (0 if self._sent_task else len(task))
        if not self._host.patched(PATCH_HONEST_ESTIMATES):
            return pricing.estimate_call_usd(price, previous=self._last_usage, new_input_chars=new_chars, max_tokens=agent.max_tokens)
        window = context.known_window(agent.model, agent.context_window_tokens)
        warm = self._last_think_at is not None and (self._host.now() - self._last_think_at).total_seconds() < pricing.CACHE_TTL_SECONDS
        if self._next_prompt_tokens is not None:
            prompt = self._next_prompt_tokens
        elif self._last_usage is not None:  # a continuation of a run begun before prompts were counted
            last = self._last_usage
            prompt = last.input_tokens + last.cache_read_input_tokens + last.cache_creation_input_tokens + last.output_tokens
        else:  # the first call: the system prompt and the tool schemas go too
            prompt = agent.prompt_tokens
        return pricing.estimate_next_call_usd(
            price,
            prompt_tokens=prompt,
            new_input_chars=new_chars,
            max_tokens=agent.max_tokens,
            cached_tokens=self._cached_prompt_tokens,
            cache_warm=warm,
            prompt_limit=context.prompt_limit(window, agent.max_tokens) if window is not None else None,
        )

    # ---------------------------------------------------------- continue-as-new

    def carry(self) -> dict[str, Any]:
        """This part of :class:`CarriedState`: the head, what waits to be said, and the next prompt's size."""
        return {
            "head": self._head,
            "pending_results": self._pending_results,
            "pending_chars": self._pending_chars,
            "sent_task": self._sent_task,
            "task_ref": self._task_ref,
            "last_usage": self._last_usage,
            "next_prompt_tokens": self._next_prompt_tokens,
            "cached_prompt_tokens": self._cached_prompt_tokens,
            "last_think_at": self._last_think_at,
        }

    def restore(self, carried: CarriedState) -> None:
        self._head = carried.head
        self._pending_results = carried.pending_results
        self._pending_chars = carried.pending_chars
        self._sent_task = carried.sent_task
        self._task_ref = carried.task_ref
        self._last_usage = carried.last_usage
        self._next_prompt_tokens = carried.next_prompt_tokens
        self._cached_prompt_tokens = carried.cached_prompt_tokens
        self._last_think_at = carried.last_think_at
