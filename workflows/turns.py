"""A turn of several tool calls: which of them may run at once.

Claude emits several tool calls in one turn when they are independent. With the
profile's ``parallel_tool_calls`` on (the default), the model may do so, and the
read-only calls of a turn that need nobody's approval run as concurrent
activities; every other call runs alone, in the model's order, as before. Each
call is checked (policy, the run's budget, its anomalies) before any call of its
group runs, each keeps its own decision record and ``record_id``, and the model
reads the results in the order it made the calls.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from durable_agent import policy
    from durable_agent.schemas import ToolCall

from durable_agent.workflows.host import Host
from durable_agent.workflows.settings import RunSettings
from durable_agent.workflows.spend import Spend

#: Patch: the model may make several tool calls a turn, and a turn's read-only calls run at once.
PATCH_PARALLEL_TOOL_CALLS = "parallel-tool-calls"


def parallel_calls_allowed(host: Host, settings: RunSettings) -> bool:
    """Whether the model is told it may make several calls a turn (the profile's switch, for runs begun with the patch)."""
    return settings.profile.parallel_tool_calls and host.patched(PATCH_PARALLEL_TOOL_CALLS)


def runs_alone(call: ToolCall, settings: RunSettings, spend: Spend) -> bool:
    """Whether ``call`` must run on its own: it may change the world, waits for a person or a rate limit, or cannot run."""
    info = settings.profile.tool(call.name)
    if info is None or not info.read_only or info.rate_limit is not None or spend.spent_for(call.name) is not None:
        return True
    return policy.evaluate(info, call.args, settings.autonomy, settings.profile.approval).verdict != "allow"


def concurrent_group(host: Host, settings: RunSettings, spend: Spend, calls: list[ToolCall], start: int) -> int:
    """How many calls of the turn ``calls``, from ``start`` on, run together (1: the call runs alone)."""
    if len(calls) - start < 2 or not settings.profile.parallel_tool_calls:
        return 1
    end = start
    while end < len(calls) and not runs_alone(calls[end], settings, spend):
        end += 1
    if end - start < 2 or not host.patched(PATCH_PARALLEL_TOOL_CALLS):
        return 1
    return end - start
