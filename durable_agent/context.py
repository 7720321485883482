"""The context window: how much a model can read and write, and how much a request will take.

Pure functions, no I/O: the think activity uses them to decide whether a request
fits before sending it, the workflow to size its output allowance and its cost
estimates. Token counts come from the API's token-counting endpoint when it is
available; :func:`estimate_tokens` is the local fallback, deliberately on the
high side (a request it lets through fits).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelLimits:
    """What one model can read (``context_window``) and write (``max_output``) in tokens."""

    context_window: int
    max_output: int


#: Limits of current Claude models, by model name or family prefix (longest prefix wins,
#: so ``claude-sonnet-4-5-20250929`` finds ``claude-sonnet-4-5``). A profile's
#: ``context_window_tokens`` overrides the window (a 1M-token beta, a smaller test window).
MODEL_LIMITS: dict[str, ModelLimits] = {
    "claude-fable-5": ModelLimits(1_000_000, 128_000),
    "claude-opus-5": ModelLimits(1_000_000, 128_000),
    "claude-sonnet-5": ModelLimits(1_000_000, 64_000),
    "claude-opus-4-8": ModelLimits(1_000_000, 128_000),
    "claude-opus-4-7": ModelLimits(1_000_000, 128_000),
    "claude-opus-4-6": ModelLimits(1_000_000, 128_000),
    "claude-sonnet-4-6": ModelLimits(1_000_000, 64_000),
    "claude-opus-4-5": ModelLimits(200_000, 64_000),
    "claude-opus-4-1": ModelLimits(200_000, 32_000),
    "claude-opus-4": ModelLimits(200_000, 32_000),
    "claude-sonnet-4": ModelLimits(200_000, 64_000),
    "claude-haiku-4-5": ModelLimits(200_000, 64_000),
    "claude-3-7-sonnet": ModelLimits(200_000, 64_000),
    "claude-3-5-haiku": ModelLimits(200_000, 8_192),
    "offline": ModelLimits(200_000, 64_000),
}

#: For a model the table does not know: the smallest window and output of current models.
DEFAULT_LIMITS = ModelLimits(200_000, 8_192)

#: Tokens kept free besides ``max_tokens``: the local estimate's error, the API's own framing.
SAFETY_MARGIN_FRACTION = 0.02
MIN_SAFETY_MARGIN = 512

#: Characters per token assumed by the local estimate. Real text averages about four; three
#: over-counts JSON-heavy tool output a little, so an estimate that fits really fits.
CHARS_PER_TOKEN = 3


def model_limits(model: str, context_window_override: int | None = None) -> ModelLimits:
    """The limits of ``model`` (exact name, else the longest known prefix, else :data:`DEFAULT_LIMITS`)."""
    limits = MODEL_LIMITS.get(model)
    if limits is None:
        best = max((name for name in MODEL_LIMITS if model.startswith(name)), key=len, default=None)
        limits = MODEL_LIMITS[best] if best is not None else DEFAULT_LIMITS
    if context_window_override:
        limits = ModelLimits(context_window_override, min(limits.max_output, context_window_override // 2))
    return limits


def known_window(model: str, context_window_override: int | None = None) -> int | None:
    """The window of ``model`` when the profile or the table says it, else ``None``.

    A model served by a custom provider (a test's scripted model, another backend) has
    no window the agent can know; it is enforced only when the profile sets one.
    """
    if context_window_override:
        return context_window_override
    if model in MODEL_LIMITS or any(model.startswith(name) for name in MODEL_LIMITS):
        return model_limits(model).context_window
    return None


def safety_margin(context_window: int) -> int:
    """Tokens left unused at the top of the window."""
    return max(MIN_SAFETY_MARGIN, int(context_window * SAFETY_MARGIN_FRACTION))


def prompt_limit(context_window: int, max_tokens: int) -> int:
    """The most input tokens a request may carry: the window less the output allowance and a margin."""
    return max(0, context_window - max_tokens - safety_margin(context_window))


def larger_allowance(current: int, model_max: int) -> int | None:
    """The output allowance to retry a reply cut by ``max_tokens`` with, or ``None`` at the model's maximum.

    Four times as much each time, so a reply that needed a little more is not cut
    twice, and two retries reach any model's ceiling from the profile's default.
    """
    if current >= model_max:
        return None
    return min(model_max, max(current * 4, current + 1024))


#: Tokens an image counts for: what the API charges for one of about 1.15 megapixels, its largest before resizing.
IMAGE_TOKENS = 1_600


def estimate_tokens(value: Any) -> int:
    """A local, cautious token count of any JSON value (a message, a tool schema, a string).

    An image block (an MCP tool's picture) counts :data:`IMAGE_TOKENS`, not its base64 characters.
    """
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if isinstance(value, str) or '"type":"image"' not in text:
        return len(text) // CHARS_PER_TOKEN + 1
    images: list[int] = []
    text = json.dumps(_without_image_data(value, images), ensure_ascii=False, separators=(",", ":"))
    return len(text) // CHARS_PER_TOKEN + 1 + IMAGE_TOKENS * len(images)


def _without_image_data(value: Any, images: list[int]) -> Any:
    if isinstance(value, list):
        return [_without_image_data(item, images) for item in value]
    if isinstance(value, dict):
        if value.get("type") == "image":
            images.append(1)
            return {"type": "image"}
        return {key: _without_image_data(item, images) for key, item in value.items()}
    return value


def estimate_request_tokens(system: str, tools: list[dict[str, Any]], messages: list[dict[str, Any]]) -> int:
    """:func:`estimate_tokens` of a whole request: system prompt, tool schemas and every message."""
    return estimate_tokens(system) + sum(estimate_tokens(t) for t in tools) + sum(estimate_tokens(m) for m in messages)


# --------------------------------------------------------------------------- compaction
#
# Messages in the content store may carry private keys (starting with "_") that the
# model never sees: a tool result's "_ref" (where its full text is kept), "_elided"
# on a result reduced to a stub, "_boundary" on the last message of a compacted
# region (a stable prefix worth a cache breakpoint). :func:`wire_messages` drops them.

PRIVATE = "_"
#: Messages at the end of the conversation that compaction never touches (the latest turns).
KEEP_LAST_MESSAGES = 6
#: In a small window: the latest call and its result, which the model has not read yet.
KEEP_AT_LEAST_MESSAGES = 2
#: After compacting, the prompt should take at most this share of its limit, so the next
#: compaction is many steps away and the cached prefix is reused in between.
COMPACTION_TARGET_FRACTION = 0.5
#: Tool results shorter than this stay as they are: a stub would not be much shorter.
MIN_ELIDED_CHARS = 400
#: Characters of each tool result shown to the summariser.
SUMMARY_RESULT_CHARS = 600

SUMMARY_SYSTEM = (
    "You compact the transcript of an agent's work so the agent can go on without it. "
    "Write a factual summary: the task, what was done (tools called, with the arguments that matter), "
    "what was found (ids, amounts, names, decisions, errors), what is still to do. Keep every "
    "reference of the form sha256:... that the agent may need to read a result again. Plain text, no preamble."
)


def wire_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``messages`` as the API takes them: private keys dropped from messages and blocks."""
    out = []
    for message in messages:
        clean = {k: v for k, v in message.items() if not k.startswith(PRIVATE)}
        content = clean.get("content")
        if isinstance(content, list):
            clean["content"] = [
                {k: v for k, v in block.items() if not k.startswith(PRIVATE)} if isinstance(block, dict) else block
                for block in content
            ]
        out.append(clean)
    return out


def cache_points(messages: list[dict[str, Any]]) -> list[int]:
    """Indexes of the last two compaction boundaries: prefixes that stay the same from one compaction to the next."""
    return [i for i, m in enumerate(messages) if m.get("_boundary")][-2:]


def compaction_target(limit: int) -> int:
    """How small a compaction should make the prompt (tokens)."""
    return int(limit * COMPACTION_TARGET_FRACTION)


def elision_stub(ref: str, chars: int) -> str:
    """What the model sees instead of an old tool result: where it is and how to read it."""
    return (
        f"[Result elided to save context: {chars} characters kept as {ref}. "
        f'Call read_result with ref "{ref}" (and offset, length) to read it.]'
    )


def elide_old_results(messages: list[dict[str, Any]], keep_last: int = KEEP_LAST_MESSAGES) -> tuple[list[dict[str, Any]], int]:
    """Tier 1: replace tool results older than the last ``keep_last`` messages by stubs.

    Only results kept in the store (``_ref``) are elided, so nothing is lost. Results
    elided before stay exactly as they were, so the prefix they belong to is the same
    from one compaction to the next. Returns the new messages and how many were elided.
    """
    cut = max(0, len(messages) - keep_last)
    out, elided = list(messages), 0
    for index in range(cut):
        message = out[index]
        content = message.get("content")
        if message.get("role") != "user" or not isinstance(content, list):
            continue
        blocks = []
        for block in content:
            text = block.get("content") if isinstance(block, dict) else None
            if (
                isinstance(block, dict)
                and block.get("type") == "tool_result"
                and block.get("_ref")
                and not block.get("_elided")
                and isinstance(text, str)
                and len(text) >= MIN_ELIDED_CHARS
            ):
                block = {**block, "content": elision_stub(block["_ref"], len(text)), "_elided": True}
                elided += 1
            blocks.append(block)
        out[index] = {**message, "content": blocks}
    if elided and cut > 0:
        out[cut - 1] = {**out[cut - 1], "_boundary": True}
    return out, elided


def summary_cut(messages: list[dict[str, Any]], keep_last: int = KEEP_LAST_MESSAGES) -> int | None:
    """Tier 2: where to cut for a summary: the kept tail starts at an assistant message.

    Everything before the cut is summarised; the tail (the latest turns) stays verbatim,
    each of its tool results still next to its call. ``None`` when there is nothing to summarise.
    """
    for index in range(max(1, len(messages) - keep_last), 0, -1):
        if messages[index].get("role") == "assistant":
            return index
    return None


def render_transcript(messages: list[dict[str, Any]], max_chars: int) -> str:
    """The messages as plain text for the summariser, at most ``max_chars`` (the start and the latest kept)."""
    lines = []
    for message in messages:
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        for block in blocks:
            kind = block.get("type")
            if kind == "text":
                lines.append(f"{message['role']}: {block.get('text', '')}")
            elif kind == "tool_use":
                lines.append(f"tool call {block.get('name')}({json.dumps(block.get('input'), sort_keys=True)})")
            elif kind == "tool_result":
                text = block.get("content")
                text = text if isinstance(text, str) else json.dumps(text)
                if len(text) > SUMMARY_RESULT_CHARS:
                    ref = f" (full text: {block['_ref']})" if block.get("_ref") else ""
                    text = text[:SUMMARY_RESULT_CHARS] + f" [... {len(text) - SUMMARY_RESULT_CHARS} more characters{ref}]"
                error = " (error)" if block.get("is_error") else ""
                lines.append(f"tool result{error}: {text}")
    transcript = "\n".join(lines)
    if len(transcript) <= max_chars:
        return transcript
    head = max_chars // 4
    tail = max_chars - head - 40
    return transcript[:head] + "\n[... earlier steps left out ...]\n" + transcript[-tail:]


def summarised_conversation(task_text: str, summary: str, kept: list[dict[str, Any]], upto_step: int) -> list[dict[str, Any]]:
    """Tier 2's new conversation: the task and the summary as one user message, then the kept turns."""
    first = {
        "role": "user",
        "content": [
            {"type": "text", "text": task_text},
            {"type": "text", "text": f"[Summary of the work so far (to step {upto_step}), written to fit the context window]\n{summary}"},
        ],
        "_boundary": True,
    }
    return [first, *kept]


def first_text(message: dict[str, Any]) -> str:
    """The first text of a message (the task, in the conversation's first message)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    for block in content or []:
        if isinstance(block, dict) and block.get("type") == "text":
            return str(block.get("text", ""))
    return ""
