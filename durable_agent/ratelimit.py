"""Rate limit arithmetic: sliding windows that hand out time slots, first come first served.

A limit ``N/period`` never lets more than ``N`` (calls, or tokens) start within
any window of one ``period``: what the systems behind rate-limited tools and
models count. Instead of "try again later", :func:`acquire` gives each caller
the earliest slot not yet promised to anyone, so callers are served in the
order they asked.

Callers are kept apart by **lane**: every distinct limit owner (the tool's own
decorator, one profile's override, one model) has its own lane and is held to
its own limit only, so a ``1/hour`` caller never queues a ``30/min`` caller of
the same tool. A lane may limit several dimensions at once (a model: requests,
input tokens, output tokens); each call weighs something in each, and a slot
is one where every dimension has room.

A model's answers say what the provider still allows (``anthropic-ratelimit-*``
headers). When that is less than a lane believes, :func:`observe` holds the
difference back until the provider's reset, so every run and worker slows down
together.

The ``RateLimiter`` workflow (one per tool or model) holds a
:class:`BucketState` and applies these functions; they do no I/O and read no
clock, so they are deterministic in a workflow and testable without Temporal.
"""

from __future__ import annotations

import bisect
import json
from datetime import datetime, timedelta

from pydantic import BaseModel, Field, model_validator

from durable_agent.contracts import DEFAULT_TASK_QUEUE, RATE_LIMITER_ID_PREFIX
from durable_agent.schemas import StrictModel

#: Slots remembered per limiter for idempotency (a retried acquire gets the same slot).
REMEMBERED_REQUESTS = 10_000
#: A limiter with no grant inside its window for this long ends (a new one starts on demand).
IDLE_AFTER = timedelta(minutes=10)
#: The dimension of a plain ``N/period`` limit: one call weighs 1.
CALLS = "calls"
#: The lane of a tool's own (decorator) limit; a profile's override is ``agent:<name>``.
TOOL_LANE = ""
#: Resource names of model limiters start with this (a tool's name never does: tools are identifiers).
MODEL_RESOURCE_PREFIX = "model:"


def limiter_id(tool: str, task_queue: str = DEFAULT_TASK_QUEUE) -> str:
    """The workflow id of the rate limiter of ``tool``: ``ratelimit-<tool>`` (``@<queue>`` off the default queue).

    A model's limiter is ``ratelimit-model:<model>`` (see :func:`model_resource`).
    """
    return f"{RATE_LIMITER_ID_PREFIX}{tool}" + ("" if task_queue == DEFAULT_TASK_QUEUE else f"@{task_queue}")


def model_resource(model: str) -> str:
    """The limiter resource of ``model``'s rate limits: ``model:<model>``."""
    return f"{MODEL_RESOURCE_PREFIX}{model}"


def profile_lane(agent: str) -> str:
    """The lane of a limit that profile ``agent`` set for a tool (overriding the tool's own)."""
    return f"agent:{agent}"


class Window(StrictModel):
    """One dimension's limit: at most ``amount`` within any ``period_seconds``."""

    amount: float = Field(gt=0)
    period_seconds: float = Field(gt=0)


class Grant(BaseModel):
    """A promised slot and what it weighs in each dimension."""

    at: datetime
    weights: dict[str, float]


class Lane(BaseModel):
    """The promised slots of one limit owner, ascending by time."""

    grants: list[Grant] = Field(default_factory=list)
    horizon_seconds: float = Field(default=0.0, description="The longest period this lane's callers used.")
    last_slot: datetime | None = Field(default=None, description="The latest slot promised (the queue's tail).")


class BucketState(BaseModel):
    """A limiter's slots; carried whole across continue-as-new."""

    tool: str = Field(description="The resource limited: a tool name, or model:<model>.")
    grants: list[datetime] = Field(default_factory=list, description="Slots of limiters started before lanes (read once, then moved).")
    lanes: dict[str, Lane] = Field(default_factory=dict)
    requests: dict[str, datetime] = Field(default_factory=dict, description="Request id -> its slot, oldest first.")
    horizon_seconds: float = Field(default=0.0, description="The longest period any caller used.")
    granted: int = 0
    refused: int = 0
    adjusted: int = Field(default=0, description="Times a provider's headers said less was left than the lane believed.")

    @model_validator(mode="after")
    def _move_unlaned_grants(self) -> "BucketState":
        # A limiter continued from one started before lanes: its slots were all the tool's own calls.
        if self.grants:
            lane = self.lanes.setdefault(TOOL_LANE, Lane(horizon_seconds=self.horizon_seconds))
            lane.grants = sorted([Grant(at=at, weights={CALLS: 1.0}) for at in self.grants] + lane.grants, key=lambda g: g.at)
            lane.last_slot = lane.grants[-1].at
            self.grants = []
        return self


class LimiterStart(BaseModel):
    """Input of a ``RateLimiter`` run: the tool, and the state carried from the previous run."""

    tool: str
    state: BucketState | None = None
    continue_after_updates: int = Field(default=1000, ge=1, description="Updates per run before continuing as new.")


class Observation(StrictModel):
    """What a provider said was left of one dimension, and when it refills."""

    dimension: str
    remaining: float = Field(ge=0)
    reset_at: datetime
    observed_at: datetime


class AcquireRequest(StrictModel):
    """Payload of the limiter's ``acquire`` update.

    A tool's call gives ``limit`` and ``period_seconds`` (one call weighs 1); a
    model's call gives ``windows`` and ``weights`` per dimension.
    """

    tool: str
    request_id: str = Field(min_length=1, description="Stable across retries: a retried acquire gets the same slot.")
    limit: int | None = Field(default=None, ge=1, description="Calls per period (N of 'N/period').")
    period_seconds: float | None = Field(default=None, gt=0)
    lane: str = Field(default=TOOL_LANE, description="Whose limit this is: '' for the tool's own, agent:<name> for a profile's.")
    windows: dict[str, Window] = Field(default_factory=dict, description="Dimension -> its limit (besides limit/period).")
    weights: dict[str, float] = Field(default_factory=dict, description="Dimension -> what this call weighs (calls: 1).")
    observed: list[Observation] = Field(default_factory=list, description="What the provider said was left, to adjust by.")
    wait: bool = Field(default=True, description="Take a later slot (True) or refuse when none is free now (False).")
    holder: str = ""

    @model_validator(mode="after")
    def _has_a_limit(self) -> "AcquireRequest":
        if (self.limit is None) != (self.period_seconds is None):
            raise ValueError("limit and period_seconds go together")
        if self.limit is None and not self.windows:
            raise ValueError("an acquire needs limit and period_seconds, or windows")
        return self

    def all_windows(self) -> dict[str, Window]:
        """Every dimension limited, ``calls`` included when ``limit`` is set."""
        windows = dict(self.windows)
        if self.limit is not None and self.period_seconds is not None:
            windows[CALLS] = Window(amount=self.limit, period_seconds=self.period_seconds)
        return windows

    def all_weights(self) -> dict[str, float]:
        """What this call weighs in each limited dimension (1 when not said)."""
        return {dim: self.weights.get(dim, 1.0 if dim in (CALLS, "requests") else 0.0) for dim in self.all_windows()}


class AcquireResult(BaseModel):
    """A slot: the caller may go at ``go_at`` (now or later), or a refusal for a caller that does not wait."""

    granted: bool
    go_at: datetime
    wait_seconds: float
    message: str = ""


def _in_window(lane: Lane, dimension: str, at: datetime, period: timedelta) -> list[Grant]:
    """The lane's grants weighing in ``dimension`` that count at ``at`` (in ``(at - period, at]``)."""
    start = bisect.bisect_right([g.at for g in lane.grants], at - period)
    return [g for g in lane.grants[start:] if g.at <= at and g.weights.get(dimension, 0.0) > 0]


def next_slot(lane: Lane, windows: dict[str, Window], weights: dict[str, float], now: datetime) -> datetime:
    """The earliest time a call of ``weights`` may start in ``lane`` under ``windows``.

    Never before ``now``, never before a slot already promised in the lane (first
    come, first served), and only where every dimension's window has room. A call
    that weighs more than a whole window is clamped to it: it goes alone.
    """
    slot = max(now, lane.last_slot) if lane.last_slot is not None else now
    moved = True
    while moved:
        moved = False
        for dimension, window in windows.items():
            weight = min(weights.get(dimension, 0.0), window.amount)
            if weight <= 0:
                continue
            period = timedelta(seconds=window.period_seconds)
            counted = _in_window(lane, dimension, slot, period)
            total = sum(g.weights[dimension] for g in counted)
            while counted and total + weight > window.amount * (1 + 1e-9):
                oldest = counted.pop(0)  # it leaves the window one period after it started
                total -= oldest.weights[dimension]
                slot = max(slot, oldest.at + period)
                moved = True
    return slot


def prune(state: BucketState, now: datetime) -> None:
    """Forget slots that can no longer limit anyone, and old request ids."""
    for key in list(state.lanes):
        lane = state.lanes[key]
        keep_from = bisect.bisect_left([g.at for g in lane.grants], now - timedelta(seconds=lane.horizon_seconds))
        del lane.grants[:keep_from]
        if not lane.grants and (lane.last_slot is None or lane.last_slot < now - timedelta(seconds=lane.horizon_seconds)):
            del state.lanes[key]
    oldest_wanted = now - max(timedelta(seconds=state.horizon_seconds), IDLE_AFTER)
    for request_id in [rid for rid, slot in state.requests.items() if slot < oldest_wanted]:
        del state.requests[request_id]
    while len(state.requests) > REMEMBERED_REQUESTS:
        del state.requests[next(iter(state.requests))]


def describe_limit(limit: int, period_seconds: float) -> str:
    """``2 calls per 10 s``."""
    return f"{limit} call{'s' if limit != 1 else ''} per {period_seconds:g} s"


def describe_windows(windows: dict[str, Window]) -> str:
    """``50 requests per 60 s, 30000 input_tokens per 60 s``."""
    return ", ".join(f"{w.amount:g} {dim} per {w.period_seconds:g} s" for dim, w in sorted(windows.items()))


def observe(lane: Lane, windows: dict[str, Window], seen: Observation) -> bool:
    """Hold back what the provider says is used beyond what ``lane`` counted; return whether it did.

    The provider's ``remaining`` at ``observed_at`` is compared with the lane's own
    room then; the shortfall becomes a placeholder grant that leaves the window at
    the provider's ``reset_at``, so no caller is given what is not there.
    """
    window = windows.get(seen.dimension)
    if window is None:
        return False
    period = timedelta(seconds=window.period_seconds)
    counted = sum(g.weights.get(seen.dimension, 0.0) for g in _in_window(lane, seen.dimension, seen.observed_at, period))
    shortfall = (window.amount - counted) - seen.remaining
    if shortfall <= 0:
        return False
    at = min(seen.reset_at - period, seen.observed_at)
    bisect.insort(lane.grants, Grant(at=at, weights={seen.dimension: shortfall}), key=lambda g: g.at)
    return True


#: Characters per token assumed when estimating a request's input tokens: fewer than
#: the ~4 of English prose, as JSON and code take more tokens, so estimates err high.
CHARS_PER_TOKEN = 3


def estimate_input_tokens(*parts: object) -> int:
    """A cautious estimate of the input tokens of a model request made of ``parts`` (system, tools, messages)."""
    chars = sum(len(json.dumps(part, ensure_ascii=False, separators=(",", ":"), default=str)) for part in parts)
    return chars // CHARS_PER_TOKEN + 1


#: ``anthropic-ratelimit-<name>-remaining`` / ``-reset`` header names -> our dimensions.
_HEADER_DIMENSIONS = {"requests": "requests", "input-tokens": "input_tokens", "output-tokens": "output_tokens"}


def observations_from_headers(headers: dict[str, str], now: datetime) -> list[Observation]:
    """What the ``anthropic-ratelimit-*-remaining`` and ``-reset`` headers say is left, per dimension."""
    lower = {k.lower(): v for k, v in headers.items()}
    found = []
    for name, dimension in _HEADER_DIMENSIONS.items():
        remaining, reset = lower.get(f"anthropic-ratelimit-{name}-remaining"), lower.get(f"anthropic-ratelimit-{name}-reset")
        if remaining is None or reset is None:
            continue
        try:
            reset_at = datetime.fromisoformat(reset.strip().replace("Z", "+00:00"))
            left = float(remaining)
        except ValueError:
            continue
        if reset_at.tzinfo is None:
            continue
        found.append(Observation(dimension=dimension, remaining=max(0.0, left), reset_at=max(reset_at, now), observed_at=now))
    return found


def acquire(state: BucketState, request: AcquireRequest, now: datetime) -> AcquireResult:
    """Promise ``request`` the next free slot in its lane, or refuse it when it will not wait. Idempotent by request id."""
    known = state.requests.get(request.request_id)
    if known is not None:
        return AcquireResult(granted=True, go_at=known, wait_seconds=max(0.0, (known - now).total_seconds()))
    windows = request.all_windows()
    longest = max(w.period_seconds for w in windows.values())
    state.horizon_seconds = max(state.horizon_seconds, longest)
    prune(state, now)
    lane = state.lanes.setdefault(request.lane, Lane())
    lane.horizon_seconds = max(lane.horizon_seconds, longest)
    for seen in request.observed:
        if observe(lane, windows, seen):
            state.adjusted += 1
    weights = request.all_weights()
    slot = next_slot(lane, windows, weights, now)
    wait = (slot - now).total_seconds()
    if wait > 0 and not request.wait:
        state.refused += 1
        limit = describe_limit(request.limit, request.period_seconds or 0) if request.limit else describe_windows(windows)
        return AcquireResult(
            granted=False,
            go_at=slot,
            wait_seconds=wait,
            message=(
                f"RATE_LIMITED: {request.tool} allows {limit} across all runs, and the next free slot is in {wait:.1f} s. "
                "The call was not made; do without it or try again later."
            ),
        )
    bisect.insort(lane.grants, Grant(at=slot, weights={dim: w for dim, w in weights.items() if w > 0}), key=lambda g: g.at)
    lane.last_slot = slot
    state.requests[request.request_id] = slot
    state.granted += 1
    return AcquireResult(granted=True, go_at=slot, wait_seconds=wait)


def idle_since(state: BucketState) -> datetime | None:
    """The moment the last promised slot leaves the window (``None``: nothing promised)."""
    ends = [
        lane.last_slot + timedelta(seconds=lane.horizon_seconds)
        for lane in state.lanes.values()
        if lane.last_slot is not None
    ]
    return max(ends, default=None)


def waiting(state: BucketState, now: datetime) -> int:
    """How many promised slots are still ahead of ``now`` (callers waiting for their turn)."""
    return sum(1 for lane in state.lanes.values() for g in lane.grants if g.at > now and (CALLS in g.weights or "requests" in g.weights))
