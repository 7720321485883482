"""The run's spend: its token usage, its cost, and its own budget (``budget_usd``).

The shared daily budget is :mod:`.daily_budget`'s; the prices and the one
rounding rule are :mod:`durable_agent.pricing`'s.
"""

from __future__ import annotations

from typing import Any, Protocol

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from durable_agent import pricing
    from durable_agent.carry import CarriedState
    from durable_agent.schemas import ModelPrice, Usage

from durable_agent.workflows.host import Host
from durable_agent.workflows.settings import RunSettings


class Delegated(Protocol):
    """What the run's sub-agents have spent so far (charged to the run as they spend it)."""

    def cost(self) -> float: ...

    def usage(self) -> Usage: ...


class _NoSubagents:
    def cost(self) -> float:
        return 0.0

    def usage(self) -> Usage:
        return Usage()

#: Patch: a step's cost is rounded once, and the total is the sum of the rounded costs.
PATCH_COSTS_ROUNDED_ONCE = "costs-rounded-once"


class Spend:
    """Usage and cost so far, and what is left of the run's budget.

    ``total_cost`` and ``usage`` are the run's own model calls; :meth:`run_cost` and
    :meth:`run_usage` add what its sub-agents spent, and the budget counts both.

    Args:
        host: The workflow (for the patch that rounds costs once).
        settings: The run's profile (its model's price).
        delegated: What the run's sub-agents have spent (none by default).
    """

    def __init__(self, host: Host, settings: RunSettings, delegated: Delegated | None = None) -> None:
        self._host = host
        self._settings = settings
        self._delegated = delegated or _NoSubagents()
        #: The run's cap in USD (the input's, else the profile's); ``None``: none.
        self.budget_usd: float | None = None
        self.usage = Usage()
        self.total_cost = 0.0
        #: What compaction cost in the current step (charged to the daily budget with the step's model call).
        self._compaction_cost = 0.0

    def set_budget(self, budget_usd: float | None) -> None:
        self.budget_usd = budget_usd

    def price(self) -> ModelPrice:
        """The price of the run's model: the configured one, else the fallback."""
        agent = self._settings.profile
        return pricing.find_price(agent.model, agent.prices) or agent.fallback_price

    def run_cost(self) -> float:
        """What the run has spent: its own model calls and its sub-agents' runs."""
        delegated = self._delegated.cost()
        return pricing.shown_usd(self.total_cost + delegated) if delegated else self.total_cost

    def run_usage(self) -> Usage:
        """The tokens of the run's own model calls and of its sub-agents' runs."""
        return self.usage + self._delegated.usage()

    def budget_remaining(self) -> float | None:
        """The run's budget left, as runs show amounts; ``None`` without a budget."""
        if self.budget_usd is None:
            return None
        return pricing.shown_usd(max(0.0, self.budget_usd - self.run_cost()))

    def over_budget_with(self, estimate: float) -> str | None:
        """Why a model call estimated at ``estimate`` may not be made (it could take the run over its budget), or ``None``."""
        spent = self.run_cost()
        if self.budget_usd is not None and spent + estimate > self.budget_usd:
            return (
                f"the run's budget of ${self.budget_usd:.4f} would be exceeded by the next model call "
                f"(spent ${spent:.4f}, next call estimated at up to ${estimate:.4f})"
            )
        return None

    def spent_for(self, tool: str) -> str | None:
        """Why ``tool`` may not run (the run's budget is spent), or ``None``."""
        spent = self.run_cost()
        if self.budget_usd is not None and spent > self.budget_usd:
            return f"the run's budget of ${self.budget_usd:.4f} is spent (${spent:.4f}); {tool} was not run"
        return None

    def begin_step(self) -> None:
        """A new step: no compaction charged to it yet."""
        self._compaction_cost = 0.0

    def charge_step(self, usage: Usage, price: ModelPrice) -> float:
        """Add a step's model calls; their cost, as the step's record shows it.

        One rounding rule: the total is the sum of the steps' costs as their records show them.
        Runs begun before it add unrounded costs, as they were recorded doing.
        """
        step_cost = pricing.cost_usd(usage, price)
        self.usage = self.usage + usage
        if self._host.patched(PATCH_COSTS_ROUNDED_ONCE):
            step_cost = pricing.shown_usd(step_cost)
            self.total_cost = pricing.shown_usd(self.total_cost + step_cost)
        else:
            self.total_cost += step_cost
        return step_cost

    def charge_compaction(self, usage: Usage) -> float:
        """Add a compaction's model call; its cost, rounded (compactions came with the one rounding rule)."""
        cost_usd = pricing.shown_usd(pricing.cost_usd(usage, self.price()))
        self.usage = self.usage + usage
        self.total_cost = pricing.shown_usd(self.total_cost + cost_usd)
        self._compaction_cost += cost_usd
        return cost_usd

    def step_total(self, step_cost: float) -> float:
        """What the step spent in all: its model calls and any compaction made for it."""
        return step_cost + self._compaction_cost

    def carry(self) -> dict[str, Any]:
        """This part of :class:`CarriedState`: usage and cost so far."""
        return {"usage": self.usage, "total_cost": self.total_cost}

    def restore(self, carried: CarriedState) -> None:
        self.usage = carried.usage
        self.total_cost = carried.total_cost
