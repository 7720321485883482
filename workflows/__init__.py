"""Workflows: deterministic decisions. No I/O, no clocks, no randomness but Temporal's.

The workflow classes are imported on first use (``WORKFLOWS``, ``AgentWorkflow``...),
not with the package: every run's sandbox imports the package again, and a run of
one workflow must not pay for importing the others.

Only the modules that define the workflow classes (:data:`WORKFLOW_MODULES`) are
imported afresh in each run's sandbox. The decision modules they use (the run's
components: records, approvals, budgets...) are passed through, imported once per
worker like the rest of ``durable_agent``: they hold no module state, and what the
sandbox would check in them at run time (no clock, randomness, I/O or threads but
Temporal's) ``tests/test_determinism.py`` checks in their source.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "AgentWorkflow": "durable_agent.workflows.agent",
    "BudgetLedger": "durable_agent.workflows.ledger",
    "RateLimiter": "durable_agent.workflows.ratelimit",
}

#: The modules that define workflow classes: the only ones each run's sandbox imports afresh.
WORKFLOW_MODULES = frozenset(_WHERE.values())

__all__ = ["AgentWorkflow", "BudgetLedger", "ENTITY_WORKFLOWS", "RateLimiter", "WORKFLOWS", "WORKFLOW_MODULES"]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    if name == "ENTITY_WORKFLOWS":
        #: The shared entities: they run on the limits task queue (and on the agents' queue for older ones).
        return [__getattr__("BudgetLedger"), __getattr__("RateLimiter")]
    if name == "WORKFLOWS":
        return [__getattr__("AgentWorkflow"), *__getattr__("ENTITY_WORKFLOWS")]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
