"""Workflows: deterministic decisions. No I/O, no clocks, no randomness but Temporal's.

The workflow classes are imported on first use (``WORKFLOWS``, ``AgentWorkflow``...),
not with the package: every run's sandbox imports the package again, and a run of
one workflow must not pay for importing the others.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "AgentWorkflow": "durable_agent.workflows.agent",
    "BudgetLedger": "durable_agent.workflows.ledger",
    "RateLimiter": "durable_agent.workflows.ratelimit",
}

__all__ = ["AgentWorkflow", "BudgetLedger", "ENTITY_WORKFLOWS", "RateLimiter", "WORKFLOWS"]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    if name == "ENTITY_WORKFLOWS":
        #: The shared entities: they run on the limits task queue (and on the agents' queue for older ones).
        return [__getattr__("BudgetLedger"), __getattr__("RateLimiter")]
    if name == "WORKFLOWS":
        return [__getattr__("AgentWorkflow"), *__getattr__("ENTITY_WORKFLOWS")]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
