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

The state and what reservations and leases share live in
:mod:`durable_agent.ledger_state`, leases (a run holding a chunk of the day's
budget) in :mod:`durable_agent.leases`; every name stays importable from here.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import Field

from durable_agent.leases import (
    HELD_MESSAGE,
    LEASE_CALLS,
    LEASE_TTL,
    HeldLease,
    LeaseRequest,
    LeaseResult,
    lease,
    lease_size,
)
from durable_agent.ledger_state import (
    EPSILON_USD,
    LEDGER_GRACE,
    REMEMBER_FOR,
    RESERVATION_TTL,
    Balance,
    HolderMemo,
    Lease,
    LedgerStart,
    LedgerState,
    Reservation,
    balance,
    check_request,
    day_end,
    day_of,
    expire,
    forget,
    ledger_id,
    next_expiry,
    refusal_message,
    remember_settled,
)
from durable_agent.schemas import StrictModel

__all__ = [
    "Balance",
    "EPSILON_USD",
    "HELD_MESSAGE",
    "HeldLease",
    "HolderMemo",
    "LEASE_CALLS",
    "LEASE_TTL",
    "LEDGER_GRACE",
    "Lease",
    "LeaseRequest",
    "LeaseResult",
    "LedgerStart",
    "LedgerState",
    "REMEMBER_FOR",
    "RESERVATION_TTL",
    "Reservation",
    "ReserveRequest",
    "ReserveResult",
    "SettleRequest",
    "balance",
    "check_request",
    "check_reserve",
    "day_end",
    "day_of",
    "expire",
    "forget",
    "lease",
    "lease_size",
    "ledger_id",
    "next_expiry",
    "refusal_message",
    "release",
    "remember_settled",
    "reserve",
    "settle",
]


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


class ReserveResult(Balance):
    """Answer to a reservation: granted, or refused with a message that names the budget."""

    granted: bool
    reservation_id: str
    amount_usd: float
    message: str = ""


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


def settle(state: LedgerState, request: SettleRequest, now: datetime | None = None) -> Balance:
    """Replace a reservation with the actual cost. Idempotent by reservation id.

    An unknown id (its reservation expired meanwhile) is still charged: the money
    was spent, and the budget must say so.
    """
    if request.reservation_id in state.settled:
        return balance(state)
    state.reservations.pop(request.reservation_id, None)
    state.spent_usd += request.actual_usd
    remember_settled(state, request.reservation_id, request.actual_usd, now)
    return balance(state)


def release(state: LedgerState, request: SettleRequest, now: datetime | None = None) -> Balance:
    """Give a reservation back without charging it (the call never happened). Idempotent."""
    if state.reservations.pop(request.reservation_id, None) is not None:
        remember_settled(state, request.reservation_id, 0.0, now)
    return balance(state)
