"""The state of one agent run, shared by the mixins that make up ``AgentWorkflow``.

``AgentWorkflow`` is assembled from one mixin per concern (approvals, limits,
records, continue-as-new), each in its own module; they all read and write the
attributes declared here, so the types are written down once.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, CancelledError

with workflow.unsafe.imports_passed_through():
    from durable_agent.budget import HeldLease, SettleRequest
    from durable_agent.schemas import (
        AgentInput,
        ApprovalRecord,
        Autonomy,
        DecisionRecord,
        PendingApproval,
        Phase,
        ResolvedAgent,
        RunStatus,
        ToolCall,
        ToolResultPart,
        Usage,
    )

#: Heartbeat timeout of model calls and of tools that do not set ``heartbeat``: how soon a
#: killed worker's activity is retried elsewhere (activities heartbeat every 5 s).
DEFAULT_HEARTBEAT_TIMEOUT = timedelta(seconds=15)


def is_cancellation(exc: BaseException) -> bool:
    """Whether ``exc`` is the run's own cancellation reaching it through an activity.

    Cancelling a run cancels the activity in flight, and the workflow sees that as an
    ``ActivityError`` caused by ``CancelledError``: it must stop the run, never be
    taken for a failing tool or model (which the run would carry on without).
    """
    return isinstance(exc, CancelledError) or (isinstance(exc, ActivityError) and isinstance(exc.cause, CancelledError))


class RunState:
    """Every attribute of a run, with its type; ``__init__`` gives the starting values."""

    input: AgentInput | None
    agent: ResolvedAgent | None
    autonomy: Autonomy
    budget_usd: float | None
    phase: Phase
    step: int
    usage: Usage
    total_cost: float
    tools_used: list[str]
    #: Tool calls and approvals of earlier executions no longer listed (continue-as-new carries the latest).
    tools_used_unlisted: int
    approvals_unlisted: int
    warnings: list[str]
    warnings_unlisted: dict[str, int]
    approvals: list[ApprovalRecord]
    pending: dict[str, PendingApproval]
    decided: dict[str, ApprovalRecord]
    #: The tool calls of the current turn, so a turn's held actions are opened together.
    turn_calls: list[ToolCall]
    _notifications: dict[str, workflow.ActivityHandle[Any]]
    trace: list[DecisionRecord]
    head: str | None
    pending_results: list[ToolResultPart]
    pending_chars: int
    recent_actions: list[str]
    last_usage: Usage | None
    status: RunStatus | None
    answer: str | None
    waiting_for: str | None
    step_span: Any
    started_at_step: int
    sent_task: bool
    #: The task's reference in the content store when it is too large to carry (``inputs.TASK_INLINE_BYTES``).
    task_ref: str | None
    daily_remaining: float | None
    daily_reservation: SettleRequest | None
    #: The API request ids of the current step's model calls (a step can take several).
    step_request_ids: list[str]
    #: The run was cancelled while a world-changing tool ran, and the tool finished its work
    #: (such tools are waited for): the step is recorded, then the run ends as cancelled.
    cancelled_during_tool: bool
    #: The run's lease of the agent's daily budget (runs begun before leases reserve per call instead).
    daily_lease: HeldLease | None
    #: The costs of the latest steps, for the anomaly rule that compares a step with the run's median.
    step_costs: list[float]
    #: The current step's decision records, whole, until they are handed to ``record_decisions``.
    step_records: list[DecisionRecord]
    #: ``record_decisions`` activities started and not yet awaited.
    record_writes: list[workflow.ActivityHandle[Any]]
    #: Pending approvals already counted in the ``agent.approvals.waiting`` metric.
    waiting_counted: int
    #: What compaction cost in the current step (settled with the step's model call).
    compaction_cost: float
    #: Compactions made by this workflow run (a continuation counts its own).
    compactions: int
    #: Tokens the next model call resends (the last prompt and its reply, or the compacted conversation).
    next_prompt_tokens: int | None
    #: Of those, the tokens the last call left in the prompt cache.
    cached_prompt_tokens: int
    #: When the last model call was made (the cache lives five minutes from it).
    last_think_at: datetime | None

    def __init__(self) -> None:
        self.input = None
        self.agent = None
        self.autonomy = Autonomy.SUPERVISED
        self.budget_usd = None
        self.phase = "starting"
        self.step = 0
        self.usage = Usage()
        self.total_cost = 0.0
        self.tools_used = []
        self.tools_used_unlisted = 0
        self.approvals_unlisted = 0
        self.warnings = []
        self.warnings_unlisted = {}
        self.approvals = []
        self.pending = {}
        self.decided = {}
        self.turn_calls = []
        self._notifications = {}
        self.trace = []
        self.head = None
        self.pending_results = []
        self.pending_chars = 0
        self.recent_actions = []
        self.last_usage = None
        self.status = None
        self.answer = None
        self.waiting_for = None
        self.step_span = None
        self.started_at_step = 0
        self.sent_task = False
        self.task_ref = None
        self.daily_remaining = None
        self.daily_reservation = None
        self.step_request_ids = []
        self.cancelled_during_tool = False
        self.step_costs = []
        self.step_records = []
        self.record_writes = []
        self.waiting_counted = 0
        self.daily_lease = None
        self.compaction_cost = 0.0
        self.compactions = 0
        self.next_prompt_tokens = None
        self.cached_prompt_tokens = 0
        self.last_think_at = None
