"""Should this action run, wait for a person, or be refused? Who may decide? Pure functions.

The workflow asks :func:`evaluate` before every tool call and acts on the verdict,
and :func:`run_autonomy` once per run; who may decide a held action is
:mod:`durable_agent.decisions`. These rules are unit-tested without Temporal
(``tests/test_policy.py``); nothing here reads the clock, the environment or the
network, so the workflow may call it freely.
"""

from __future__ import annotations

import json
import math
import shlex
from dataclasses import dataclass
from collections.abc import Mapping
from typing import Any, Literal

from durable_agent import money
from durable_agent.decisions import DecisionRefused, decision_target, reviewer_allowed
from durable_agent.schemas import ApprovalPolicy, Autonomy, PendingApproval, ToolInfo

#: Who may decide lives in :mod:`durable_agent.decisions`; these names stay importable from here.
__all__ = [
    "DecisionRefused",
    "PolicyDecision",
    "amount_of",
    "approve_command",
    "decision_target",
    "evaluate",
    "reviewer_allowed",
    "run_autonomy",
    "signed_approve_command",
    "waiting_details",
]

Verdict = Literal["allow", "needs_approval", "refuse"]


@dataclass(frozen=True)
class PolicyDecision:
    """The verdict on one tool call.

    Attributes:
        verdict: ``allow`` (run it), ``needs_approval`` (wait for a person) or
            ``refuse`` (do not run it; the model is told ``reason``).
        reason: One sentence for the reviewer or the model.
        risk: The risk the reviewer sees: the tool's own, raised to ``high`` for
            protected, destructive and over-limit actions.
    """

    verdict: Verdict
    reason: str
    risk: str = "low"


def _amount(args: dict[str, Any], name: str | None) -> float | None:
    """The money in ``args[name]``; ``nan`` when present but not a finite number."""
    if name is None or name not in args:
        return None
    value = args[name]
    if isinstance(value, bool):
        return math.nan
    try:
        amount = float(value)
    except (TypeError, ValueError):
        return math.nan
    return amount if math.isfinite(amount) else math.nan


def amount_of(args: dict[str, Any], name: str | None) -> float | None:
    """The money in ``args[name]`` as a number, for the reviewer to see; ``None`` when absent or not a number."""
    amount = _amount(args, name)
    return None if amount is None or math.isnan(amount) else amount


def evaluate(
    tool: ToolInfo, args: dict[str, Any], autonomy: Autonomy, policy: ApprovalPolicy, run_total: float | None = None,
    *, hold_omitted_amount: bool = True,
) -> PolicyDecision:
    """Decide what happens to a call of ``tool`` with ``args``.

    - ``read_only``: only tools marked read-only run; the rest are refused.
    - ``autonomous``: everything runs (budgets and rate limits still apply elsewhere).
    - ``supervised``: a protected tool (``tool.protected`` or listed in
      ``protected_tools``), a destructive one (unless ``destructive_needs_approval``
      is off), money the limits do not let through (:func:`durable_agent.money.check`:
      over ``max_amount``, over the run's ``max_amount_per_run`` with ``run_total``,
      a currency with no rate, no limit set, an amount that is not a number or none at
      all), or a risk listed in ``high_risk_actions`` waits for approval; the rest run.

    Args:
        tool: The tool's policy metadata.
        args: The arguments the model gave.
        autonomy: The run's effective autonomy (see :func:`run_autonomy`).
        policy: The profile's approval policy.
        run_total: What the run has moved without a person so far, in the profile's
            currency. ``None``: the rules of runs begun before money limits, which
            replay with them (one call's bare number against ``max_amount``, when set).
        hold_omitted_amount: False for runs begun before a call that leaves its amount
            out waited (see :func:`durable_agent.money.check`); they replay with it.

    Returns:
        The verdict, with a reason a person can read and the risk to show.
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
    if run_total is not None:
        moves = money.check(tool, args, policy, run_total, hold_omitted=hold_omitted_amount)
        hold = moves.hold if moves is not None else None
    else:
        hold = _hold_before_money_limits(tool, args, policy)
    if hold is not None:
        # A low-risk tool that moves money is shown to the reviewer as high risk.
        return PolicyDecision("needs_approval", hold, "high" if tool.risk == "low" else tool.risk)
    if tool.risk in policy.high_risk_actions:
        return PolicyDecision("needs_approval", f"{tool.name} is a {tool.risk}-risk action", tool.risk)
    return PolicyDecision("allow", "within policy", tool.risk)


def _hold_before_money_limits(tool: ToolInfo, args: dict[str, Any], policy: ApprovalPolicy) -> str | None:
    """Why a call waited before money limits (runs begun then replay with it): a bare number above ``max_amount``."""
    amount = _amount(args, tool.amount_arg)
    if amount is None or policy.max_amount is None:
        return None
    if math.isnan(amount):
        return f"the amount {args.get(tool.amount_arg or '')!r} is not a number a limit can be checked against"
    if amount > policy.max_amount:
        currency = args.get(tool.currency_arg) if tool.currency_arg else None
        unit = f" {currency}" if currency else ""
        return f"amount {amount:g}{unit} is above the limit of {policy.max_amount:g}"
    return None


def run_autonomy(profile: Autonomy, requested: Autonomy | None) -> tuple[Autonomy, str | None]:
    """The autonomy a run gets: the profile's, tightened (never loosened) by the run's request.

    Returns:
        The effective level, and a warning for the run when the request tried to loosen it.
    """
    effective = profile.tighten(requested)
    if requested is not None and requested is not effective:
        return effective, (
            f"AUTONOMY_NOT_LOOSENED: the run asked for {requested.value}, but a run may only tighten "
            f"the profile's {profile.value}; it runs {effective.value}"
        )
    return effective, None


def approve_command(
    workflow_id: str,
    approval_id: str,
    *,
    namespace: str | None = None,
    name: str = "approve",
    reviewer: str = "YOUR_NAME",
    address: str | None = None,
    args_sha256: str | None = None,
) -> str:
    """The exact ``temporal`` CLI command that sends ``name`` (approve or reject) for one approval.

    ``--address`` is added only when given: by default the CLI reads ``TEMPORAL_ADDRESS``
    or its profile, as the worker does. With ``args_sha256`` the decision counts only
    for the arguments the reviewer was shown.
    """
    fields = {"approval_id": approval_id, "reviewer": reviewer} | ({"args_sha256": args_sha256} if args_sha256 else {})
    payload = json.dumps(fields)
    parts = ["temporal", "workflow", "signal"]
    if address:
        parts += ["--address", address]
    if namespace and namespace != "default":
        parts += ["--namespace", namespace]
    parts += ["--workflow-id", workflow_id, "--name", name, "--input", payload]
    return shlex.join(parts)


def signed_approve_command(workflow_id: str, approval_id: str, *, reviewer: str = "YOUR_NAME", key: str = "YOUR_KEY_FILE") -> str:
    """The ``durable-agent approve`` command that signs and sends an approval (profiles that require signatures)."""
    return shlex.join(["durable-agent", "approve", workflow_id, "--approval-id", approval_id, "--reviewer", reviewer, "--key", key])


def waiting_details(pending: list[PendingApproval], approve_commands: Mapping[str, str], *, signed: bool) -> str:
    """What a run waiting for approval shows in the Temporal UI: each held action, why, until when, and how to decide it.

    Args:
        pending: What waits, oldest first.
        approve_commands: The command that approves each, by approval id.
        signed: Decisions must be signed (the command is ``durable-agent approve``; the inbox decides too).
    """
    how = (
        "Reject: add `--reject`. Or decide in the reviewer inbox."
        if signed
        else "Reject: the same with `--name reject`. Or use More Actions > Send a Signal here."
    )
    blocks = [
        f"**Waiting for approval** `{p.approval_id}`: {p.tool} `{json.dumps(p.args, sort_keys=True)}`\n\n"
        f"Why: {p.reason} (risk {p.risk}). Deadline: {p.deadline.isoformat()}.\n\n"
        f"Run `{p.run_id}`, args_sha256 `{p.args_sha256}`.\n\n"
        f"Approve: `{approve_commands[p.approval_id]}`\n\n{how}"
        for p in pending
    ]
    return "\n\n".join(blocks)
