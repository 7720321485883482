"""Should this action run, wait for a person, or be refused? Pure functions.

The workflow asks :func:`evaluate` before every tool call and acts on the verdict;
these rules are unit-tested without Temporal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from durable_agent.schemas import ApprovalPolicy, Autonomy, ToolInfo

Verdict = Literal["allow", "needs_approval", "refuse"]


@dataclass(frozen=True)
class PolicyDecision:
    verdict: Verdict
    reason: str
    risk: str = "low"


def _amount(args: dict[str, Any], name: str | None) -> float | None:
    if name is None or name not in args:
        return None
    try:
        return float(args[name])
    except (TypeError, ValueError):
        return None


def evaluate(tool: ToolInfo, args: dict[str, Any], autonomy: Autonomy, policy: ApprovalPolicy) -> PolicyDecision:
    """Decide what happens to a call of ``tool`` with ``args``.

    - ``read_only``: only tools marked read-only run; the rest are refused.
    - ``autonomous``: everything runs (budgets and rate limits still apply elsewhere).
    - ``supervised``: a protected tool, a destructive one, one whose risk is in
      ``high_risk_actions``, or an amount above ``max_amount`` waits for approval.
    """
    if autonomy is Autonomy.READ_ONLY:
        if tool.read_only:
            return PolicyDecision("allow", "read-only tool", tool.risk)
        return PolicyDecision(
            "refuse",
            f"the agent runs read-only and {tool.name} is not a read-only tool; it was not executed",
            tool.risk,
        )
    if autonomy is Autonomy.AUTONOMOUS:
        return PolicyDecision("allow", "autonomous", tool.risk)

    if tool.protected or tool.name in policy.protected_tools:
        return PolicyDecision("needs_approval", f"{tool.name} is a protected tool", "high")
    if tool.destructive and policy.destructive_needs_approval:
        return PolicyDecision("needs_approval", f"{tool.name} is destructive", "high")
    amount = _amount(args, tool.amount_arg)
    if amount is not None and policy.max_amount is not None and amount > policy.max_amount:
        currency = args.get(tool.currency_arg) if tool.currency_arg else None
        unit = f" {currency}" if currency else ""
        return PolicyDecision(
            "needs_approval",
            f"amount {amount:g}{unit} is above the limit of {policy.max_amount:g}",
            "high" if tool.risk == "low" else tool.risk,
        )
    if tool.risk in policy.high_risk_actions:
        return PolicyDecision("needs_approval", f"{tool.name} is a {tool.risk}-risk action", tool.risk)
    return PolicyDecision("allow", "within policy", tool.risk)


def reviewer_allowed(policy: ApprovalPolicy, reviewer: str | None) -> bool:
    """An empty allow-list lets anyone decide; otherwise the reviewer must be listed."""
    if not policy.reviewers:
        return True
    return reviewer is not None and reviewer in policy.reviewers
