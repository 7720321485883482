"""Activities: everything that touches the outside world (models, tools, reviewers)."""

from durable_agent.activities.agent import AgentActivities
from durable_agent.activities.budget import BudgetActivities, LimitsClient
from durable_agent.activities.records import RecordActivities

__all__ = ["AgentActivities", "BudgetActivities", "LimitsClient", "RecordActivities"]
