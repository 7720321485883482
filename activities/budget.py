"""Activities that talk to the shared ledgers and rate limiters on behalf of a run.

A workflow cannot send an update to another workflow, so a run leases budget,
and acquires rate-limit slots, through these activities. Each one is an
update-with-start: the entity workflow is started if it is not running (on the
limits task queue, see :func:`limits_task_queue`) and the update is applied to
the one that runs (conflict policy ``USE_EXISTING``), so the first caller of
the day creates the ledger and every other caller shares it. A day's ledger
that has closed is never started again (ID reuse policy), so a late request
cannot open the day afresh at zero spent. Requests carry stable ids, so a
retried activity is answered, not applied twice.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from typing import Any

from temporalio import activity
from temporalio.client import Client, WithStartWorkflowOperation, WorkflowUpdateFailedError
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from durable_agent import contracts
from durable_agent.budget import (
    Balance,
    LeaseRequest,
    LeaseResult,
    LedgerStart,
    ReserveRequest,
    ReserveResult,
    SettleRequest,
    ledger_id,
)
from durable_agent.errors import failure_message
from durable_agent.profiles import AgentsConfig
from durable_agent.queues import UNSERVED_GIVE_UP_AFTER, answer_from_served_queue
from durable_agent.ratelimit import (
    AcquireRequest,
    AcquireResult,
    LimiterStart,
    Observation,
    Window,
    describe_windows,
    limiter_id,
    model_resource,
    observations_from_headers,
)

#: Updates one process keeps in flight per entity workflow. The server refuses more
#: than 10 at once per workflow by default (``history.maxInFlightUpdates``); the
#: rest queue here instead of failing there.
MAX_IN_FLIGHT = 8
#: How long to keep trying while the server pushes back (busy, or the entity is
#: continuing as new); shorter than the activities' 30 s timeout.
PUSHBACK_DEADLINE = 20.0
#: What the server answers while it pushes back: retried here with jitter.
_PUSHBACK = (RPCStatusCode.RESOURCE_EXHAUSTED, RPCStatusCode.UNAVAILABLE)
#: Suffix of the default limits task queue: ``agents`` -> ``agents-limits``.
LIMITS_QUEUE_SUFFIX = "-limits"


def limits_task_queue(agent_queue: str, configured: str | None = None) -> str:
    """The task queue the ledgers and limiters of ``agent_queue``'s runs are started on.

    ``configured`` (``AGENT_LIMITS_TASK_QUEUE`` or ``worker --limits-task-queue``)
    when given, else ``<agent_queue>-limits``: their own queue, so a backlog of
    agent work never delays a grant. The same worker serves it by default.
    """
    return configured or f"{agent_queue}{LIMITS_QUEUE_SUFFIX}"


class LedgerClosed(Exception):
    """The day's ledger has closed (its day and grace period are over); it is never started again."""


class LimitsClient:
    """Update-with-start calls on the ``BudgetLedger`` and ``RateLimiter`` workflows.

    Args:
        client: A client with the pydantic data converter.
        task_queue: The agents' task queue, which names the entities (``@<queue>`` off the default).
        start_queue: Where a ledger or limiter is started when none runs yet (default: ``task_queue``).
        give_up_unserved_after: Seconds a call waits when no worker polls ``start_queue`` before it
            fails saying so; ``None``: it waits as long as its activity may (a model call's slot).
    """

    def __init__(
        self, client: Client, task_queue: str, start_queue: str | None = None, give_up_unserved_after: float | None = UNSERVED_GIVE_UP_AFTER
    ) -> None:
        self.client = client
        self.task_queue = task_queue
        self.start_queue = start_queue or task_queue
        self.give_up_unserved_after = give_up_unserved_after
        self._in_flight: defaultdict[str, asyncio.Semaphore] = defaultdict(lambda: asyncio.Semaphore(MAX_IN_FLIGHT))

    async def _update_with_start(
        self,
        workflow: str,
        start: Any,
        workflow_id: str,
        summary: str,
        update: str,
        payload: Any,
        result_type: type,
        reuse: WorkflowIDReusePolicy = WorkflowIDReusePolicy.ALLOW_DUPLICATE,
    ) -> Any:
        deadline = time.monotonic() + PUSHBACK_DEADLINE
        backoff = 0.05
        while True:
            operation: WithStartWorkflowOperation[Any, Any] = WithStartWorkflowOperation(
                workflow,
                start,
                id=workflow_id,
                task_queue=self.start_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                id_reuse_policy=reuse,
                static_summary=summary,
            )
            try:
                async with self._in_flight[workflow_id]:
                    # No update id of our own: the server would answer a repeated id with its
                    # first outcome, a refusal included. The payload's own id makes retries safe.
                    return await answer_from_served_queue(
                        self.client.execute_update_with_start_workflow(
                            update, payload, start_workflow_operation=operation, result_type=result_type
                        ),
                        self.client, self.start_queue, summary, give_up_after=self.give_up_unserved_after,
                    )
            except WorkflowAlreadyStartedError:
                # Only a closed day's ledger refuses to start again: never reopen it at zero.
                raise LedgerClosed(f"{workflow_id} has closed") from None
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

    async def _on_ledger(self, start: LedgerStart, workflow_id: str, summary: str, update: str, payload: Any, result_type: type) -> Any:
        # A ledger that completed (its day is over) or was never started may start; a
        # completed one may not: ALLOW_DUPLICATE_FAILED_ONLY lets only a failed or
        # terminated ledger (an operator's reset) start again.
        return await self._update_with_start(
            contracts.BUDGET_LEDGER_WORKFLOW, start, workflow_id, summary, update, payload, result_type,
            reuse=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
        )

    async def lease(self, request: LeaseRequest, start: LedgerStart | None = None) -> LeaseResult:
        """Report a run's spend and lease its next chunk on the ledger of ``request.agent`` and ``request.day``.

        Raises:
            LedgerClosed: the day is over and its ledger closed.
        """
        default_start, workflow_id, summary = self._ledger(request.agent, request.day, request.limit_usd or 0.0)
        return await self._on_ledger(start or default_start, workflow_id, summary, contracts.UPDATE_LEASE, request, LeaseResult)

    async def reserve(self, request: ReserveRequest, start: LedgerStart | None = None) -> ReserveResult:
        """Reserve budget on the ledger of ``request.agent`` and ``request.day`` (started if needed)."""
        default_start, workflow_id, summary = self._ledger(request.agent, request.day, request.limit_usd)
        try:
            return await self._on_ledger(start or default_start, workflow_id, summary, contracts.UPDATE_RESERVE, request, ReserveResult)
        except LedgerClosed:
            return ReserveResult(
                granted=False, reservation_id=request.reservation_id, amount_usd=request.amount_usd,
                message=f"the daily budget of agent {request.agent!r} for {request.day} UTC has closed",
                limit_usd=request.limit_usd, spent_usd=0.0, reserved_usd=0.0, remaining_usd=0.0,
            )

    async def settle(self, request: SettleRequest, *, release: bool = False) -> Balance:
        """Settle (or, with ``release``, give back) a reservation on its day's ledger.

        Raises:
            LedgerClosed: the day is over and its ledger closed.
        """
        # A ledger started by a settle is one that was terminated or never started:
        # the limit is unknown there, and the next request sets it.
        start, workflow_id, summary = self._ledger(request.agent, request.day, 0.0)
        update = contracts.UPDATE_RELEASE if release else contracts.UPDATE_SETTLE
        return await self._on_ledger(start, workflow_id, summary, update, request, Balance)

    async def acquire(self, request: AcquireRequest) -> AcquireResult:
        """Take the next free slot of ``request.tool``'s rate limit (its limiter started if needed)."""
        return await self._update_with_start(
            contracts.RATE_LIMITER_WORKFLOW, LimiterStart(tool=request.tool), limiter_id(request.tool, self.task_queue),
            f"rate limit of {request.tool}", contracts.UPDATE_ACQUIRE, request, AcquireResult,
        )


class ModelRateLimits:
    """Model rate limits shared by every run and worker, waited for before each model call.

    Each model with ``[models."NAME".rate_limits]`` has a ``RateLimiter``
    (``ratelimit-model:<NAME>``); a call asks it for a slot weighing one request,
    its estimated input tokens and its ``max_tokens`` of output, and waits for
    the slot. What the provider's headers said was left (noted by
    :meth:`note_headers` after each answer in this process) rides along with the
    next request, so the limiter can hold back what others spent.

    Args:
        client: A client with the pydantic data converter.
        windows: Model name (or name prefix) -> its limits per dimension.
        start_queue: The limits task queue (see :func:`limits_task_queue`); ``None``: the activity's queue.
    """

    #: Longest wait spent inside one think attempt (its timeout is 5 minutes); longer waits retry later.
    MAX_WAIT_IN_ACTIVITY = 200.0
    #: Seconds added to each window: a request reaches the provider a little after its slot, and
    #: one delayed more than the next must not land in the next one's window there.
    DISPATCH_SLACK = 1.0

    def __init__(self, client: Client, windows: dict[str, dict[str, Window]], start_queue: str | None = None) -> None:
        self.client = client
        self.windows_by_model = windows
        self.start_queue = start_queue
        self._seen: dict[str, dict[str, Observation]] = {}
        self._clients: dict[str, LimitsClient] = {}

    def windows(self, model: str) -> dict[str, Window] | None:
        """The limits of ``model``: by exact name, else by the longest configured prefix."""
        if model in self.windows_by_model:
            return self.windows_by_model[model]
        prefixes = [name for name in self.windows_by_model if model.startswith(name)]
        return self.windows_by_model[max(prefixes, key=len)] if prefixes else None

    def note_headers(self, model: str, headers: dict[str, str]) -> None:
        """Keep what the provider's ``anthropic-ratelimit-*`` headers say is left, for the next request."""
        if not headers or self.windows(model) is None:
            return
        for seen in observations_from_headers(headers, datetime.now(timezone.utc)):
            self._seen.setdefault(model, {})[seen.dimension] = seen

    async def wait_turn(
        self, model: str, *, input_tokens: int, output_tokens: int, request_id: str, queue: str, holder: str = ""
    ) -> float:
        """Wait until ``model`` may take one more call of this size; return the seconds waited.

        Raises:
            ApplicationError: retryable, with the wait as its delay, when the slot is
                further off than one attempt may wait (the next attempt asks again).
        """
        configured = self.windows(model)
        if configured is None:
            return 0.0
        windows = {dim: w.model_copy(update={"period_seconds": w.period_seconds + self.DISPATCH_SLACK}) for dim, w in configured.items()}
        if queue not in self._clients:
            # The think attempt waits for its slot as long as it may (heartbeating); the worker's log says why.
            self._clients[queue] = LimitsClient(self.client, queue, self.start_queue, give_up_unserved_after=None)
        observed = list(self._seen.pop(model, {}).values())
        request = AcquireRequest(
            tool=model_resource(model), request_id=request_id, lane="model", windows=windows,
            weights={"requests": 1, "input_tokens": input_tokens, "output_tokens": output_tokens},
            observed=observed, holder=holder,
        )
        slot = await self._clients[queue].acquire(request)
        wait = (slot.go_at - datetime.now(timezone.utc)).total_seconds()
        if wait > self.MAX_WAIT_IN_ACTIVITY:
            raise ApplicationError(
                f"{model}'s rate limit ({describe_windows(windows)}) gives this call a slot in {wait:.0f} s",
                type="ModelRateLimitWait", next_retry_delay=timedelta(seconds=wait),
            )
        waited = 0.0
        while wait > 0:
            await asyncio.sleep(min(wait, 5.0))
            activity.heartbeat()
            waited += min(wait, 5.0)
            wait = (slot.go_at - datetime.now(timezone.utc)).total_seconds()
        return waited


class BudgetActivities:
    """The activities a run uses for its daily budget and its tools' rate limits.

    Args:
        client: A client with the pydantic data converter.
        config: The worker's agent profiles: a lease carries the daily budget
            configured *now*, so a changed profile holds for runs already going.
        limits_queue: Where new ledgers and limiters start (default: the activity's own queue).
    """

    def __init__(self, client: Client, config: AgentsConfig | None = None, limits_queue: str | None = None) -> None:
        self.client = client
        self.config = config
        self.limits_queue = limits_queue
        # One LimitsClient per queue, so its in-flight cap holds across this worker's activities.
        self._clients: dict[str, LimitsClient] = {}

    def _limits(self) -> LimitsClient:
        queue = activity.info().task_queue
        if queue not in self._clients:
            self._clients[queue] = LimitsClient(self.client, queue, self.limits_queue)
        return self._clients[queue]

    def configured_daily_budget(self, agent: str) -> float | None:
        """The daily budget of ``agent`` in this worker's configuration (``None``: none configured, or unknown agent)."""
        profile = self.config.agents.get(agent) if self.config is not None else None
        return profile.daily_budget_usd if profile is not None else None

    @activity.defn(name=contracts.ACTIVITY_BUDGET_LEASE)
    async def budget_lease(self, request: LeaseRequest) -> LeaseResult:
        """Report what the run spent from its lease and lease the next chunk of the agent's daily budget.

        The limit sent is the one configured on this worker now; a run whose agent
        has none configured any more keeps the ledger's.
        """
        configured = self.configured_daily_budget(request.agent)
        if configured is not None:
            request = request.model_copy(update={"limit_usd": configured})
        try:
            return await self._limits().lease(request)
        except LedgerClosed as exc:
            return LeaseResult(
                granted=False, closed=True, seq=request.seq, message=str(exc),
                limit_usd=0.0, spent_usd=0.0, reserved_usd=0.0, remaining_usd=0.0,
            )

    @activity.defn(name=contracts.ACTIVITY_BUDGET_RESERVE)
    async def budget_reserve(self, request: ReserveRequest) -> ReserveResult:
        """Reserve the estimate of the next model call on the agent's daily ledger (runs begun before leases)."""
        return await self._limits().reserve(request)

    @activity.defn(name=contracts.ACTIVITY_BUDGET_SETTLE)
    async def budget_settle(self, request: SettleRequest) -> Balance:
        """Replace a reservation with the call's actual cost."""
        return await self._settle(request, release=False)

    @activity.defn(name=contracts.ACTIVITY_BUDGET_RELEASE)
    async def budget_release(self, request: SettleRequest) -> Balance:
        """Give back a reservation whose call never happened."""
        return await self._settle(request, release=True)

    async def _settle(self, request: SettleRequest, *, release: bool) -> Balance:
        try:
            return await self._limits().settle(request, release=release)
        except LedgerClosed as exc:
            raise ApplicationError(str(exc), type="LedgerClosed", non_retryable=True) from None

    @activity.defn(name=contracts.ACTIVITY_RATE_LIMIT_ACQUIRE)
    async def rate_limit_acquire(self, request: AcquireRequest) -> AcquireResult:
        """Take the next free slot of a tool's rate limit."""
        return await self._limits().acquire(request)

    def all(self) -> list[Any]:
        """Every activity of this object, for ``Worker(activities=...)``."""
        return [self.budget_lease, self.budget_reserve, self.budget_settle, self.budget_release, self.rate_limit_acquire]
