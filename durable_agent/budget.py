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


def _remember(state: LedgerState, reservation_id: str, charged: float, now: datetime | None) -> None:
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


def settle(state: LedgerState, request: SettleRequest, now: datetime | None = None) -> Balance:
    """Replace a reservation with the actual cost. Idempotent by reservation id.

    An unknown id (its reservation expired meanwhile) is still charged: the money
    was spent, and the budget must say so.
    """
    if request.reservation_id in state.settled:
        return balance(state)
    state.reservations.pop(request.reservation_id, None)
    state.spent_usd += request.actual_usd
    _remember(state, request.reservation_id, request.actual_usd, now)
    return balance(state)


def release(state: LedgerState, request: SettleRequest, now: datetime | None = None) -> Balance:
    """Give a reservation back without charging it (the call never happened). Idempotent."""
    if state.reservations.pop(request.reservation_id, None) is not None:
        _remember(state, request.reservation_id, 0.0, now)
    return balance(state)


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


# ---------------------------------------------------------------------- leases


#: A run asks for this many calls' worth of budget at a time (its fair share permitting).
LEASE_CALLS = 10
#: Why a lease is not granted yet although the budget is not spent.
HELD_MESSAGE = "what is left of the daily budget is held by other runs' leases; ask again shortly"
#: How long a lease holds budget unreported: longer than a run takes between two model calls.
LEASE_TTL = timedelta(hours=1)


class LeaseRequest(StrictModel):
    """Payload of the ledger's ``lease`` update: report what the previous lease paid for, ask for the next.

    A run's leases are numbered: request ``seq`` closes lease ``seq - 1`` (charging
    ``used_usd``, what the run spent from it) and opens lease ``seq``. ``min_usd``
    is the next call's estimate, the least worth holding; ``0`` only returns.
    """

    agent: str
    day: str
    holder: str = Field(min_length=1, description="The run: workflow id / first run id.")
    seq: int = Field(ge=1)
    used_usd: float = Field(default=0.0, ge=0, description="Spent from lease seq - 1 (charged once).")
    min_usd: float = Field(default=0.0, ge=0, description="The next call's estimate; 0 returns the lease and asks for none.")
    want_usd: float = Field(default=0.0, ge=0, description="What the run would like to hold (a few calls' worth).")
    limit_usd: float | None = Field(default=None, ge=0, description="The configured daily budget (None: keep the ledger's).")
    sent_at: datetime | None = Field(default=None, description="When the run made the request (its workflow clock).")
    ttl_seconds: float = Field(default=LEASE_TTL.total_seconds(), gt=0)


class LeaseResult(Balance):
    """Answer to a lease request: the lease granted (``amount_usd`` to spend), or a refusal naming the budget."""

    granted: bool
    seq: int
    amount_usd: float = 0.0
    message: str = ""
    closed: bool = Field(default=False, description="The day's ledger has closed: lease from today's instead.")
    held: bool = Field(default=False, description="Not now: what is left is held by other runs' leases; ask again shortly.")


class HeldLease(BaseModel):
    """A run's side of its lease: carried in the run's state (and across continue-as-new)."""

    day: str
    seq: int
    amount_usd: float = 0.0
    used_usd: float = 0.0
    open: bool = False
    ledger_remaining_usd: float = Field(default=0.0, description="What the ledger had left, beyond every lease, when it answered.")
    limit_usd: float = Field(default=0.0, description="The daily budget the lease was granted under.")
    renew: bool = Field(default=False, description="The configured budget went down since: ask the ledger before the next call.")

    @property
    def left_usd(self) -> float:
        """What this run may still spend from its lease."""
        return self.amount_usd - self.used_usd if self.open else 0.0

    @property
    def daily_remaining_usd(self) -> float:
        """The day's budget left as this run knows it: the ledger's, plus what is left of its own lease."""
        return round(max(0.0, self.ledger_remaining_usd + max(0.0, self.left_usd)), 9)


def lease_size(state: LedgerState, request: LeaseRequest, available: float) -> float:
    """How much to lease: what the run wants, at most a fair share of what is left, at least its next call.

    The fair share is half of what is left divided among the runs holding leases
    and this one, so many runs on a small budget all get calls, none is starved
    by an early one holding much, and leases shrink to one call each as the day's
    budget runs out.
    """
    share = available / (2 * (len(state.leases) + 1))
    return min(available, max(request.min_usd, min(request.want_usd, share)))


def lease(state: LedgerState, request: LeaseRequest, now: datetime) -> LeaseResult:
    """Close the run's previous lease (charging what it used) and grant the next, or refuse it.

    Idempotent by ``(holder, seq)``: a retried request is answered as the first
    time. The day's spend stays within the limit as long as each call costs no
    more than the estimate it was admitted with: a lease is granted only from
    what is neither spent nor leased, and a run calls only within its lease.
    """
    memo = state.holders.get(request.holder)
    if memo is not None and memo.seq >= request.seq:  # a retry: answered again, nothing applied
        open_lease = state.leases.get(request.holder)
        if open_lease is not None and open_lease.seq == request.seq:
            return _lease_result(state, request, True, amount=open_lease.amount_usd)
        if memo.held:
            return _lease_result(state, request, False, HELD_MESSAGE).model_copy(update={"held": True})
        message = refusal_message(state, request.min_usd) if memo.refused else "returned"
        return _lease_result(state, request, not memo.refused, message)
    if memo is None and request.sent_at is not None and request.sent_at < now - REMEMBER_FOR:
        # Older than anything remembered: it may have been applied already; charging it again could double count.
        return _lease_result(state, request, False, "the request is older than the ledger remembers; ignored")
    if request.limit_usd is not None:
        state.limit_usd = request.limit_usd
    state.leases.pop(request.holder, None)
    state.spent_usd += request.used_usd
    state.lease_requests += 1
    if request.min_usd <= 0:
        answer = _lease_result(state, request, True, "returned")
    else:
        available = state.limit_usd - state.spent_usd - state.reserved_usd
        if request.min_usd > available + EPSILON_USD and state.spent_usd + request.min_usd <= state.limit_usd + EPSILON_USD and state.leases:
            # Not spent, only held by other runs' leases: they report or give it back soon; ask again.
            answer = _lease_result(state, request, False, HELD_MESSAGE).model_copy(update={"held": True})
        elif request.min_usd > available + EPSILON_USD:
            state.refused += 1
            answer = _lease_result(state, request, False, refusal_message(state, request.min_usd))
        else:
            amount = lease_size(state, request, available)
            state.leases[request.holder] = Lease(
                holder=request.holder, seq=request.seq, amount_usd=amount, created_at=now,
                expires_at=now + timedelta(seconds=request.ttl_seconds),
            )
            state.granted += 1
            answer = _lease_result(state, request, True, amount=amount)
    state.holders[request.holder] = HolderMemo(seq=request.seq, refused=not answer.granted, held=answer.held, seen_at=now)
    return answer


def _lease_result(state: LedgerState, request: LeaseRequest, granted: bool, message: str = "", amount: float = 0.0) -> LeaseResult:
    return LeaseResult(granted=granted, seq=request.seq, amount_usd=amount, message=message, **balance(state).model_dump())
