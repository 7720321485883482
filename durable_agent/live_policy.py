"""The policy a run decides under, read from the worker's configuration as it is now.

A profile has two halves that change at different speeds:

- its **policy**: approval thresholds (``max_amount`` and the rest of ``[approval]``),
  the autonomy ceiling, anomaly thresholds and actions, and each tool's rules
  (read-only, destructive, risk, amount argument, protected, rate limit). A platform
  team tightens these while runs are waiting for a reviewer, and a lowered
  ``max_amount`` must hold the very next decision of a run that started last week;
- its **catalogue**: the model, the system prompt and the tools the model is shown.
  These stay fixed within one workflow execution (the model must not see its tools
  change mid-conversation) and change at the next continue-as-new.

So the ``think`` activity reports the policy as configured when it changed
(:mod:`durable_agent.activities.policy`), the run decides the step's tool calls
under it (a tool the worker cannot describe keeps its rules), and every decision record names the
policy it was decided under (:func:`policy_digest`) and the catalogue it ran with
(:func:`profile_digest`). Pure functions: the workflow and the activity share them.
"""

from __future__ import annotations

import hashlib
from typing import Any

from durable_agent.schemas.profile import ApprovalPolicy, LivePolicy, ResolvedAgent, ToolInfo
from durable_agent.signing import signable_json

#: The fields of a tool that are policy (read live); the rest (name, description, schema,
#: timeout, retry plan) is the catalogue, fixed for the workflow execution.
TOOL_RULES = (
    "read_only",
    "destructive",
    "idempotent",
    "risk",
    "amount_arg",
    "currency_arg",
    "protected",
    "rate_limit",
    "rate_limit_wait",
    "rate_limit_lane",
)


def tool_rules(info: ToolInfo) -> dict[str, Any]:
    """The policy half of a tool (:data:`TOOL_RULES`)."""
    return info.model_dump(mode="json", include=set(TOOL_RULES))


def policy_of(agent: ResolvedAgent) -> LivePolicy:
    """The policy ``agent`` holds now (as resolved, or as last refreshed)."""
    return LivePolicy(
        autonomy=agent.autonomy,
        approval=without_webhook(agent.approval),
        anomalies=agent.anomalies,
        tools={info.name: tool_rules(info) for info in agent.tools},
    )


def policy_digest(policy: LivePolicy) -> str:
    """A short name of ``policy``: equal policies, equal digests, whichever worker computes it."""
    return "sha256:" + hashlib.sha256(signable_json(policy.model_dump(mode="json"))).hexdigest()[:16]


def profile_digest(agent: ResolvedAgent) -> str:
    """A short name of what the model was shown: the model, the prompt and the tool catalogue.

    ``prompt_ref`` is the content address of the system prompt with every tool's name,
    description and schema, so a changed prompt or tool gives another digest.
    """
    catalogue = {"model": agent.model, "prompt": agent.prompt_ref, "max_tokens": agent.max_tokens, "tools": [t.name for t in agent.tools]}
    return "sha256:" + hashlib.sha256(signable_json(catalogue)).hexdigest()[:16]


def applied(agent: ResolvedAgent, policy: LivePolicy) -> ResolvedAgent:
    """``agent`` deciding under ``policy``: its catalogue unchanged, its policy replaced.

    Only the run's own tools take rules: a tool the configuration added reaches the
    run at its next continue-as-new, and one it removed stays callable until then
    (its rules, if any, still apply).
    """
    tools = [info.model_copy(update=policy.tools[info.name]) if info.name in policy.tools else info for info in agent.tools]
    return agent.model_copy(
        update={"autonomy": policy.autonomy, "approval": without_webhook(policy.approval), "anomalies": policy.anomalies, "tools": tools}
    )


def without_webhook(approval: ApprovalPolicy) -> ApprovalPolicy:
    """``approval`` as a payload may carry it: without its webhook URL."""
    # The webhook URL is a secret: notify_reviewer reads it from the worker's configuration, never a payload.
    return approval if approval.webhook_url is None else approval.model_copy(update={"webhook_url": None})
