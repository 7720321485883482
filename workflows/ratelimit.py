"""``RateLimiter``: the rate limits of one tool or model, shared by every run on every worker.

One workflow per tool, id ``ratelimit-<tool>`` (per model: ``ratelimit-model:<model>``),
started on demand by the first ``acquire`` (update-with-start, see
:mod:`activities.budget`). Each acquire is promised the next free slot of its
lane (the limit owner: the tool itself, a profile, a model; see
:mod:`durable_agent.ratelimit`) and the caller waits for it, so callers of one
limit go in the order they asked, callers of different limits never queue
behind each other, and a worker restart loses neither the slots nor anyone's place. The limiter ends once no promised slot is
inside the window any more; the next acquire starts a fresh one, which then
knows all it needs to.

Inspect it with ``temporal workflow query --workflow-id ratelimit-search_kb --type state``.
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from durable_agent import contracts, ratelimit
    from durable_agent.ratelimit import AcquireRequest, AcquireResult, BucketState, LimiterStart

from durable_agent.workflows.entity import EntityWorkflow, parse_one


@workflow.defn(name=contracts.RATE_LIMITER_WORKFLOW)
class RateLimiter(EntityWorkflow):
    """The token bucket of one tool. Input: :class:`LimiterStart`."""

    @workflow.init
    def __init__(self, *args: Any) -> None:
        # Untyped, as every handler here: a start the limiter cannot read fails the run at once (in run).
        try:
            self.start: LimiterStart | None = parse_one(LimiterStart, args, contracts.RATE_LIMITER_WORKFLOW)
            self.refusal: ApplicationError | None = None
        except ApplicationError as exc:
            self.start, self.refusal = None, exc
        start = self.start or LimiterStart(tool="")
        super().__init__(start.continue_after_updates)
        # Set in __init__: with update-with-start the first acquire comes with the start.
        self.state: BucketState = start.state or BucketState(tool=start.tool)

    @workflow.update(name=contracts.UPDATE_ACQUIRE, description="Take the next free slot of this tool's rate limit; returns when the caller may go.")
    def acquire(self, *payloads: Any) -> AcquireResult:
        request = parse_one(AcquireRequest, payloads, contracts.UPDATE_ACQUIRE)
        result = ratelimit.acquire(self.state, request, workflow.now())
        self._applied()
        lane = f" (lane {request.lane})" if request.lane else ""
        workflow.set_current_details(
            f"**Rate limit of {self.state.tool}**{lane}: {ratelimit.describe_windows(request.all_windows())}; "
            f"{ratelimit.waiting(self.state, workflow.now())} callers waiting for their slot, {len(self.state.lanes)} lanes, "
            f"{self.state.granted} granted, {self.state.refused} refused, {self.state.adjusted} adjustments from provider headers."
        )
        return result

    @acquire.validator
    def _validate_acquire(self, *payloads: Any) -> None:
        request = parse_one(AcquireRequest, payloads, contracts.UPDATE_ACQUIRE)
        if request.tool != self.state.tool:
            raise ApplicationError(
                f"this is the rate limiter of {self.state.tool!r}, not of {request.tool!r}", type="WrongLimiter", non_retryable=True
            )

    @workflow.query(name=contracts.QUERY_STATE, description="Promised slots and counters of this rate limiter.")
    def get_state(self, *_ignored: Any) -> BucketState:
        return self.state

    @workflow.run
    async def run(self, *args: Any) -> BucketState:
        if self.refusal is not None or self.start is None:
            raise self.refusal or ApplicationError("no start input", type="InvalidPayload", non_retryable=True)
        start = self.start
        started = workflow.now()
        while True:
            ends = (ratelimit.idle_since(self.state) or started) + ratelimit.IDLE_AFTER
            if workflow.now() >= ends:
                break
            if self._continue_due():
                ratelimit.prune(self.state, workflow.now())
                await self._continue_as_new(start.model_copy(update={"state": self.state}))
            await self._sleep_until(ends, "idle: no promised slot left in the window")
        await self._finish()
        return self.state
