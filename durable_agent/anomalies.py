"""Anomaly rules: a loop, a costly step, a greedy step; and what each one makes the run do.

Pure functions, called from the workflow after each step. A rule finds an
:class:`Anomaly`; the profile's ``[agents.NAME.anomalies]`` table says what it
triggers: ``warn`` (a warning in the record, the status and the result),
``pause`` (the run holds until a reviewer resumes or stops it) or ``stop`` (the
run ends with status ``stopped``). :func:`strongest_action` picks the one to take.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from dataclasses import dataclass
from typing import Any, Literal

from durable_agent.schemas import AnomalyThresholds

POSSIBLE_LOOP = "POSSIBLE_LOOP"
HIGH_COST = "HIGH_COST"
HIGH_TOKEN_USAGE = "HIGH_TOKEN_USAGE"
#: Every kind a rule can find, for metrics and documentation.
KINDS = (POSSIBLE_LOOP, HIGH_COST, HIGH_TOKEN_USAGE)

AnomalyAction = Literal["warn", "pause", "stop"]
_ACTION_RANK: dict[str, int] = {"warn": 0, "pause": 1, "stop": 2}
#: Longest repeating pattern the loop rule looks for: A-B-A-B (2) and A-B-C-A-B-C (3).
MAX_CYCLE_LENGTH = 3


@dataclass(frozen=True)
class Anomaly:
    """One rule's finding for one step."""

    kind: str
    message: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


#: Canonical arguments longer than this are kept as their digest: the signatures are carried by continue-as-new.
SIGNATURE_ARGS_CHARS = 1_000


def action_signature(tool: str, args: dict[str, Any] | None) -> str:
    """A stable text for 'the same call': tool name and canonical arguments (their SHA-256 when long)."""
    canonical = json.dumps(args or {}, sort_keys=True, default=str)
    if len(canonical) > SIGNATURE_ARGS_CHARS:
        digest = hashlib.sha256(canonical.encode("utf-8", "backslashreplace")).hexdigest()
        canonical = "{sha256:" + digest + "}"
    return tool + canonical


def _tool_of(signature: str) -> str:
    return signature.split("{", 1)[0]


def find_loop(recent_actions: list[str], thresholds: AnomalyThresholds) -> Anomaly | None:
    """The same call ``loop_repeats`` times in a row, or a cycle of 2-3 calls repeated ``cycle_repeats`` times.

    Args:
        recent_actions: :func:`action_signature` of the latest actions, newest last.
        thresholds: The profile's thresholds.
    """
    n = thresholds.loop_repeats
    if len(recent_actions) >= n and len(set(recent_actions[-n:])) == 1:
        return Anomaly(POSSIBLE_LOOP, f"{_tool_of(recent_actions[-1])} called {n} times in a row with the same arguments")
    repeats = thresholds.cycle_repeats
    for length in range(2, MAX_CYCLE_LENGTH + 1):
        window = recent_actions[-length * repeats :]
        if len(window) < length * repeats:
            break
        pattern = window[:length]
        if len(set(pattern)) == length and all(window[i] == pattern[i % length] for i in range(len(window))):
            names = " -> ".join(_tool_of(sig) for sig in pattern)
            return Anomaly(POSSIBLE_LOOP, f"the cycle {names} repeated {repeats} times with the same arguments")
    return None


def find_high_cost(step_cost: float, previous_costs: list[float], thresholds: AnomalyThresholds) -> Anomaly | None:
    """A step above the fixed threshold, or far above the run's own median step cost.

    Args:
        step_cost: USD spent by this step's model call.
        previous_costs: The costs of the run's earlier steps (the median needs ``median_min_steps`` of them).
        thresholds: The profile's thresholds.
    """
    if step_cost > thresholds.step_cost_usd:
        return Anomaly(HIGH_COST, f"step cost ${step_cost:.4f} is above ${thresholds.step_cost_usd:.4f}")
    if len(previous_costs) >= thresholds.median_min_steps:
        median = statistics.median(previous_costs)
        if median > 0 and step_cost > thresholds.median_factor * median:
            return Anomaly(
                HIGH_COST,
                f"step cost ${step_cost:.4f} is {step_cost / median:.1f} times the run's median step cost ${median:.4f}",
            )
    return None


def detect(
    recent_actions: list[str],
    *,
    step_cost: float,
    step_tokens: int,
    thresholds: AnomalyThresholds,
    previous_costs: list[float] | None = None,
) -> list[Anomaly]:
    """The anomalies of the step just taken.

    Args:
        recent_actions: :func:`action_signature` of the latest actions, newest last (empty for an answer).
        step_cost: USD spent by this step's model call.
        step_tokens: Tokens used by this step's model call.
        thresholds: The profile's thresholds.
        previous_costs: The costs of the run's earlier steps, for the median rule.
    """
    found: list[Anomaly] = []
    loop = find_loop(recent_actions, thresholds)
    if loop is not None:
        found.append(loop)
    cost = find_high_cost(step_cost, previous_costs or [], thresholds)
    if cost is not None:
        found.append(cost)
    if step_tokens > thresholds.step_tokens:
        found.append(Anomaly(HIGH_TOKEN_USAGE, f"step used {step_tokens} tokens, above {thresholds.step_tokens}"))
    return found


def action_for(kind: str, thresholds: AnomalyThresholds) -> AnomalyAction:
    """What the profile says an anomaly of ``kind`` makes the run do."""
    chosen: AnomalyAction = {
        POSSIBLE_LOOP: thresholds.on_loop,
        HIGH_COST: thresholds.on_high_cost,
        HIGH_TOKEN_USAGE: thresholds.on_high_tokens,
    }.get(kind, "warn")
    return chosen


def strongest_action(found: list[Anomaly], thresholds: AnomalyThresholds) -> tuple[AnomalyAction, list[Anomaly]]:
    """The strongest action the anomalies call for (``stop`` > ``pause`` > ``warn``) and the ones calling for it."""
    if not found:
        return "warn", []
    action = max((action_for(a.kind, thresholds) for a in found), key=_ACTION_RANK.__getitem__)
    return action, [a for a in found if action_for(a.kind, thresholds) == action]

