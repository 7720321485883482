"""Sub-agents: a profile that delegates to other profiles, each seen by the model as a tool. Pure functions.

``[agents.lead] subagents = ["researcher", "writer"]`` gives the lead's model a tool
named after each profile, taking ``{"task": string}`` and described by that profile's
``description``. A call starts a child ``AgentWorkflow`` (see :mod:`durable_agent.workflows.delegation`).
What is checked at worker start, how a child's id, budget and limits are derived, and
what the parent's model is told of a child's outcome are decided here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from durable_agent import pricing
from durable_agent.errors import ConfigError
from durable_agent.fields import did_you_mean
from durable_agent.schemas import ChildRun, ToolInfo

if TYPE_CHECKING:
    from durable_agent.profiles import Profile

#: The input schema of every sub-agent tool.
TASK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"task": {"type": "string", "description": "What the sub-agent should do, in full: it sees nothing else."}},
    "required": ["task"],
}
#: Characters of a child's answer the parent's model reads (the child's records keep it whole).
ANSWER_CHARS = 4_000


def tool_info(name: str, profile: Profile) -> ToolInfo:
    """The tool the parent's model sees for sub-agent ``name``."""
    description = profile.description or f"Delegate a task to the {name} agent."
    return ToolInfo(name=name, description=description, input_schema=TASK_SCHEMA, subagent=True, timeout_seconds=0)


def check_config(file: str, agents: Mapping[str, Profile], tool_names: Iterable[str]) -> None:
    """Every profile's ``subagents``: known profiles, no name shared with a tool, no cycle.

    Args:
        file: The configuration file, for the errors.
        agents: The profiles by name.
        tool_names: Every name a tool may have (the registered tools, the built-in ones).

    Raises:
        ConfigError: naming ``agents.NAME.subagents[i]`` and, for a cycle, the cycle (``a -> b -> a``).
    """
    tools = set(tool_names)
    for name, profile in agents.items():
        for index, sub in enumerate(profile.subagents):
            key = f"agents.{name}.subagents[{index}]"
            if sub not in agents:
                meant = did_you_mean(sub, list(agents))
                hint = f"; did you mean {meant!r}?" if meant else ""
                raise ConfigError(file, key, f"no profile named {sub!r} (profiles: {', '.join(sorted(agents))}){hint}")
            if sub in tools or sub in profile.tools:
                raise ConfigError(file, key, f"{sub!r} is also a tool's name: the model could not tell them apart; rename the profile")
            if profile.subagents.index(sub) != index:
                raise ConfigError(file, key, f"{sub!r} is listed twice")
    for name in agents:
        cycle = _cycle_from(name, agents, [name])
        if cycle is not None:
            where = cycle[-2]
            index = agents[where].subagents.index(cycle[-1])
            raise ConfigError(
                file, f"agents.{where}.subagents[{index}]", f"delegation goes round in a cycle: {' -> '.join(cycle)}"
            )


def _cycle_from(name: str, agents: Mapping[str, Profile], path: list[str]) -> list[str] | None:
    for sub in agents[name].subagents:
        if sub in path:
            return [*path[path.index(sub) :], sub]
        found = _cycle_from(sub, agents, [*path, sub])
        if found is not None:
            return found
    return None


def child_workflow_id(parent_id: str, agent: str, step: int, index: int) -> str:
    """``PARENT/agent-STEP-N``: readable, derived from the parent's, unique across its continuations."""
    return f"{parent_id}/{agent}-{step}-{index + 1}"


def run_budget(given: float | None, own: float | None, *, sub_agent: bool) -> float | None:
    """A run's cap: the input's, else its profile's; a sub-agent's, the smaller of what its parent had left and its profile's.

    ``None`` is no cap.
    """
    if not sub_agent:
        return given if given is not None else own
    caps = [cap for cap in (given, own) if cap is not None]
    return min(caps) if caps else None


def outcome_text(child: ChildRun, answer: str | None, error: str | None = None) -> str:
    """What the parent's model reads of a child that ended: its status, cost and answer (or why it ended)."""
    head = f"The {child.agent} sub-agent ({child.workflow_id}) ended with status {child.status} after {child.steps} steps, " \
        f"costing ${pricing.shown_usd(child.total_cost):.4f}."
    body = (answer or error or "").strip()
    if len(body) > ANSWER_CHARS:
        body = body[:ANSWER_CHARS] + " [cut; the sub-agent's trace has it whole]"
    if child.status == "success":
        return f"{head}\nIts answer:\n{body}"
    return f"{head} It did not finish its task: {body or 'no answer'}. Carry on without it or try another approach."
