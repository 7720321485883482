"""The money a run moves without a person, and the policy verdict that holds it to the profile's limits.

The rules are :mod:`durable_agent.money` (pure); this component feeds them the run's
state: what the run has moved without a person so far (carried across
continue-as-new). Calls a person approved do not count.

Runs begun before money limits, or before a call that leaves its amount out waited,
replay with the rules they ran under: where two rules give different verdicts,
``workflow.patched`` decides which one a run keeps.
"""

from __future__ import annotations

from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from durable_agent import money, policy
    from durable_agent.carry import CarriedState
    from durable_agent.schemas import ToolInfo

from durable_agent.workflows.host import Host
from durable_agent.workflows.settings import RunSettings

#: Patch: amounts are held to a per-run limit, compared in the profile's currency (unknown currency: held),
#: and held when the profile sets no limit. Runs begun before compared one call's bare number with max_amount.
PATCH_MONEY_LIMITS = "money-limits"
#: Patch: a call of a money tool that leaves its amount out waits for a person. Runs begun before let it run.
PATCH_OMITTED_AMOUNT_HOLDS = "omitted-amount-holds"


class MoneyLimits:
    """What the run has moved without a person, and the verdict on each call under the money limits.

    Args:
        host: The workflow (for ``patched``).
        settings: The run's profile (tools, approval policy) and autonomy.
    """

    def __init__(self, host: Host, settings: RunSettings) -> None:
        self._host = host
        self._settings = settings
        #: What the run's calls moved without a person's approval, in the profile's currency.
        self._moved = 0.0

    @property
    def moved(self) -> float:
        """What the run has moved without a person so far, in the profile's currency."""
        return self._moved

    def judge(self, info: ToolInfo, args: dict[str, Any]) -> policy.PolicyDecision:
        """The verdict on a call of ``info`` with ``args``, counting what the run has moved so far.

        A call judged ahead of its turn (the approval desk opens a turn's held calls
        together) is judged on the same total: only more can be moved by the time it
        runs, so a call held then is held when its turn comes too.
        """
        agent = self._settings.profile
        autonomy = self._settings.autonomy
        strict = policy.evaluate(info, args, autonomy, agent.approval, run_total=self._moved)
        limits = policy.evaluate(info, args, autonomy, agent.approval, run_total=self._moved, hold_omitted_amount=False)
        before = policy.evaluate(info, args, autonomy, agent.approval)
        # Only where two rules give different verdicts does the history record which the run follows.
        if strict.verdict != limits.verdict and self._host.patched(PATCH_OMITTED_AMOUNT_HOLDS):
            return strict
        if limits.verdict == before.verdict:
            return limits  # the same verdict either way: nothing for a replay to tell apart
        return limits if self._host.patched(PATCH_MONEY_LIMITS) else before

    def ran_without_approval(self, info: ToolInfo, args: dict[str, Any]) -> None:
        """Count the money of a call that is sent to its tool with nobody's approval."""
        self._moved += money.moved_by(info, args, self._settings.profile.approval)

    # ---------------------------------------------------------- continue-as-new

    def carry(self) -> dict[str, Any]:
        """This part of :class:`CarriedState`: what the run has moved without a person."""
        return {"moved_without_approval": self._moved}

    def restore(self, carried: CarriedState) -> None:
        self._moved = carried.moved_without_approval
