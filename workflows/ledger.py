"""``BudgetLedger``: the daily budget of one agent, shared by every run on every worker.

One workflow per agent and UTC day, id ``budget-<agent>-<YYYY-MM-DD>``, started
on demand by the first lease of the day (update-with-start, see
:mod:`activities.budget`); a day once closed is never started again. Runs lease
the budget in chunks (``lease``) and spend them call by call, so the ledger sees
a fraction of an update per step; ``reserve``/``settle``/``release`` serve runs
begun before leases. Its updates are applied one at a time by Temporal, so
a grant is atomic however many runs ask at once; its state is its history, so it
survives any worker crash. A new day is a new ledger: this one ends a grace
period after its day, once late settlements had time to arrive. The arithmetic
is :mod:`durable_agent.budget`.

Inspect it with ``temporal workflow query --workflow-id budget-support-2025-01-31 --type state``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from durable_agent import budget, contracts
    from durable_agent.budget import (
        Balance,
        LeaseRequest,
        LeaseResult,
        LedgerStart,
        LedgerState,
        ReserveRequest,
        ReserveResult,
        SettleRequest,
    )

from durable_agent.workflows.entity import EntityWorkflow, parse_one


@workflow.defn(name=contracts.BUDGET_LEDGER_WORKFLOW)
class BudgetLedger(EntityWorkflow):
    """Reservations against one agent's budget for one UTC day. Input: :class:`LedgerStart`."""

    @workflow.init
    def __init__(self, *args: Any) -> None:
        # Untyped, as every handler here: a start the ledger cannot read fails the run at once (in run).
        try:
            self.start: LedgerStart | None = parse_one(LedgerStart, args, contracts.BUDGET_LEDGER_WORKFLOW)
            self.refusal: ApplicationError | None = None
        except ApplicationError as exc:
            self.start, self.refusal = None, exc
        start = self.start or LedgerStart(agent="", day="1970-01-01", limit_usd=0.0)
        super().__init__(start.continue_after_updates)
        # Set in __init__, not in run: with update-with-start the first update is
        # handled in the same task that starts the run.
        self.state: LedgerState = start.state or LedgerState(agent=start.agent, day=start.day, limit_usd=start.limit_usd)

    # ------------------------------------------------------------------ updates

    @workflow.update(name=contracts.UPDATE_RESERVE, description="Reserve the estimated cost of a model call: granted, or refused with what is left.")
    def reserve(self, *payloads: Any) -> ReserveResult:
        request = parse_one(ReserveRequest, payloads, contracts.UPDATE_RESERVE)
        result = budget.reserve(self.state, request, workflow.now())
        reservation = self.state.reservations.get(request.reservation_id)
        self._applied(wake_by=reservation.expires_at if reservation else None)
        return result

    @reserve.validator
    def _validate_reserve(self, *payloads: Any) -> None:
        request = parse_one(ReserveRequest, payloads, contracts.UPDATE_RESERVE)
        self._check(request.agent, request.day)

    @workflow.update(name=contracts.UPDATE_LEASE, description="Charge what a run spent from its last lease and lease it the next chunk (idempotent by run and number).")
    def lease(self, *payloads: Any) -> LeaseResult:
        request = parse_one(LeaseRequest, payloads, contracts.UPDATE_LEASE)
        result = budget.lease(self.state, request, workflow.now())
        held = self.state.leases.get(request.holder)
        self._applied(wake_by=held.expires_at if held else None)
        return result

    @lease.validator
    def _validate_lease(self, *payloads: Any) -> None:
        request = parse_one(LeaseRequest, payloads, contracts.UPDATE_LEASE)
        self._check(request.agent, request.day)

    @workflow.update(name=contracts.UPDATE_SETTLE, description="Replace a reservation with the actual cost of the call (idempotent).")
    def settle(self, *payloads: Any) -> Balance:
        request = parse_one(SettleRequest, payloads, contracts.UPDATE_SETTLE)
        return self._applied_with(budget.settle(self.state, request, workflow.now()))

    @settle.validator
    def _validate_settle(self, *payloads: Any) -> None:
        request = parse_one(SettleRequest, payloads, contracts.UPDATE_SETTLE)
        self._check(request.agent, request.day)

    @workflow.update(name=contracts.UPDATE_RELEASE, description="Give a reservation back uncharged: its call never happened (idempotent).")
    def release(self, *payloads: Any) -> Balance:
        request = parse_one(SettleRequest, payloads, contracts.UPDATE_RELEASE)
        return self._applied_with(budget.release(self.state, request, workflow.now()))

    @release.validator
    def _validate_release(self, *payloads: Any) -> None:
        request = parse_one(SettleRequest, payloads, contracts.UPDATE_RELEASE)
        self._check(request.agent, request.day)

    @workflow.query(name=contracts.QUERY_STATE, description="Limit, spent, open reservations and counters of this ledger.")
    def get_state(self, *_ignored: Any) -> LedgerState:
        return self.state

    def _applied(self, wake_by: datetime | None = None) -> None:
        super()._applied(wake_by)
        self._show()

    def _applied_with(self, balance: Balance) -> Balance:
        """Count an applied settle or release and return its balance."""
        self._applied()
        return balance

    def _check(self, agent: str, day: str) -> None:
        why = budget.check_request(self.state, agent, day)
        if why is not None:
            raise ApplicationError(why, type="WrongLedger", non_retryable=True)

    def _show(self) -> None:
        s = self.state
        workflow.set_current_details(
            f"**Daily budget of {s.agent}** on {s.day} UTC: spent ${s.spent_usd:.4f} of ${s.limit_usd:.4f}, "
            f"${s.reserved_usd:.4f} held by {len(s.leases)} leases and {len(s.reservations)} reservations, "
            f"${s.remaining_usd:.4f} left.\n\n"
            f"{s.granted} granted, {s.refused} refused, {s.expired} expired, {s.lease_requests} lease requests."
        )

    # ---------------------------------------------------------------------- run

    @workflow.run
    async def run(self, *args: Any) -> LedgerState:
        if self.refusal is not None or self.start is None:
            raise self.refusal or ApplicationError("no start input", type="InvalidPayload", non_retryable=True)
        start = self.start
        closes = budget.day_end(start.day) + timedelta(seconds=start.grace_seconds)
        self._show()
        while True:
            now = workflow.now()
            expired = budget.expire(self.state, now)
            if expired:
                workflow.logger.warning("reservations expired unsettled: %s", ", ".join(expired))
                self._show()
            if now >= closes:
                break
            if self._continue_due():
                # What it no longer needs to remember stays behind (a scan of every memo: only here, not per wake).
                budget.forget(self.state, now)
                await self._continue_as_new(start.model_copy(update={"state": self.state, "limit_usd": self.state.limit_usd}))
            wake = min(closes, budget.next_expiry(self.state) or closes)
            await self._sleep_until(wake, "next reservation expiry or the ledger's end")
        await self._finish()
        return self.state
