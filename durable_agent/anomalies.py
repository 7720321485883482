"""Anomaly rules: a loop, a costly step, a greedy step. Pure functions."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from durable_agent.schemas import AnomalyThresholds

POSSIBLE_LOOP = "POSSIBLE_LOOP"
HIGH_COST = "HIGH_COST"
HIGH_TOKEN_USAGE = "HIGH_TOKEN_USAGE"


#: Canonical arguments longer than this are kept as their digest: the signatures are carried by continue-as-new.
SIGNATURE_ARGS_CHARS = 1_000


def action_signature(tool: str, args: dict[str, Any] | None) -> str:
    """A stable text for 'the same call': tool name and canonical arguments (their SHA-256 when long)."""
    canonical = json.dumps(args or {}, sort_keys=True, default=str)
    if len(canonical) > SIGNATURE_ARGS_CHARS:
        digest = hashlib.sha256(canonical.encode("utf-8", "backslashreplace")).hexdigest()
        canonical = "{sha256:" + digest + "}"
    return tool + canonical


def detect(
    recent_actions: list[str],
    *,
    step_cost: float,
    step_tokens: int,
    thresholds: AnomalyThresholds,
) -> list[str]:
    """Warnings for the step just taken.

    Args:
        recent_actions: :func:`action_signature` of the latest actions, newest last.
        step_cost: USD spent by this step's model call.
        step_tokens: Tokens used by this step's model call.
        thresholds: The profile's thresholds.
    """
    warnings: list[str] = []
    n = thresholds.loop_repeats
    if len(recent_actions) >= n and len(set(recent_actions[-n:])) == 1:
        tool = recent_actions[-1].split("{", 1)[0]
        warnings.append(f"{POSSIBLE_LOOP}: {tool} called {n} times in a row with the same arguments")
    if step_cost > thresholds.step_cost_usd:
        warnings.append(f"{HIGH_COST}: step cost ${step_cost:.4f} is above ${thresholds.step_cost_usd:.4f}")
    if step_tokens > thresholds.step_tokens:
        warnings.append(f"{HIGH_TOKEN_USAGE}: step used {step_tokens} tokens, above {thresholds.step_tokens}")
    return warnings
