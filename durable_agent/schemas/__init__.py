"""Data shapes shared by workflows, activities, the worker, the starter and clients.

Everything that crosses the Temporal boundary is a pydantic model, serialised by
``temporalio.contrib.pydantic.pydantic_data_converter``. Models that users type
by hand (the run input, approval decisions) forbid unknown fields so a typo is an
error that names the field rather than a silently ignored setting.

One module per concern; import from here (``from durable_agent.schemas import X``):

- :mod:`.common`: autonomy levels, run statuses and phases, token usage, ``StrictModel``.
- :mod:`.run`: the run's input, its result, the ``status`` query.
- :mod:`.approvals`: held actions, reviewers' decisions and their outcomes.
- :mod:`.records`: decision records.
- :mod:`.profile`: an agent profile frozen for a run, and its tools' policy metadata.
- :mod:`.calls`: the payloads of the model and tool activities.
- :mod:`.delegation`: sub-agents: a child's link to its parent, its reports, the parent's list of children.

Names and fields never change with the modules they live in: payloads in recorded
histories decode the same.
"""

from __future__ import annotations

from durable_agent.schemas.approvals import (
    ApprovalRecord,
    Decision,
    DecisionSignature,
    KeyringRequest,
    PendingApproval,
    ReviewerKeyring,
    ReviewerNotice,
    ReviewRequest,
)
from durable_agent.schemas.calls import (
    CompactInput,
    CompactOutput,
    ThinkInput,
    ThinkOutput,
    ToolCall,
    RemoteResultInput,
    ToolCallInput,
    ToolCallOutput,
    ToolResultPart,
)
from durable_agent.schemas.delegation import ChildReport, ChildRun, ParentLink
from durable_agent.schemas.common import Autonomy, Phase, RunStatus, StrictModel, Usage
from durable_agent.schemas.profile import (
    AnomalyThresholds,
    ApprovalPolicy,
    ModelPrice,
    ResolveAgentInput,
    ResolvedAgent,
    LivePolicy,
    RemoteTarget,
    ToolInfo,
)
from durable_agent.schemas.records import ActionRecord, CostRecord, DecisionRecord, RecordDecisionsInput
from durable_agent.schemas.run import AgentInput, AgentResult, StatusView

__all__ = [
    "ActionRecord",
    "AgentInput",
    "AgentResult",
    "AnomalyThresholds",
    "ChildReport",
    "ChildRun",
    "ApprovalPolicy",
    "ApprovalRecord",
    "Autonomy",
    "CompactInput",
    "CompactOutput",
    "CostRecord",
    "Decision",
    "DecisionRecord",
    "DecisionSignature",
    "KeyringRequest",
    "ModelPrice",
    "ParentLink",
    "PendingApproval",
    "Phase",
    "RecordDecisionsInput",
    "ResolveAgentInput",
    "ResolvedAgent",
    "ReviewRequest",
    "ReviewerKeyring",
    "ReviewerNotice",
    "RunStatus",
    "StrictModel",
    "StatusView",
    "ThinkInput",
    "ThinkOutput",
    "ToolCall",
    "RemoteResultInput",
    "ToolCallInput",
    "ToolCallOutput",
    "LivePolicy",
    "RemoteTarget",
    "ToolInfo",
    "ToolResultPart",
    "Usage",
]
