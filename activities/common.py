"""What every activity of a run shares: heartbeats, error texts, and retry errors by kind.

Each failure is classified once, in the activity, into an error kind
(:mod:`durable_agent.retry`), and becomes an ``ApplicationError`` that either
names the exact wait before the next attempt or says not to retry.

Every activity heartbeats for its whole body (:class:`HeartbeatInterceptor`, on
every worker): a slow dependency (a token count, a summary, a rate-limit wait, a
store) costs time, never an attempt, and a killed worker is still noticed within
the heartbeat timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from durable_agent import logs, redaction
from durable_agent.encryption import DecryptionError
from durable_agent.observations import PREVIEW_CHARS  # noqa: F401  (activities import it from here)
from durable_agent.errors import FULL_MESSAGE_DETAIL
from durable_agent.retry import ErrorKind
from durable_agent.store import ContentIntegrityError, MissingContent

log = logs.ActivityLogger(logging.getLogger("durable_agent.activities"), None)

#: Longest tool result the model is shown, in characters (the store keeps all of it).
MAX_RESULT_CHARS = 100_000
HEARTBEAT_EVERY = 5.0
#: Longest error text a tool call reports (it is recorded in the history and shown to the model).
ERROR_CHARS = 2_000


def heartbeat_pace(heartbeat_timeout: timedelta | None) -> float:
    """Seconds between heartbeats: ``HEARTBEAT_EVERY``, or three beats per heartbeat timeout when that is shorter."""
    if heartbeat_timeout is None or heartbeat_timeout <= timedelta(0):
        return HEARTBEAT_EVERY
    return min(HEARTBEAT_EVERY, heartbeat_timeout.total_seconds() / 3)


@contextlib.asynccontextmanager
async def heartbeating(every: float = HEARTBEAT_EVERY) -> AsyncIterator[None]:
    """Heartbeat in the background, so a dead worker is noticed within the heartbeat timeout.

    The first beat comes after ``every`` seconds, not at once: the server's heartbeat
    timeout counts from the attempt's start, so a body shorter than ``every`` needs no
    beat, and most steps (a tool, a token count, a record) are that short. Each beat is a
    call to the server, which writes the attempt's state; beating at once cost one such
    write per activity, for nothing.
    """

    async def beat() -> None:
        while True:
            await asyncio.sleep(every)
            activity.heartbeat()

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class HeartbeatInterceptor(Interceptor):
    """Heartbeats for every activity of the worker, from its first line to its last.

    Without it, an activity heartbeats only around its slow call, and whatever it
    does before (reading the conversation, counting tokens, waiting for a rate-limit
    slot) or instead (a summary) counts against the heartbeat timeout: a dependency
    slower than that fails the attempt, and every retry fails the same way.
    Local activities are left alone (they have no heartbeat timeout).
    """

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _HeartbeatingActivity(next)


class _HeartbeatingActivity(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        if info.is_local:
            return await self.next.execute_activity(input)
        async with heartbeating(heartbeat_pace(info.heartbeat_timeout)):
            return await self.next.execute_activity(input)


@contextlib.asynccontextmanager
async def content_errors() -> AsyncIterator[None]:
    """Content that is not in the store, that no key of this worker opens, or that is not what its ref
    names (forged, swapped, damaged) will not come right on retry: fail the activity at once, naming the
    reference and the store, and never act on it."""
    try:
        yield
    except (MissingContent, DecryptionError, ContentIntegrityError) as exc:
        raise ApplicationError(str(exc), type=type(exc).__name__, non_retryable=True) from None


def retry_error(message: str, kind: ErrorKind, delay: float | None, **details: Any) -> ApplicationError:
    """An ``ApplicationError`` that retries after exactly ``delay`` seconds, or never (``None``)."""
    message = cut(message, ERROR_CHARS)
    if delay is None:
        return ApplicationError(message, details or None, type=kind.value, non_retryable=True)
    return ApplicationError(message, details or None, type=kind.value, next_retry_delay=timedelta(seconds=delay))


def quoting_error(headline: str, text: str, kind: ErrorKind, delay: float | None) -> ApplicationError:
    """A retry error whose ``text`` may quote what the run handles (a tool's own error message).

    The SDK logs an activity's error and puts its text on spans. While payloads are
    encrypted that text is ``headline`` only (a tool name, an exception type), and the
    full message travels in the error's details, encrypted, where
    :func:`durable_agent.errors.failure_message` finds it for the model.
    """
    full = f"{headline}: {text}"
    if redaction.content_in_logs():
        return retry_error(full, kind, delay)
    return retry_error(f"{headline} (its message is {redaction.WITHHELD})", kind, delay, **{FULL_MESSAGE_DETAIL: cut(full, ERROR_CHARS)})


def tool_result_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    return cut(text, MAX_RESULT_CHARS)


def tool_result_content(stored: dict[str, Any]) -> str | list[dict[str, Any]]:
    """A stored tool result as the model reads it: its text, with the images an MCP tool returned after it."""
    text = tool_result_text(stored["output"])
    images = stored.get("images")
    if not images:
        return text
    return [{"type": "text", "text": text}, *images]


def cut(text: str, limit: int) -> str:
    if len(text) > limit:
        return text[:limit] + f"\n[... cut: {len(text) - limit} more characters]"
    return text


def error_text(exc: BaseException) -> str:
    """An exception's text, cut to ``ERROR_CHARS`` and made valid Unicode (it is recorded and shown to the model)."""
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - a __str__ that fails must not fail the call
        text = type(exc).__name__
    return cut(text.encode("utf-8", "replace").decode("utf-8"), ERROR_CHARS)


def elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
