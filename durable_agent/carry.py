"""Keeping what a run carries forward under Temporal's payload limit.

Temporal refuses a payload over 2 MB (``TMPRL1103``), and a refused continue-as-new
or activity input fails the workflow task again and again. What a run carries is
small except for the decision records it keeps for the ``trace`` query, whose
tool arguments and reasoning come from the model and can be large. Before they
are carried into a continuation, or shown to a reviewer as context, large parts
are cut; the trace sink keeps every record whole. Pure functions.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from durable_agent.budget import HeldLease
from durable_agent.inputs import json_size
from durable_agent.schemas import ApprovalRecord, ChildRun, DecisionRecord, ResolvedAgent, ToolResultPart, Usage

#: Most bytes a run's continue-as-new input may take (Temporal's limit is 2 MB; codecs add a little).
CARRIED_STATE_BYTES = 1_000_000
#: Tool arguments over this many bytes of JSON are replaced by a note in carried records.
CARRIED_ARGS_BYTES = 4_096
#: Reasoning and observation texts are cut to this many characters in carried records.
CARRIED_TEXT_CHARS = 2_000
#: Tool names a continuation carries (the latest); earlier ones are only counted.
CARRIED_TOOLS_USED = 200
#: Approval records a continuation carries (the latest); earlier ones are only counted.
CARRIED_APPROVALS = 100
#: Decision records a continuation carries for the ``trace`` query (the latest; the store has all).
CARRIED_TRACE_RECORDS = 50


class CarriedState(BaseModel):
    """What a run hands to its continuation (continue-as-new).

    Bounded however long the run: the latest :data:`CARRIED_TOOLS_USED` tool names
    and :data:`CARRIED_APPROVALS` approvals are listed, the rest counted.
    """

    agent: ResolvedAgent
    step: int
    usage: Usage
    total_cost: float
    tools_used: list[str]
    tools_used_unlisted: int = 0
    warnings: list[str]
    warnings_unlisted: dict[str, int] = {}
    approvals: list[ApprovalRecord]
    approvals_unlisted: int = 0
    head: str | None
    pending_results: list[ToolResultPart]
    recent_actions: list[str]
    trace: list[DecisionRecord]
    last_usage: Usage | None = None
    pending_chars: int = 0
    sent_task: bool = True
    #: The task in the content store, when it was too large to carry: the continuation's input holds a stub.
    task_ref: str | None = None
    daily_lease: HeldLease | None = None
    #: The latest step costs, for the anomaly rule that compares a step with the run's median.
    step_costs: list[float] = []
    #: For the next call's cost estimate: what it resends, how much of that is cached, since when.
    next_prompt_tokens: int | None = None
    cached_prompt_tokens: int = 0
    last_think_at: datetime | None = None
    #: The sub-agent runs started so far (none is running when a run continues as new).
    children: list[ChildRun] = []
    #: What the run's calls moved without a person's approval, in the profile's currency (held to max_amount_per_run).
    moved_without_approval: float = 0.0


def compact_record(record: DecisionRecord) -> DecisionRecord:
    """``record`` with large arguments replaced by a note and long texts cut; ``record`` itself when nothing is large."""
    action = record.action
    update_action: dict[str, object] = {}
    if action.args is not None:
        size = json_size(action.args)
        if size > CARRIED_ARGS_BYTES:
            update_action["args"] = {"_cut": f"{size:,} bytes of arguments, left out of the carried trace (the trace sink has them)"}
    if action.reasoning is not None and len(action.reasoning) > CARRIED_TEXT_CHARS:
        update_action["reasoning"] = action.reasoning[:CARRIED_TEXT_CHARS] + " [cut]"
    observation = {
        key: value[:CARRIED_TEXT_CHARS] + " [cut]" if isinstance(value, str) and len(value) > CARRIED_TEXT_CHARS else value
        for key, value in record.observation.items()
    }
    if not update_action and observation == record.observation:
        return record
    update: dict[str, object] = {"observation": observation}
    if update_action:
        update["action"] = action.model_copy(update=update_action)
    return record.model_copy(update=update)


def latest_within(records: list[DecisionRecord], max_bytes: int, *, compact: bool = False) -> list[DecisionRecord]:
    """The newest of ``records`` whose JSON array fits in ``max_bytes`` (oldest first, as given).

    Args:
        records: Oldest first.
        max_bytes: The most the JSON array of the kept records may take (the ``trace``
            query's answer, or what is left of a continuation's input).
        compact: Cut large arguments and long texts first (:func:`compact_record`), so more fit.
    """
    kept: list[DecisionRecord] = []
    used = 2  # the brackets
    for record in reversed(records):
        if compact:
            record = compact_record(record)
        size = len(record.model_dump_json()) + 1  # and a comma
        if used + size > max_bytes:
            break
        kept.append(record)
        used += size
    kept.reverse()
    return kept
