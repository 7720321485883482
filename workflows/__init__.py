"""Workflows: deterministic decisions. No I/O, no clocks, no randomness but Temporal's."""

from workflows.agent import AgentWorkflow
from workflows.ledger import BudgetLedger
from workflows.ratelimit import RateLimiter

WORKFLOWS: list[type] = [AgentWorkflow, BudgetLedger, RateLimiter]

__all__ = ["AgentWorkflow", "BudgetLedger", "RateLimiter", "WORKFLOWS"]
