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


def estimate_tokens(value: Any) -> int:
    """A local, cautious token count of any JSON value (a message, a tool schema, a string)."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return len(text) // CHARS_PER_TOKEN + 1


def estimate_request_tokens(system: str, tools: list[dict[str, Any]], messages: list[dict[str, Any]]) -> int:
    """:func:`estimate_tokens` of a whole request: system prompt, tool schemas and every message."""
    return estimate_tokens(system) + sum(estimate_tokens(t) for t in tools) + sum(estimate_tokens(m) for m in messages)
