"""Activities: everything that touches the outside world (models, tools, reviewers)."""

from durable_agent.activities.agent import AgentActivities
from durable_agent.activities.approvals import ApprovalActivities, ApprovalIndex, ensure_approval_index, register_approval_index
from durable_agent.activities.budget import BudgetActivities, LimitsClient
from durable_agent.activities.records import RecordActivities

__all__ = [
    "AgentActivities",
    "ApprovalActivities",
    "ApprovalIndex",
    "BudgetActivities",
    "LimitsClient",
    "RecordActivities",
    "ensure_approval_index",
    "register_approval_index",
]
