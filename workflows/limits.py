"""Shared limits: the agent's daily budget (a ``BudgetLedger``) and tool rate limits (``RateLimiter``).

Both are entity workflows shared by every run on every worker; the run talks
to them through short activities and waits for a rate-limit slot on a durable timer.
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
    from durable_agent.budget import Balance, ReserveRequest, ReserveResult, SettleRequest
    from durable_agent.errors import failure_message
    from durable_agent.ratelimit import AcquireRequest, AcquireResult
    from durable_agent.schemas import ToolCall, ToolInfo
    from durable_agent.tools import parse_rate_limit

from durable_agent.workflows.records import RunRecords
from durable_agent.workflows.state import is_cancellation

#: Calls to the shared ledgers and rate limiters: quick, retried for a few minutes while the server is busy.
LIMITS_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30), maximum_attempts=10)
LIMITS_TIMEOUT = timedelta(seconds=30)
#: What a ledger or rate limiter activity returns.
_LimitsResult = TypeVar("_LimitsResult", ReserveResult, Balance, AcquireResult)


class SharedLimits(RunRecords):
    """The run's side of the shared daily budget and the tools' rate limits."""


    async def _reserve_daily(self, estimate: float) -> tuple[bool, str]:
        """Reserve ``estimate`` from the agent's shared daily budget (when it has one).

        Returns whether it was granted and, if not, the ledger's message naming the budget.
        The day is the workflow's own clock's, so a replay charges the same ledger.
        """
        assert self.agent is not None
        if self.agent.daily_budget_usd is None:
            return True, ""
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

    async def _settle_daily(self, actual: float) -> None:
        """Replace the open reservation with the call's ``actual`` cost."""
        await self._close_reservation(actual)

    async def _release_daily(self) -> None:
        """Give the open reservation back uncharged (its model call never completed)."""
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
            tool=call.name, request_id=key, limit=limit, period_seconds=period, wait=info.rate_limit_wait, holder=workflow.info().workflow_id
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
