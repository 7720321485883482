"""Workflows: deterministic decisions. No I/O, no clocks, no randomness but Temporal's."""

from durable_agent.workflows.agent import AgentWorkflow
from durable_agent.workflows.ledger import BudgetLedger
from durable_agent.workflows.ratelimit import RateLimiter

WORKFLOWS: list[type] = [AgentWorkflow, BudgetLedger, RateLimiter]

__all__ = ["AgentWorkflow", "BudgetLedger", "RateLimiter", "WORKFLOWS"]
