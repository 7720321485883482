"""Workflows: deterministic decisions. No I/O, no clocks, no randomness but Temporal's."""

from durable_agent.workflows.agent import AgentWorkflow
from durable_agent.workflows.ledger import BudgetLedger
from durable_agent.workflows.ratelimit import RateLimiter

#: The shared entities: they run on the limits task queue (and on the agents' queue for older ones).
ENTITY_WORKFLOWS: list[type] = [BudgetLedger, RateLimiter]
WORKFLOWS: list[type] = [AgentWorkflow, *ENTITY_WORKFLOWS]

__all__ = ["AgentWorkflow", "BudgetLedger", "ENTITY_WORKFLOWS", "RateLimiter", "WORKFLOWS"]
