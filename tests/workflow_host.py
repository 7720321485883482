"""A stand-in for the workflow a component runs in (:class:`durable_agent.workflows.host.Host`), for unit tests.

Its clock moves only when a timer runs; activities are scripted by name (a function of
the input, or an exception to raise); everything asked of it is written down, in order,
so a test can check what a component would have recorded in the history.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.exceptions import ActivityError, ApplicationError, RetryState

from durable_agent.workflows.host import RunIds

START = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def activity_failure(message: str, activity: str = "an_activity") -> ActivityError:
    """What the workflow sees of an activity that failed for good (retries spent), caused by ``message``."""
    error = ActivityError(
        "activity failed", scheduled_event_id=1, started_event_id=2, identity="worker", activity_type=activity, activity_id="1",
        retry_state=RetryState.MAXIMUM_ATTEMPTS_REACHED,
    )
    error.__cause__ = ApplicationError(message)
    return error


class FakeHost:
    """A workflow without a server: scripted activities, a clock that timers move, and a log of what was asked."""

    def __init__(self, activities: dict[str, Any] | None = None, *, unpatched: Iterable[str] = (), now: datetime = START) -> None:
        #: Activity name -> the result, or a function of the input that returns it (or raises).
        self.activities: dict[str, Any] = dict(activities or {})
        self.unpatched = set(unpatched)
        self.clock = now
        #: Every ``patched()`` call, in order.
        self.patches: list[str] = []
        #: Every activity executed or started: ``(name, input, options)``.
        self.calls: list[tuple[str, Any, dict[str, Any]]] = []
        self.details: list[str] = []
        self.search_attributes: list[Any] = []
        self.memo: dict[str, Any] = {}
        self.slept: list[timedelta] = []
        self.cancelled = False
        self.replaying = False
        #: Child workflow id -> its result (a function of the input, or an exception to raise).
        self.children: dict[str, Any] = {}
        #: Every child started: ``(workflow type, input, id)``; every signal sent: ``(workflow id, signal, payload)``.
        self.started: list[tuple[str, Any, str]] = []
        self.signals: list[tuple[str, str, Any]] = []
        self._logger = logging.LoggerAdapter(logging.getLogger("tests.workflow_host"), {})

    @property
    def logger(self) -> logging.LoggerAdapter[Any]:
        return self._logger

    def now(self) -> datetime:
        return self.clock

    def ids(self) -> RunIds:
        return RunIds("wf-1", "first-run", "run-2", "default")

    def patched(self, patch_id: str) -> bool:
        self.patches.append(patch_id)
        return patch_id not in self.unpatched

    def is_replaying(self) -> bool:
        return self.replaying

    def cancel_requested(self) -> bool:
        return self.cancelled

    def names(self) -> list[str]:
        """The activities asked for, in order."""
        return [name for name, _, _ in self.calls]

    async def _answer(self, activity: str, arg: Any) -> Any:
        if activity not in self.activities:
            raise AssertionError(f"no script for activity {activity!r}")
        answer = self.activities[activity]
        result = answer(arg) if callable(answer) else answer
        if inspect.isawaitable(result):
            result = await result
        return result

    async def execute_activity(self, activity: str, arg: Any, *, result_type: type[Any], **options: Any) -> Any:
        self.calls.append((activity, arg, options))
        return await self._answer(activity, arg)

    async def execute_local_activity(self, activity: str, arg: Any, *, result_type: type[Any], **options: Any) -> Any:
        return await self.execute_activity(activity, arg, result_type=result_type, **options)

    def start_activity(self, activity: str, arg: Any, **options: Any) -> asyncio.Task[Any]:
        self.calls.append((activity, arg, options))
        return asyncio.ensure_future(self._answer(activity, arg))

    async def start_child_workflow(self, workflow_type: str, arg: Any, *, id: str, **options: Any) -> Any:
        self.started.append((workflow_type, arg, id))
        if id not in self.children:
            raise AssertionError(f"no script for child workflow {id!r}")
        answer = self.children[id]

        async def result() -> Any:
            if isinstance(answer, BaseException):
                raise answer
            return answer(arg) if callable(answer) else answer

        return asyncio.ensure_future(result())

    async def signal_external(self, workflow_id: str, signal: str, arg: Any) -> None:
        self.signals.append((workflow_id, signal, arg))

    async def sleep(self, duration: timedelta, *, summary: str) -> None:
        self.slept.append(duration)
        self.clock += duration

    async def wait_condition(self, done: Callable[[], bool], *, timeout: float | None = None, timeout_summary: str | None = None) -> None:
        for _ in range(20):  # let what the test scheduled (a decision, say) run first
            if done():
                return
            await asyncio.sleep(0)
        if timeout is None:
            raise AssertionError("the component would wait forever")
        self.clock += timedelta(seconds=timeout)
        raise asyncio.TimeoutError

    def set_details(self, text: str) -> None:
        self.details.append(text)

    def upsert_search_attributes(self, updates: Any) -> None:
        self.search_attributes.append(list(updates))

    def upsert_memo(self, updates: dict[str, Any]) -> None:
        self.memo.update(updates)

    def outside_sandbox(self, work: Callable[[], None]) -> None:
        if not self.replaying:
            work()
