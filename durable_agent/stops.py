"""What to do with each way a model reply can end (its ``stop_reason``). Pure functions.

A reply cut by ``max_tokens`` in the middle of a ``tool_use`` block carries
arguments the model had not finished writing: ``{"amount": 2`` of ``20`` parses
as ``2`` once a lenient client completes it. Such a call is never executed: the
step is retried with a larger allowance, up to the model's maximum, and then the
model is asked once to make the call again; after that the run fails rather
than act on half a call.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from durable_agent.context import larger_allowance

#: Replies cut short: kept out of the conversation, their tool calls never run.
CUT_REPLIES = frozenset({"max_tokens", "model_context_window_exceeded"})
#: Replies whose tool calls are not for us to run (cut, refused, or paused mid-turn).
NOT_ACTIONABLE = CUT_REPLIES | {"refusal", "pause_turn"}
#: ``pause_turn`` continuations allowed in one step before the step gives up waiting.
MAX_PAUSES_PER_STEP = 8

MoveKind = Literal["act", "answer", "retry_larger", "ask_again", "continue", "refused", "compact", "give_up"]


@dataclass(frozen=True)
class NextMove:
    """The workflow's next move after one reply.

    Attributes:
        kind: ``act`` (run the tool calls), ``answer`` (the text is the final answer),
            ``retry_larger`` (think again with ``max_tokens``), ``ask_again`` (think again
            with ``prompt`` added as a user message), ``continue`` (think again: the API
            paused the turn), ``refused`` (end the run as ``refused``), ``compact``
            (the window is full: compact, then think again), ``give_up`` (fail the run).
        max_tokens: The allowance for the next call.
        warning: What to add to the step's record and the run's warnings.
        prompt: For ``ask_again``, what to tell the model.
    """

    kind: MoveKind
    max_tokens: int | None = None
    warning: str | None = None
    prompt: str | None = None


def after_reply(
    stop_reason: str | None,
    *,
    has_tool_calls: bool,
    cut_tool_calls: list[str],
    max_tokens: int,
    model_max_output: int,
    asked_again: bool,
    pauses: int,
    compacted: bool,
) -> NextMove:
    """The next move after a reply that ended with ``stop_reason``.

    Args:
        stop_reason: The reply's stop reason.
        has_tool_calls: The reply carries tool calls that may be run.
        cut_tool_calls: Tools whose calls a cut reply was writing.
        max_tokens: The allowance the reply was given.
        model_max_output: The model's largest allowance.
        asked_again: The model was already asked once in this step to redo a cut call.
        pauses: ``pause_turn`` continuations already made in this step.
        compacted: The conversation was already compacted in this step (a full window
            again means compaction cannot help: never loop).
    """
    if stop_reason == "refusal":
        return NextMove("refused", warning="REFUSED: the model declined to continue (stop_reason refusal)")
    if stop_reason == "pause_turn":
        if pauses >= MAX_PAUSES_PER_STEP:
            return NextMove("give_up", warning=f"PAUSED: the API paused the turn {pauses} times in one step")
        return NextMove("continue", max_tokens=max_tokens)
    if stop_reason == "model_context_window_exceeded":
        if compacted:
            return NextMove("give_up", warning="CONTEXT_WINDOW: the reply filled the context window again after compaction")
        return NextMove("compact", max_tokens=max_tokens, warning="CONTEXT_WINDOW: the reply filled the context window; compacting")
    if stop_reason == "max_tokens":
        what = f"a call to {', '.join(cut_tool_calls)}" if cut_tool_calls else "the answer"
        bigger = larger_allowance(max_tokens, model_max_output)
        if bigger is not None:
            return NextMove(
                "retry_larger",
                max_tokens=bigger,
                warning=f"TRUNCATED: the reply hit max_tokens={max_tokens} while writing {what}; "
                f"not acted on, retried with max_tokens={bigger}",
            )
        if not cut_tool_calls:
            return NextMove("answer", warning=f"TRUNCATED: the answer hit the model's maximum output ({max_tokens} tokens)")
        if asked_again:
            return NextMove(
                "give_up",
                warning=f"TRUNCATED: {what} was cut at the model's maximum output ({max_tokens} tokens) twice; "
                "it was never executed",
            )
        return NextMove(
            "ask_again",
            max_tokens=max_tokens,
            warning=f"TRUNCATED: {what} was cut at the model's maximum output ({max_tokens} tokens); "
            "not executed, the model was asked to make it again",
            prompt=(
                f"Your previous reply was cut off at the output limit ({max_tokens} tokens) while writing {what}, "
                "so it was NOT executed. Make the call again with shorter arguments, or answer without it."
            ),
        )
    if has_tool_calls:
        return NextMove("act")
    return NextMove("answer")


def think_timeout(max_tokens: int) -> timedelta:
    """How long one model call may take: long enough to write ``max_tokens`` at a slow 20 tokens a second.

    Never under five minutes; a fixed limit would cut a long answer and bill it again on every retry.
    """
    return timedelta(seconds=max(300.0, 120.0 + max_tokens / 20.0))
