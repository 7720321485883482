"""A daily budget ledger's state: what it has spent, what runs hold, and what it remembers.

The ``BudgetLedger`` workflow (one per agent and UTC day) holds a
:class:`LedgerState`; :mod:`durable_agent.budget` (reservations) and
:mod:`durable_agent.leases` (leases) change it. The helpers here are what both
share: days, totals, refusals, expiry and forgetting. No I/O, no clock (``now``
is passed in): deterministic in a workflow and table-testable without Temporal.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone

from pydantic import BaseModel, Field

from durable_agent.contracts import BUDGET_LEDGER_ID_PREFIX, DEFAULT_TASK_QUEUE

#: Amounts within this many USD of the limit count as within it (float sums drift).
EPSILON_USD = 1e-9
#: How long a reservation holds budget without being settled. Longer than one
#: model call with all its retries can take, so only a run that is gone loses it.
RESERVATION_TTL = timedelta(hours=1)
#: How long a ledger outlives its day, so runs that reserved before midnight can settle.
LEDGER_GRACE = timedelta(hours=2)
#: How long a settled reservation or a closed lease is remembered, so a retried
#: request is answered, never charged twice. By time, not by count: a ledger
#: remembers everything of the last six hours however busy it is, far longer
#: than an activity's retries take while the ledger answers.
REMEMBER_FOR = timedelta(hours=6)


def day_of(now: datetime) -> str:
    """The UTC day of ``now`` as ``YYYY-MM-DD`` (the day a reservation is charged to)."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    return now.astimezone(timezone.utc).date().isoformat()


def day_end(day: str) -> datetime:
    """Midnight UTC at the end of ``day`` (``YYYY-MM-DD``)."""
    return datetime.combine(date.fromisoformat(day) + timedelta(days=1), time(0), tzinfo=timezone.utc)


def ledger_id(agent: str, day: str, task_queue: str = DEFAULT_TASK_QUEUE) -> str:
    """The workflow id of the ledger of ``agent`` on ``day``: ``budget-<agent>-<YYYY-MM-DD>``.

    Ledgers belong to a task queue (a deployment): on another queue than the
    default ``agents`` the id ends in ``@<queue>``, so a ledger is always polled
    by the workers that use it, never stranded on a queue nobody polls any more.
    """
    return f"{BUDGET_LEDGER_ID_PREFIX}{agent}-{day}" + ("" if task_queue == DEFAULT_TASK_QUEUE else f"@{task_queue}")


class Reservation(BaseModel):
    """Budget held for one model call that has not reported its cost yet."""

    reservation_id: str
    amount_usd: float
    holder: str = Field(default="", description="Who reserved it (a workflow id), for people reading the state.")
    created_at: datetime
    expires_at: datetime


class Lease(BaseModel):
    """A chunk of the day's budget held by one run, spent call by call without asking the ledger."""

    holder: str = Field(description="The run: workflow id / first run id.")
    seq: int = Field(description="The run's lease number; the next request carries seq + 1.")
    amount_usd: float
    created_at: datetime
    expires_at: datetime


class HolderMemo(BaseModel):
    """The last lease request a run made, so a retry is answered, never applied twice.

    A few bytes per run: a retry of a granted request is answered from the run's
    open lease, so a busy day's ledger carries little across continue-as-new.
    """

    seq: int
    refused: bool = False
    held: bool = Field(default=False, description="Refused for now: what is left was held by other runs' leases.")
    seen_at: datetime


class LedgerState(BaseModel):
    """Everything a ledger knows; carried whole across continue-as-new."""

    agent: str
    day: str
    limit_usd: float
    spent_usd: float = 0.0
    reservations: dict[str, Reservation] = Field(default_factory=dict)
    settled: dict[str, float] = Field(
        default_factory=dict, description="Recently settled or released ids -> cost charged, oldest first."
    )
    settled_at: dict[str, datetime] = Field(default_factory=dict, description="When each remembered settlement came.")
    leases: dict[str, Lease] = Field(default_factory=dict, description="Open leases by holder.")
    holders: dict[str, HolderMemo] = Field(default_factory=dict, description="Runs' last lease requests, kept REMEMBER_FOR.")
    granted: int = 0
    refused: int = 0
    expired: int = 0
    lease_requests: int = Field(default=0, description="Lease updates applied (grants, renewals and returns).")

    @property
    def reserved_usd(self) -> float:
        """Held by open reservations and leases."""
        return sum(r.amount_usd for r in self.reservations.values()) + sum(lease.amount_usd for lease in self.leases.values())

    @property
    def remaining_usd(self) -> float:
        """What a new reservation may still take (never negative)."""
        return max(0.0, self.limit_usd - self.spent_usd - self.reserved_usd)


class LedgerStart(BaseModel):
    """Input of a ``BudgetLedger`` run: which ledger, and the state carried from the previous run."""

    agent: str
    day: str
    limit_usd: float = Field(ge=0)
    state: LedgerState | None = None
    continue_after_updates: int = Field(default=500, ge=1, description="Updates per run before continuing as new.")
    grace_seconds: float = Field(default=LEDGER_GRACE.total_seconds(), ge=0)


class Balance(BaseModel):
    """A ledger's totals after an update."""

    limit_usd: float
    spent_usd: float
    reserved_usd: float
    remaining_usd: float


def balance(state: LedgerState) -> Balance:
    """The totals of ``state``, rounded for display."""
    return Balance(
        limit_usd=state.limit_usd,
        spent_usd=round(state.spent_usd, 9),
        reserved_usd=round(state.reserved_usd, 9),
        remaining_usd=round(state.remaining_usd, 9),
    )


def refusal_message(state: LedgerState, amount_usd: float) -> str:
    """Why a reservation of ``amount_usd`` is refused, naming the agent, the day and what is left."""
    return (
        f"the daily budget of agent {state.agent!r} (${state.limit_usd:.4f} for {state.day} UTC) has "
        f"${state.remaining_usd:.4f} left (spent ${state.spent_usd:.4f}, reserved ${state.reserved_usd:.4f}), "
        f"and the next model call needs up to ${amount_usd:.4f}"
    )


def remember_settled(state: LedgerState, reservation_id: str, charged: float, now: datetime | None) -> None:
    state.settled[reservation_id] = charged
    if now is not None:
        state.settled_at[reservation_id] = now


def forget(state: LedgerState, now: datetime) -> None:
    """Forget settlements and closed runs not heard of for :data:`REMEMBER_FOR` (by time, never by count)."""
    oldest = now - REMEMBER_FOR
    for rid in [rid for rid, at in state.settled_at.items() if at < oldest]:
        del state.settled_at[rid]
        state.settled.pop(rid, None)
    for holder in [h for h, memo in state.holders.items() if memo.seen_at < oldest and h not in state.leases]:
        del state.holders[holder]


def expire(state: LedgerState, now: datetime) -> list[str]:
    """Drop reservations and leases past their time to live; return their ids (oldest first).

    An expired lease is dropped uncharged: its run is gone for good, or will say
    what it spent with its next request, which is charged then.
    """
    gone = [rid for rid, r in state.reservations.items() if r.expires_at <= now]
    for rid in gone:
        del state.reservations[rid]
    lapsed = [holder for holder, lease in state.leases.items() if lease.expires_at <= now]
    for holder in lapsed:
        del state.leases[holder]
    state.expired += len(gone) + len(lapsed)
    return gone + [f"lease of {holder}" for holder in lapsed]


def next_expiry(state: LedgerState) -> datetime | None:
    """When the next open reservation or lease expires, if any is open."""
    ends = [r.expires_at for r in state.reservations.values()] + [lease.expires_at for lease in state.leases.values()]
    return min(ends, default=None)


def check_request(state: LedgerState, agent: str, day: str) -> str | None:
    """Why a request for ``agent`` on ``day`` does not belong to this ledger, or ``None``."""
    if (agent, day) != (state.agent, state.day):
        return f"this is the ledger of agent {state.agent!r} on {state.day}, not of {agent!r} on {day}"
    return None
