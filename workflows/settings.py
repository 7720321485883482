"""What a run was asked to do and the profile it runs under: fixed as it starts, read by every component."""

from __future__ import annotations

from datetime import timedelta
from collections.abc import Callable
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from durable_agent import contracts, live_policy, policy, redaction
    from durable_agent.schemas import ThinkOutput
    from durable_agent.carry import CarriedState
    from durable_agent.errors import failure_message
    from durable_agent.schemas import AgentInput, Autonomy, ResolveAgentInput, ResolvedAgent

from durable_agent.workflows.host import Host, is_cancellation

#: Patch: the run decides under the policy the worker's configuration holds at each step (runs before it kept the one they resolved).
PATCH_LIVE_POLICY = "live-policy"


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
        #: The digest of the configured policy the worker last reported (each execution asks for it once, whole).
        self.reported_policy_digest: str | None = None
        self._digested: ResolvedAgent | None = None
        self._digest_pair: tuple[str | None, str | None] = (None, None)

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

    def take_policy(self, host: Host, out: ThinkOutput, warn: Callable[[str], None]) -> None:
        """Decide the step's tool calls under the policy the worker's configuration held when the model replied.

        Approval thresholds, the autonomy ceiling, anomaly actions and tool rules follow
        ``agents.toml`` as it is at each step (tightened or loosened); the prompt and the
        tools the model sees stay as resolved until the next continue-as-new. A policy
        that could not be read leaves the run deciding under the one it has, and says so.
        """
        for warning in out.policy_warnings:
            warn(warning)
        if out.policy_digest is not None:
            self.reported_policy_digest = out.policy_digest
        # Runs begun before read their policy once, as they resolved it; the patch marks where they start following the file.
        if out.policy is None or not host.patched(PATCH_LIVE_POLICY):
            return
        before = live_policy.policy_of(self.profile)
        self.agent = live_policy.applied(self.profile, out.policy)
        self.autonomy, _ = policy.run_autonomy(self.agent.autonomy, self.task_input.autonomy)
        if live_policy.policy_of(self.agent) != before:
            warn(f"POLICY_UPDATED: decisions follow agents.toml as it is now (policy {self.policy_digest}, autonomy {self.autonomy.value})")

    @property
    def policy_digest(self) -> str | None:
        """The digest of the policy decisions are made under now (None before the profile is known)."""
        return self._digests()[0]

    @property
    def profile_digest(self) -> str | None:
        """The digest of what the model is shown: model, prompt and tool catalogue (fixed for the execution)."""
        return self._digests()[1]

    def _digests(self) -> tuple[str | None, str | None]:
        # Every decision record names both: computed once per profile the run holds, not once per record.
        agent = self.agent
        if agent is None:
            return None, None
        if self._digested is not agent:
            self._digested = agent
            self._digest_pair = (live_policy.policy_digest(live_policy.policy_of(agent)), live_policy.profile_digest(agent))
        return self._digest_pair

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
