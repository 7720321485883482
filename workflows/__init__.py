"""Workflows: deterministic decisions. No I/O, no clocks, no randomness but Temporal's."""

from workflows.agent import AgentWorkflow

WORKFLOWS: list[type] = [AgentWorkflow]

__all__ = ["AgentWorkflow", "WORKFLOWS"]
