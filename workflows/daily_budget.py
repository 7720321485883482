"""The run's side of its agent's shared daily budget (a ``BudgetLedger`` entity workflow per agent and day).

The daily budget is leased: a run asks the ledger for a chunk (a few calls'
worth, a fair share of what is left), spends it call by call without asking
again, and reports what it spent with its next request or when it ends. A
ledger that is busy or unreachable makes the run wait (phase
``waiting_for_budget``), never fail. Runs begun before leases reserve and settle
each call, as they were recorded doing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, NamedTuple, TypeVar

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from durable_agent import budget, contracts, telemetry
    from durable_agent.budget import (
        LEASE_CALLS,
        Balance,
        HeldLease,
        LeaseRequest,
        LeaseResult,
        ReserveRequest,
        ReserveResult,
        SettleRequest,
    )
    from durable_agent.carry import CarriedState
    from durable_agent.errors import failure_message
    from durable_agent.ratelimit import AcquireResult

from durable_agent.workflows.host import Host, is_cancellation
from durable_agent.workflows.progress import RunPhase
from durable_agent.workflows.settings import RunSettings

#: Calls to the shared ledgers and rate limiters: quick, retried for a few minutes while the server is busy.
LIMITS_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30), maximum_attempts=10)
LIMITS_TIMEOUT = timedelta(seconds=30)
#: Leases: retried for as long as it takes, every 30 s at most; a run waits for its budget, it never fails for the ledger.
LEASE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30), maximum_attempts=0)
#: How long a run waits before asking again when the budget left is held by other runs' leases.
LEASE_HELD_WAIT = timedelta(seconds=2)
#: Runs recorded before leases reserve and settle every call; this marks those that lease.
PATCH_DAILY_LEASES = "daily-budget-leases"
#: Patch: the wait for a lease ends after the profile's ``daily_budget_wait_seconds`` (runs before wait for good).
PATCH_LEASE_WAIT_BOUNDED = "lease-wait-bounded"
#: What a ledger or rate limiter activity returns.
_LimitsResult = TypeVar("_LimitsResult", ReserveResult, Balance, AcquireResult, LeaseResult)


class Admission(NamedTuple):
    """Whether the next model call may be made, and if not, why (naming the budget)."""

    granted: bool
    why: str = ""
    #: Not refused: the ledger never answered within ``daily_budget_wait_seconds``.
    unreachable: bool = False


class LedgerUnreachable(Exception):
    """The daily budget's ledger did not answer within the profile's ``daily_budget_wait_seconds``."""


def limits_queue_hint(queue: str | None) -> str:
    """Where a run's ledger runs, and what to check when the wait for it lasts (for the ``status`` query)."""
    where = f"on task queue {queue!r}" if queue else "on the limits task queue (by default the agents' queue + '-limits')"
    return (
        f"{where}; if this lasts, no worker may be polling it (workers started with --no-limits do not; "
        "`durable-agent worker --check` tells)"
    )


async def limits_activity(host: Host, name: str, payload: BaseModel, result_type: type[_LimitsResult], summary: str) -> _LimitsResult:
    """One call to a shared ledger or rate limiter: short, and retried while the server is busy."""
    return await host.execute_activity(
        name, payload, result_type=result_type, start_to_close_timeout=LIMITS_TIMEOUT, retry_policy=LIMITS_RETRY, summary=summary
    )


class DailyBudget:
    """The run's lease of its agent's daily budget (or, in older runs, the reservation of one call).

    Args:
        host: The workflow (clock, ids, activities, timers).
        settings: The run's profile (the agent and its daily budget).
        phase: The run's phase: waiting for the ledger shows as ``waiting_for_budget``.
        warn: Where run-level warnings go (the record book).
    """

    def __init__(self, host: Host, settings: RunSettings, phase: RunPhase, warn: Callable[[str], None]) -> None:
        self._host = host
        self._settings = settings
        self._phase = phase
        self._warn = warn
        #: The run's lease (runs begun before leases reserve per call instead).
        self._lease: HeldLease | None = None
        self._reservation: SettleRequest | None = None
        self._remaining: float | None = None

    @property
    def remaining(self) -> float | None:
        """The agent's daily budget left, as this run last saw it (``None``: no daily budget, or not asked yet)."""
        return self._remaining

    def _saw_remaining(self, remaining: float) -> None:
        self._remaining = remaining
        telemetry.set_daily_budget_remaining(self._settings.profile.name, remaining)

    async def admit(self, estimate: float, step: int) -> Admission:
        """May the model call of step ``step + 1``, estimated at ``estimate``, be made?

        With a lease that covers it, at once; else the next lease comes first (older runs
        reserve ``estimate``). The day is the workflow's own clock's, so a replay charges
        the same ledger.
        """
        agent = self._settings.profile
        if agent.daily_budget_usd is None:
            return Admission(True)
        if self._host.patched(PATCH_DAILY_LEASES):
            return await self._admit_leased(estimate)
        ids = self._host.ids()
        request = ReserveRequest(
            agent=agent.name,
            day=budget.day_of(self._host.now()),
            limit_usd=agent.daily_budget_usd,
            reservation_id=f"{ids.workflow_id}/{ids.first_execution_run_id}/{step + 1}",
            amount_usd=estimate,
            holder=ids.workflow_id,
        )
        result = await limits_activity(
            self._host, contracts.ACTIVITY_BUDGET_RESERVE, request, ReserveResult, f"reserve ${estimate:.4f} of {agent.name}'s daily budget"
        )
        self._saw_remaining(result.remaining_usd)
        if not result.granted:
            return Admission(False, result.message)
        self._reservation = SettleRequest(agent=request.agent, day=request.day, reservation_id=request.reservation_id)
        return Admission(True)

    async def _admit_leased(self, estimate: float) -> Admission:
        """Let a call of ``estimate`` go when the run's lease covers it, else lease the next chunk first."""
        agent = self._settings.profile
        day = budget.day_of(self._host.now())
        held = self._lease
        if held is not None and held.open and held.day != day:
            await self.give_back()  # a new UTC day: yesterday's ledger gets its report
            held = self._lease
        if estimate <= 0 or (held is not None and held.open and not held.renew and held.left_usd + budget.EPSILON_USD >= estimate):
            return Admission(True)
        while True:
            try:
                result = await self._lease_next(day, min_usd=estimate, want_usd=estimate * LEASE_CALLS)
            except LedgerUnreachable as exc:
                self._warn(f"DAILY_BUDGET_UNREACHABLE: {exc}")
                return Admission(False, str(exc), unreachable=True)
            if result.held:
                # The rest of the budget is held by other runs' leases, not spent: wait for them to report.
                with self._phase.waiting("waiting_for_budget", f"the daily budget of {agent.name} (held by other runs)"):
                    await self._host.sleep(LEASE_HELD_WAIT, summary="daily budget held by other runs")
                continue
            if not result.closed:
                break
            later = budget.day_of(self._host.now())
            if later == day:
                return Admission(False, f"the daily budget of agent {agent.name!r} for {day} UTC has closed")
            day = later  # the request outlived its day's ledger: lease from today's
        if not result.granted:
            return Admission(False, result.message)
        return Admission(True)

    async def _lease_next(self, day: str, *, min_usd: float, want_usd: float) -> LeaseResult:
        """Report the held lease (if any) and ask for the next, ``min_usd`` at least (0: return only)."""
        agent = self._settings.profile
        ids = self._host.ids()
        held = self._lease
        request = LeaseRequest(
            agent=agent.name,
            day=day,
            holder=f"{ids.workflow_id}/{ids.first_execution_run_id}",
            seq=(held.seq + 1) if held is not None else 1,
            used_usd=held.used_usd if held is not None and held.open else 0.0,
            min_usd=min_usd,
            want_usd=want_usd,
            limit_usd=agent.daily_budget_usd,  # the worker sends the configured one when it has it
            sent_at=self._host.now(),
        )
        if held is not None and held.open and held.day != day:
            raise AssertionError("a lease is reported to its own day's ledger")  # _admit_leased returns it first
        what = (
            f"the daily budget of {agent.name} ({'returning the lease' if min_usd <= 0 else 'a lease'}, {day} UTC), "
            f"from its ledger {limits_queue_hint(agent.limits_task_queue)}"
        )
        # At most the profile's wait in all (runs begun before wait for as long as it takes).
        bounded = {"schedule_to_close_timeout": timedelta(seconds=agent.daily_budget_wait_seconds)} if self._host.patched(PATCH_LEASE_WAIT_BOUNDED) else {}
        with self._phase.detour("waiting_for_budget", what):
            try:
                result = await self._host.execute_activity(
                    contracts.ACTIVITY_BUDGET_LEASE, request, result_type=LeaseResult, start_to_close_timeout=LIMITS_TIMEOUT,
                    retry_policy=LEASE_RETRY, summary=f"{'return' if min_usd <= 0 else 'lease'} {agent.name}'s daily budget ({day})",
                    **bounded,
                )
            except ActivityError as exc:
                if is_cancellation(exc) or not bounded:
                    raise
                raise LedgerUnreachable(
                    f"the daily budget of agent {agent.name!r} could not be reached within {agent.daily_budget_wait_seconds:g} s "
                    f"(daily_budget_wait_seconds): its ledger runs {limits_queue_hint(agent.limits_task_queue)} "
                    f"[{failure_message(exc)}]"
                ) from None
        # The previous lease is closed (and charged) unless the day had closed.
        self._lease = HeldLease(
            day=day, seq=request.seq, amount_usd=result.amount_usd, open=result.granted and result.amount_usd > 0,
            ledger_remaining_usd=result.remaining_usd, limit_usd=result.limit_usd,
        ) if not result.closed else (held.model_copy(update={"seq": request.seq, "open": False}) if held else None)
        if not result.closed:
            self._saw_remaining(self._lease.daily_remaining_usd if self._lease else result.remaining_usd)
        return result

    def holds_lease(self) -> bool:
        """Whether the run holds an open lease (:meth:`give_back` will report to the ledger)."""
        return self._lease is not None and self._lease.open

    async def give_back(self) -> None:
        """Report what the run spent from its lease and give the rest back (the run ends, or the day changed)."""
        held = self._lease
        if held is None or not held.open:
            return
        try:
            result = await self._lease_next(held.day, min_usd=0.0, want_usd=0.0)
        except LedgerUnreachable as exc:
            self._warn(f"DAILY_BUDGET_UNSETTLED: ${held.used_usd:.6f} spent on {held.day} was not reported: {exc}")
            return
        if (result.closed or not result.granted) and held.used_usd > 0:
            why = "after it closed" if result.closed else f"too late to be counted ({result.message})"
            self._warn(f"DAILY_BUDGET_UNSETTLED: ${held.used_usd:.6f} spent on {held.day} reached its ledger {why}")

    async def settle(self, actual: float, configured_usd: float | None, step: int) -> None:
        """Charge step ``step``'s ``actual`` cost to the run's lease (or, for older runs, settle its reservation).

        ``configured_usd`` is the daily budget the worker that made the call has
        configured now: lower than the lease's, the lease is renewed before the
        next call, so a lowered budget holds for runs already going.
        """
        held = self._lease
        if held is not None and held.open:
            held.used_usd += actual  # reported with the next lease request
            if configured_usd is not None and configured_usd < held.limit_usd - budget.EPSILON_USD:
                held.renew = True
            self._saw_remaining(held.daily_remaining_usd)
            return
        await self._close_reservation(actual, step)

    async def release(self, step: int) -> None:
        """Step ``step``'s call failed for good: nothing to charge (older runs give their reservation back)."""
        await self._close_reservation(None, step)

    async def _close_reservation(self, actual: float | None, step: int) -> None:
        """Settle (``actual`` cost) or release (``None``) the open daily reservation, if any.

        A ledger that stays unreachable does not stop the run: the reservation then
        expires on its own, and the run says so in its warnings.
        """
        reservation, self._reservation = self._reservation, None
        if reservation is None:
            return
        name = contracts.ACTIVITY_BUDGET_RELEASE if actual is None else contracts.ACTIVITY_BUDGET_SETTLE
        payload = reservation.model_copy(update={"actual_usd": actual or 0.0})
        try:
            balance = await limits_activity(self._host, name, payload, Balance, f"{name.removeprefix('budget_')} daily reservation of step {step}")
        except ActivityError as exc:
            if is_cancellation(exc):
                raise
            self._warn(f"DAILY_BUDGET_UNSETTLED: reservation {reservation.reservation_id} left to expire ({failure_message(exc)})")
            return
        self._saw_remaining(balance.remaining_usd)

    def carry(self) -> dict[str, Any]:
        """This part of :class:`CarriedState`: the open lease (a continuation spends on from it)."""
        return {"daily_lease": self._lease}

    def restore(self, carried: CarriedState) -> None:
        self._lease = carried.daily_lease
