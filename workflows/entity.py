"""What the long-lived entity workflows (``BudgetLedger``, ``RateLimiter``) share.

An entity workflow holds one piece of shared state that many runs change
through updates. It must keep its history small however busy it is: it counts
the updates it applied and continues as new, carrying its state, after a set
number of them or when the server suggests it, but only once every update
handler has finished, so no accepted update is cut off.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any, NoReturn, TypeVar

from pydantic import BaseModel, ValidationError
from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from durable_agent import inputs
    from durable_agent.errors import validation_problems

#: Shortest timer an entity arms; a deadline already past still yields once.
MIN_TIMER = timedelta(milliseconds=10)

_Request = TypeVar("_Request", bound=BaseModel)


def parse_one(model: type[_Request], payloads: tuple[Any, ...], name: str) -> _Request:
    """The one payload of an update (or the start) as ``model``, or a non-retryable refusal naming what is wrong.

    Entity handlers take ``*payloads`` untyped, so that no number or shape of
    payloads, nor one the converter could not decode, can fail a workflow task.
    """
    try:
        return model.model_validate(inputs.single_payload(payloads, name))
    except inputs.PayloadRefused as exc:
        raise ApplicationError(f"invalid payload: {exc}", type="InvalidPayload", non_retryable=True) from None
    except ValidationError as exc:
        raise ApplicationError(f"invalid payload: {validation_problems(exc)}", type="InvalidPayload", non_retryable=True) from None


class EntityWorkflow:
    """Base class: update counting, continue-as-new when due, and a wake-up at a deadline.

    Subclasses call :meth:`_applied` in every update handler, :meth:`_sleep_until`
    in their run loop, and :meth:`_continue_as_new` when :meth:`_continue_due`.
    """

    def __init__(self, continue_after_updates: int) -> None:
        self._continue_after_updates = continue_after_updates
        self._updates = 0
        self._wake = False
        self._deadline: datetime | None = None

    def _applied(self, wake_by: datetime | None = None) -> None:
        """Count one applied update; wake the run loop early if ``wake_by`` is before its deadline."""
        self._updates += 1
        if wake_by is not None and (self._deadline is None or wake_by < self._deadline):
            self._wake = True

    def _continue_due(self) -> bool:
        return self._updates >= self._continue_after_updates or workflow.info().is_continue_as_new_suggested()

    async def _sleep_until(self, deadline: datetime | None, summary: str) -> None:
        """Wait until ``deadline``, or less when continue-as-new is due or an update needs an earlier wake-up.

        Updates do not wake the loop otherwise: a timer cancelled on every update
        would double the history it is meant to keep small.
        """
        self._deadline = deadline
        try:
            if deadline is None:
                await workflow.wait_condition(lambda: self._wake or self._continue_due())
            else:
                timeout = max(deadline - workflow.now(), MIN_TIMER)
                await workflow.wait_condition(
                    lambda: self._wake or self._continue_due(), timeout=timeout, timeout_summary=summary
                )
        except asyncio.TimeoutError:
            pass
        self._wake = False
        self._deadline = None

    async def _continue_as_new(self, start: Any) -> NoReturn:
        """Continue as new with ``start`` once every accepted update has finished."""
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(start)

    async def _finish(self) -> None:
        """Let accepted updates finish before the run ends."""
        await workflow.wait_condition(workflow.all_handlers_finished)
