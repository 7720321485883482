"""What a run was asked to do and the profile it runs under: fixed as it starts, read by every component."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from durable_agent import contracts, redaction
    from durable_agent.carry import CarriedState
    from durable_agent.errors import failure_message
    from durable_agent.schemas import AgentInput, Autonomy, ResolveAgentInput, ResolvedAgent

from durable_agent.workflows.host import Host, is_cancellation


class RunSettings:
    """The run's input, its resolved profile and its autonomy.

    Set once while the run starts (the profile is resolved by an activity, or carried
    by a continuation); the components only read them. Before the profile is known,
    :attr:`agent` is ``None``: handlers called that early must cope.
    """

    def __init__(self) -> None:
        self.input: AgentInput | None = None
        self.agent: ResolvedAgent | None = None
        self.autonomy = Autonomy.SUPERVISED

    @property
    def profile(self) -> ResolvedAgent:
        """The resolved profile (only asked for once the run has it)."""
        assert self.agent is not None, "the profile is read before the run resolved it"
        return self.agent

    @property
    def task_input(self) -> AgentInput:
        assert self.input is not None, "the input is read before the run took it"
        return self.input

    async def resolve_agent(self, host: Host) -> None:
        """Freeze the profile for the run with the ``resolve_agent`` activity (recorded once in history).

        Raises:
            ApplicationError: non-retryable, with the activity's message: an unknown profile
                or a missing key fails the run at once, saying so plainly.
        """
        request = self.task_input
        try:
            self.agent = await host.execute_activity(
                contracts.ACTIVITY_RESOLVE_AGENT,
                ResolveAgentInput(agent=request.agent, model_override=request.model),
                result_type=ResolvedAgent,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_attempts=5),
                summary=f"resolve agent {request.agent or '(default)'}",
            )
        except ActivityError as exc:
            cause = exc.cause
            if isinstance(cause, ApplicationError):
                raise ApplicationError(cause.message, type=cause.type, non_retryable=True) from None
            raise

    async def refresh_tools(self, host: Host) -> list[str]:
        """Resolve the tools again as a continuation starts: MCP servers listed anew, remote tools read from config.

        Only the tool catalogue changes (the tools and their policy, the prompt that lists
        them); the model, approvals and budgets stay as the chain began. A failure keeps
        the carried catalogue: the run goes on with the tools it had.

        Returns:
            Warnings for the run: what the new catalogue says that the old one did not, or why it was kept.
        """
        old = self.profile
        try:
            fresh = await host.execute_activity(
                contracts.ACTIVITY_RESOLVE_AGENT,
                ResolveAgentInput(agent=old.name, model_override=self.task_input.model),
                result_type=ResolvedAgent,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_attempts=3),
                summary=f"resolve the tools of {old.name} again",
            )
        except ActivityError as exc:
            if is_cancellation(exc):
                raise
            return [f"TOOLS_NOT_REFRESHED: the tools could not be resolved again at continue-as-new ({failure_message(exc)}); the run keeps those it had"]
        self.agent = old.model_copy(
            update={"tools": fresh.tools, "prompt_ref": fresh.prompt_ref, "prompt_tokens": fresh.prompt_tokens, "warnings": fresh.warnings}
        )
        return [warning for warning in fresh.warnings if warning not in old.warnings]

    def carry(self) -> dict[str, Any]:
        """This part of :class:`CarriedState`: the profile, so a continuation never re-reads configuration."""
        # A run resolved by an older worker has its webhook URL: no secret goes into the next run's input.
        return {"agent": redaction.without_secrets(self.profile)}

    def restore(self, carried: CarriedState) -> None:
        self.agent = carried.agent
