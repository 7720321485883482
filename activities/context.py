"""The context window, on the activity side: count a prompt, compact a conversation, read a result back.

The workflow decides when to compact (a prompt that would not fit); this module
does it, in tiers (see :mod:`durable_agent.context`): old tool results become
stubs that name their place in the content store, then, if that is not enough,
the older turns are summarised by the model (plain text, no tools) and the run
continues from a new conversation head, content-addressed like every other.

``read_result`` reads a stub's result back, for the run that produced it only
(see :mod:`durable_agent.results`): any other ref is refused, with the same
observation whether or not something is kept under it, and a warning.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections import OrderedDict
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from durable_agent import context, contracts, results, trace
from durable_agent.activities.common import content_errors, heartbeating
from durable_agent.inputs import quoted
from durable_agent.models import ModelError, ModelProvider, ModelRequest, provider_for
from durable_agent.retry import ErrorKind, model_retry_delay
from durable_agent.results import RunChain
from durable_agent.schemas import CompactInput, CompactOutput, ToolCall, ToolCallOutput, ToolInfo, Usage
from durable_agent.store import ContentStore
from durable_agent.token_estimates import ConversationEstimates

log = logging.getLogger("durable_agent.activities")

#: Token counts remembered per worker: (model, prompt, conversation head) -> tokens.
COUNT_CACHE_SIZE = 4096
#: Share of the prompt limit above which a model call's prompt is counted by the API first. Below it,
#: the local estimate (three characters a token, on the high side) and the last call's usage decide; a
#: prompt that is longer than both said is refused by the API, and the run compacts as for one it counted.
COUNT_NEAR_SHARE = 0.5
#: Most characters one read_result call returns.
READ_RESULT_MAX = 20_000

READ_RESULT_INFO = ToolInfo(
    name=contracts.TOOL_READ_RESULT,
    description=(
        "Read back a tool result of this run that was elided from the conversation to save context. "
        "Give the ref from the elision note (sha256:...), and optionally offset and length in characters "
        f"(at most {READ_RESULT_MAX} per call)."
    ),
    input_schema={
        "type": "object",
        "properties": {
            "ref": {"type": "string", "description": "The reference from the elision note, sha256:..."},
            "offset": {"type": "integer", "minimum": 0, "default": 0},
            "length": {"type": "integer", "minimum": 1, "maximum": READ_RESULT_MAX, "default": 4000},
        },
        "required": ["ref"],
    },
    read_only=True,
    retry="no_retry",
)


class ContextActivities:
    """Token counting, compaction and ``read_result``, mixed into the agent's activities."""

    store: ContentStore
    _counts: OrderedDict[tuple[str, str, str], int]
    _estimate_cache: ConversationEstimates

    def _count_cache(self) -> OrderedDict[tuple[str, str, str], int]:
        if not hasattr(self, "_counts"):
            self._counts = OrderedDict()
        return self._counts

    def estimates(self) -> ConversationEstimates:
        """This worker's local token estimates, by conversation head."""
        if not hasattr(self, "_estimate_cache"):
            self._estimate_cache = ConversationEstimates()
        return self._estimate_cache

    async def prompt_tokens(
        self, provider: ModelProvider, request: ModelRequest, *, prompt_ref: str, head: str, limit: int | None = None,
        expected: int | None = None, since: str | None = None,
    ) -> int:
        """Tokens of the prompt ``request`` would send: the API's count, else the local estimate.

        With ``limit`` (the prompt limit of a model call), the API is asked only when the
        local estimate or ``expected`` (from the last call's usage) reaches
        :data:`COUNT_NEAR_SHARE` of it: far from the window a count is a round trip that
        changes nothing. Counts are cached per conversation node, so a retried step or a
        check after compaction does not count the same conversation twice. The local
        estimate encodes only the messages after ``since``, an earlier head of the same
        conversation (see :mod:`durable_agent.token_estimates`).
        """
        cache = self._count_cache()
        key = (request.model, prompt_ref, head)
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        estimate = self.estimates().request_tokens(prompt_ref, request.system, request.tools, head, request.messages, since=since)
        if limit is not None and max(estimate, expected or 0) < COUNT_NEAR_SHARE * limit:
            return estimate
        counter = getattr(provider, "count_tokens", None)
        tokens = await counter(request) if counter is not None else None
        if tokens is None:
            tokens = estimate
        cache[key] = tokens
        while len(cache) > COUNT_CACHE_SIZE:
            cache.popitem(last=False)
        return tokens

    async def _conversation_tokens(
        self, provider: ModelProvider, model: str, prompt: dict[str, Any], prompt_ref: str, head: str, messages: list[dict[str, Any]]
    ) -> int:
        request = ModelRequest(model=model, system=prompt["system"], tools=prompt["tools"], messages=context.wire_messages(messages), max_tokens=1)
        return await self.prompt_tokens(provider, request, prompt_ref=prompt_ref, head=head)

    async def _chain(self, messages: list[dict[str, Any]]) -> str:
        head: str | None = None
        for message in messages:
            head = await self.store.append(head, message)
        assert head is not None
        return head

    @activity.defn(name=contracts.ACTIVITY_COMPACT)
    async def compact(self, request: CompactInput) -> CompactOutput:
        """Compact the conversation ``request.head`` until it fits (see the module docstring)."""
        started = time.monotonic()
        provider = provider_for(request.model)
        async with content_errors():
            prompt = await self.store.get(request.prompt_ref)
            messages = await self.store.messages(request.head)
        window = request.context_window or context.model_limits(request.model).context_window
        limit = context.prompt_limit(window, request.max_tokens)
        target = context.compaction_target(limit)

        async def count(head: str, msgs: list[dict[str, Any]]) -> int:
            return await self._conversation_tokens(provider, request.model, prompt, request.prompt_ref, head, msgs)

        before = after = await count(request.head, messages)
        tiers: list[str] = []
        current, head, elided = messages, request.head, 0
        # The latest turns stay verbatim; in a small window, only the very latest one.
        for keep in (context.KEEP_LAST_MESSAGES, context.KEEP_AT_LEAST_MESSAGES):
            if after <= target:
                break
            current, more = context.elide_old_results(current, keep_last=keep)
            if more:
                elided += more
                head = await self._chain(current)
                after = await count(head, current)
        if elided:
            tiers.append("elide")
        usage, preview, request_id, summarised = Usage(), "", None, 0
        cut = None
        for keep in (context.KEEP_LAST_MESSAGES, context.KEEP_AT_LEAST_MESSAGES):
            if after > target and cut is None:
                cut = context.summary_cut(current, keep_last=keep)
        if cut is not None:
            summary_max = max(256, min(4096, limit // 10))
            prompt_room = max(1000, limit - summary_max - context.estimate_tokens(context.SUMMARY_SYSTEM) - 200)
            transcript = context.render_transcript(current[:cut], max_chars=prompt_room * context.CHARS_PER_TOKEN)
            summary_request = ModelRequest(
                model=request.model,
                system=context.SUMMARY_SYSTEM,
                tools=[],
                messages=[{"role": "user", "content": f"{transcript}\n\nSummarise the transcript above."}],
                max_tokens=summary_max,
                on_progress=activity.heartbeat,
                purpose="summary",
            )
            try:
                response = await provider.complete(summary_request)
            except ModelError as exc:
                delay = model_retry_delay(exc.kind, activity.info().attempt, retry_after=exc.retry_after,
                                          should_retry=exc.should_retry, unit_random=random.random())
                raise _compaction_error(exc, delay) from None
            summary = "\n".join(b.get("text", "") for b in response.content if b.get("type") == "text").strip()
            current = context.summarised_conversation(context.first_text(current[0]), summary, current[cut:], request.step)
            head = await self._chain(current)
            after = await count(head, current)
            tiers.append("summary")
            usage, preview, request_id, summarised = response.usage, summary[:300], response.request_id, cut
        log.info("compacted step %s: %s -> %s tokens (%s)", request.step, before, after, "+".join(tiers) or "nothing to do")
        return CompactOutput(
            head=head,
            tokens_before=before,
            tokens_after=after,
            tiers=tiers,
            elided_results=elided,
            summarised_messages=summarised,
            fits=after <= limit,
            usage=usage,
            summary_preview=preview,
            request_id=request_id,
            duration_ms=int((time.monotonic() - started) * 1000),
        )

    async def read_result(self, call: ToolCall, reader: RunChain | None) -> ToolCallOutput:
        """The built-in ``read_result`` tool: a slice of a stored tool result, by its reference.

        Args:
            call: The model's call (``ref``, ``offset``, ``length``).
            reader: The run that asks; None when it cannot be told (then nothing is read).

        Raises:
            ApplicationError: non-retryable, when what is kept under the ref is forged or damaged.
        """
        ref = str(call.args.get("ref", "")).strip()
        try:
            offset = max(0, int(call.args.get("offset", 0) or 0))
            length = min(READ_RESULT_MAX, max(1, int(call.args.get("length", 4000) or 4000)))
        except (TypeError, ValueError):
            message = "read_result: offset and length must be whole numbers"
            return ToolCallOutput(status="invalid_arguments", error=message, preview=message)
        async with heartbeating(), content_errors():
            stored = await self._own_result(ref, reader)
        if stored is None:
            # The same words whether something of another run is kept there or nothing is: no oracle.
            message = f"read_result: no result of this run is kept under {quoted(ref, 80)!r}; use a ref from an elision note of this conversation"
            warning = f"READ_RESULT_REFUSED: read_result asked for {quoted(ref, 80)!r}, which is not a result of this run; nothing was read"
            return ToolCallOutput(status="error", error=message, preview=message, warnings=[warning])
        output = stored["output"]
        # All of it: the conversation showed at most the first 100,000 characters.
        full = output if isinstance(output, str) else json.dumps(output, default=str, ensure_ascii=False)
        piece = full[offset : offset + length]
        text = f"[{stored['tool']} result {ref}, characters {offset}-{offset + len(piece)} of {len(full)}]\n{piece}"
        new_ref = await self.store.put(results.tool_result(contracts.TOOL_READ_RESULT, text, reader))
        return ToolCallOutput(status="ok", ref=new_ref, preview=text[:300], chars=len(text))

    async def _own_result(self, ref: str, reader: RunChain | None) -> dict[str, Any] | None:
        """The tool result kept under ``ref`` if ``reader`` produced it; None for anything else."""
        if reader is None:
            return None
        try:
            stored = await self.store.get(ref)
        except KeyError:  # nothing kept there (MissingContent), or not a ref at all
            return None
        if not results.is_tool_result(stored):
            return None
        if results.names_its_run(stored):
            return stored if results.produced_by(stored, reader) else None
        # Kept before results named their run: this run's own records must have observed it.
        return stored if await trace.observed_result(self.store, reader.workflow_id, reader.first_run_id, ref) else None


def _compaction_error(exc: ModelError, delay: float | None) -> ApplicationError:
    message = f"compaction's summary call failed: {exc.message}"
    kind = exc.kind if exc.kind is not ErrorKind.CONTEXT_OVERFLOW else ErrorKind.INVALID_REQUEST
    if delay is None:
        return ApplicationError(message, type=kind.value, non_retryable=True)
    return ApplicationError(message, type=kind.value, next_retry_delay=timedelta(seconds=delay))
