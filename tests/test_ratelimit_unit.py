"""Token bucket arithmetic (durable_agent.ratelimit), without Temporal."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from durable_agent import ratelimit
from durable_agent.ratelimit import AcquireRequest, BucketState

T0 = datetime(2025, 3, 14, 12, 0, tzinfo=timezone.utc)


def _ask(rid: str, limit: int = 2, period: float = 10.0, wait: bool = True) -> AcquireRequest:
    return AcquireRequest(tool="search", request_id=rid, limit=limit, period_seconds=period, wait=wait)


def _seconds(slot: datetime) -> float:
    return (slot - T0).total_seconds()


class TestSlots:
    """Each caller gets the earliest slot the bucket allows, in the order they asked."""

    @pytest.mark.parametrize(
        ("limit", "period", "asks_at", "slots"),
        [
            # 2 per 10 s, six callers at once: two go now, two at 10 s, two at 20 s.
            (2, 10.0, [0, 0, 0, 0, 0, 0], [0, 0, 10, 10, 20, 20]),
            # Callers spread out enough never wait.
            (2, 10.0, [0, 5, 10, 15], [0, 5, 10, 15]),
            # A token comes back one period after the call that took it.
            (2, 10.0, [0, 3, 4, 12], [0, 3, 10, 13]),
            # 1 per second: a strict queue.
            (1, 1.0, [0, 0, 0, 0.5], [0, 1, 2, 3]),
            # A long pause refills the whole bucket.
            (3, 60.0, [0, 0, 0, 600, 600, 600, 600], [0, 0, 0, 600, 600, 600, 660]),
        ],
    )
    def test_slots(self, limit: int, period: float, asks_at: list[float], slots: list[float]) -> None:
        state = BucketState(tool="search")
        got = []
        for i, at in enumerate(asks_at):
            result = ratelimit.acquire(state, _ask(f"r{i}", limit, period), T0 + timedelta(seconds=at))
            assert result.granted
            assert result.wait_seconds == pytest.approx(max(0.0, _seconds(result.go_at) - at))
            got.append(_seconds(result.go_at))
        assert got == slots

    @pytest.mark.parametrize(("limit", "period"), [(2, 10.0), (3, 7.0), (1, 1.0)])
    def test_never_more_than_limit_in_any_window(self, limit: int, period: float) -> None:
        state = BucketState(tool="search")
        asks = [0, 0, 0.5, 1, 1, 2, 9, 9.5, 10, 10, 30, 30, 30, 31]
        slots = sorted(_seconds(ratelimit.acquire(state, _ask(f"r{i}", limit, period), T0 + timedelta(seconds=at)).go_at) for i, at in enumerate(asks))
        for i in range(len(slots) - limit):
            assert slots[i + limit] - slots[i] >= period

    def test_a_retried_acquire_gets_the_same_slot(self) -> None:
        state = BucketState(tool="search")
        for i in range(3):
            ratelimit.acquire(state, _ask(f"r{i}"), T0)
        again = ratelimit.acquire(state, _ask("r2"), T0 + timedelta(seconds=1))
        assert _seconds(again.go_at) == 10 and again.wait_seconds == pytest.approx(9)
        assert state.granted == 3 and len(state.lanes[''].grants) == 3

    def test_callers_with_a_stricter_limit_wait_longer_on_the_shared_history(self) -> None:
        state = BucketState(tool="search")
        ratelimit.acquire(state, _ask("loose-1", limit=5, period=10), T0)
        ratelimit.acquire(state, _ask("loose-2", limit=5, period=10), T0)
        strict = ratelimit.acquire(state, _ask("strict", limit=2, period=10), T0)
        assert _seconds(strict.go_at) == 10


class TestLanes:
    """Each limit owner is held to its own limit; mixed limits on one tool never queue behind each other."""

    def test_a_strict_caller_does_not_delay_a_loose_one(self) -> None:
        state = BucketState(tool="search")
        hourly = [ratelimit.acquire(state, _ask(f"h{i}", 1, 3600).model_copy(update={"lane": "agent:slow"}), T0) for i in range(3)]
        loose = [ratelimit.acquire(state, _ask(f"l{i}", 30, 60), T0 + timedelta(seconds=1)) for i in range(31)]
        assert [_seconds(r.go_at) for r in hourly] == [0, 3600, 7200]
        # The 30/min caller goes at once 30 times and waits one period for the 31st, never an hour.
        assert [_seconds(r.go_at) for r in loose] == [1] * 30 + [61]

    def test_lanes_from_an_old_limiter_state_are_read(self) -> None:
        old = BucketState.model_validate({"tool": "search", "grants": [T0.isoformat(), T0.isoformat()], "horizon_seconds": 10})
        assert _seconds(ratelimit.acquire(old, _ask("r"), T0 + timedelta(seconds=1)).go_at) == 10


class TestWeightedWindows:
    """A model's limits: requests and tokens per window, each call weighing its estimate."""

    WINDOWS = {
        "requests": ratelimit.Window(amount=50, period_seconds=60),
        "input_tokens": ratelimit.Window(amount=1000, period_seconds=60),
    }

    def _ask(self, rid: str, tokens: float, observed: list[ratelimit.Observation] | None = None) -> AcquireRequest:
        return AcquireRequest(
            tool="model:m", request_id=rid, lane="model", windows=self.WINDOWS, weights={"input_tokens": tokens}, observed=observed or []
        )

    def test_no_window_holds_more_tokens_than_the_limit(self) -> None:
        state = BucketState(tool="model:m")
        slots = [ratelimit.acquire(state, self._ask(f"r{i}", 300), T0 + timedelta(seconds=i)).go_at for i in range(7)]
        assert [_seconds(s) for s in slots] == [0, 1, 2, 60, 61, 62, 120]

    def test_a_call_bigger_than_the_window_goes_alone(self) -> None:
        state = BucketState(tool="model:m")
        first = ratelimit.acquire(state, self._ask("small", 10), T0)
        huge = ratelimit.acquire(state, self._ask("huge", 5000), T0)
        assert _seconds(first.go_at) == 0 and _seconds(huge.go_at) == 60

    def test_headers_that_say_less_is_left_hold_the_difference_back(self) -> None:
        state = BucketState(tool="model:m")
        ratelimit.acquire(state, self._ask("r0", 100), T0)
        # The provider says only 200 tokens are left until T0 + 30 s (someone else spends too).
        seen = ratelimit.Observation(dimension="input_tokens", remaining=200, reset_at=T0 + timedelta(seconds=30), observed_at=T0)
        slot = ratelimit.acquire(state, self._ask("r1", 300, [seen]), T0 + timedelta(seconds=1)).go_at
        assert _seconds(slot) == 30 and state.adjusted == 1
        # Headers that say more is left than the lane counted change nothing.
        plenty = seen.model_copy(update={"remaining": 1000})
        assert not ratelimit.observe(state.lanes["model"], self.WINDOWS, plenty)


class TestFailFast:
    """A caller that does not wait is refused with a message the model can read."""

    def test_refused_when_no_slot_is_free_now(self) -> None:
        state = BucketState(tool="search")
        assert ratelimit.acquire(state, _ask("r1", limit=1, period=3600, wait=False), T0).granted
        refused = ratelimit.acquire(state, _ask("r2", limit=1, period=3600, wait=False), T0 + timedelta(seconds=60))
        assert not refused.granted
        assert refused.wait_seconds == pytest.approx(3540)
        assert "RATE_LIMITED: search allows 1 call per 3600 s" in refused.message
        # A refusal takes no slot: the next waiting caller is not pushed back by it.
        assert state.refused == 1 and len(state.lanes[''].grants) == 1

    def test_granted_when_a_slot_is_free(self) -> None:
        state = BucketState(tool="search")
        assert ratelimit.acquire(state, _ask("r1", wait=False), T0).granted


class TestHousekeeping:
    """State stays small: old slots and request ids are forgotten."""

    def test_prune_keeps_only_the_window(self) -> None:
        state = BucketState(tool="search")
        for i in range(4):
            ratelimit.acquire(state, _ask(f"r{i}"), T0)
        later = T0 + ratelimit.IDLE_AFTER + timedelta(seconds=60)
        ratelimit.prune(state, later)
        assert state.lanes == {} and state.requests == {}

    def test_idle_since(self) -> None:
        state = BucketState(tool="search")
        assert ratelimit.idle_since(state) is None
        for i in range(3):
            ratelimit.acquire(state, _ask(f"r{i}"), T0)
        assert ratelimit.idle_since(state) == T0 + timedelta(seconds=20)

    def test_limiter_id_and_description(self) -> None:
        assert ratelimit.limiter_id("search_kb") == "ratelimit-search_kb"
        assert ratelimit.limiter_id("search_kb", "staging") == "ratelimit-search_kb@staging"
        assert ratelimit.describe_limit(1, 60) == "1 call per 60 s"
        assert ratelimit.describe_limit(2, 10.0) == "2 calls per 10 s"
