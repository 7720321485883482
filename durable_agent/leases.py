"""Daily budget leases: a run holds a chunk of the day's budget and spends it call by call.

A run asks its agent's ledger for a lease (a few calls' worth, at most a fair
share of what is left), spends it without asking again, and reports what it spent
with its next request, which closes the lease and opens the next
(:func:`lease`). Pure functions over :class:`~durable_agent.ledger_state.LedgerState`,
like the reservations of :mod:`durable_agent.budget`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, Field

from durable_agent.ledger_state import (
    EPSILON_USD,
    REMEMBER_FOR,
    Balance,
    HolderMemo,
    Lease,
    LedgerState,
    balance,
    refusal_message,
)
from durable_agent.schemas import StrictModel

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
