"""The anomaly watch: the run's recent actions and step costs, checked against the profile's rules each step.

The rules themselves are pure functions in :mod:`durable_agent.anomalies`; this
keeps what they need to remember and says what the profile makes the run do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from durable_agent import anomalies, telemetry
    from durable_agent.carry import CarriedState
    from durable_agent.schemas import ToolCall, Usage

from durable_agent.workflows.settings import RunSettings

#: Step costs the median rule remembers (carried across continue-as-new).
COSTS_KEPT = 50
#: Actions the loop rules look back on.
ACTIONS_KEPT = 20


@dataclass(frozen=True)
class Finding:
    """What the watch found at one step and what the profile makes the run do about it."""

    #: One warning per anomaly, for the step's record.
    warnings: list[str] = field(default_factory=list)
    #: ``warn`` (go on), ``pause`` (hold the run for a person) or ``stop`` (end it).
    action: anomalies.AnomalyAction = "warn"
    #: The anomalies that call for ``action``, in words.
    reason: str = ""


class AnomalyWatch:
    """Loops, costly steps and token floods, per the profile's ``anomalies`` thresholds.

    Args:
        settings: The run's profile (thresholds, and the agent named in metrics).
        warn: Where run-level warnings go (the record book).
    """

    def __init__(self, settings: RunSettings, warn: Callable[[str], None]) -> None:
        self._settings = settings
        self._warn = warn
        self._recent_actions: list[str] = []
        self._step_costs: list[float] = []

    def check(self, step: int, call: ToolCall | None, step_cost: float, usage: Usage) -> Finding:
        """The anomalies of ``call`` (``None``: the final answer) at ``step``, with the step's cost and tokens.

        A turn's later calls pass no cost of their own. A final answer ends the run
        anyway: its anomalies only warn.
        """
        agent = self._settings.profile
        if call is not None:
            self._recent_actions.append(anomalies.action_signature(call.name, call.args))
            self._recent_actions = self._recent_actions[-ACTIONS_KEPT:]
        found = anomalies.detect(
            self._recent_actions if call is not None else [],
            step_cost=step_cost,
            step_tokens=usage.total_tokens,
            thresholds=agent.anomalies,
            previous_costs=self._step_costs,
        )
        if step_cost > 0:
            self._step_costs = [*self._step_costs, step_cost][-COSTS_KEPT:]
        action, acting = anomalies.strongest_action(found, agent.anomalies) if call is not None else ("warn", [])
        for anomaly in found:
            self._warn(f"step {step}: {anomaly}")
            telemetry.count_anomaly(agent.name, anomaly.kind, action if anomaly in acting else "warn")
        return Finding([str(a) for a in found], action, "; ".join(str(a) for a in acting))

    def carry(self) -> dict[str, Any]:
        """This part of :class:`CarriedState`: the latest actions and step costs."""
        return {"recent_actions": self._recent_actions, "step_costs": self._step_costs}

    def restore(self, carried: CarriedState) -> None:
        self._recent_actions = carried.recent_actions
        self._step_costs = list(carried.step_costs)
