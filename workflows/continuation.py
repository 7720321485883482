"""Continue-as-new: a long run hands its small state to a fresh execution.

The conversation is a reference into the content store, so what is carried is
the same size at step 10,000 as at step 250.
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from durable_agent import carry, inputs, redaction
    # Defined in the core, not here: a pydantic model built in every run's sandbox costs milliseconds.
    from durable_agent.carry import CarriedState

__all__ = ["CarriedState", "Continuation"]

from durable_agent.workflows.records import RunRecords


class Continuation(RunRecords):
    """When to continue as new, what to carry, and how a continuation picks it up."""

    def _should_continue_as_new(self) -> bool:
        assert self.agent is not None
        if self.pending or self.step == self.started_at_step:  # nothing done in this run yet
            return False
        steps_here = self.step - self.started_at_step
        return steps_here >= self.agent.continue_as_new_every or workflow.info().is_continue_as_new_suggested()

    async def _continue_as_new(self) -> None:
        assert self.input is not None and self.agent is not None
        self.phase = "continuing"
        await self._records_written()
        await workflow.wait_condition(workflow.all_handlers_finished)
        carried = CarriedState(
            agent=redaction.without_secrets(self.agent),  # a run resolved by an older worker has its webhook URL
            step=self.step,
            usage=self.usage,
            total_cost=self.total_cost,
            tools_used=self.tools_used[-carry.CARRIED_TOOLS_USED :],
            tools_used_unlisted=self.tools_used_unlisted + max(0, len(self.tools_used) - carry.CARRIED_TOOLS_USED),
            warnings=self.warnings,
            warnings_unlisted=self.warnings_unlisted,
            approvals=self.approvals[-carry.CARRIED_APPROVALS :],
            approvals_unlisted=self.approvals_unlisted + max(0, len(self.approvals) - carry.CARRIED_APPROVALS),
            head=self.head,
            pending_results=self.pending_results,
            recent_actions=self.recent_actions,
            trace=self.trace[-50:],
            last_usage=self.last_usage,
            pending_chars=self.pending_chars,
            sent_task=self.sent_task,
            task_ref=self.task_ref,
            daily_lease=self.daily_lease,
            step_costs=self.step_costs,
            next_prompt_tokens=self.next_prompt_tokens,
            cached_prompt_tokens=self.cached_prompt_tokens,
            last_think_at=self.last_think_at,
        )
        start = self.input.model_dump(mode="json", exclude_none=True)
        if self.task_ref is not None and inputs.task_is_large(self.input.task):
            # The model has the whole task in the conversation; the continuation's input names it.
            start["task"] = inputs.task_stub(self.input.task, self.task_ref)
        # With Worker Versioning the next execution starts on the deployment's current build (this one is pinned).
        workflow.continue_as_new(
            args=[start, self._within_payload_limit(start, carried)],
            initial_versioning_behavior=workflow.ContinueAsNewVersioningBehavior.AUTO_UPGRADE,
        )

    def _within_payload_limit(self, start: dict[str, Any], carried: CarriedState) -> CarriedState:
        """``carried``, its trace cut when needed so the continuation's input stays under Temporal's limit.

        Raises:
            ApplicationError: ``CarriedStateTooLarge``, non-retryable, when even the cut state is
                too large: the run fails, naming the limit, rather than retrying a refused command.
        """
        start_bytes = inputs.json_size(start)
        size = start_bytes + len(carried.model_dump_json())
        if size <= carry.CARRIED_STATE_BYTES:
            return carried
        # Runs that continued with a larger state before this check replay as they ran.
        if workflow.patched("carried-state-bounded"):
            self._warn(f"CARRIED_TRACE_CUT: step {self.step}: large arguments and older records left out of the carried trace")
            rest = carried.model_copy(update={"trace": [], "warnings": list(self.warnings), "warnings_unlisted": dict(self.warnings_unlisted)})
            others = start_bytes + len(rest.model_dump_json())
            carried = rest.model_copy(update={"trace": carry.fit_records(carried.trace, max(0, carry.CARRIED_STATE_BYTES - others))})
            size = start_bytes + len(carried.model_dump_json())
            if size > carry.CARRIED_STATE_BYTES:
                raise ApplicationError(
                    f"the state this run would carry into its continuation is {size:,} bytes, over the limit of "
                    f"{carry.CARRIED_STATE_BYTES:,} (CARRIED_STATE_BYTES) even with its trace cut",
                    type="CarriedStateTooLarge",
                    non_retryable=True,
                )
        return carried

    def _restore(self, carried: CarriedState) -> None:
        self.agent = carried.agent
        self.step = carried.step
        self.usage = carried.usage
        self.total_cost = carried.total_cost
        self.tools_used = carried.tools_used
        self.warnings = carried.warnings
        self.warnings_unlisted = dict(carried.warnings_unlisted)
        self.approvals = carried.approvals
        self.head = carried.head
        self.pending_results = carried.pending_results
        self.recent_actions = carried.recent_actions
        self.trace = carried.trace
        self.last_usage = carried.last_usage
        self.pending_chars = carried.pending_chars
        self.started_at_step = carried.step
        self.sent_task = carried.sent_task
        self.task_ref = carried.task_ref
        self.step_costs = list(carried.step_costs)
        self.daily_lease = carried.daily_lease
        self.tools_used_unlisted = carried.tools_used_unlisted
        self.approvals_unlisted = carried.approvals_unlisted
        self.next_prompt_tokens = carried.next_prompt_tokens
        self.cached_prompt_tokens = carried.cached_prompt_tokens
        self.last_think_at = carried.last_think_at
