"""Shared limits: the agent's daily budget (a ``BudgetLedger``) and tool rate limits (``RateLimiter``).

Both are entity workflows shared by every run on every worker; the run talks
to them through short activities and waits for a rate-limit slot on a durable timer.

The daily budget is leased: a run asks the ledger for a chunk (a few calls'
worth, a fair share of what is left), spends it call by call without asking
again, and reports what it spent with its next request or when it ends. A
ledger that is busy or unreachable makes the run wait (phase
``waiting_for_budget``), never fail. Runs begun before leases reserve and settle
each call, as they were recorded doing.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, TypeVar

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from durable_agent import budget, contracts
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
    from durable_agent.errors import failure_message
    from durable_agent.ratelimit import AcquireRequest, AcquireResult
    from durable_agent.schemas import ToolCall, ToolInfo
    from durable_agent.tools import parse_rate_limit

from durable_agent.workflows.records import RunRecords
from durable_agent.workflows.state import is_cancellation

#: Calls to the shared ledgers and rate limiters: quick, retried for a few minutes while the server is busy.
LIMITS_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30), maximum_attempts=10)
LIMITS_TIMEOUT = timedelta(seconds=30)
#: Leases: retried for as long as it takes, every 30 s at most; a run waits for its budget, it never fails for the ledger.
LEASE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30), maximum_attempts=0)
#: What a ledger or rate limiter activity returns.
_LimitsResult = TypeVar("_LimitsResult", ReserveResult, Balance, AcquireResult, LeaseResult)
#: How long a run waits before asking again when the budget left is held by other runs' leases.
LEASE_HELD_WAIT = timedelta(seconds=2)
#: Runs recorded before leases reserve and settle every call; this marks those that lease.
PATCH_DAILY_LEASES = "daily-budget-leases"


class SharedLimits(RunRecords):
    """The run's side of the shared daily budget and the tools' rate limits."""

    def _leases_daily_budget(self) -> bool:
        """Whether this run leases its daily budget (every run begun with this code does)."""
        return workflow.patched(PATCH_DAILY_LEASES)

    async def _admit_daily(self, estimate: float) -> tuple[bool, str]:
        """Let a call of ``estimate`` go when the run's lease covers it, else lease the next chunk first."""
        assert self.agent is not None
        day = budget.day_of(workflow.now())
        held = self.daily_lease
        if held is not None and held.open and held.day != day:
            await self._return_daily_lease()  # a new UTC day: yesterday's ledger gets its report
            held = self.daily_lease
        if estimate <= 0 or (held is not None and held.open and not held.renew and held.left_usd + budget.EPSILON_USD >= estimate):
            return True, ""
        while True:
            result = await self._lease(day, min_usd=estimate, want_usd=estimate * LEASE_CALLS)
            if result.held:
                # The rest of the budget is held by other runs' leases, not spent: wait for them to report.
                self.phase, self.waiting_for = "waiting_for_budget", f"the daily budget of {self.agent.name} (held by other runs)"
                await workflow.sleep(LEASE_HELD_WAIT, summary="daily budget held by other runs")
                self.waiting_for = None
                continue
            if not result.closed:
                break
            later = budget.day_of(workflow.now())
            if later == day:
                return False, f"the daily budget of agent {self.agent.name!r} for {day} UTC has closed"
            day = later  # the request outlived its day's ledger: lease from today's
        if not result.granted:
            return False, result.message
        return True, ""

    async def _lease(self, day: str, *, min_usd: float, want_usd: float) -> LeaseResult:
        """Report the held lease (if any) and ask for the next, ``min_usd`` at least (0: return only)."""
        assert self.agent is not None
        info = workflow.info()
        held = self.daily_lease
        request = LeaseRequest(
            agent=self.agent.name,
            day=day,
            holder=f"{info.workflow_id}/{info.first_execution_run_id}",
            seq=(held.seq + 1) if held is not None else 1,
            used_usd=held.used_usd if held is not None and held.open else 0.0,
            min_usd=min_usd,
            want_usd=want_usd,
            limit_usd=self.agent.daily_budget_usd,  # the worker sends the configured one when it has it
            sent_at=workflow.now(),
        )
        if held is not None and held.open and held.day != day:
            raise AssertionError("a lease is reported to its own day's ledger")  # _admit_daily returns it first
        phase, self.phase = self.phase, "waiting_for_budget"
        self.waiting_for = (
            f"the daily budget of {self.agent.name} ({'returning the lease' if min_usd <= 0 else 'a lease'}, {day} UTC), "
            f"from its ledger {self._limits_queue_hint()}"
        )
        try:
            result = await workflow.execute_activity(
                contracts.ACTIVITY_BUDGET_LEASE, request, result_type=LeaseResult, start_to_close_timeout=LIMITS_TIMEOUT,
                retry_policy=LEASE_RETRY, summary=f"{'return' if min_usd <= 0 else 'lease'} {self.agent.name}'s daily budget ({day})",
            )
        finally:
            self.waiting_for = None
            self.phase = phase
        # The previous lease is closed (and charged) unless the day had closed.
        self.daily_lease = HeldLease(
            day=day, seq=request.seq, amount_usd=result.amount_usd, open=result.granted and result.amount_usd > 0,
            ledger_remaining_usd=result.remaining_usd, limit_usd=result.limit_usd,
        ) if not result.closed else (held.model_copy(update={"seq": request.seq, "open": False}) if held else None)
        if not result.closed:
            self.daily_remaining = self.daily_lease.daily_remaining_usd if self.daily_lease else result.remaining_usd
        return result

    def _limits_queue_hint(self) -> str:
        """Where the run's ledger runs, and what to check when the wait for it lasts (for the ``status`` query)."""
        assert self.agent is not None
        queue = self.agent.limits_task_queue
        where = f"on task queue {queue!r}" if queue else "on the limits task queue (by default the agents' queue + '-limits')"
        return (
            f"{where}; if this lasts, no worker may be polling it (workers started with --no-limits do not; "
            "`durable-agent worker --check` tells)"
        )

    async def _return_daily_lease(self) -> None:
        """Report what the run spent from its lease and give the rest back (the run ends, or the day changed)."""
        held = self.daily_lease
        if held is None or not held.open:
            return
        result = await self._lease(held.day, min_usd=0.0, want_usd=0.0)
        if (result.closed or not result.granted) and held.used_usd > 0:
            why = "after it closed" if result.closed else f"too late to be counted ({result.message})"
            self._warn(f"DAILY_BUDGET_UNSETTLED: ${held.used_usd:.6f} spent on {held.day} reached its ledger {why}")

    async def _reserve_daily(self, estimate: float) -> tuple[bool, str]:
        """Reserve ``estimate`` from the agent's shared daily budget (when it has one).

        Returns whether it was granted and, if not, the ledger's message naming the budget.
        The day is the workflow's own clock's, so a replay charges the same ledger.
        """
        assert self.agent is not None
        if self.agent.daily_budget_usd is None:
            return True, ""
        if self._leases_daily_budget():
            return await self._admit_daily(estimate)
        info = workflow.info()
        request = ReserveRequest(
            agent=self.agent.name,
            day=budget.day_of(workflow.now()),
            limit_usd=self.agent.daily_budget_usd,
            reservation_id=f"{info.workflow_id}/{info.first_execution_run_id}/{self.step + 1}",
            amount_usd=estimate,
            holder=info.workflow_id,
        )
        result = await self._limits_activity(
            contracts.ACTIVITY_BUDGET_RESERVE, request, ReserveResult, f"reserve ${estimate:.4f} of {self.agent.name}'s daily budget"
        )
        self.daily_remaining = result.remaining_usd
        if not result.granted:
            return False, result.message
        self.daily_reservation = SettleRequest(agent=request.agent, day=request.day, reservation_id=request.reservation_id)
        return True, ""

    async def _settle_daily(self, actual: float, configured_usd: float | None = None) -> None:
        """Charge the call's ``actual`` cost to the run's lease (or, for older runs, settle its reservation).

        ``configured_usd`` is the daily budget the worker that made the call has
        configured now: lower than the lease's, the lease is renewed before the
        next call, so a lowered budget holds for runs already going.
        """
        held = self.daily_lease
        if held is not None and held.open:
            held.used_usd += actual  # reported with the next lease request
            if configured_usd is not None and configured_usd < held.limit_usd - budget.EPSILON_USD:
                held.renew = True
            self.daily_remaining = held.daily_remaining_usd
            return
        await self._close_reservation(actual)

    async def _release_daily(self) -> None:
        """The call failed for good: nothing to charge (older runs give their reservation back)."""
        await self._close_reservation(None)

    async def _close_reservation(self, actual: float | None) -> None:
        """Settle (``actual`` cost) or release (``None``) the open daily reservation, if any.

        A ledger that stays unreachable does not stop the run: the reservation then
        expires on its own, and the run says so in its warnings.
        """
        reservation, self.daily_reservation = self.daily_reservation, None
        if reservation is None:
            return
        name = contracts.ACTIVITY_BUDGET_RELEASE if actual is None else contracts.ACTIVITY_BUDGET_SETTLE
        payload = reservation.model_copy(update={"actual_usd": actual or 0.0})
        try:
            balance = await self._limits_activity(name, payload, Balance, f"{name.removeprefix('budget_')} daily reservation of step {self.step}")
        except ActivityError as exc:
            if is_cancellation(exc):
                raise
            self._warn(f"DAILY_BUDGET_UNSETTLED: reservation {reservation.reservation_id} left to expire ({failure_message(exc)})")
            return
        self.daily_remaining = balance.remaining_usd

    async def _limits_activity(self, name: str, payload: BaseModel, result_type: type[_LimitsResult], summary: str) -> _LimitsResult:
        """One call to a shared ledger or rate limiter: short, and retried while the server is busy."""
        return await workflow.execute_activity(
            name, payload, result_type=result_type, start_to_close_timeout=LIMITS_TIMEOUT, retry_policy=LIMITS_RETRY, summary=summary
        )

    # -------------------------------------------------------------- rate limit

    async def _wait_for_rate_limit(
        self, call: ToolCall, info: ToolInfo, key: str, approval_id: str | None
    ) -> tuple[dict[str, Any] | None, dict[str, Any]]:
        """Take a slot of the tool's shared rate limit and wait for it with a durable timer.

        Returns an observation when the call must not run (the tool fails fast, or
        its limiter is unreachable), else ``None``; and, for the call's record, the
        slot it was given and the milliseconds it waited.
        """
        if info.rate_limit is None:
            return None, {}
        limit, period = parse_rate_limit(info.rate_limit)
        request = AcquireRequest(
            tool=call.name, request_id=key, limit=limit, period_seconds=period, lane=info.rate_limit_lane,
            wait=info.rate_limit_wait, holder=workflow.info().workflow_id,
        )
        try:
            slot = await self._limits_activity(
                contracts.ACTIVITY_RATE_LIMIT_ACQUIRE, request, AcquireResult, f"rate limit: {call.name} ({info.rate_limit})"
            )
        except ActivityError as exc:
            if is_cancellation(exc):
                raise
            text = f"The tool {call.name} is unavailable right now: its rate limiter could not be reached ({failure_message(exc)})."
            return self._observe(call, "unavailable", text, error=True, approval_id=approval_id), {}
        if not slot.granted:
            return self._observe(call, "rate_limited", slot.message, error=True, approval_id=approval_id), {}
        started = workflow.now()
        wait = slot.go_at - started
        note: dict[str, Any] = {"rate_limit_slot": slot.go_at.isoformat(), "rate_limit_wait_ms": 0}
        if wait <= timedelta(0):
            return None, note
        self.phase = "waiting_for_rate_limit"
        self.waiting_for = f"rate limit of {call.name} ({info.rate_limit}) until {slot.go_at.isoformat()}"
        self._details(
            f"**Waiting for the rate limit** of {call.name} ({info.rate_limit}, shared by all runs): "
            f"its turn comes at {slot.go_at.isoformat()}, in {wait.total_seconds():.1f} s."
        )
        try:
            await workflow.sleep(wait, summary=f"rate limit of {call.name}")
        finally:
            self.waiting_for = None
        note["rate_limit_wait_ms"] = int((workflow.now() - started).total_seconds() * 1000)
        return None, note
