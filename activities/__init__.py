"""Activities: everything that touches the outside world (models, tools, reviewers)."""

from activities.agent import AgentActivities

__all__ = ["AgentActivities"]
