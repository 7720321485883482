"""Daily budget arithmetic: reservations granted, settled, released and expired.

The ``BudgetLedger`` workflow (one per agent and UTC day) holds a
:class:`LedgerState` and applies these functions to it; they decide, the
workflow only records. They do no I/O and read no clock (``now`` is passed in),
so they are deterministic in a workflow and table-testable without Temporal.

A run reserves the estimated cost of its next model call before making it
(:func:`reserve`), then replaces the reservation with the actual cost
(:func:`settle`), or gives it back when the call never happened
(:func:`release`). What is reserved counts as spent until then, so many runs on
many workers can never be granted more than the limit together. A reservation
that is never settled (its run crashed for good) expires after its time to live
(:func:`expire`) instead of holding the budget for the rest of the day.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone

from pydantic import BaseModel, Field

from durable_agent.contracts import BUDGET_LEDGER_ID_PREFIX, DEFAULT_TASK_QUEUE
from durable_agent.schemas import StrictModel

#: Amounts within this many USD of the limit count as within it (float sums drift).
EPSILON_USD = 1e-9
#: How long a reservation holds budget without being settled. Longer than one
#: model call with all its retries can take, so only a run that is gone loses it.
RESERVATION_TTL = timedelta(hours=1)
#: How long a ledger outlives its day, so runs that reserved before midnight can settle.
LEDGER_GRACE = timedelta(hours=2)
#: Settled reservation ids remembered, so a retried settle is not counted twice.
REMEMBERED_SETTLEMENTS = 2000


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
    granted: int = 0
    refused: int = 0
    expired: int = 0

    @property
    def reserved_usd(self) -> float:
        """Held by open reservations."""
        return sum(r.amount_usd for r in self.reservations.values())

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


class ReserveRequest(StrictModel):
    """Payload of the ledger's ``reserve`` update."""

    agent: str
    day: str
    limit_usd: float = Field(ge=0, description="The profile's daily budget; the latest request's limit applies.")
    reservation_id: str = Field(min_length=1, description="Stable across retries: a retried reserve is granted once.")
    amount_usd: float = Field(ge=0)
    holder: str = ""
    ttl_seconds: float = Field(default=RESERVATION_TTL.total_seconds(), gt=0)


class SettleRequest(StrictModel):
    """Payload of the ledger's ``settle`` update (``actual_usd``) and ``release`` update (no cost)."""

    agent: str
    day: str
    reservation_id: str = Field(min_length=1)
    actual_usd: float = Field(default=0.0, ge=0)


class Balance(BaseModel):
    """A ledger's totals after an update."""

    limit_usd: float
    spent_usd: float
    reserved_usd: float
    remaining_usd: float


class ReserveResult(Balance):
    """Answer to a reservation: granted, or refused with a message that names the budget."""

    granted: bool
    reservation_id: str
    amount_usd: float
    message: str = ""


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


def _result(state: LedgerState, request: ReserveRequest, granted: bool, message: str = "") -> ReserveResult:
    return ReserveResult(
        granted=granted,
        reservation_id=request.reservation_id,
        amount_usd=request.amount_usd,
        message=message,
        **balance(state).model_dump(),
    )


def check_reserve(state: LedgerState, request: ReserveRequest) -> str | None:
    """Why ``request`` cannot be granted now, or ``None`` when it can (changes nothing).

    A request whose id is already known (a retry) can always be answered.
    """
    if request.reservation_id in state.reservations or request.reservation_id in state.settled:
        return None
    limit = request.limit_usd
    available = limit - state.spent_usd - state.reserved_usd
    if request.amount_usd > available + EPSILON_USD:
        probe = state.model_copy(update={"limit_usd": limit})
        return refusal_message(probe, request.amount_usd)
    return None


def reserve(state: LedgerState, request: ReserveRequest, now: datetime) -> ReserveResult:
    """Grant ``request`` (hold its amount until settled) or refuse it. Idempotent by reservation id.

    The request's limit becomes the ledger's, so a changed profile applies from its next reservation.
    """
    state.limit_usd = request.limit_usd
    if request.reservation_id in state.reservations:
        return _result(state, request, True, "already reserved")
    if request.reservation_id in state.settled:
        return _result(state, request, True, "already settled")
    why = check_reserve(state, request)
    if why is not None:
        state.refused += 1
        return _result(state, request, False, why)
    state.reservations[request.reservation_id] = Reservation(
        reservation_id=request.reservation_id,
        amount_usd=request.amount_usd,
        holder=request.holder,
        created_at=now,
        expires_at=now + timedelta(seconds=request.ttl_seconds),
    )
    state.granted += 1
    return _result(state, request, True)


def _remember(state: LedgerState, reservation_id: str, charged: float) -> None:
    state.settled[reservation_id] = charged
    while len(state.settled) > REMEMBERED_SETTLEMENTS:
        del state.settled[next(iter(state.settled))]


def settle(state: LedgerState, request: SettleRequest) -> Balance:
    """Replace a reservation with the actual cost. Idempotent by reservation id.

    An unknown id (its reservation expired meanwhile) is still charged: the money
    was spent, and the budget must say so.
    """
    if request.reservation_id in state.settled:
        return balance(state)
    state.reservations.pop(request.reservation_id, None)
    state.spent_usd += request.actual_usd
    _remember(state, request.reservation_id, request.actual_usd)
    return balance(state)


def release(state: LedgerState, request: SettleRequest) -> Balance:
    """Give a reservation back without charging it (the call never happened). Idempotent."""
    if state.reservations.pop(request.reservation_id, None) is not None:
        _remember(state, request.reservation_id, 0.0)
    return balance(state)


def expire(state: LedgerState, now: datetime) -> list[str]:
    """Drop reservations past their time to live; return their ids (oldest first)."""
    gone = [rid for rid, r in state.reservations.items() if r.expires_at <= now]
    for rid in gone:
        del state.reservations[rid]
    state.expired += len(gone)
    return gone


def next_expiry(state: LedgerState) -> datetime | None:
    """When the next open reservation expires, if any is open."""
    return min((r.expires_at for r in state.reservations.values()), default=None)


def check_request(state: LedgerState, agent: str, day: str) -> str | None:
    """Why a request for ``agent`` on ``day`` does not belong to this ledger, or ``None``."""
    if (agent, day) != (state.agent, state.day):
        return f"this is the ledger of agent {state.agent!r} on {state.day}, not of {agent!r} on {day}"
    return None
