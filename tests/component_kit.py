"""Builders for the unit tests of the workflow's components (no server): a profile, settings, records, a host."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from durable_agent.schemas import (
    ActionRecord,
    AgentInput,
    AnomalyThresholds,
    ApprovalPolicy,
    Autonomy,
    CostRecord,
    DecisionRecord,
    ModelPrice,
    ResolvedAgent,
    ToolInfo,
)
from durable_agent.workflows.settings import RunSettings
from tests.workflow_host import START

TOOLS = [
    ToolInfo(name="lookup_order", read_only=True),
    ToolInfo(name="issue_refund", risk="medium", amount_arg="amount", currency_arg="currency"),
    ToolInfo(name="cancel_order", destructive=True, risk="high"),
    ToolInfo(name="limited", read_only=True, rate_limit="2/min"),
]


def profile(**overrides: Any) -> ResolvedAgent:
    """The support demo's profile as a run resolves it (supervised, refunds over 1,000 USD held).

    Named apart from the demo's ``support``: what these tests count in the process's
    metrics must not mix with what the workflow tests measure there.
    """
    fields: dict[str, Any] = {
        "name": "unit-support",
        "model": "claude-haiku-4-5",
        "autonomy": Autonomy.SUPERVISED,
        "max_tokens": 1024,
        "prompt_ref": "sha256:prompt",
        "tools": TOOLS,
        "approval": ApprovalPolicy(max_amount=1000.0, timeout_seconds=300),
        "anomalies": AnomalyThresholds(),
        "prices": {"claude-haiku-4-5": ModelPrice(input=1.0, output=5.0)},
        "fallback_price": ModelPrice(input=3.0, output=15.0),
        "prompt_tokens": 400,
    }
    fields.update(overrides)
    return ResolvedAgent(**fields)


def settings(task: str = "Refund order ord-789", **overrides: Any) -> RunSettings:
    """Settings of a run that has started: its input taken and its profile resolved."""
    run = RunSettings()
    run.input = AgentInput(task=task)
    run.agent = profile(**overrides)
    run.autonomy = run.agent.autonomy
    return run


def record(step: int, call: int = 0, **action: Any) -> DecisionRecord:
    """A decision record of ``step`` (a tool call unless ``action`` says otherwise)."""
    return DecisionRecord(
        record_id=f"wf-1/first-run/{step}/{call}",
        timestamp=START + timedelta(seconds=step),
        agent_id="unit-support",
        session_id="wf-1",
        step=step,
        action=ActionRecord(**{"type": "tool_call", "tool": "lookup_order", "args": {"order_id": "ord-789"}, **action}),
        observation={"status": "ok", "duration_ms": 5},
        cost=CostRecord(input_tokens=10, output_tokens=5, estimated_cost=0.0001),
    )
