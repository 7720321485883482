"""Per-tool rate limit arithmetic: a token bucket that hands out time slots, first come first served.

A limit ``N/period`` is a bucket of ``N`` tokens; a call takes one, and each
token comes back one ``period`` after the call that took it (so the bucket
refills ``N`` per period). Unlike a bucket that refills continuously, this one
never lets more than ``N`` calls start within any window of one period, which is
what the systems behind rate-limited tools count.

Instead of "try again later", :func:`acquire` gives each caller the earliest
slot not yet promised to anyone: the next caller queues behind it, so callers
are served in the order they asked. The ``RateLimiter`` workflow (one per tool)
holds a :class:`BucketState` and applies these functions; they do no I/O and
read no clock, so they are deterministic in a workflow and testable without
Temporal.
"""

from __future__ import annotations

import bisect
from datetime import datetime, timedelta

from pydantic import BaseModel, Field

from durable_agent.contracts import DEFAULT_TASK_QUEUE, RATE_LIMITER_ID_PREFIX
from durable_agent.schemas import StrictModel

#: Slots remembered per limiter for idempotency (a retried acquire gets the same slot).
REMEMBERED_REQUESTS = 10_000
#: A limiter with no grant inside its window for this long ends (a new one starts on demand).
IDLE_AFTER = timedelta(minutes=10)


def limiter_id(tool: str, task_queue: str = DEFAULT_TASK_QUEUE) -> str:
    """The workflow id of the rate limiter of ``tool``: ``ratelimit-<tool>`` (``@<queue>`` off the default queue)."""
    return f"{RATE_LIMITER_ID_PREFIX}{tool}" + ("" if task_queue == DEFAULT_TASK_QUEUE else f"@{task_queue}")


class BucketState(BaseModel):
    """A limiter's slots; carried whole across continue-as-new."""

    tool: str
    grants: list[datetime] = Field(default_factory=list, description="Promised slots inside the window, ascending.")
    requests: dict[str, datetime] = Field(default_factory=dict, description="Request id -> its slot, oldest first.")
    horizon_seconds: float = Field(default=0.0, description="The longest period any caller used.")
    granted: int = 0
    refused: int = 0


class LimiterStart(BaseModel):
    """Input of a ``RateLimiter`` run: the tool, and the state carried from the previous run."""

    tool: str
    state: BucketState | None = None
    continue_after_updates: int = Field(default=1000, ge=1, description="Updates per run before continuing as new.")


class AcquireRequest(StrictModel):
    """Payload of the limiter's ``acquire`` update."""

    tool: str
    request_id: str = Field(min_length=1, description="Stable across retries: a retried acquire gets the same slot.")
    limit: int = Field(ge=1, description="Calls per period (N of 'N/period').")
    period_seconds: float = Field(gt=0)
    wait: bool = Field(default=True, description="Take a later slot (True) or refuse when none is free now (False).")
    holder: str = ""


class AcquireResult(BaseModel):
    """A slot: the caller may go at ``go_at`` (now or later), or a refusal for a caller that does not wait."""

    granted: bool
    go_at: datetime
    wait_seconds: float
    message: str = ""


def next_slot(state: BucketState, limit: int, period_seconds: float, now: datetime) -> datetime:
    """The earliest time a new call may start under ``limit`` per ``period_seconds``.

    Never before ``now``, never before a slot already promised (first come, first
    served), and never while ``limit`` calls have started within the last period.
    """
    slot = now
    if state.grants:
        slot = max(slot, state.grants[-1])
    if len(state.grants) >= limit:
        slot = max(slot, state.grants[-limit] + timedelta(seconds=period_seconds))
    return slot


def prune(state: BucketState, now: datetime) -> None:
    """Forget slots that can no longer limit anyone, and old request ids."""
    horizon = timedelta(seconds=state.horizon_seconds)
    keep_from = bisect.bisect_left(state.grants, now - horizon)
    del state.grants[:keep_from]
    oldest_wanted = now - max(horizon, IDLE_AFTER)
    for request_id in [rid for rid, slot in state.requests.items() if slot < oldest_wanted]:
        del state.requests[request_id]
    while len(state.requests) > REMEMBERED_REQUESTS:
        del state.requests[next(iter(state.requests))]


def describe_limit(limit: int, period_seconds: float) -> str:
    """``2 calls per 10 s``."""
    return f"{limit} call{'s' if limit != 1 else ''} per {period_seconds:g} s"


def acquire(state: BucketState, request: AcquireRequest, now: datetime) -> AcquireResult:
    """Promise ``request`` the next free slot, or refuse it when it will not wait. Idempotent by request id."""
    known = state.requests.get(request.request_id)
    if known is not None:
        return AcquireResult(granted=True, go_at=known, wait_seconds=max(0.0, (known - now).total_seconds()))
    state.horizon_seconds = max(state.horizon_seconds, request.period_seconds)
    prune(state, now)
    slot = next_slot(state, request.limit, request.period_seconds, now)
    wait = (slot - now).total_seconds()
    if wait > 0 and not request.wait:
        state.refused += 1
        return AcquireResult(
            granted=False,
            go_at=slot,
            wait_seconds=wait,
            message=(
                f"RATE_LIMITED: {request.tool} allows {describe_limit(request.limit, request.period_seconds)} "
                f"across all runs, and the next free slot is in {wait:.1f} s. The call was not made; "
                "do without it or try again later."
            ),
        )
    state.grants.append(slot)  # slots only grow, so the list stays sorted
    state.requests[request.request_id] = slot
    state.granted += 1
    return AcquireResult(granted=True, go_at=slot, wait_seconds=wait)


def idle_since(state: BucketState) -> datetime | None:
    """The moment the last promised slot leaves the window (``None``: nothing promised)."""
    if not state.grants:
        return None
    return state.grants[-1] + timedelta(seconds=state.horizon_seconds)
