"""Activities that talk to the shared ledgers and rate limiters on behalf of a run.

A workflow cannot send an update to another workflow, so a run reserves and
settles budget, and acquires rate-limit slots, through these activities. Each
one is an update-with-start: the entity workflow is started if it is not
running (on this worker's task queue) and the update is applied to the one that
runs (conflict policy ``USE_EXISTING``), so the first caller of the day creates
the ledger and every other caller shares it. Requests carry stable ids, so a
retried activity is answered, not applied twice.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from typing import Any

from temporalio import activity
from temporalio.client import Client, WithStartWorkflowOperation, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from durable_agent import contracts
from durable_agent.budget import Balance, LedgerStart, ReserveRequest, ReserveResult, SettleRequest, ledger_id
from durable_agent.errors import failure_message
from durable_agent.ratelimit import AcquireRequest, AcquireResult, LimiterStart, limiter_id

#: Updates one process keeps in flight per entity workflow. The server refuses more
#: than 10 at once per workflow by default (``history.maxInFlightUpdates``); the
#: rest queue here instead of failing there.
MAX_IN_FLIGHT = 8
#: How long to keep trying while the server pushes back (busy, or the entity is
#: continuing as new); shorter than the activities' 30 s timeout.
PUSHBACK_DEADLINE = 20.0
#: What the server answers while it pushes back: retried here with jitter.
_PUSHBACK = (RPCStatusCode.RESOURCE_EXHAUSTED, RPCStatusCode.UNAVAILABLE)


class LimitsClient:
    """Update-with-start calls on the ``BudgetLedger`` and ``RateLimiter`` workflows.

    Args:
        client: A client with the pydantic data converter.
        task_queue: Where a ledger or limiter is started when none runs yet.
    """

    def __init__(self, client: Client, task_queue: str) -> None:
        self.client = client
        self.task_queue = task_queue
        self._in_flight: defaultdict[str, asyncio.Semaphore] = defaultdict(lambda: asyncio.Semaphore(MAX_IN_FLIGHT))

    async def _update_with_start(
        self, workflow: str, start: Any, workflow_id: str, summary: str, update: str, payload: Any, result_type: type
    ) -> Any:
        deadline = time.monotonic() + PUSHBACK_DEADLINE
        backoff = 0.05
        while True:
            operation: WithStartWorkflowOperation[Any, Any] = WithStartWorkflowOperation(
                workflow,
                start,
                id=workflow_id,
                task_queue=self.task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                static_summary=summary,
            )
            try:
                async with self._in_flight[workflow_id]:
                    # No update id of our own: the server would answer a repeated id with its
                    # first outcome, a refusal included. The payload's own id makes retries safe.
                    return await self.client.execute_update_with_start_workflow(
                        update, payload, start_workflow_operation=operation, result_type=result_type
                    )
            except RPCError as exc:
                # Other processes' updates fill the server's in-flight limit too: back off with
                # jitter (so waiting callers do not all come back at once) and try again.
                if exc.status not in _PUSHBACK or time.monotonic() + backoff > deadline:
                    raise
                await asyncio.sleep(random.uniform(backoff / 2, backoff))
                backoff = min(backoff * 2, 1.0)
            except WorkflowUpdateFailedError as exc:
                # A validator refused a malformed or misrouted request: a bug, which retrying
                # cannot fix. Anything else (the entity closing under us) is worth another try.
                final = isinstance(exc.cause, ApplicationError) and exc.cause.non_retryable
                raise ApplicationError(
                    f"{workflow} {workflow_id} refused {update}: {failure_message(exc)}", type="LimitsRequestRefused", non_retryable=final
                ) from None

    def _ledger(self, agent: str, day: str, limit_usd: float) -> tuple[LedgerStart, str, str]:
        return LedgerStart(agent=agent, day=day, limit_usd=limit_usd), ledger_id(agent, day, self.task_queue), f"daily budget of {agent} on {day} UTC"

    async def reserve(self, request: ReserveRequest, start: LedgerStart | None = None) -> ReserveResult:
        """Reserve budget on the ledger of ``request.agent`` and ``request.day`` (started if needed)."""
        default_start, workflow_id, summary = self._ledger(request.agent, request.day, request.limit_usd)
        return await self._update_with_start(
            contracts.BUDGET_LEDGER_WORKFLOW, start or default_start, workflow_id, summary,
            contracts.UPDATE_RESERVE, request, ReserveResult,
        )

    async def settle(self, request: SettleRequest, *, release: bool = False) -> Balance:
        """Settle (or, with ``release``, give back) a reservation on its day's ledger."""
        # A ledger started by a settle is one whose day is over (or that was terminated):
        # the limit is unknown there, and the next reserve sets it.
        start, workflow_id, summary = self._ledger(request.agent, request.day, 0.0)
        update = contracts.UPDATE_RELEASE if release else contracts.UPDATE_SETTLE
        return await self._update_with_start(
            contracts.BUDGET_LEDGER_WORKFLOW, start, workflow_id, summary,
            update, request, Balance,
        )

    async def acquire(self, request: AcquireRequest) -> AcquireResult:
        """Take the next free slot of ``request.tool``'s rate limit (its limiter started if needed)."""
        return await self._update_with_start(
            contracts.RATE_LIMITER_WORKFLOW, LimiterStart(tool=request.tool), limiter_id(request.tool, self.task_queue),
            f"rate limit of {request.tool}", contracts.UPDATE_ACQUIRE, request, AcquireResult,
        )


class BudgetActivities:
    """The activities a run uses for its daily budget and its tools' rate limits.

    Ledgers and limiters are started on the task queue of the worker that runs
    the activity, where the same worker code polls.
    """

    def __init__(self, client: Client) -> None:
        self.client = client
        # One LimitsClient per queue, so its in-flight cap holds across this worker's activities.
        self._clients: dict[str, LimitsClient] = {}

    def _limits(self) -> LimitsClient:
        queue = activity.info().task_queue
        if queue not in self._clients:
            self._clients[queue] = LimitsClient(self.client, queue)
        return self._clients[queue]

    @activity.defn(name=contracts.ACTIVITY_BUDGET_RESERVE)
    async def budget_reserve(self, request: ReserveRequest) -> ReserveResult:
        """Reserve the estimate of the next model call on the agent's daily ledger."""
        return await self._limits().reserve(request)

    @activity.defn(name=contracts.ACTIVITY_BUDGET_SETTLE)
    async def budget_settle(self, request: SettleRequest) -> Balance:
        """Replace a reservation with the call's actual cost."""
        return await self._limits().settle(request)

    @activity.defn(name=contracts.ACTIVITY_BUDGET_RELEASE)
    async def budget_release(self, request: SettleRequest) -> Balance:
        """Give back a reservation whose call never happened."""
        return await self._limits().settle(request, release=True)

    @activity.defn(name=contracts.ACTIVITY_RATE_LIMIT_ACQUIRE)
    async def rate_limit_acquire(self, request: AcquireRequest) -> AcquireResult:
        """Take the next free slot of a tool's rate limit."""
        return await self._limits().acquire(request)

    def all(self) -> list[Any]:
        """Every activity of this object, for ``Worker(activities=...)``."""
        return [self.budget_reserve, self.budget_settle, self.budget_release, self.rate_limit_acquire]
