"""Daily budget arithmetic (durable_agent.budget), without Temporal."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from durable_agent import budget
from durable_agent.budget import LedgerState, ReserveRequest, SettleRequest

T0 = datetime(2025, 3, 14, 12, 0, tzinfo=timezone.utc)


def _state(limit: float = 1.0, spent: float = 0.0) -> LedgerState:
    return LedgerState(agent="support", day="2025-03-14", limit_usd=limit, spent_usd=spent)


def _reserve(rid: str, amount: float, limit: float = 1.0, ttl: float = 3600.0) -> ReserveRequest:
    return ReserveRequest(agent="support", day="2025-03-14", limit_usd=limit, reservation_id=rid, amount_usd=amount, ttl_seconds=ttl)


def _settle(rid: str, actual: float = 0.0) -> SettleRequest:
    return SettleRequest(agent="support", day="2025-03-14", reservation_id=rid, actual_usd=actual)


class TestDays:
    """Ledgers are per UTC day, with ids people can type."""

    @pytest.mark.parametrize(
        ("now", "day"),
        [
            (datetime(2025, 3, 14, 23, 59, 59, tzinfo=timezone.utc), "2025-03-14"),
            (datetime(2025, 3, 15, 0, 0, tzinfo=timezone.utc), "2025-03-15"),
            # 20:00 in New York on the 14th is already the 15th in UTC.
            (datetime(2025, 3, 14, 20, 0, tzinfo=timezone(timedelta(hours=-5))), "2025-03-15"),
            (datetime(2025, 3, 14, 8, 0), "2025-03-14"),  # naive: taken as UTC
        ],
    )
    def test_day_of(self, now: datetime, day: str) -> None:
        assert budget.day_of(now) == day

    def test_day_end_and_ledger_id(self) -> None:
        assert budget.day_end("2024-12-31") == datetime(2025, 1, 1, tzinfo=timezone.utc)
        assert budget.ledger_id("support", "2025-03-14") == "budget-support-2025-03-14"
        # Off the default queue a ledger belongs to its own deployment.
        assert budget.ledger_id("support", "2025-03-14", "staging") == "budget-support-2025-03-14@staging"


class TestReserve:
    """Grants hold budget until settled; what is held counts as spent."""

    @pytest.mark.parametrize(
        ("limit", "spent", "held", "amount", "granted"),
        [
            (1.0, 0.0, 0.0, 1.0, True),  # exactly the limit
            (1.0, 0.0, 0.0, 1.0000001, False),
            (1.0, 0.6, 0.0, 0.4, True),
            (1.0, 0.6, 0.3, 0.2, False),  # a reservation held by another run counts
            (1.0, 0.6, 0.3, 0.1, True),
            (0.0, 0.0, 0.0, 0.0, True),  # a free call passes even a zero budget
            (0.0, 0.0, 0.0, 0.001, False),
            (0.3, 0.1 + 0.2 - 0.3, 0.0, 0.3, True),  # float drift stays within the limit
        ],
    )
    def test_grant_or_refuse(self, limit: float, spent: float, held: float, amount: float, granted: bool) -> None:
        state = _state(limit, spent)
        if held:
            assert budget.reserve(state, _reserve("other", held, limit), T0).granted
        result = budget.reserve(state, _reserve("r1", amount, limit), T0)
        assert result.granted is granted
        assert ("r1" in state.reservations) is granted
        assert (state.granted, state.refused) == ((1 if held else 0) + granted, 0 if granted else 1)

    def test_refusal_names_the_budget_and_what_is_left(self) -> None:
        state = _state(0.50, 0.45)
        result = budget.reserve(state, _reserve("r1", 0.10, 0.50), T0)
        assert not result.granted
        assert "daily budget of agent 'support'" in result.message
        assert "$0.5000 for 2025-03-14" in result.message
        assert "$0.0500 left" in result.message and "up to $0.1000" in result.message
        assert result.remaining_usd == pytest.approx(0.05)

    def test_a_retried_reservation_is_granted_once(self) -> None:
        state = _state(1.0)
        first = budget.reserve(state, _reserve("r1", 0.6), T0)
        again = budget.reserve(state, _reserve("r1", 0.6), T0 + timedelta(seconds=5))
        assert first.granted and again.granted
        assert state.reserved_usd == pytest.approx(0.6) and state.granted == 1
        # A retry after the settle is still answered, not reserved anew.
        budget.settle(state, _settle("r1", 0.5))
        assert budget.reserve(state, _reserve("r1", 0.6), T0).granted
        assert state.reservations == {} and state.spent_usd == pytest.approx(0.5)

    def test_the_latest_limit_applies(self) -> None:
        state = _state(1.0, 0.9)
        assert budget.reserve(state, _reserve("r1", 0.5, limit=2.0), T0).granted
        assert state.limit_usd == 2.0

    def test_check_reserve_changes_nothing(self) -> None:
        state = _state(1.0, 0.9)
        assert budget.check_reserve(state, _reserve("r1", 0.05)) is None
        assert "daily budget" in (budget.check_reserve(state, _reserve("r1", 0.5)) or "")
        assert state.reservations == {} and state.refused == 0


class TestSettleAndRelease:
    """Settling replaces the hold with the actual cost, once; releasing gives it back."""

    def test_settle_charges_the_actual_cost(self) -> None:
        state = _state(1.0)
        budget.reserve(state, _reserve("r1", 0.4), T0)
        balance = budget.settle(state, _settle("r1", 0.1))
        assert (balance.spent_usd, balance.reserved_usd, balance.remaining_usd) == pytest.approx((0.1, 0.0, 0.9))

    def test_settle_is_idempotent(self) -> None:
        state = _state(1.0)
        budget.reserve(state, _reserve("r1", 0.4), T0)
        budget.settle(state, _settle("r1", 0.1))
        budget.settle(state, _settle("r1", 0.1))
        assert state.spent_usd == pytest.approx(0.1)

    def test_a_late_settle_of_an_expired_reservation_still_charges(self) -> None:
        state = _state(1.0)
        budget.reserve(state, _reserve("r1", 0.4, ttl=60), T0)
        assert budget.expire(state, T0 + timedelta(seconds=61)) == ["r1"]
        budget.settle(state, _settle("r1", 0.3))
        assert state.spent_usd == pytest.approx(0.3)

    def test_release_gives_the_hold_back_uncharged_and_is_idempotent(self) -> None:
        state = _state(1.0)
        budget.reserve(state, _reserve("r1", 0.4), T0)
        budget.release(state, _settle("r1"))
        budget.release(state, _settle("r1"))
        assert (state.spent_usd, state.reserved_usd) == (0.0, 0.0)
        # A settle that arrives after the release does not charge it either.
        budget.settle(state, _settle("r1", 0.4))
        assert state.spent_usd == 0.0

    def test_settlements_are_remembered_by_time_not_by_count(self) -> None:
        state = _state(1e6)
        for i in range(5000):  # far more than any count-based memory kept
            budget.reserve(state, _reserve(f"r{i}", 0.01, limit=1e6), T0)
            budget.settle(state, _settle(f"r{i}", 0.01), T0)
        budget.forget(state, T0 + budget.REMEMBER_FOR - timedelta(seconds=1))
        # A late retry of the very first settle is still answered, not charged again.
        budget.settle(state, _settle("r0", 0.01), T0 + budget.REMEMBER_FOR - timedelta(seconds=1))
        assert state.spent_usd == pytest.approx(50.0)
        budget.forget(state, T0 + budget.REMEMBER_FOR + timedelta(seconds=1))
        assert state.settled == {} and state.settled_at == {}


def _lease(holder: str, seq: int, used: float = 0.0, need: float = 0.1, want: float = 1.0, **kw: object) -> budget.LeaseRequest:
    return budget.LeaseRequest(agent="support", day="2025-03-14", holder=holder, seq=seq, used_usd=used, min_usd=need, want_usd=want, **kw)  # type: ignore[arg-type]


class TestLeases:
    """Runs hold chunks of the day's budget and report what they spent with the next request."""

    def test_a_lease_is_a_fair_share_and_at_least_the_next_call(self) -> None:
        state = _state(1.0)
        first = budget.lease(state, _lease("a", 1), T0)
        second = budget.lease(state, _lease("b", 1), T0)
        assert first.granted and first.amount_usd == pytest.approx(0.5)  # half of what is left, alone
        assert second.amount_usd == pytest.approx(0.125)  # half of the 0.5 left, shared with a's lease
        assert state.remaining_usd == pytest.approx(0.375)

    def test_renewing_charges_what_was_used_and_returning_frees_the_rest(self) -> None:
        state = _state(1.0)
        budget.lease(state, _lease("a", 1), T0)
        renewed = budget.lease(state, _lease("a", 2, used=0.3, need=0.1, want=0.2), T0)
        assert renewed.amount_usd == pytest.approx(0.2) and state.spent_usd == pytest.approx(0.3)
        returned = budget.lease(state, _lease("a", 3, used=0.15, need=0.0), T0)
        assert returned.granted and state.leases == {}
        assert state.spent_usd == pytest.approx(0.45) and state.remaining_usd == pytest.approx(0.55)

    def test_a_retried_request_is_answered_not_charged_again(self) -> None:
        state = _state(1.0)
        budget.lease(state, _lease("a", 1), T0)
        again = [budget.lease(state, _lease("a", 2, used=0.3), T0 + timedelta(seconds=s)) for s in (0, 60, 3600)]
        assert all(a == again[0] for a in again) and state.spent_usd == pytest.approx(0.3)
        assert state.lease_requests == 2

    def test_refused_when_the_next_call_does_not_fit(self) -> None:
        state = _state(0.25, spent=0.2)
        refused = budget.lease(state, _lease("a", 1, need=0.1), T0)
        assert not refused.granted and "has $0.0500 left" in refused.message
        # Spend never passes the limit: leases are granted only from what nobody spent or holds.
        state = _state(1.0)
        held = 0.0
        for i in range(40):
            answer = budget.lease(state, _lease(f"r{i}", 1, need=0.05, want=0.5), T0)
            held += answer.amount_usd
            assert held <= 1.0 + budget.EPSILON_USD
        assert held == pytest.approx(1.0 - state.remaining_usd)

    def test_the_configured_limit_applies_to_running_runs(self) -> None:
        state = _state(1.0)
        budget.lease(state, _lease("a", 1, need=0.1, want=0.1), T0)
        lowered = budget.lease(state, _lease("a", 2, used=0.1, need=0.1, limit_usd=0.15), T0)
        assert not lowered.granted and state.limit_usd == 0.15
        # A request without a limit keeps the ledger's.
        budget.lease(state, _lease("b", 1, need=0.0), T0)
        assert state.limit_usd == 0.15

    def test_an_expired_lease_frees_the_budget_and_a_late_report_still_charges(self) -> None:
        state = _state(1.0)
        budget.lease(state, _lease("a", 1, ttl_seconds=60), T0)
        assert budget.next_expiry(state) == T0 + timedelta(seconds=60)
        assert budget.expire(state, T0 + timedelta(seconds=60)) == ["lease of a"]
        assert state.remaining_usd == pytest.approx(1.0)
        budget.lease(state, _lease("a", 2, used=0.2, need=0.0), T0 + timedelta(seconds=90))
        assert state.spent_usd == pytest.approx(0.2)

    def test_closed_runs_are_forgotten_by_time_and_stale_requests_ignored(self) -> None:
        state = _state(1.0)
        budget.lease(state, _lease("a", 1), T0)
        budget.lease(state, _lease("a", 2, used=0.2, need=0.0), T0)
        budget.forget(state, T0 + budget.REMEMBER_FOR - timedelta(seconds=1))
        assert "a" in state.holders
        later = T0 + budget.REMEMBER_FOR + timedelta(seconds=1)
        budget.forget(state, later)
        assert state.holders == {}
        stale = budget.lease(state, _lease("a", 2, used=0.2, need=0.0, sent_at=T0), later)
        assert not stale.granted and state.spent_usd == pytest.approx(0.2)


class TestExpiry:
    """A reservation nobody settles stops holding the budget after its time to live."""

    def test_expire_frees_the_budget(self) -> None:
        state = _state(1.0)
        budget.reserve(state, _reserve("old", 0.7, ttl=60), T0)
        budget.reserve(state, _reserve("new", 0.2, ttl=60), T0 + timedelta(seconds=30))
        assert budget.next_expiry(state) == T0 + timedelta(seconds=60)
        assert budget.expire(state, T0 + timedelta(seconds=59)) == []
        assert budget.expire(state, T0 + timedelta(seconds=60)) == ["old"]
        assert state.expired == 1 and state.remaining_usd == pytest.approx(0.8)
        assert budget.next_expiry(state) == T0 + timedelta(seconds=90)

    def test_nothing_open_means_no_expiry(self) -> None:
        assert budget.next_expiry(_state()) is None


def test_check_request_names_the_wrong_ledger() -> None:
    state = _state()
    assert budget.check_request(state, "support", "2025-03-14") is None
    assert "not of 'sales' on 2025-03-14" in (budget.check_request(state, "sales", "2025-03-14") or "")


def test_a_budget_held_by_other_leases_is_not_refused() -> None:
    """Not spent, only leased to others: the run is told to ask again, and is refused only once it is spent."""
    state = _state(0.3)
    budget.lease(state, _lease("a", 1, need=0.1, want=0.3), T0)  # a's fair share: half of 0.3
    held = budget.lease(state, _lease("b", 1, need=0.2, want=0.2), T0)
    assert held.held and not held.granted and state.refused == 0
    assert budget.lease(state, _lease("b", 1, need=0.2, want=0.2), T0) == held  # a retry, answered the same
    budget.lease(state, _lease("a", 2, used=0.05, need=0.0), T0)  # a gives the rest back
    assert budget.lease(state, _lease("b", 2, need=0.2, want=0.2), T0).granted
    spent = _state(0.3, spent=0.25)
    assert not budget.lease(spent, _lease("c", 1, need=0.1), T0).held  # truly spent: refused
