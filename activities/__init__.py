"""Activities: everything that touches the outside world (models, tools, reviewers)."""

from activities.agent import AgentActivities
from activities.budget import BudgetActivities, LimitsClient

__all__ = ["AgentActivities", "BudgetActivities", "LimitsClient"]
